"""The prompt bar: text box, Generate (or Enter), number of images, "in parallel"."""

import reflex as rx

from sd_webui.components import styles
from sd_webui.jobs import MAX_COUNT, MAX_PROMPT_CHARS
from sd_webui.state import PROMPT_INPUT_ID, PromptState

PARALLEL_HINT = (
    "On: each image is its own job, so several workers can draw them at the same time. "
    "Off: one job draws all the images, one after another."
)


def prompt_bar() -> rx.Component:
    return rx.form(
        rx.vstack(
            rx.flex(
                rx.input(
                    id=PROMPT_INPUT_ID,
                    placeholder="Yellow submarine",
                    value=PromptState.prompt,
                    on_change=PromptState.set_prompt,
                    max_length=MAX_PROMPT_CHARS,
                    auto_focus=True,
                    size="3",
                    width="100%",
                    aria_label="Prompt",
                ),
                rx.button(
                    rx.icon("wand-sparkles", size=18),
                    "Generate",
                    type="submit",
                    size="3",
                    loading=PromptState.sending,
                    color_scheme=styles.ACCENT,
                ),
                direction={"initial": "column", "sm": "row"},
                spacing="3",
                width="100%",
            ),
            rx.flex(
                rx.hstack(
                    rx.text(
                        "Number of images: ",
                        rx.text.strong(PromptState.count),
                        size="2",
                        white_space="nowrap",
                    ),
                    rx.slider(
                        value=[PromptState.count],
                        on_change=PromptState.set_count,
                        min=1,
                        max=MAX_COUNT,
                        step=1,
                        flex_grow="1",
                        min_width="8em",
                        max_width=["none", "12em"],
                        color_scheme=styles.ACCENT,
                        aria_label="Number of images",
                    ),
                    align="center",
                    spacing="3",
                    width=["100%", "auto"],
                ),
                rx.tooltip(
                    rx.text(
                        rx.hstack(
                            rx.checkbox(
                                checked=PromptState.in_parallel,
                                on_change=PromptState.set_in_parallel,
                                color_scheme=styles.ACCENT,
                            ),
                            "in parallel",
                            rx.icon("info", size=14, color="var(--gray-10)"),
                            align="center",
                            spacing="2",
                        ),
                        as_="label",
                        size="2",
                    ),
                    content=PARALLEL_HINT,
                ),
                direction={"initial": "column", "sm": "row"},
                align={"initial": "start", "sm": "center"},
                spacing={"initial": "3", "sm": "5"},
                width="100%",
            ),
            spacing="3",
            width="100%",
        ),
        on_submit=PromptState.generate,
        prevent_default=True,
        width="100%",
    )

"""The prompt bar: text box, Generate (or Enter), number of images, "in parallel", and the
"Advanced" panel (collapsed by default) with every other setting of a job."""

import reflex as rx

from sd_webui.components import styles
from sd_webui.job_state import JobsState
from sd_webui.jobs import MAX_COUNT, MAX_PROMPT_CHARS
from sd_webui.state import ADVANCED, PROMPT_INPUT_ID, PromptState

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
            advanced_panel(),
            spacing="3",
            width="100%",
        ),
        on_submit=JobsState.generate,
        prevent_default=True,
        width="100%",
    )


def number_field(label: str, field: str, hint: str, **limits: int | float) -> rx.Component:
    """A labelled number box; the browser's limits are a help, the server decides."""
    return rx.vstack(
        rx.text(label, as_="label", size="1", color="var(--gray-11)", html_for=field),
        rx.input(
            id=field,
            type="number",
            value=getattr(PromptState, field),
            on_change=PromptState.set_field(field),
            placeholder=hint,
            width="100%",
            **limits,
        ),
        spacing="1",
        width="100%",
    )


def advanced_panel() -> rx.Component:
    """Negative prompt, seed (empty = random, or rolled with the dice), steps, size, guidance."""
    return rx.accordion.root(
        rx.accordion.item(
            header="Advanced",
            value=ADVANCED,
            content=rx.vstack(
                rx.vstack(
                    rx.text("Negative prompt", as_="label", size="1", color="var(--gray-11)"),
                    rx.input(
                        id="negative_prompt",
                        value=PromptState.negative_prompt,
                        on_change=PromptState.set_field("negative_prompt"),
                        placeholder="blurry, low quality",
                        max_length=MAX_PROMPT_CHARS,
                        width="100%",
                    ),
                    spacing="1",
                    width="100%",
                ),
                rx.grid(
                    rx.hstack(
                        number_field("Seed", "seed", "random", min=0, step=1),
                        rx.icon_button(
                            rx.icon("dice-5", size=16),
                            type="button",
                            variant="soft",
                            aria_label="Random seed",
                            title="A random seed",
                            on_click=PromptState.roll_seed,
                        ),
                        align="end",
                        spacing="2",
                        width="100%",
                    ),
                    number_field("Steps", "steps", "1", min=1, max=50, step=1),
                    number_field("Width", "width", "512", min=256, max=1024, step=8),
                    number_field("Height", "height", "512", min=256, max=1024, step=8),
                    number_field("Guidance", "guidance", "0", min=0, max=20, step=0.5),
                    columns={"initial": "2", "md": "5"},
                    spacing="3",
                    width="100%",
                ),
                spacing="3",
                width="100%",
            ),
        ),
        type="single",
        collapsible=True,
        value=PromptState.advanced,
        on_value_change=PromptState.set_advanced,
        variant="ghost",
        width="100%",
    )

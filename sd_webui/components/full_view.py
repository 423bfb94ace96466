"""The full-size view of one image: every piece of metadata, Download, "Use this prompt",
"Reuse settings"."""

import reflex as rx

from sd_webui.components import styles
from sd_webui.components.gallery_grid import fact, generated, image_url
from sd_webui.state import PROMPT_INPUT_ID, PromptState, ViewerState


def full_view() -> rx.Component:
    card = ViewerState.selected
    no_negative = rx.cond(card.negative_prompt, card.negative_prompt, "none")
    return rx.dialog.root(
        rx.dialog.content(
            rx.vstack(
                rx.cond(
                    card.filtered,
                    rx.text(
                        "Filtered: the safety checker held this image back.",
                        color="var(--gray-11)",
                    ),
                    rx.image(src=image_url(card), alt=card.prompt, style=styles.FULL_IMAGE),
                ),
                rx.dialog.title(card.prompt, size="4", margin="0"),
                rx.grid(
                    fact("Negative prompt", no_negative),
                    fact("Generated", generated(card)),
                    fact("Model", card.model),
                    fact("LoraModel", card.lora_base_model),
                    fact("Size", card.size),
                    fact("Seed", card.seed),
                    fact("Steps", card.steps),
                    fact("Guidance", card.guidance_scale),
                    fact("Job id", rx.code(card.job_id, size="1")),
                    columns={"initial": "1", "sm": "2"},
                    spacing_x="5",
                    spacing_y="1",
                    width="100%",
                ),
                rx.flex(
                    rx.link(
                        rx.button(rx.icon("download", size=16), "Download", variant="soft"),
                        href=image_url(card),
                        download=card.name,
                        is_external=True,
                    ),
                    rx.dialog.close(
                        rx.button(
                            rx.icon("pencil", size=16),
                            "Use this prompt",
                            color_scheme=styles.ACCENT,
                            on_click=PromptState.use_prompt(card.prompt),
                        ),
                    ),
                    rx.dialog.close(
                        rx.button(
                            rx.icon("sliders-horizontal", size=16),
                            "Reuse settings",
                            variant="soft",
                            color_scheme=styles.ACCENT,
                            on_click=PromptState.reuse(card),
                        ),
                    ),
                    rx.dialog.close(rx.button("Close", variant="soft", color_scheme="gray")),
                    spacing="3",
                    justify="end",
                    wrap="wrap",
                    width="100%",
                ),
                spacing="3",
            ),
            max_width="min(960px, 95vw)",
            # Closing returns to the prompt box (after "Use this prompt", ready to edit it).
            on_close_auto_focus=[rx.prevent_default, rx.set_focus(PROMPT_INPUT_ID)],
        ),
        open=ViewerState.viewing,
        on_open_change=ViewerState.set_viewing,
    )

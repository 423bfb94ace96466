"""The dark navigation bar: the title and a link to the project."""

import reflex as rx

from sd_webui.components import styles

PROJECT_URL = "https://github.com/kedify/examples/tree/main/samples/stable-diffusion"


def navbar() -> rx.Component:
    return rx.hstack(
        rx.hstack(
            rx.icon("sparkles", color="var(--sky-9)"),
            rx.heading("Stable Diffusion", size="5", weight="bold"),
            align="center",
            spacing="2",
        ),
        rx.link(
            rx.hstack(
                rx.icon("external-link", size=16), rx.text("Project"), align="center", spacing="1"
            ),
            href=PROJECT_URL,
            is_external=True,
            color_scheme=styles.ACCENT,
            size="2",
        ),
        justify="between",
        align="center",
        width="100%",
        style=styles.NAVBAR,
    )

"""The dark navigation bar: the title, the cluster at a glance and a link to the project."""

import reflex as rx

from sd_webui.components import styles
from sd_webui.live_feed import QueueState

PROJECT_URL = "https://github.com/kedify/examples/tree/main/samples/stable-diffusion"


def figure(label: str, value: rx.Var, hint: str, element_id: str) -> rx.Component:
    """One header figure; "?" while the broker cannot be read."""
    return rx.tooltip(
        rx.text(
            rx.text.span(f"{label} ", color="var(--gray-11)"),
            rx.text.strong(rx.cond(value < 0, "?", value.to_string()), id=element_id),
            size="2",
            white_space="nowrap",
        ),
        content=hint,
    )


def cluster() -> rx.Component:
    """Jobs waiting in the queue and workers consuming it (KEDA scaling, live)."""
    return rx.hstack(
        figure("Queue", QueueState.waiting, "Jobs waiting in the queue", "queue-length"),
        figure("Workers", QueueState.workers, "Workers consuming the queue", "worker-count"),
        spacing="4",
        align="center",
    )


def navbar() -> rx.Component:
    return rx.hstack(
        rx.hstack(
            rx.icon("sparkles", color="var(--sky-9)"),
            rx.heading("Stable Diffusion", size="5", weight="bold"),
            align="center",
            spacing="2",
        ),
        rx.hstack(
            cluster(),
            rx.link(
                rx.hstack(
                    rx.icon("external-link", size=16),
                    rx.text("Project", display=["none", "inline"]),  # the icon alone on a phone
                    align="center",
                    spacing="1",
                ),
                href=PROJECT_URL,
                is_external=True,
                aria_label="Project",
                color_scheme=styles.ACCENT,
                size="2",
            ),
            spacing=rx.breakpoints(initial="3", sm="5"),
            align="center",
        ),
        justify="between",
        align="center",
        width="100%",
        style=styles.NAVBAR,
    )

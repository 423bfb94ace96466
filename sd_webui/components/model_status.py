"""The embedded worker's model state: a note while it loads, what to set if it cannot."""

import reflex as rx

from sd_webui.state import ModelState


def notice(icon: str, color: str, *text: rx.Component | str) -> rx.Component:
    return rx.callout.root(
        rx.callout.icon(rx.icon(icon)),
        rx.callout.text(*text),
        color_scheme=color,
        width="100%",
        id="model-status",
    )


def model_status() -> rx.Component:
    return rx.fragment(
        rx.cond(
            ModelState.status == "loading",
            notice(
                "loader",
                "sky",
                "Loading the model. You can press Generate already: jobs wait in the queue and "
                "start as soon as it is ready.",
            ),
        ),
        rx.cond(
            ModelState.status == "failed",
            notice(
                "triangle-alert",
                "red",
                rx.text.strong("The model could not be loaded. "),
                ModelState.problem,
            ),
        ),
    )

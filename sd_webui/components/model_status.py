"""Notices above the prompt: the embedded worker's model state (a note while it loads, what
to set if it cannot), and Redis unreachable when several replicas share it."""

import reflex as rx

from sd_webui.live_feed import StoreState
from sd_webui.state import ModelState


def notice(icon: str, color: str, *text: rx.Component | str, id: str) -> rx.Component:
    return rx.callout.root(
        rx.callout.icon(rx.icon(icon)),
        rx.callout.text(*text),
        color_scheme=color,
        width="100%",
        id=id,
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
                id="model-status",
            ),
        ),
        rx.cond(
            ModelState.status == "failed",
            notice(
                "triangle-alert",
                "red",
                rx.text.strong("The model could not be loaded. "),
                ModelState.problem,
                id="model-status",
            ),
        ),
        rx.cond(
            StoreState.redis_down,
            notice(
                "unplug",
                "amber",
                rx.text.strong("The server cannot reach Redis. "),
                "Generate, Cancel and the other buttons do nothing until it is back; the "
                "gallery stays live, and the page carries on by itself once Redis answers.",
                id="redis-status",
            ),
        ),
    )

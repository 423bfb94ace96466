"""The gallery: a responsive grid of image cards, each with a hover card of its metadata.

The cards come from the live feed's slots (sd_webui/live_feed.py), shown in `order` and keyed
by image name: when a new image arrives the browser builds its one card and only moves the
others.
"""

import reflex as rx
from reflex.vars import Var
from reflex_base.utils.imports import ImportVar
from reflex_base.vars.base import VarData

from sd_webui.components import styles
from sd_webui.job_state import JobsState
from sd_webui.live_feed import SLOTS, GalleryState, slot_var
from sd_webui.state import Card, ViewerState

# The backend's origin as the browser sees it: port 8000 beside a dev frontend on 3000, the page's
# own origin when one port serves both. Images are served by the backend at run time.
BACKEND_ORIGIN = Var(
    _js_expr="getBackendURL().origin",
    _var_data=VarData(imports={"$/utils/state": [ImportVar(tag="getBackendURL")]}),
).to(str)

RELATIVE_TIME_REFRESH_MS = 30_000


def image_url(card: Card) -> Var[str]:
    return BACKEND_ORIGIN + card.path


def generated(card: Card) -> rx.Component:
    """ "3 minutes ago", re-rendered in the browser as time passes (no server round trip)."""
    return rx.moment(card.created, from_now=True, interval=RELATIVE_TIME_REFRESH_MS)


def fact(label: str, value: Var | str | rx.Component) -> rx.Component:
    return rx.text(rx.text.span(f"{label}: ", color="var(--gray-11)"), value, size="2")


def image_card(card: Card) -> rx.Component:
    return rx.vstack(
        thumbnail(card),
        rx.text(card.prompt, size="1", color="var(--gray-11)", truncate=True, width="100%"),
        spacing="1",
        width="100%",
    )


def thumbnail(card: Card) -> rx.Component:
    """The image, fitted whole into a square as wide as the card, whatever its pixel size.

    The trigger's child is a full-width box: given the clickable image itself, Reflex would
    wrap it in a flex box of its content's width, and the image would show at its own size.
    """
    return rx.hover_card.root(
        rx.hover_card.trigger(
            rx.box(
                rx.cond(card.filtered, filtered_tile(card), gallery_image(card)),
                width="100%",
            ),
        ),
        rx.hover_card.content(
            rx.vstack(
                rx.text(card.prompt, weight="bold", size="3"),
                fact("Generated", generated(card)),
                fact("Model", card.model),
                fact("LoraModel", card.lora_base_model),
                fact("Size", card.size + "px"),
                spacing="1",
            ),
            side="top",
            max_width="22em",
        ),
        open_delay=150,
    )


def gallery_image(card: Card) -> rx.Component:
    return rx.image(
        src=image_url(card),
        alt=card.prompt,
        loading="lazy",
        style=styles.THUMBNAIL,
        # One of this tab's finished jobs: outlined, so its images stand out.
        outline=rx.cond(
            JobsState.finished_ids.contains(card.job_id),
            styles.HIGHLIGHT_OUTLINE,
            "none",
        ),
        outline_offset="2px",
        on_click=ViewerState.view(card),
        custom_attrs={"data-name": card.name, "data-job": card.job_id},
    )


def filtered_tile(card: Card) -> rx.Component:
    """What the page shows for an image the safety checker blacked out, and why."""
    return rx.center(
        rx.vstack(
            rx.icon("shield-alert", size=28),
            rx.text("Filtered", weight="medium", size="3"),
            rx.text("The safety checker held this image back.", size="1"),
            align="center",
            spacing="1",
        ),
        style=styles.FILTERED_TILE,
        on_click=ViewerState.view(card),
        custom_attrs={"data-name": card.name, "data-job": card.job_id, "data-filtered": "true"},
    )


def gallery_grid() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.heading("Latest images", size="3", weight="medium"),
            rx.badge("live", color_scheme=styles.ACCENT, variant="soft", radius="full"),
            align="center",
            spacing="2",
        ),
        images(),
        spacing="3",
        width="100%",
    )


# The slots' cards in `order` (newest first), looked up in the browser.
SLOT_CARDS = Var.create([getattr(GalleryState, slot_var(slot)) for slot in range(SLOTS)])
SHOWN = GalleryState.order.map(lambda slot: SLOT_CARDS[slot]).to(list[Card])


@rx.memo
def gallery_card(card: rx.Var[Card]) -> rx.Component:
    """A card as a memoized React component: a push that leaves its card unchanged (the same
    object in the slot) does not render it again."""
    return image_card(card)


def keyed_card(card: Card) -> rx.Component:
    """One card, keyed by its image: when the order changes React moves it, unchanged."""
    return rx.box(gallery_card(card=card), key=card.name, class_name="gallery-card")


def images() -> rx.Component:
    return rx.cond(
        GalleryState.order,
        rx.grid(
            rx.foreach(SHOWN, keyed_card),
            columns={"initial": "1", "xs": "2", "md": "3", "lg": "4"},
            spacing="4",
            width="100%",
        ),
        rx.center(
            rx.text(
                rx.cond(
                    GalleryState.scanned,
                    "No images yet. Type a prompt and press Generate.",
                    "Loading the images...",
                ),
                color="var(--gray-10)",
            ),
            padding_y="4em",
            width="100%",
        ),
    )

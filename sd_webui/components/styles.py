"""Shared look: a dark page with sky-blue accents, in the spirit of the old web UI."""

ACCENT = "sky"
PAGE_MAX_WIDTH = "1400px"

NAVBAR = {
    "background_color": "var(--gray-2)",
    "border_bottom": "1px solid var(--gray-5)",
    "padding_x": ["1em", "2em"],
    "padding_y": "0.75em",
    "position": "sticky",
    "top": "0",
    "z_index": "10",
}

PAGE = {
    "max_width": PAGE_MAX_WIDTH,
    "margin_x": "auto",
    "padding_x": ["0.75em", "1.5em", "2em"],
    "padding_y": "1.5em",
    "width": "100%",
}

# Any pixel size scaled whole into a square (letterboxed on the card's gray), so the grid stays
# even.
THUMBNAIL = {
    "display": "block",
    "width": "100%",
    "aspect_ratio": "1 / 1",
    "object_fit": "contain",
    "background_color": "var(--gray-3)",
    "border_radius": "var(--radius-3)",
    "cursor": "zoom-in",
    "transition": "transform 120ms ease, box-shadow 120ms ease",
    "_hover": {
        "transform": "scale(1.015)",
        "box_shadow": "0 0 0 2px var(--sky-9)",
    },
}

FULL_IMAGE = {
    "width": "100%",
    "max_height": "70vh",
    "object_fit": "contain",
    "border_radius": "var(--radius-3)",
    "background_color": "var(--gray-3)",
}

# An image the safety checker held back: a neutral tile in the image's place, never a black square.
FILTERED_TILE = {
    **{key: THUMBNAIL[key] for key in ("width", "aspect_ratio", "border_radius", "cursor")},
    "background_color": "var(--gray-4)",
    "color": "var(--gray-11)",
    "text_align": "center",
    "padding": "1em",
}
FILTERED_JOB_THUMBNAIL = {"background_color": "var(--gray-4)", "color": "var(--gray-11)"}

JOB_THUMBNAIL = {
    "width": "48px",
    "height": "48px",
    "object_fit": "cover",
    "border_radius": "var(--radius-2)",
}

# A gallery image of one of this tab's finished jobs.
HIGHLIGHT_OUTLINE = "3px solid var(--green-9)"

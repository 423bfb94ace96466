""" "Your jobs": a card per job this tab submitted, from queued to done, failed or cancelled."""

import reflex as rx

from sd_webui.components import styles
from sd_webui.components.gallery_grid import BACKEND_ORIGIN
from sd_webui.job_state import JobCard, JobsState

STATE_COLORS = {
    "queued": "gray",
    "running": styles.ACCENT,
    "done": "green",
    "failed": "red",
    "cancelled": "orange",
}


def state_badge(card: JobCard) -> rx.Component:
    return rx.match(
        card.state,
        *[
            (state, rx.badge(state, color_scheme=color, variant="soft"))
            for state, color in STATE_COLORS.items()
        ],
        rx.badge(card.state),
    )


def queued_line(card: JobCard) -> rx.Component:
    return rx.cond(
        card.cancelling,
        rx.text("Cancelling… a worker will skip it.", size="2"),
        rx.text(
            rx.match(
                card.ahead,
                (-1, "Waiting in the queue."),
                (0, "Next in the queue."),
                (1, "1 job ahead of it."),
                card.ahead.to_string() + " jobs ahead of it.",
            ),
            size="2",
            color="var(--gray-11)",
        ),
    )


def running_lines(card: JobCard) -> rx.Component:
    return rx.vstack(
        rx.progress(value=card.percent, max=100, color_scheme=styles.ACCENT, width="100%"),
        rx.text(
            rx.cond(card.steps > 0, f"Step {card.step} of {card.steps}", "Starting"),
            rx.cond(card.image > 0, f" · image {card.image} of {card.count}", ""),
            rx.cond(card.worker != "", f" · {card.worker}", ""),
            rx.cond(card.cancelling, " · cancelling…", ""),
            size="2",
            color="var(--gray-11)",
        ),
        spacing="1",
        width="100%",
    )


def done_links(card: JobCard) -> rx.Component:
    return rx.hstack(
        rx.foreach(
            card.images,
            lambda path: rx.cond(
                card.filtered.contains(path),
                rx.center(
                    rx.icon("shield-alert", size=20),
                    title="Filtered by the safety checker",
                    style={**styles.JOB_THUMBNAIL, **styles.FILTERED_JOB_THUMBNAIL},
                    class_name="job-filtered",
                ),
                rx.link(
                    rx.image(src=BACKEND_ORIGIN + path, style=styles.JOB_THUMBNAIL),
                    href=BACKEND_ORIGIN + path,
                    is_external=True,
                ),
            ),
        ),
        spacing="2",
        wrap="wrap",
    )


def failed_lines(card: JobCard) -> rx.Component:
    return rx.hstack(
        rx.text(card.error, size="2", color="var(--red-11)", class_name="job-error"),
        rx.button(
            rx.icon("rotate-ccw", size=14),
            "Retry",
            size="1",
            variant="soft",
            on_click=JobsState.retry(card.id),
        ),
        justify="between",
        align="center",
        width="100%",
    )


def job_card(card: JobCard) -> rx.Component:
    can_cancel = ((card.state == "queued") | (card.state == "running")) & ~card.cancelling
    return rx.card(
        rx.vstack(
            rx.hstack(
                state_badge(card),
                rx.text(card.prompt, size="2", weight="medium", truncate=True, flex="1"),
                rx.cond(card.count > 1, rx.text(f"{card.count} images", size="1"), ""),
                rx.cond(
                    can_cancel,
                    rx.icon_button(
                        rx.icon("x", size=14),
                        size="1",
                        variant="ghost",
                        color_scheme="gray",
                        aria_label="Cancel",
                        title="Cancel this job",
                        on_click=JobsState.cancel(card.id),
                    ),
                ),
                align="center",
                spacing="2",
                width="100%",
            ),
            rx.match(
                card.state,
                ("queued", queued_line(card)),
                ("running", running_lines(card)),
                ("done", done_links(card)),
                ("failed", failed_lines(card)),
                rx.text("Cancelled: no images were made.", size="2", color="var(--gray-11)"),
            ),
            spacing="2",
            width="100%",
        ),
        custom_attrs={"data-job": card.id, "data-state": card.state},
        class_name="job-card",
        width="100%",
    )


def job_cards() -> rx.Component:
    return rx.cond(
        JobsState.jobs,
        rx.vstack(
            rx.heading("Your jobs", size="3", weight="medium"),
            rx.grid(
                rx.foreach(JobsState.jobs, job_card),
                columns={"initial": "1", "sm": "2", "lg": "3"},
                spacing="3",
                width="100%",
            ),
            spacing="3",
            width="100%",
            id="jobs",
        ),
    )

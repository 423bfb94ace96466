"""Reflex configuration: the app module is `sd_webui/sd_webui.py`."""

import reflex as rx

config = rx.Config(
    app_name="sd_webui",
    telemetry_enabled=False,
    show_built_with_reflex=False,
)

"""Reflex configuration: the app module is `sd_webui/sd_webui.py`."""

import reflex as rx

config = rx.Config(
    app_name="sd_webui",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    plugins=[
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(appearance="dark", accent_color="sky", gray_color="slate")
        )
    ],
    disable_plugins=[rx.plugins.SitemapPlugin],
)

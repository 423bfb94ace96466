"""Reflex configuration: the app module is `sd_webui/sd_webui.py`.

`REDIS_URL` (ours, see docs/contracts.md) is also Reflex's Redis: with it, each tab's state lives in
Redis and any replica can serve any tab. One backend process per replica: the folder watcher,
the live feed, the events subscriber and the embedded worker are per process, so more capacity
means more replicas (GRANIAN_WORKERS may still be set to run more processes in one replica).
"""

import os

import reflex as rx

os.environ.setdefault("GRANIAN_WORKERS", "1")

config = rx.Config(
    app_name="sd_webui",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    redis_url=os.environ.get("REDIS_URL", "").strip() or None,
    plugins=[
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(appearance="dark", accent_color="sky", gray_color="slate")
        )
    ],
    disable_plugins=[rx.plugins.SitemapPlugin],
)

"""Renders the page's icons and link preview into assets/ from their sources, with Chromium.

- assets/favicon.svg (the source, drawn by hand) -> favicon.ico (16, 32, 48 px) and
  apple-touch-icon.png (180 px), for browsers and phones that do not take an SVG icon;
- docs/screenshot-desktop.png (taken by `make screenshots`) -> og-image.png, the 1200x630
  preview chat apps and social sites show for a link to the page (Open Graph).

Chromium is launched as the browser tests launch it (`tests.conftest.chromium`). Run:
`make screenshots` runs it after retaking the screenshots; alone, from the repository's root,
`.venv/bin/python -m scripts.render_assets`.
"""

import base64
import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page

from tests.conftest import chromium

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
SCREENSHOT = ROOT / "docs" / "screenshot-desktop.png"
ICO_SIZES = [(16, 16), (32, 32), (48, 48)]
TOUCH_ICON_PX = 180
PREVIEW = {"width": 1200, "height": 630}


def data_url(path: Path, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(path.read_bytes()).decode()}"


def render_icon(page: Page, pixels: int) -> Image.Image:
    """favicon.svg rasterised at `pixels` square, on a transparent background."""
    page.set_viewport_size({"width": pixels, "height": pixels})
    page.set_content(
        '<body style="margin:0;background:transparent">'
        f'<img src="{data_url(ASSETS / "favicon.svg", "image/svg+xml")}"'
        f' width="{pixels}" height="{pixels}" style="display:block"></body>'
    )
    return Image.open(io.BytesIO(page.screenshot(omit_background=True)))


PREVIEW_HTML = """<body style="margin:0;width:1200px;height:630px;overflow:hidden;
  background:#0b1220;font-family:sans-serif;color:#e2e8f0;position:relative">
  <div style="position:absolute;left:64px;top:72px;width:470px">
    <img src="{icon}" width="96" height="96">
    <div style="font-size:64px;font-weight:700;margin-top:28px">sd-webui</div>
    <div style="font-size:30px;line-height:1.35;margin-top:18px;color:#94a3b8">
      Self-hosted Stable Diffusion: type a prompt, watch the images appear live.</div>
  </div>
  <img src="{screenshot}" style="position:absolute;left:580px;top:72px;width:820px;
    border-radius:14px;box-shadow:0 0 0 2px #38bdf8">
</body>"""


def render_preview(page: Page) -> bytes:
    page.set_viewport_size(PREVIEW)
    page.set_content(
        PREVIEW_HTML.format(
            icon=data_url(ASSETS / "favicon.svg", "image/svg+xml"),
            screenshot=data_url(SCREENSHOT, "image/png"),
        )
    )
    return page.screenshot()


def main() -> None:
    with chromium() as browser:
        page = browser.new_page()
        render_icon(page, 256).save(ASSETS / "favicon.ico", sizes=ICO_SIZES)
        render_icon(page, TOUCH_ICON_PX).save(ASSETS / "apple-touch-icon.png", optimize=True)
        (ASSETS / "og-image.png").write_bytes(render_preview(page))
    for name in ("favicon.ico", "apple-touch-icon.png", "og-image.png"):
        print(f"assets/{name}: {(ASSETS / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()

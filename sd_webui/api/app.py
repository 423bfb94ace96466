"""The backend's FastAPI app: the API's three doors, their error shapes, the body size limit
and the schema at `/api/openapi.json` (interactive at `/api/docs`). Reflex mounts the page's
own backend inside it (rx.App(api_transformer=...)), so routes added here come first."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sd_webui.api import a1111_api, jobs_api, openai_api
from sd_webui.api.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    render,
    validation_error_handler,
)
from sd_webui.settings import get_settings

API_PREFIXES = ("/api/", "/sdapi/", "/v1/", "/internal/")
DESCRIPTION = """Queue Stable Diffusion jobs and follow them (`/api/v1`), or use this service
as the backend of clients made for AUTOMATIC1111 (`/sdapi/v1`) or OpenAI (`/v1/images`).
With API_KEYS set, send `Authorization: Bearer <key>` (or Basic auth)."""


class BodyLimit:
    """API_MAX_BODY_BYTES for API requests: a larger body (declared or streamed) is answered
    413 before any route sees it. The page's own routes are not touched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        limit = get_settings().api_max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        chunks: list[bytes] = []
        size = int(declared) if declared.isdigit() else 0
        if size <= limit:
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away before sending its body
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit or not message.get("more_body", False):
                    break
        if size > limit:
            error = ApiError(
                413,
                f"the request body is over API_MAX_BODY_BYTES={limit} bytes",
                code="body_too_large",
            )
            await render(Request(scope), error)(scope, receive, send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_api() -> FastAPI:
    api = FastAPI(
        title="sd-webui",
        description=DESCRIPTION,
        version="1",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    api.include_router(jobs_api.router)
    api.include_router(a1111_api.router)
    api.include_router(a1111_api.internal)
    api.include_router(openai_api.router)
    api.add_exception_handler(ApiError, api_error_handler)
    api.add_exception_handler(RequestValidationError, validation_error_handler)
    api.add_exception_handler(StarletteHTTPException, http_error_handler)
    api.add_middleware(BodyLimit)
    return api

"""One error type for every door, rendered in the shape each door's clients read: OpenAI's
`{"error": {"message", "type", "param", "code"}}` under `/v1`, FastAPI's `{"detail"}` elsewhere
(which is also what AUTOMATIC1111, itself a FastAPI app, answers)."""

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sd_webui.jobs import InvalidJob

OPENAI_PREFIX = "/v1/"


class ApiError(Exception):
    """An answer other than success; `extra` goes into the JSON body beside the message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.field = status, message, code, field
        self.headers, self.extra = headers, extra


def invalid_field(error: InvalidJob, names: dict[str, str] | None = None) -> ApiError:
    """A job the contract refuses, as a 422 naming the field (in the caller's own `names`)."""
    field = (names or {}).get(error.field or "", error.field)
    message = str(error)
    if error.field and field != error.field:
        message = message.replace(error.field, field or "", 1)
    return ApiError(422, message, code="invalid_field", field=field)


def render(request: Request, error: ApiError) -> JSONResponse:
    status = error.status
    if request.url.path.startswith(OPENAI_PREFIX):
        status = 400 if status == 422 else status  # what OpenAI answers for bad input
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body: dict[str, Any] = {
            "error": {
                "message": error.message,
                "type": kind,
                "param": error.field,
                "code": error.code,
                **error.extra,
            }
        }
    else:
        body = {"detail": error.message, "code": error.code, **error.extra}
        if error.field is not None:
            body["field"] = error.field
    return JSONResponse(body, status_code=status, headers=error.headers)


async def api_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return render(request, error)


async def validation_error_handler(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 (its `detail` list names each field) everywhere but OpenAI's door."""
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    if not request.url.path.startswith(OPENAI_PREFIX):
        return JSONResponse({"detail": jsonable(problems)}, status_code=422)
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(part) for part in first["loc"] if part != "body") or None
    message = f"{field}: {first['msg']}" if field else str(first["msg"])
    return render(request, ApiError(422, message, code="invalid_value", field=field))


async def http_error_handler(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's own refusals (a body that is not JSON at all: 400) in the door's shape."""
    assert isinstance(error, StarletteHTTPException)
    message = str(error.detail)
    return render(request, ApiError(error.status_code, message, code=f"http_{error.status_code}"))


def jsonable(problems: Any) -> Any:
    """Validation errors without their `ctx` objects (an exception is not JSON), and with the
    input shown printable: a lone surrogate (`"\\ud800"` is valid JSON) cannot be UTF-8, and
    Python's decoder takes `Infinity` and `NaN`, which JSON cannot answer."""
    return printable(
        jsonable_encoder(
            [{key: value for key, value in problem.items() if key != "ctx"} for problem in problems]
        )
    )


def printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [printable(item) for item in value]
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    return value

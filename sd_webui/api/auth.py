"""API keys: `API_KEYS` and `API_KEYS_FILE` turn on `Authorization: Bearer <key>` and, for
AUTOMATIC1111 clients (its `--api-auth user:password`), Basic auth.

A key `alice:s3cret` is accepted as the Bearer token `alice:s3cret` and as Basic auth with user
`alice` and password `s3cret`; Basic auth whose password alone is a key is accepted too. Without
any key the API is open: the clients then send whatever their empty settings make (`Basic `,
base64 of "undefined"), so the header is ignored, and each client address counts as one caller.
"""

import base64
import binascii
import hmac
import logging
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sd_webui.api.errors import ApiError
from sd_webui.settings import Settings, get_settings

log = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sd-webui", Basic realm="sd-webui"'}


class ApiKeys:
    """The accepted keys; `caller()` says who a request is, or raises 401."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = [key for key in dict.fromkeys(keys) if key]

    @classmethod
    def from_settings(cls, settings: Settings) -> "ApiKeys":
        keys = [key.strip() for key in settings.api_keys.split(",")]
        if settings.api_keys_file is not None:
            lines = settings.api_keys_file.read_text().splitlines()
            keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
        return cls(keys)

    @property
    def open(self) -> bool:
        return not self.keys

    def _match(self, candidate: str) -> int | None:
        """The 1-based number of the key equal to `candidate` (compared in constant time)."""
        found = None
        for number, key in enumerate(self.keys, 1):
            if hmac.compare_digest(candidate.encode(), key.encode()):
                found = number
        return found

    def caller(self, request: Request) -> str:
        """`key <n>` for a request bearing the n-th key, the client's address when open."""
        if self.open:
            return f"address {request.client.host if request.client else 'unknown'}"
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        candidates = [value.strip()] if scheme.lower() == "bearer" else []
        if scheme.lower() == "basic":
            try:
                user_password = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                user_password = ""
            candidates = [user_password, user_password.partition(":")[2]]
        for candidate in candidates:
            if candidate and (number := self._match(candidate)) is not None:
                return f"key {number}"
        raise ApiError(
            401,
            "a valid API key is required: Authorization: Bearer <key> (or Basic auth)",
            code="invalid_api_key",
            headers=CHALLENGE,
        )


@lru_cache
def get_api_keys() -> ApiKeys:
    return ApiKeys.from_settings(get_settings())


def log_access() -> None:
    """At start-up: say whether the API asks for keys (an open API is a choice to see)."""
    keys = get_api_keys()
    if keys.open:
        log.warning("API: open to anyone who can reach it (set API_KEYS or API_KEYS_FILE)")
    else:
        log.info("API: %d keys accepted (Bearer or Basic auth)", len(keys.keys))


# Declares Bearer auth in the schema (the docs page's Authorize button); it never refuses by
# itself (FastAPI's HTTPBasic would, for the junk an open API must ignore): `caller` decides.
BEARER = HTTPBearer(auto_error=False, description="an API key (Basic auth works too)")


async def caller(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> str:
    """FastAPI dependency: who is calling (raises 401 for a missing or wrong key)."""
    return get_api_keys().caller(request)


Caller = Annotated[str, Depends(caller)]  # a route's `who: Caller` parameter

"""API keys: who a request is, from its Authorization header."""

import base64
from pathlib import Path

import pytest
from starlette.requests import Request

from sd_webui.api.auth import ApiKeys
from sd_webui.api.errors import ApiError
from sd_webui.settings import Settings


def request(authorization: str | None = None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    scope = {"type": "http", "headers": headers, "client": ("10.1.2.3", 5555), "path": "/"}
    return Request(scope)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_keys_from_the_variable_and_the_file(tmp_path: Path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# one key per line\nfile-key\n\n  spaced-key  \n")
    keys = ApiKeys.from_settings(Settings(api_keys=" a:b , c ,", api_keys_file=keys_file))
    assert keys.keys == ["a:b", "c", "file-key", "spaced-key"]
    assert ApiKeys.from_settings(Settings(api_keys_file="")).open


def test_bearer_and_basic_name_the_key_never_the_secret():
    keys = ApiKeys(["alice:s3cret", "token"])
    assert keys.caller(request("Bearer alice:s3cret")) == "key 1"
    assert keys.caller(request(basic("alice:s3cret"))) == "key 1"
    assert keys.caller(request("Bearer token")) == "key 2"
    assert keys.caller(request(basic("anyone:token"))) == "key 2"  # the password alone is a key


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        basic("alice:wrong"),
        "Basic !!!",
        "Basic " + "A" * 5,
        basic("s3cret"),
        "Token token",
        "bearer  ",
    ],
)
def test_anything_else_is_401_with_a_challenge(header: str | None):
    with pytest.raises(ApiError) as refused:
        ApiKeys(["alice:s3cret", "token"]).caller(request(header))
    assert refused.value.status == 401
    assert "Basic" in (refused.value.headers or {})["WWW-Authenticate"]


def test_open_means_per_address_whatever_the_header():
    keys = ApiKeys([""])
    assert keys.open
    for header in (None, "Basic ", basic("undefined"), "Bearer whatever"):
        assert keys.caller(request(header)) == "address 10.1.2.3"

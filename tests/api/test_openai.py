"""OpenAI's own Python SDK against the running app: `base_url` is all a user changes."""

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.api.conftest import TOKEN


@pytest.fixture
def sdk(api_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_url}/v1", api_key=TOKEN, max_retries=0)


def test_b64_json_images(sdk: openai.OpenAI):
    answer = sdk.images.generate(
        model="dall-e-2", prompt="a paper boat", n=2, size="256x256", response_format="b64_json"
    )
    assert len(answer.data) == 2
    for item in answer.data:
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.format == "PNG" and image.size == (256, 256)


def test_url_images_are_served(sdk: openai.OpenAI):
    answer = sdk.images.generate(prompt="a paper boat", size="256x320", response_format="url")
    (item,) = answer.data
    assert item.b64_json is None
    served = httpx.get(item.url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(served.content)).size == (256, 320)
    behind_tls = sdk.images.generate(
        prompt="a paper boat",
        size="256x256",
        response_format="url",
        extra_headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sd.example.com"},
    )
    assert behind_tls.data[0].url.startswith("https://sd.example.com/images/")


@pytest.mark.parametrize("size", ["300x300", "2048x2048", "big"])
def test_a_size_outside_the_contract_is_a_bad_request(sdk: openai.OpenAI, size: str):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.images.generate(prompt="a paper boat", size=size)  # type: ignore[arg-type]
    assert raised.value.body["param"] == "size"
    assert "size" in raised.value.body["message"]


def test_n_beyond_four_and_stop_words_are_bad_requests(sdk: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.images.generate(prompt="a paper boat", n=5)
    assert raised.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.images.generate(prompt="a nude boat")
    assert raised.value.body["param"] == "prompt"


def test_a_wrong_key_is_an_authentication_error(api_url: str):
    sdk = openai.OpenAI(base_url=f"{api_url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk.images.generate(prompt="a paper boat")
    assert raised.value.body["code"] == "invalid_api_key"

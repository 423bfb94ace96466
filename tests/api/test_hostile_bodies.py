"""Any body to any door: a clear 4xx (or the job queued), never a 500, nothing queued on refusal.

In process (the API's FastAPI app through Starlette's TestClient), on an embedded queue whose
worker never runs: what a request queued stays countable, and a synchronous request that was
accepted gives up after API_WAIT_S (504).
"""

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sd_webui import gallery, publishing
from sd_webui.api.callers import get_callers
from sd_webui.queue_stats import get_queue_stats
from sd_webui.sd_webui import backend
from sd_webui.settings import get_settings

ROUTES = ("/api/v1/jobs", "/sdapi/v1/txt2img", "/v1/images/generations", "/sdapi/v1/options")
FIELDS = (
    "prompt",
    "count",
    "n",
    "size",
    "seed",
    "width",
    "height",
    "steps",
    "cfg_scale",
    "guidance_scale",
    "batch_size",
    "n_iter",
    "negative_prompt",
    "in_parallel",
    "response_format",
    "model",
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
job_like = st.fixed_dictionaries(
    {"prompt": st.text(max_size=40) | values},
    optional={field: values for field in FIELDS if field != "prompt"},
)
bodies = (
    job_like.map(lambda body: json.dumps(body).encode())
    | values.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
    | st.sampled_from(
        [b"[" * 50_000, b'{"prompt": "a \\ud800"}', b'{"seed": 1' + b"0" * 5000 + b"}"]
    )
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    patch = pytest.MonkeyPatch()
    patch.setenv("IMAGES_DIR", str(tmp_path_factory.mktemp("hostile-images")))
    patch.setenv("API_WAIT_S", "0.05")
    patch.setenv("MAX_PENDING_PER_SESSION", "1000000")
    patch.delenv("AMQP_URL", raising=False)
    patch.delenv("API_KEYS", raising=False)
    get_settings.cache_clear()
    get_queue_stats.cache_clear()
    publishing.set_sink(None)
    patch.setattr(gallery, "_gallery", None)
    yield TestClient(backend, raise_server_exceptions=False)
    patch.undo()
    get_settings.cache_clear()
    get_queue_stats.cache_clear()
    publishing.set_sink(None)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(ROUTES), body=bodies)
def test_any_body_is_answered_without_a_server_error(client: TestClient, route: str, body: bytes):
    queue = publishing.get_embedded_queue()
    assert queue is not None
    waiting = queue.waiting()
    answer = client.post(route, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code in (200, 202, 400, 413, 422, 504), (answer.status_code, answer.text)
    answer.json()  # always JSON
    if answer.status_code in (400, 413, 422):
        assert queue.waiting() == waiting, "a refused request queued something"
    assert get_callers().pending("address testclient") == queue.waiting()

"""The jobs API with httpx: create, follow, cancel, page through the folder, keys and refusals."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from sd_webui.jobs import Job
from tests.api.conftest import PASSWORD, TOKEN, USER, basic
from tests.conftest import write_finished_job


def events(api: httpx.Client, job_id: str) -> Iterator[tuple[str, dict]]:
    """The job's Server-Sent Events as (event, data) until the stream ends."""
    with api.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield name or "", json.loads(line.removeprefix("data: "))


def test_create_and_follow_to_done(api: httpx.Client):
    created = api.post("/api/v1/jobs", json={"prompt": "a tram in the rain", "steps": 3})
    assert created.status_code == 202
    (job_id,) = created.json()["ids"]
    assert created.headers["location"] == f"/api/v1/jobs/{job_id}"
    seen = list(events(api, job_id))
    names = [name for name, _ in seen]
    assert names[-1] == "done" and "queued" not in names[1:]
    running = [data for name, data in seen if name == "running" and data["step"]]
    assert [data["step"] for data in running] == [1, 2, 3][-len(running) :]
    assert {data["worker"] for data in running} == {"embedded"}  # who runs it, at every step
    (url,) = seen[-1][1]["images"]
    assert httpx.get(url).headers["content-type"] == "image/png"
    assert api.get(created.headers["location"]).json()["state"] == "done"
    late = list(events(api, job_id))  # connecting after the end: the final state, then the end
    assert [name for name, _ in late] == ["done"]


def test_count_in_parallel_makes_one_job_per_image(api: httpx.Client):
    apart = api.post("/api/v1/jobs", json={"prompt": "two owls", "count": 2, "seed": 7})
    together = api.post(
        "/api/v1/jobs", json={"prompt": "two owls", "count": 2, "in_parallel": False, "seed": 7}
    )
    assert len(apart.json()["ids"]) == 2 and len(together.json()["ids"]) == 1
    for job_id in [*apart.json()["ids"], *together.json()["ids"]]:
        assert list(events(api, job_id))[-1][0] == "done"


def test_cancel_a_running_job(api: httpx.Client, api_images: Path):
    body = {"prompt": "a very slow comet", "steps": 50, "width": 1024, "height": 1024}
    (job_id,) = api.post("/api/v1/jobs", json=body).json()["ids"]
    stream = events(api, job_id)
    for name, data in stream:
        if name == "running" and data["step"]:
            break
    assert api.delete(f"/api/v1/jobs/{job_id}").status_code == 202
    final = [name for name, _ in stream][-1]
    assert final == "cancelled"
    assert not list(api_images.glob(f"{job_id}*"))
    assert api.delete(f"/api/v1/jobs/{job_id}").status_code == 409


def test_pages_over_the_whole_folder_while_images_land(api: httpx.Client, api_images: Path):
    ours = {f"{index:032x}" for index in range(1, 251)}
    for job_id in sorted(ours):
        write_finished_job(api_images, Job(id=job_id, prompt=f"picture {job_id[-3:]}"))
    deadline = time.monotonic() + 30
    while len(api.get("/api/v1/images", params={"limit": 100}).json()["images"]) < 100:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)  # the watcher's batch of the last renames
    landing = threading.Event()

    def land() -> None:
        for index in range(40):
            write_finished_job(api_images, Job(id=f"{0xF00000 + index:032x}", prompt="a newcomer"))
            time.sleep(0.02)
        landing.set()

    lander = threading.Thread(target=land)
    names: list[str] = []
    page = api.get("/api/v1/images", params={"limit": 37}).json()
    lander.start()
    while True:
        names += [item["name"] for item in page["images"]]
        if page["next"] is None:
            break
        page = api.get("/api/v1/images", params={"limit": 37, "before": page["next"]}).json()
    lander.join()
    assert len(names) == len(set(names)), "an image came twice"
    assert {f"{job_id}-1.png" for job_id in ours} <= set(names), "an image was skipped"
    item = next(item for item in page["images"] if item["job_id"] in ours) if page else None
    assert item is None or item["prompt"].startswith("picture")
    bad = api.get("/api/v1/images", params={"before": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["field"] == "before"
    assert api.get("/api/v1/images", params={"limit": 101}).status_code == 422


def test_keys(api_url: str):
    job = {"prompt": "a locked door", "steps": 1}
    without = httpx.post(f"{api_url}/api/v1/jobs", json=job)
    assert without.status_code == 401 and "Bearer" in without.headers["www-authenticate"]
    wrong = httpx.post(f"{api_url}/api/v1/jobs", json=job, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, basic(USER, PASSWORD)):
        assert httpx.get(f"{api_url}/api/v1/queue", headers=headers).status_code == 200


def test_refusals_name_the_field_and_queue_nothing(api: httpx.Client):
    before = api.get("/api/v1/images", params={"limit": 1}).json()["images"]
    cases = {
        "width": {"prompt": "a fox", "width": 300},
        "count": {"prompt": "a fox", "count": 5},
        "prompt": {"prompt": "a nude fox"},
        "steps": {"prompt": "a fox", "steps": "4"},
        "colour": {"prompt": "a fox", "colour": "red"},
    }
    for field, body in cases.items():
        answer = api.post("/api/v1/jobs", json=body)
        assert answer.status_code == 422, (field, answer.text)
        detail = answer.json()
        named = detail.get("field") or detail["detail"][0]["loc"][-1]
        assert named == field
    assert api.post("/api/v1/jobs", content=b"{not json").status_code == 422
    huge = api.post("/api/v1/jobs", json={"prompt": "a fox", "padding": "x" * 2_000_000})
    assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"
    time.sleep(0.5)
    assert api.get("/api/v1/images", params={"limit": 1}).json()["images"] == before
    assert api.get("/api/v1/jobs/0123").status_code == 404


def test_the_schema_is_valid_and_every_route_answers(api: httpx.Client, api_url: str):
    from openapi_spec_validator import validate

    schema = api.get("/api/openapi.json").json()
    validate(schema)
    unknown = "f" * 32
    for path, methods in schema["paths"].items():
        for method in methods:
            url = path.replace("{job_id}", unknown)
            body = {} if method in ("post", "put") else None
            answer = api.request(method, url, json=body)
            assert answer.status_code in (200, 202, 400, 404, 422, 501), (method, path, answer.text)
            if answer.status_code == 404:  # the route is there: the job is what is unknown
                assert answer.json()["code"] == "unknown_job", (method, path)
    assert "swagger-ui" in httpx.get(f"{api_url}/api/docs").text

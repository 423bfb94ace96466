"""A web replica's folder as a copy of the bucket, against a real S3 HTTP server (moto): the
newest images in the right order with the right ages, bounded, pruned as the bucket changes, a
`done` event passed on only once its files are here, and the bucket's lifecycle rule."""

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sd_webui.bucket import RETENTION_RULE, Bucket, StoredImage
from sd_webui.bucket_mirror import BucketMirror, newest_images
from sd_webui.events import EventHub, JobEvent
from sd_webui.gallery import GalleryIndex
from sd_webui.image_files import folder_keys
from sd_webui.jobs import Job
from sd_webui.settings import Settings
from tests.conftest import write_finished_job
from tests.s3_server import IAM_SETUP_REQUESTS, S3Server, client, user_with_policy

MINUTE_NS = 60 * 1_000_000_000


def bucket_settings(server: S3Server, bucket: str, folder: Path, **more: object) -> Settings:
    return Settings(amqp_url="amqp://unused", images_dir=folder, **server.settings(bucket), **more)


def upload_jobs(bucket: Bucket, staging: Path, count: int, first_mtime_ns: int) -> list[str]:
    """`count` one-image jobs written a minute apart from `first_mtime_ns` and uploaded in that
    order, as workers do (JSON, then PNG); returns the PNG names, oldest first."""
    staging.mkdir(exist_ok=True)
    names = []
    for index in range(count):
        job = Job(prompt=f"image {index}", count=1)
        write_finished_job(staging, job)
        files = [staging / f"{job.id}.json", staging / f"{job.id}-1.png"]
        when = first_mtime_ns + index * MINUTE_NS
        for path in files:
            os.utime(path, ns=(when, when))
        bucket.upload_job(files)
        names.append(files[1].name)
        time.sleep(0.02)  # uploads spread over a few seconds: LastModified ties and differs
    return names


def local_images(folder: Path) -> dict[str, int]:
    return {name: mtime for mtime, name in folder_keys(folder)}


def test_newest_images_keeps_every_tie_of_the_last_place() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    images = [StoredImage(f"{index}.png", at + timedelta(seconds=index // 3)) for index in range(9)]
    # seconds: 0,0,0 1,1,1 2,2,2; the newest 4 reach into second 1, so all of it comes along
    assert [image.name for image in newest_images(reversed(images), 4)] == [
        "8.png", "7.png", "6.png", "5.png", "4.png", "3.png"
    ]  # fmt: skip
    assert len(newest_images(images, 3)) == 3
    assert len(newest_images(images, 100)) == 9
    assert newest_images([], 5) == []


def test_a_fresh_folder_gets_the_newest_in_order_with_their_ages(
    s3_server: S3Server, bucket_name: str, tmp_path: Path
) -> None:
    """200 images uploaded over time; a fresh replica's comparison brings exactly the newest 50
    (S3_MIRROR_KEEP) with their sidecars, each with the mtime its worker gave it, and its
    gallery shows the newest 24 in the bucket's order."""
    folder = tmp_path / "images"
    settings = bucket_settings(s3_server, bucket_name, folder, s3_mirror_keep=50)
    bucket = Bucket(settings)
    start = time.time_ns() - 300 * MINUTE_NS
    uploaded = upload_jobs(bucket, tmp_path / "worker", 200, start)
    originals = {name: start + index * MINUTE_NS for index, name in enumerate(uploaded)}

    mirror = BucketMirror(settings, EventHub())
    folder.mkdir()
    mirror.compare()

    assert mirror.synced and mirror.last_error is None
    assert local_images(folder) == {name: originals[name] for name in uploaded[-50:]}
    sidecars = {path.name for path in folder.glob("*.json")}
    assert sidecars == {f"{name.removesuffix('-1.png')}.json" for name in uploaded[-50:]}
    gallery = GalleryIndex(folder, 24)
    gallery.scan()
    shown = [(entry.name, entry.mtime_ns) for entry in gallery.entries()]
    assert shown == [(name, originals[name]) for name in reversed(uploaded[-24:])]
    assert all(entry.info.prompt for entry in gallery.entries())  # sidecars read


def test_later_comparisons_add_the_new_drop_the_old_and_the_deleted(
    s3_server: S3Server, bucket_name: str, tmp_path: Path
) -> None:
    """New uploads come in, images pushed past S3_MIRROR_KEEP leave with their sidecars (and are
    not downloaded again), an object deleted from the bucket (expired) leaves the folder, and
    the files that stay are not rewritten."""
    folder = tmp_path / "images"
    folder.mkdir()
    settings = bucket_settings(s3_server, bucket_name, folder, s3_mirror_keep=30)
    bucket = Bucket(settings)
    start = time.time_ns() - 100 * MINUTE_NS
    first = upload_jobs(bucket, tmp_path / "worker", 40, start)
    mirror = BucketMirror(settings, EventHub())
    mirror.compare()
    assert set(local_images(folder)) == set(first[-30:])
    inodes = {name: (folder / name).stat().st_ino for name in first[-20:]}

    later = upload_jobs(bucket, tmp_path / "worker", 10, start + 40 * MINUTE_NS)
    client(s3_server).delete_object(Bucket=bucket_name, Key=first[-1])
    mirror.compare()

    expected = first[-31:-1] + later  # the newest 30 still in the bucket...
    expected = expected[-30:]
    assert set(local_images(folder)) == set(expected)
    assert {path.stem for path in folder.glob("*.json")} == {
        name.removesuffix("-1.png") for name in expected
    }
    for name, inode in inodes.items():
        if name in expected:
            assert (folder / name).stat().st_ino == inode
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]


def test_a_done_event_waits_for_its_files(
    s3_server: S3Server, bucket_name: str, tmp_path: Path
) -> None:
    """The subscriber's `done` reaches the hub only once the job's files are in the folder (so
    a page or an API caller that sees it can read them); other events pass at once."""
    folder = tmp_path / "images"
    folder.mkdir()
    settings = bucket_settings(s3_server, bucket_name, folder)
    bucket = Bucket(settings)
    staging = tmp_path / "worker"
    staging.mkdir()
    job = Job(prompt="a lighthouse", count=2)
    write_finished_job(staging, job)
    names = [f"{job.id}.json", f"{job.id}-1.png", f"{job.id}-2.png"]
    bucket.upload_job([staging / name for name in names])

    async def scenario() -> list[tuple[str, bool]]:
        hub = EventHub()
        mirror = BucketMirror(settings, hub)
        queue = hub.subscribe()
        mirror.publish(JobEvent(id=job.id, state="started"))
        mirror.publish(JobEvent(id=job.id, state="done", files=names))
        seen = []
        for _ in range(2):
            event = await asyncio.wait_for(queue.get(), 30)
            seen.append((event.state, all((folder / name).exists() for name in names)))
        return seen

    assert asyncio.run(scenario()) == [("started", False), ("done", True)]
    for name in names[1:]:
        with Image.open(folder / name) as image:
            image.load()
        assert (folder / name).stat().st_mtime_ns == (staging / name).stat().st_mtime_ns


def lifecycle_rules(s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    configuration = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    return {rule["ID"]: rule for rule in configuration["Rules"]}


def test_the_bucket_gets_its_retention_rule(
    s3_server: S3Server, bucket_name: str, tmp_path: Path
) -> None:
    """S3_RETENTION_DAYS becomes the bucket's lifecycle rule at the first comparison, beside the
    rules the bucket already had; 0 leaves the lifecycle alone."""
    folder = tmp_path / "images"
    folder.mkdir()
    s3 = client(s3_server)
    other = {
        "ID": "someone-elses",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 1},
    }
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket_name, LifecycleConfiguration={"Rules": [other]}
    )
    settings = bucket_settings(s3_server, bucket_name, folder, s3_retention_days=7)
    BucketMirror(settings, EventHub()).compare()
    rules = lifecycle_rules(s3, bucket_name)
    assert rules[RETENTION_RULE]["Expiration"] == {"Days": 7}
    assert rules[RETENTION_RULE]["Status"] == "Enabled"
    assert rules["someone-elses"]["Expiration"] == {"Days": 1}

    changed = settings.model_copy(update={"s3_retention_days": 30})
    BucketMirror(changed, EventHub()).compare()
    rules = lifecycle_rules(s3, bucket_name)
    assert rules[RETENTION_RULE]["Expiration"] == {"Days": 30} and len(rules) == 2

    s3.delete_bucket_lifecycle(Bucket=bucket_name)
    left_alone = settings.model_copy(update={"s3_retention_days": 0})
    BucketMirror(left_alone, EventHub()).compare()
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
        s3.get_bucket_lifecycle_configuration(Bucket=bucket_name)


def test_a_bucket_that_refuses_the_rule_is_still_mirrored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials without s3:PutLifecycleConfiguration (checked by the server, as AWS and
    MinIO check them): the rule is logged as refused, and the gallery is filled all the same."""
    server = S3Server(unchecked_requests=IAM_SETUP_REQUESTS)
    server.start()
    try:
        allowed = user_with_policy(
            server,
            [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:PutLifecycleConfiguration", "Resource": "*"},
            ],
        )
        folder = tmp_path / "images"
        settings = bucket_settings(server, "refusing-bucket", folder).model_copy(update=allowed)
        bucket = Bucket(settings)
        bucket.client.create_bucket(Bucket="refusing-bucket")
        [uploaded] = upload_jobs(bucket, tmp_path / "worker", 1, time.time_ns())
        folder.mkdir()
        mirror = BucketMirror(settings, EventHub())
        mirror.compare()
        assert mirror.synced and (folder / uploaded).exists()
        assert "refused its lifecycle rule" in caplog.text and "AccessDenied" in caplog.text
        with pytest.raises(bucket.client.exceptions.ClientError, match="AccessDenied"):
            bucket.set_retention(30)
    finally:
        server.stop()


def test_an_unreachable_bucket_is_reported_not_raised(tmp_path: Path) -> None:
    """The mirror's pass fails with one line for /status and /readyz, and keeps the folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "kept.png").write_bytes(b"not touched")
    server = S3Server()  # never started
    settings = bucket_settings(server, "images", folder, s3_mirror_interval_s=3600.0)
    mirror = BucketMirror(settings, EventHub())
    with pytest.raises(TimeoutError):  # the first pass fails, then it waits an hour
        asyncio.run(asyncio.wait_for(mirror.run(), 30))
    assert not mirror.synced
    assert mirror.last_error and "Could not connect" in mirror.last_error
    assert (folder / "kept.png").read_bytes() == b"not touched"

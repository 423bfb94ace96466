"""The worker pods' upload sidecar (deploy/k8s/base/upload-complete-jobs.sh), run for real.

A fake `mc` on PATH records every upload with the folder's listing at that moment and copies the
file into a fake bucket; jobs are written the way the worker writes them (temporary dot-names,
renamed into place JSON first), by the worker's own writer where the whole loop is exercised.
"""

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from manifests import K8S, tool
from PIL import Image

from sd_webui.jobs import Job
from sd_webui.metadata import FastSDSettings
from sd_webui.worker.outputs import temporary_name, write_job_files

SCRIPT = K8S / "base" / "upload-complete-jobs.sh"

FAKE_MC = r"""#!/usr/bin/env bash
# mc [--flags] cp SRC DST/ : log SRC, DST and the listing of SRC's folder, copy SRC to the bucket
args=()
for arg in "$@"; do [[ $arg == --* ]] || args+=("$arg"); done
[[ ${args[0]} == cp && ${#args[@]} == 3 ]] || { echo "fake mc: unexpected $*" >&2; exit 2; }
if [[ -e $FAKE_MC_FAIL_ONCE ]]; then rm -f "$FAKE_MC_FAIL_ONCE"; exit 1; fi
listing=$(cd "$(dirname "${args[1]}")" && ls -A | tr '\n' ' ')
printf '%s\t%s\t%s\n' "${args[1]##*/}" "${args[2]}" "$listing" >> "$FAKE_MC_LOG"
cp "${args[1]}" "$FAKE_BUCKET/"
"""


@dataclass
class Upload:
    name: str
    target: str
    folder_listing: set[str]


@dataclass
class Sidecar:
    """The script with a fake mc, an images folder and a bucket folder."""

    images: Path
    bucket: Path
    log: Path
    fail_once: Path
    env: dict[str, str]

    def run_once(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), "--once"], env=self.env, capture_output=True, text=True
        )

    def start(self, interval: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", str(SCRIPT)],
            env={**self.env, "SYNC_INTERVAL_S": interval},
            stderr=subprocess.PIPE,
            text=True,
        )

    def uploads(self) -> list[Upload]:
        if not self.log.exists():
            return []
        rows = [line.split("\t") for line in self.log.read_text().splitlines()]
        return [Upload(name, target, set(listing.split())) for name, target, listing in rows]


@pytest.fixture
def sidecar(tmp_path: Path) -> Sidecar:
    images, bucket, bin_dir = tmp_path / "images", tmp_path / "bucket", tmp_path / "bin"
    for folder in (images, bucket, bin_dir):
        folder.mkdir()
    (bin_dir / "mc").write_text(FAKE_MC)
    (bin_dir / "mc").chmod(0o755)
    log, fail_once = tmp_path / "mc.log", tmp_path / "fail-once"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "IMAGES_DIR": str(images),
        "MC_TARGET": "minio/images",
        "FAKE_MC_LOG": str(log),
        "FAKE_BUCKET": str(bucket),
        "FAKE_MC_FAIL_ONCE": str(fail_once),
    }
    return Sidecar(images, bucket, log, fail_once, env)


def settings_json(job_id: str, count: int) -> str:
    """The worker's real `<id>.json` for a job of `count` images."""
    job = Job(prompt="green dog", count=count, id=job_id)
    return FastSDSettings.for_job(job, model_id="tiny", seeds=list(range(count))).to_json()


def stage(folder: Path, job_id: str, count: int) -> dict[str, Path]:
    """Write a job's files under temporary names, as the worker does; returns final -> temp."""
    contents = {f"{job_id}.json": settings_json(job_id, count).encode()}
    contents |= {f"{job_id}-{k}.png": b"\x89PNG fake" for k in range(1, count + 1)}
    staged = {}
    for name, data in contents.items():
        staged[name] = folder / temporary_name(name)
        staged[name].write_bytes(data)
    return staged


def test_a_job_is_uploaded_only_once_every_image_is_there(sidecar: Sidecar) -> None:
    job_id = "a" * 32
    staged = stage(sidecar.images, job_id, 3)
    names = list(staged)
    for count_renamed in range(len(names)):  # JSON, then image 1, then image 2: not yet
        result = sidecar.run_once()
        assert result.returncode == 0, result.stderr
        assert sidecar.uploads() == []
        staged[names[count_renamed]].rename(sidecar.images / names[count_renamed])
    result = sidecar.run_once()  # the last image is in place: the job goes, JSON first
    assert result.returncode == 0, result.stderr
    uploads = sidecar.uploads()
    assert [u.name for u in uploads] == names
    assert {u.target for u in uploads} == {"minio/images/"}
    assert sorted(p.name for p in sidecar.bucket.iterdir()) == sorted(names)
    assert list(sidecar.images.iterdir()) == []  # sent, then removed locally
    assert sidecar.run_once().returncode == 0 and len(sidecar.uploads()) == len(names)


def test_temporary_files_and_unknown_jobs_are_never_sent(sidecar: Sidecar) -> None:
    stage(sidecar.images, "b" * 32, 2)  # nothing renamed yet
    (sidecar.images / "orphan-1.png").write_bytes(b"png without its json")
    (sidecar.images / "nocount.json").write_text(json.dumps({"prompt": "x"}, indent=4))
    (sidecar.images / "nocount-1.png").write_bytes(b"png")
    result = sidecar.run_once()
    assert result.returncode == 0, result.stderr
    assert sidecar.uploads() == []
    assert "no number_of_images" in result.stderr


def test_a_failed_upload_keeps_the_files_for_the_next_pass(sidecar: Sidecar) -> None:
    job_id = "c" * 32
    for name, temporary in stage(sidecar.images, job_id, 2).items():
        temporary.rename(sidecar.images / name)
    sidecar.fail_once.touch()
    failed = sidecar.run_once()
    assert failed.returncode == 1
    assert "retrying" in failed.stderr
    assert len(list(sidecar.images.iterdir())) == 3
    assert sidecar.run_once().returncode == 0
    assert sorted(p.name for p in sidecar.bucket.iterdir()) == [
        f"{job_id}-1.png",
        f"{job_id}-2.png",
        f"{job_id}.json",
    ]
    assert list(sidecar.images.iterdir()) == []


def stop(process: subprocess.Popen) -> float:
    """SIGTERM, as the kubelet sends once the worker has exited; returns the seconds it took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    return time.monotonic() - started


def assert_sent_whole(uploads: list[Upload], counts: dict[str, int]) -> None:
    for job_id, count in counts.items():
        files = [f"{job_id}.json", *(f"{job_id}-{k}.png" for k in range(1, count + 1))]
        sent = [u for u in uploads if u.name.startswith(job_id)]
        assert [u.name for u in sent] == files  # each file once, JSON first
        assert set(files) <= sent[0].folder_listing  # the whole job was there before any upload
    assert not [u for u in uploads if u.name.startswith(".") or u.name.endswith(".tmp")]


def test_the_running_sidecar_sends_the_workers_jobs_whole(sidecar: Sidecar) -> None:
    """The worker's own writer fills the folder while the sidecar polls every 50 ms."""
    process = sidecar.start(interval="0.05")
    try:
        assert "watching" in process.stderr.readline()
        counts = {f"{n:032x}": count for n, count in enumerate([4, 1, 2, 3, 4], start=1)}
        image = Image.new("RGB", (8, 8))
        for job_id, count in counts.items():
            settings = FastSDSettings.model_validate_json(settings_json(job_id, count))
            write_job_files(sidecar.images, job_id, settings, [image] * count)
        stop(process)
    finally:
        process.kill()
        process.wait()
    assert_sent_whole(sidecar.uploads(), counts)
    assert list(sidecar.images.iterdir()) == []


def test_sigterm_ends_the_wait_and_sends_the_last_job(sidecar: Sidecar) -> None:
    """A ScaledJob's pod: the job lands while the sidecar sleeps (60 s); SIGTERM makes the last
    pass send it and ends the sidecar at once, so the Job completes."""
    process = sidecar.start(interval="60")
    try:
        assert "watching" in process.stderr.readline()
        time.sleep(0.5)  # its first pass (an empty folder) is over: it sleeps now
        job_id = "f" * 32
        for name, temporary in stage(sidecar.images, job_id, 2).items():
            temporary.rename(sidecar.images / name)
        assert stop(process) < 5
    finally:
        process.kill()
        process.wait()
    assert_sent_whole(sidecar.uploads(), {job_id: 2})


def test_the_script_passes_shellcheck() -> None:
    result = subprocess.run(
        [tool("shellcheck") or "shellcheck", str(SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout

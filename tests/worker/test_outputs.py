"""Contract 2 on disk, without a broker: the order files land in, leftovers, seeds."""

import os
import uuid
from pathlib import Path

import pytest
from PIL import Image

from sd_webui.jobs import Job
from sd_webui.metadata import FastSDSettings
from sd_webui.worker.outputs import write_job_files
from sd_webui.worker.pipeline import job_seeds


def test_files_land_whole_json_first_and_leftovers_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = Job(prompt="green dog", count=2)
    other = uuid.uuid4().hex
    (tmp_path / f".{job.id}-1.png.0badc0de.tmp").write_bytes(b"half a png from a killed worker")
    (tmp_path / f".{other}.json.0badc0de.tmp").write_bytes(b"another job, still being written")
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(source: Path, target: Path) -> None:
        renames.append((Path(source).name, Path(target).name))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    record = FastSDSettings.for_job(job, model_id="demo", seeds=[5, 6])
    images = [Image.new("RGB", (64, 64), color) for color in ("red", "blue")]
    files = write_job_files(tmp_path, job.id, record, images)

    names = [f"{job.id}.json", f"{job.id}-1.png", f"{job.id}-2.png"]
    assert [path.name for path in files] == names
    assert [target for _, target in renames] == names
    for source, target in renames:
        assert source.startswith(f".{target}.") and source.endswith(".tmp")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [*names, f".{other}.json.0badc0de.tmp"]
    )
    assert Image.open(tmp_path / names[2]).info["parameters"] == record.a1111_parameters(1)


def test_seeds_are_consecutive_and_random_ones_are_recorded() -> None:
    assert job_seeds(Job(prompt="dog", count=3, seed=41)) == [41, 42, 43]
    first = job_seeds(Job(prompt="dog", count=4))
    second = job_seeds(Job(prompt="dog", count=4))
    assert first != second
    for seeds in (first, second):
        assert seeds == list(range(seeds[0], seeds[0] + 4))
        assert seeds[0] >= 0 and seeds[-1] < 2**32

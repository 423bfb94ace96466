"""Contract 2 on disk: `<id>.json` then `<id>-1.png` ... `<id>-N.png`, each appearing whole.

Every file is written and synced under a hidden temporary name (`.<name>.<random>.tmp`, which
the gallery ignores) and then renamed into place, JSON first. The slow part (PNG encoding, fsync)
happens before the first rename, so a worker killed at any point leaves either nothing visible
or the whole job. A redelivered job rewrites the same names with the same content (its seeds
come from its id), and one whose files are already complete is not generated again.
"""

import io
import os
from pathlib import Path

from PIL.Image import Image
from PIL.PngImagePlugin import PngInfo

from sd_webui.image_files import landed_job, temporary_name
from sd_webui.jobs import Job
from sd_webui.metadata import FastSDSettings


def _png_bytes(image: Image, parameters: str) -> bytes:
    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    """Make the renames themselves durable before the job is acknowledged."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_leftovers(folder: Path, job_id: str) -> None:
    """Delete temporary files an earlier, killed attempt at this job left behind."""
    for leftover in folder.glob(f".{job_id}[.-]*.tmp"):
        leftover.unlink(missing_ok=True)


def write_job_files(
    folder: Path, job_id: str, settings: FastSDSettings, images: list[Image]
) -> list[Path]:
    """Write the job's sidecar and images atomically; returns the final paths, JSON first."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder, job_id)
    contents = {f"{job_id}.json": settings.to_json().encode()}
    for index, image in enumerate(images):
        contents[f"{job_id}-{index + 1}.png"] = _png_bytes(image, settings.a1111_parameters(index))
    temporary = {name: folder / temporary_name(name) for name in contents}
    for name, data in contents.items():
        _write_synced(temporary[name], data)
    for name, path in temporary.items():
        os.replace(path, folder / name)
    _sync_folder(folder)
    return [folder / name for name in contents]


def completed_files(folder: Path, job: Job) -> list[Path] | None:
    """The job's files, JSON first, when an earlier attempt wrote them all (the acknowledgement
    was lost): a sidecar for this prompt and count, and every PNG whole. Else None."""
    landed = landed_job(folder, job.id)
    if landed is None:
        return None
    record, names = landed
    if record.get("prompt") != job.prompt or record.get("number_of_images") != job.count:
        return None
    return [folder / name for name in names]

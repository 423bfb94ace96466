"""The S3 bucket (S3_BUCKET) where a Kubernetes deployment keeps its images.

Workers write each job into their own pod's folder, upload it here (`<id>.json`, then the PNGs)
and only then acknowledge it; every web replica mirrors the newest images from here into its
own folder (sd_webui/bucket_mirror.py). Object names are the file names of contract 2, at the
bucket's root. Each object carries the time the worker wrote the file (`x-amz-meta-mtime-ns`),
because S3's LastModified is the upload time, in whole seconds: a mirror that set a file's
mtime from it would mix up the order of images uploaded in the same second.

Any S3 API works (AWS S3, MinIO, Ceph, R2, ...): boto3 with path-style addresses, and
checksums only where the API requires them, as many S3-compatible stores expect.
"""

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sd_webui.image_files import is_candidate, temporary_name
from sd_webui.jobs import Job
from sd_webui.settings import Settings

MTIME_METADATA = "mtime-ns"
RETENTION_RULE = "sd-webui-retention"
CONTENT_TYPES = {".png": "image/png", ".json": "application/json"}
# A call's own retries (botocore's standard mode, with backoff) before it raises.
CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 3, "mode": "standard"},
    s3={"addressing_style": "path"},
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)
# What a failed call raises: the endpoint unreachable or slow, or an error answer.
BucketError = (BotoCoreError, ClientError)


@dataclass(frozen=True)
class StoredImage:
    """A PNG in the bucket as a listing shows it."""

    name: str
    last_modified: datetime


def error_text(error: Exception) -> str:
    """One line for a log or a reason: the S3 error code and message, or the client's error."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', error)}"
    return f"{type(error).__name__}: {error}"


def mtime_ns(stored: dict[str, Any]) -> int:
    """When the worker wrote the file: its metadata, else the object's LastModified."""
    value = stored.get("Metadata", {}).get(MTIME_METADATA, "")
    if value.isdigit():
        return int(value)
    return int(stored["LastModified"].timestamp() * 1_000_000_000)


class Bucket:
    """One bucket, through one thread-safe boto3 client; every call blocks (run it off the loop)
    and raises one of BucketError when it fails."""

    def __init__(self, settings: Settings) -> None:
        if settings.s3_bucket is None:
            raise ValueError("a Bucket needs S3_BUCKET")
        self.name = settings.s3_bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=CLIENT_CONFIG,
        )

    def __str__(self) -> str:
        return f"s3://{self.name} at {self.client.meta.endpoint_url}"

    def check(self) -> None:
        """That the bucket exists and these credentials reach it (a start-up check)."""
        self.client.head_bucket(Bucket=self.name)

    def upload(self, path: Path) -> None:
        """PUT one file (whole: an object appears only once all of it arrived)."""
        self.client.put_object(
            Bucket=self.name,
            Key=path.name,
            Body=path.read_bytes(),
            ContentType=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
            Metadata={MTIME_METADATA: str(path.stat().st_mtime_ns)},
        )

    def upload_job(self, files: list[Path]) -> None:
        """A job's files in the order given (its JSON first): once the last PUT returns, the job
        is in the bucket, and a listing never shows an image before its sidecar."""
        for path in files:
            self.upload(path)

    def completed_job(self, job: Job) -> list[str] | None:
        """The job's file names, JSON first, when the bucket holds all of them for this prompt
        and count (an earlier attempt uploaded the job and its acknowledgement was lost)."""
        try:
            stored = self.client.get_object(Bucket=self.name, Key=f"{job.id}.json")
            record = json.loads(stored["Body"].read())
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        if record.get("prompt") != job.prompt or record.get("number_of_images") != job.count:
            return None
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=f"{job.id}-")
        present = {item["Key"] for item in listed.get("Contents", [])}
        pngs = [f"{job.id}-{index + 1}.png" for index in range(job.count)]
        return [f"{job.id}.json", *pngs] if present.issuperset(pngs) else None

    def images(self) -> Iterator[StoredImage]:
        """Every final PNG of the bucket, in key order, a page of 1000 at a time."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        for page in pages:
            for item in page.get("Contents", []):
                if "/" not in item["Key"] and is_candidate(item["Key"]):
                    yield StoredImage(item["Key"], item["LastModified"])

    def download(self, name: str, folder: Path) -> bool:
        """Write object `name` into `folder` whole (under a hidden temporary name, then renamed)
        with its mtime set to when the worker wrote it; False when there is no such object."""
        try:
            stored = self.client.get_object(Bucket=self.name, Key=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise
        temporary = folder / temporary_name(name)
        try:
            temporary.write_bytes(stored["Body"].read())
            when = mtime_ns(stored)
            os.utime(temporary, ns=(when, when))
            os.replace(temporary, folder / name)
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def set_retention(self, days: int) -> None:
        """Expire every object `days` after its upload: this project's rule (by its id) added or
        replaced, the bucket's other lifecycle rules kept."""
        try:
            current = self.client.get_bucket_lifecycle_configuration(Bucket=self.name)
            rules = [rule for rule in current["Rules"] if rule.get("ID") != RETENTION_RULE]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        rules.append(
            {
                "ID": RETENTION_RULE,
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "Expiration": {"Days": days},
            }
        )
        self.client.put_bucket_lifecycle_configuration(
            Bucket=self.name, LifecycleConfiguration={"Rules": rules}
        )

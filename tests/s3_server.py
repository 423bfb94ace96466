"""A real S3 HTTP server for the tests: moto's standalone server (`moto_server`, in memory), on a
free port, which a test may stop and start again on the same port (an endpoint that goes down
and comes back). The tests talk to it over HTTP with boto3, as to MinIO or AWS."""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, unavailable, wait_listening

START_TIMEOUT_S = 30.0
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "sd-webui-test", "sd-webui-test-secret"


def moto_server() -> str:
    """The `moto_server` command of this interpreter's environment (moto[server])."""
    command = Path(sys.executable).parent / "moto_server"
    if not command.exists():
        unavailable("moto_server is not installed (pip install 'moto[server]')")
    return str(command)


class S3Server:
    """`unchecked_requests`: None, every request is allowed; N, the first N are, and from then
    on moto checks each against the IAM policy of its access key, as AWS does."""

    def __init__(self, unchecked_requests: int | None = None) -> None:
        self.command = moto_server()
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.env = dict(os.environ)
        if unchecked_requests is not None:
            self.env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(unchecked_requests)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (empty: moto keeps nothing) once it accepts connections."""
        self.process = subprocess.Popen(
            [self.command, "-H", "127.0.0.1", "-p", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.process, self.port, "moto_server", START_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def settings(self, bucket: str) -> dict[str, str]:
        """The Settings fields (and, upper-cased, environment) of `bucket` on this server."""
        return {
            "s3_bucket": bucket,
            "s3_endpoint": self.endpoint,
            "s3_access_key_id": ACCESS_KEY_ID,
            "s3_secret_access_key": SECRET_ACCESS_KEY,
        }


def new_bucket_name() -> str:
    return f"images-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3 server for the whole run; each test makes buckets of its own."""
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket_name(s3_server: S3Server) -> str:
    """A new, empty bucket on the shared S3 server."""
    name = new_bucket_name()
    client(s3_server).create_bucket(Bucket=name)
    return name


def client(server: S3Server):
    """A plain boto3 client of the server: the tests' own view of the bucket."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


# The IAM requests `user_with_policy` makes, before moto checks requests.
IAM_SETUP_REQUESTS = 3


def user_with_policy(server: S3Server, statements: list[dict]) -> dict[str, str]:
    """A new IAM user of `server` (started with IAM_SETUP_REQUESTS unchecked requests) allowed
    what `statements` say; returns its credentials as Settings fields."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    name = f"user-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName=name, PolicyName="sd-webui", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"s3_access_key_id": key["AccessKeyId"], "s3_secret_access_key": key["SecretAccessKey"]}

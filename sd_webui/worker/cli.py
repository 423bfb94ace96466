"""`sd-worker`: check the configuration, load the model once, then consume until stopped.

Exit status: 0 after SIGTERM with the job in hand finished (or after one job with
EXIT_AFTER_ONE_TASK=1); 1 when the model cannot be loaded, S3_BUCKET cannot be reached or
SHUTDOWN_GRACE_S ran out; 2 for a configuration error. Every failure to start is one log line
saying what to set.
"""

import asyncio
import logging
import sys
from typing import NoReturn

from pydantic import ValidationError

from sd_webui.bucket import Bucket, BucketError, error_text
from sd_webui.logs import FORMAT
from sd_webui.settings import get_settings
from sd_webui.worker.consumer import Consumer
from sd_webui.worker.health import serve_health
from sd_webui.worker.model_source import ModelUnavailable, locate_model

log = logging.getLogger("sd_webui.worker")


def _fail(message: str, status: int) -> NoReturn:
    log.error(message)
    sys.exit(status)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    try:
        settings = get_settings()
    except ValidationError as error:
        first = error.errors()[0]
        _fail(f"invalid configuration: {'.'.join(map(str, first['loc']))}: {first['msg']}", 2)
    if settings.amqp_url is None:
        _fail("sd-worker needs AMQP_URL (without it the web app runs its own worker)", 2)
    if settings.s3_bucket is not None:
        bucket = Bucket(settings)
        try:
            bucket.check()
        except BucketError as error:
            _fail(
                f"S3_BUCKET: {bucket} cannot be reached ({error_text(error)}); check "
                "S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY",
                1,
            )
    consumer: Consumer | None = None
    if settings.metrics_port is not None:
        # `consumer` is read when a probe comes, so /readyz turns 200 once it is consuming.
        serve_health(
            settings.metrics_port,
            ready=lambda: consumer is not None and consumer.is_ready(),
            stalled=lambda: None if consumer is None else consumer.stalled(),
        )
    try:
        source = locate_model(settings.sd_model)
        # torch and diffusers take seconds to import: a wrong SD_MODEL is reported before that.
        from sd_webui.worker.runner import JobRunner

        runner = JobRunner.load(settings, source)
    except ModelUnavailable as error:
        _fail(str(error), 1)
    consumer = Consumer(settings, runner)
    sys.exit(asyncio.run(consumer.run()))

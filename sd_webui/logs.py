"""One log format for the web app and the worker: a line per job must show in both."""

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send this package's records to stderr at `level`, once, whoever configured the root.

    The worker owns its process; inside the web app, Reflex decides the root logger, so the
    package gets a handler of its own instead of relying on the root's.
    """
    logger = logging.getLogger("sd_webui")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)

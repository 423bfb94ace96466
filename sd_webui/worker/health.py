"""The worker's HTTP endpoints on METRICS_PORT: Prometheus metrics and the Kubernetes probes.

- `/metrics`: every series of sd_webui.worker.metrics, for Prometheus.
- `/healthz`: liveness. 200 while the worker makes progress (also during a long model load);
  503 with the reason once it holds a delivery with no step and no settle for STALL_TIMEOUT_S,
  so that Kubernetes restarts it and the delivery goes to another worker.
- `/readyz`: 200 only once the model is loaded and the consumer is consuming, else 503.

A stdlib server in a daemon thread: it answers even while a job holds the CPU or the event loop
is busy, and needs nothing from the worker but a `ready()` and a `stalled()` callable.
"""

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class HealthServer(ThreadingHTTPServer):
    def __init__(
        self, port: int, ready: Callable[[], bool], stalled: Callable[[], str | None]
    ) -> None:
        super().__init__(("", port), _Handler)
        self.ready = ready
        self.stalled = stalled


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            if stalled := self.server.stalled():
                self._reply(503, f"stalled: {stalled}\n".encode())
            else:
                self._reply(200, b"ok\n")
        elif self.path == "/readyz":
            ready = self.server.ready()
            self._reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        else:
            self._reply(404, b"not found\n")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Probes come every few seconds; they are not worth a log line each."""


def serve_health(
    port: int, ready: Callable[[], bool], stalled: Callable[[], str | None]
) -> HealthServer:
    """Start the endpoints on `port` (all interfaces) in a daemon thread."""
    server = HealthServer(port, ready, stalled)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server

"""The trainer's HTTP views: ``/health``, ``/ready`` and ``/metrics`` (Prometheus).

The same probe paths as the worker's, so Kubernetes treats both alike: ``/health``
answers while the process runs; ``/ready`` once the trainer holds a model to fine-tune
and its consumer is running (503 before, and again while it stops).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve_trainer_views(
    port: int, bind: str, registry: CollectorRegistry, ready: Callable[[], bool]
) -> ThreadingHTTPServer:
    """Start the views in a daemon thread; ``server.shutdown()`` stops them.

    Args:
        port: TCP port (0 picks a free one: ``server.server_address[1]``).
        bind: address to bind.
        registry: the trainer's metrics.
        ready: whether the trainer can do its job now.
    """

    class Views(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/health":
                self._answer(200, orjson.dumps({"status": "ok"}), "application/json")
            elif path == "/ready":
                is_ready = bool(ready())
                body = orjson.dumps({"ready": is_ready})
                self._answer(200 if is_ready else 503, body, "application/json")
            else:
                self._answer(404, orjson.dumps({"error": "not found"}), "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would flood the log

    server = ThreadingHTTPServer((bind, port), Views)
    threading.Thread(target=server.serve_forever, name="trainer-http", daemon=True).start()
    return server

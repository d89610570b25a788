"""A small HTTP/1.1 server on its own thread: the base of the in-test receivers
(:mod:`simulators.webhook`, :mod:`simulators.otlp`)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, value: Any) -> None:
        """200 with ``value`` as JSON: what a receiver got, for a test in another
        process or container to read (``GET``)."""
        self.reply(200, json.dumps(value, default=str).encode(), "application/json")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read what was received, not an access log


class BackgroundHttpServer:
    """``with Subclass() as server: server.url``; handlers run on worker threads."""

    def __init__(self, handler: type[QuietHandler], host: str = "127.0.0.1", port: int = 0):
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

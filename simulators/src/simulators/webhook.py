"""A webhook receiver that records what it is sent (alert notifications in the demo and e2e).

Speaks plain HTTP/1.1 on its own thread; every POST body is parsed as JSON when it
can be and kept with its path and headers. Answers 200, or ``fail_next`` times 503
first, so a test can watch the sender retry. ``GET /deliveries`` returns what it got
(path, headers, body), for a test that runs it in a container.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from simulators.http_thread import BackgroundHttpServer, QuietHandler


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = field(repr=False)


class WebhookSink(BackgroundHttpServer):
    """``with WebhookSink() as sink: ... sink.url ... sink.deliveries``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._deliveries: list[Delivery] = []
        self.fail_next = 0
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.read_body()
                self.reply(sink._record(self.path, dict(self.headers.items()), raw))

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/deliveries":
                    self.reply(404)
                    return
                self.reply_json([
                    {"path": d.path, "headers": d.headers, "body": d.body}
                    for d in sink.deliveries
                ])  # fmt: skip

        super().__init__(Handler, host, port)

    def _record(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503
            self._deliveries.append(Delivery(path, headers, body, raw))
        return 200

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every Alertmanager-style payload received, in arrival order."""
        found: list[dict[str, Any]] = []
        for delivery in self.deliveries:
            if isinstance(delivery.body, dict):
                found.extend(a for a in delivery.body.get("alerts", []) if isinstance(a, dict))
        return found


def main(argv: list[str] | None = None) -> None:
    """``python -m simulators.webhook --port 8090``: print every notification received."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m simulators.webhook", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    with WebhookSink(args.host, args.port) as sink:
        print(json.dumps({"url": sink.url}), flush=True)
        shown = 0
        try:
            while True:
                for delivery in sink.deliveries[shown:]:
                    print(json.dumps({"path": delivery.path, "body": delivery.body}), flush=True)
                    shown += 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

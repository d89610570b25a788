"""An HTTP request driven by hand over ASGI, to see how much of its body an app reads."""

from __future__ import annotations


class Exchange:
    """A ``POST /notes`` with a JSON content type: the body in ``chunks``, the reads counted."""

    def __init__(self, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
        self.chunks = chunks
        self.reads = 0
        self.scope = {
            "type": "http",
            "method": "POST",
            "path": "/notes",
            "raw_path": b"/notes",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), *headers],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("test", 80),
            "client": ("test", 1),
            "root_path": "",
        }
        self.sent: list[dict[str, object]] = []

    async def receive(self) -> dict[str, object]:
        self.reads += 1
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> object:
        return self.sent[0]["status"]

"""A fake Gmail REST API and OAuth token endpoint, over real HTTP.

What gmail_fetch uses, in Google's wire format:

- ``POST /token``: the OAuth refresh-token grant (``invalid_grant`` once revoked);
- ``GET /gmail/v1/users/{userId}/profile``, ``.../messages`` (paging, labelIds),
  ``.../messages/{id}`` (``format``, ``metadataHeaders``), ``.../history``
  (``startHistoryId``, 404 once the history is too old); ``fields=`` on all;
- ``POST /batch/gmail/v1`` (and ``/batch``): ``multipart/mixed`` of
  ``application/http`` parts, at most 100, each answered (or failed) on its own.

Faults and quirks are switched on from the test's thread (:mod:`simulators.gmail_faults`):
latency per HTTP request, errors on individual batch parts (429, 403
rateLimitExceeded/userRateLimitExceeded, 5xx) or on whole requests in each of
Google's error shapes (:mod:`simulators.gmail_errors`), access tokens expiring
server-side, refresh tokens revoked (before or during a job), history expiring,
messages deleted between listing and fetching, short and empty list pages.
Every request is counted (:attr:`GmailFake.counts`).

Run standalone for the demo: ``python -m simulators.gmail --port 8085
--user alice@example.com=500`` prints the refresh token of each user.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import threading
import time
import urllib.parse
from email.message import Message
from email.parser import BytesParser
from typing import Any, cast

import uvicorn
from fastapi import FastAPI, Request, Response

from simulators.gmail_errors import STATUS_TEXT, Reply, google_error
from simulators.gmail_fake import MAX_BATCH_PARTS, GmailFake

__all__ = ["GmailFake", "GmailServer", "create_app", "main", "parse_batch", "render_batch"]

# -- batch wire format ----------------------------------------------------------------------


def parse_batch(content_type: str, body: bytes) -> list[tuple[str, str, str, dict[str, str]]]:
    """``(content_id, method, target, headers)`` of each ``application/http`` part."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("batch body is not multipart/mixed")
    parts = []
    for part in cast(list[Message], message.get_payload()):
        payload = part.get_payload(decode=False)
        if not isinstance(payload, str):
            raise ValueError("nested multipart is not supported")
        lines = payload.replace("\r\n", "\n").split("\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((part.get("Content-ID", ""), method, target, headers))
    return parts


def render_batch(replies: list[tuple[str, Reply]], boundary: str) -> bytes:
    out = []
    for content_id, (status, body) in replies:
        text = json.dumps(body)
        reason = STATUS_TEXT.get(status, ("OK", ""))[0] if status != 200 else "OK"
        inner = content_id.strip("<>")
        out.append(
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            f"Content-ID: <response-{inner}>\r\n\r\n"
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\n"
            f"Content-Length: {len(text.encode())}\r\n\r\n{text}\r\n"
        )
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode()


# -- the HTTP app -----------------------------------------------------------------------------


def _json(reply: Reply) -> Response:
    return Response(json.dumps(reply[1]), status_code=reply[0], media_type="application/json")


def create_app(fake: GmailFake) -> FastAPI:
    app = FastAPI(title="fake Gmail API")

    @app.middleware("http")
    async def latency_and_faults(request: Request, call_next: Any) -> Response:
        with fake.lock:
            fake.counts["http"] += 1
        if fake.latency:
            await asyncio.sleep(fake.latency)
        fault = fake.request_fault(request.url.path)
        if fault is not None:
            return _json(fault)
        response: Response = await call_next(request)
        return response

    @app.post("/token")
    async def token(request: Request) -> Response:
        with fake.lock:
            fake.counts["token"] += 1
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        response = _json(fake.token(form))
        # google-api-python-client refreshes through a throwaway httplib2.Http it never
        # closes; closing from this side keeps its socket from lingering until GC
        response.headers["Connection"] = "close"
        return response

    @app.get("/gmail/v1/{path:path}")
    async def api(request: Request, path: str) -> Response:
        query = urllib.parse.parse_qs(request.url.query)
        auth = request.headers.get("authorization")
        return _json(fake.api("GET", f"/gmail/v1/{path}", query, auth))

    async def batch(request: Request) -> Response:
        with fake.lock:
            fake.counts["batch"] += 1
        try:
            parts = parse_batch(request.headers.get("content-type", ""), await request.body())
        except ValueError as exc:
            return _json(google_error(400, f"Invalid batch request: {exc}", "badRequest"))
        if len(parts) > MAX_BATCH_PARTS:
            return _json(google_error(400, "Too many requests in batch.", "badRequest"))
        replies = [(part[0], fake.batch_part(*part[1:])) for part in parts]
        if fake.reverse_batch_parts:
            replies.reverse()
        boundary = f"batch_{secrets.token_hex(8)}"
        return Response(
            render_batch(replies, boundary), media_type=f"multipart/mixed; boundary={boundary}"
        )

    app.add_api_route("/batch/gmail/v1", batch, methods=["POST"])
    app.add_api_route("/batch", batch, methods=["POST"])
    return app


class GmailServer:
    """The fake served by uvicorn on 127.0.0.1 in a background thread (port chosen by the OS)."""

    def __init__(
        self, fake: GmailFake | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.fake = fake or GmailFake()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            create_app(self.fake),
            log_level="warning",
            lifespan="off",
            ws="none",
            access_log=False,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="fake-gmail", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> GmailServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake Gmail server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> GmailServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.gmail", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--user", action="append", default=[], help="EMAIL=MESSAGES, repeatable")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SWITCH=VALUE",
        help="a scenario switch, e.g. list_page_cap=7, empty_list_pages=2, "
        "reverse_batch_parts=true, future_history_is_404=false; repeatable",
    )
    args = parser.parse_args(argv)
    fake = GmailFake(latency=args.latency_ms / 1000)
    for spec in args.set:
        try:
            fake.set_switch(spec)
        except ValueError as exc:
            parser.error(str(exc))
    for spec in args.user or ["alice@example.com=500"]:
        email, _, count = spec.partition("=")
        token = fake.add_user(email, int(count or 500))
        print(json.dumps({"email": email, "refresh_token": token}), flush=True)
    server = GmailServer(fake, args.host, args.port).start()
    print(json.dumps({"url": server.url, "token_uri": server.token_uri}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

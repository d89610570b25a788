"""The fake Gmail API over real HTTP, driven by google-api-python-client as the service does."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from simulators.gmail import GmailFake, GmailServer, parse_batch, render_batch
from simulators.gmail_errors import google_error
from simulators.gmail_mailbox import parse_fields, select_fields


@pytest.fixture
def server() -> Iterator[GmailServer]:
    with GmailServer() as srv:
        yield srv


def call(
    srv: GmailServer, path: str, token: str | None, method: str = "GET", data: bytes | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(srv.url + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        exc.close()
        return exc.code, body


def access_token(srv: GmailServer, refresh: str) -> tuple[int, Any]:
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh})
    return call(srv, "/token", None, "POST", form.encode())


def test_refresh_grant_then_revocation(server: GmailServer) -> None:
    refresh = server.fake.add_user("a@example.com", 3)
    status, body = access_token(server, refresh)
    assert status == 200
    assert body["access_token"].startswith("ya29.")
    assert body["expires_in"] == 3600
    server.fake.revoke(refresh)
    status, body = access_token(server, refresh)
    assert (status, body["error"]) == (400, "invalid_grant")


def test_listing_pages_newest_first_and_honours_fields(server: GmailServer) -> None:
    token = access_token(server, server.fake.add_user("a@example.com", 25))[1]["access_token"]
    status, first = call(server, "/gmail/v1/users/me/messages?maxResults=10", token)
    assert status == 200
    assert len(first["messages"]) == 10
    assert first["resultSizeEstimate"] == 25
    _, last = call(server, "/gmail/v1/users/me/messages?maxResults=10&pageToken=20", token)
    assert "nextPageToken" not in last
    assert len(last["messages"]) == 5
    mailbox = server.fake.mailbox("a@example.com")
    newest = max(mailbox.messages.values(), key=lambda m: m.internal_date)
    assert first["messages"][0]["id"] == newest.id
    _, got = call(
        server,
        f"/gmail/v1/users/me/messages/{newest.id}?format=metadata&metadataHeaders=Subject"
        "&fields=id,payload/headers",
        token,
    )
    assert got == {"id": newest.id, "payload": {"headers": [newest.headers[2]]}}


def test_errors_in_googles_format(server: GmailServer) -> None:
    token = access_token(server, server.fake.add_user("a@example.com", 1))[1]["access_token"]
    status, body = call(server, "/gmail/v1/users/me/messages", "ya29.wrong")
    assert status == 401
    assert body["error"]["errors"][0]["reason"] == "authError"
    status, body = call(server, "/gmail/v1/users/me/history?startHistoryId=1", token)
    assert status == 200
    server.fake.mailbox("a@example.com").expire_history()
    status, body = call(server, "/gmail/v1/users/me/history?startHistoryId=1", token)
    assert status == 404
    server.fake.fail_next_requests(1, status=503, path="/messages")
    assert call(server, "/gmail/v1/users/me/messages", token)[0] == 503
    assert call(server, "/gmail/v1/users/me/messages", token)[0] == 200


def test_history_lists_changes_since_an_id(server: GmailServer) -> None:
    token = access_token(server, server.fake.add_user("a@example.com", 2))[1]["access_token"]
    mailbox = server.fake.mailbox("a@example.com")
    start = mailbox.history_id
    added = mailbox.add_message()
    mailbox.delete_message(added.id)
    _, body = call(server, f"/gmail/v1/users/me/history?startHistoryId={start}", token)
    kinds = [next(k for k in record if k not in ("id", "messages")) for record in body["history"]]
    assert kinds == ["messagesAdded", "messagesDeleted"]
    assert body["historyId"] == str(mailbox.history_id)


def test_batch_wire_format_round_trips() -> None:
    body = (
        b"--b1\r\nContent-Type: application/http\r\nContent-ID: <x + 1>\r\n\r\n"
        b"GET /gmail/v1/users/me/messages/abc?format=minimal HTTP/1.1\r\n"
        b"authorization: Bearer t\r\n\r\n\r\n--b1--\r\n"
    )
    parts = parse_batch('multipart/mixed; boundary="b1"', body)
    assert parts == [
        ("<x + 1>", "GET", "/gmail/v1/users/me/messages/abc?format=minimal",
         {"authorization": "Bearer t"})
    ]  # fmt: skip
    rendered = render_batch([("<x + 1>", (429, {"error": {}}))], "zz").decode()
    assert "Content-ID: <response-x + 1>" in rendered
    assert "HTTP/1.1 429 Too Many Requests\r\n" in rendered


def test_partial_response_selector() -> None:
    tree = parse_fields("messages(id,threadId),nextPageToken,payload/headers")
    value = {
        "messages": [{"id": "1", "threadId": "t", "x": 1}],
        "nextPageToken": "n",
        "payload": {"headers": [1], "body": 2},
        "other": 3,
    }
    assert select_fields(value, tree) == {
        "messages": [{"id": "1", "threadId": "t"}],
        "nextPageToken": "n",
        "payload": {"headers": [1]},
    }
    with pytest.raises(ValueError, match="fields"):
        parse_fields("a(b")


def test_scenario_switches_are_set_by_name_for_the_demo() -> None:
    fake = GmailFake()
    fake.set_switch("list_page_cap=7")
    fake.set_switch("reverse_batch_parts=true")
    fake.set_switch("future_history_is_404=false")
    assert (fake.list_page_cap, fake.reverse_batch_parts) == (7, True)
    assert fake.future_history_is_404 is False
    with pytest.raises(ValueError, match="unknown switch"):
        fake.set_switch("latency=5")


def test_error_bodies_come_in_googles_three_shapes() -> None:
    _, classic = google_error(403, "User Rate Limit Exceeded", "userRateLimitExceeded")
    assert classic["error"]["errors"][0]["reason"] == "userRateLimitExceeded"
    assert classic["error"]["status"] == "PERMISSION_DENIED"
    assert "details" not in classic["error"]
    _, info = google_error(429, "Rate Limit Exceeded", "rateLimitExceeded", style="error_info")
    assert info["error"]["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
    assert info["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    _, bare = google_error(403, "Quota exceeded", "rateLimitExceeded", style="message_only")
    assert set(bare["error"]) == {"code", "message", "status"}

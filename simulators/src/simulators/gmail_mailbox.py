"""Mailboxes of the fake Gmail API: realistic generated messages, history records,
the ``format=`` renderings of a message and Google's partial-response ``fields=``.

Everything here is plain data: :mod:`simulators.gmail` serves it over HTTP.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

SENDERS = (
    ("GitHub", "noreply@github.com"),
    ("Stripe", "receipts@stripe.com"),
    ("Alice Martin", "alice.martin@example.org"),
    ("Bob Chen", "bob.chen@example.com"),
    ("Linear", "notifications@linear.app"),
    ("Google Calendar", "calendar-notification@google.com"),
    ("AWS Billing", "aws-billing@amazon.com"),
    ("Carol Diaz", "carol@diaz.dev"),
    ("Hacker Newsletter", "kale@hackernewsletter.com"),
    ("Slack", "feedback@slack.com"),
)
SUBJECTS = (
    "Your receipt #{n}",
    "[tributary] Pull request #{n} merged",
    "Meeting notes, week {n}",
    "Invitation: sync @ {n}:00",
    "Re: quarterly plan (draft {n})",
    "Your invoice is available ({n})",
    "Weekly digest #{n}",
    "Build failed on main ({n})",
)
CATEGORY_LABELS = ("CATEGORY_UPDATES", "CATEGORY_PROMOTIONS", "CATEGORY_SOCIAL", "CATEGORY_FORUMS")
#: labels that keep a message out of messages.list unless includeSpamTrash
HIDDEN_LABELS = frozenset({"SPAM", "TRASH"})


@dataclass
class FakeMessage:
    id: str
    thread_id: str
    label_ids: list[str]
    headers: list[dict[str, str]]
    internal_date: int  # milliseconds since the epoch
    size_estimate: int
    history_id: int
    snippet: str
    body: str

    def resource(
        self, fmt: str = "full", metadata_headers: list[str] | None = None
    ) -> dict[str, Any]:
        """The Message resource as messages.get renders it for ``format``."""
        out: dict[str, Any] = {
            "id": self.id,
            "threadId": self.thread_id,
            "snippet": self.snippet,
            "historyId": str(self.history_id),
            "internalDate": str(self.internal_date),
            "sizeEstimate": self.size_estimate,
        }
        if self.label_ids:  # JSON leaves out an empty repeated field, as Gmail does
            out["labelIds"] = list(self.label_ids)
        if fmt == "minimal":
            return out
        if fmt == "raw":
            import base64

            raw = "\r\n".join(f"{h['name']}: {h['value']}" for h in self.headers)
            out["raw"] = base64.urlsafe_b64encode(f"{raw}\r\n\r\n{self.body}".encode()).decode()
            return out
        headers = self.headers
        if fmt == "metadata":
            if metadata_headers:
                wanted = {h.lower() for h in metadata_headers}
                headers = [h for h in headers if h["name"].lower() in wanted]
            out["payload"] = {"mimeType": "text/plain", "headers": headers}
            return out
        import base64

        data = base64.urlsafe_b64encode(self.body.encode()).decode()
        out["payload"] = {
            "partId": "",
            "mimeType": "text/plain",
            "filename": "",
            "headers": headers,
            "body": {"size": len(self.body), "data": data},
        }
        return out

    def ref(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"id": self.id, "threadId": self.thread_id}
        if self.label_ids:
            ref["labelIds"] = list(self.label_ids)
        return ref


@dataclass
class HistoryRecord:
    id: int
    kind: str  # messagesAdded | messagesDeleted | labelsAdded | labelsRemoved
    message: dict[str, Any]
    label_ids: list[str] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"message": self.message}
        if self.kind in ("labelsAdded", "labelsRemoved"):
            entry["labelIds"] = list(self.label_ids)
        return {"id": str(self.id), "messages": [self.message], self.kind: [entry]}


class Mailbox:
    """One user's messages and history, ordered as Gmail orders them (newest first)."""

    def __init__(self, email: str, seed: int = 0) -> None:
        self.email = email
        self.messages: dict[str, FakeMessage] = {}
        self.history: list[HistoryRecord] = []
        self.history_id = 1000
        #: history.list with a startHistoryId below this answers 404 (history expired)
        self.history_floor = 0
        self._rng = random.Random(seed)
        self._seq = 0
        self._clock_ms = int(time.time() * 1000) - 90 * 86_400_000

    def _next_history(self) -> int:
        self.history_id += self._rng.randint(1, 3)
        return self.history_id

    def add_message(self, **overrides: Any) -> FakeMessage:
        """A new realistic message, newer than every other one; recorded in history."""
        rng = self._rng
        self._seq += 1
        self._clock_ms += rng.randint(60_000, 4 * 3_600_000)
        name, address = rng.choice(SENDERS)
        subject = rng.choice(SUBJECTS).format(n=rng.randint(1, 999))
        labels = ["INBOX"] if rng.random() < 0.85 else ["SENT"]
        if rng.random() < 0.4:
            labels.append("UNREAD")
        if rng.random() < 0.6:
            labels.append(rng.choice(CATEGORY_LABELS))
        if rng.random() < 0.15:
            labels.append("IMPORTANT")
        msg_id = f"{(self._clock_ms << 8) + self._seq % 256:016x}"
        thread_id = (
            msg_id
            if rng.random() < 0.7 or not self.messages
            else rng.choice([m.thread_id for m in list(self.messages.values())[-20:]])
        )
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(self._clock_ms / 1000))
        body = f"Hello,\n\n{subject}. " + "Lorem ipsum dolor sit amet. " * rng.randint(2, 40)
        message = FakeMessage(
            id=msg_id,
            thread_id=thread_id,
            label_ids=labels,
            headers=[
                {"name": "From", "value": f"{name} <{address}>"},
                {"name": "To", "value": self.email},
                {"name": "Subject", "value": subject},
                {"name": "Date", "value": date},
                {"name": "Message-ID", "value": f"<{msg_id}@mail.example.com>"},
                {"name": "List-Unsubscribe", "value": f"<mailto:unsubscribe+{msg_id}@example.com>"},
            ],
            internal_date=self._clock_ms,
            size_estimate=len(body) + rng.randint(800, 60_000),
            history_id=self._next_history(),
            snippet=body[7:90],
            body=body,
        )
        for key, value in overrides.items():
            setattr(message, key, value)
        self.messages[msg_id] = message
        self.history.append(HistoryRecord(message.history_id, "messagesAdded", message.ref()))
        return message

    def generate(self, count: int) -> list[FakeMessage]:
        return [self.add_message() for _ in range(count)]

    def delete_message(self, message_id: str) -> None:
        message = self.messages.pop(message_id)
        self.history.append(HistoryRecord(self._next_history(), "messagesDeleted", message.ref()))

    def change_labels(self, message_id: str, add: list[str], remove: list[str]) -> None:
        message = self.messages[message_id]
        history_id = self._next_history()
        message.history_id = history_id
        if add:
            message.label_ids = [
                *message.label_ids,
                *(x for x in add if x not in message.label_ids),
            ]
            self.history.append(HistoryRecord(history_id, "labelsAdded", message.ref(), add))
        if remove:
            message.label_ids = [x for x in message.label_ids if x not in remove]
            self.history.append(HistoryRecord(history_id, "labelsRemoved", message.ref(), remove))

    def expire_history(self) -> None:
        """Every stored startHistoryId is now too old: history.list answers 404."""
        self.history_floor = self.history_id

    def listed(self, label_ids: list[str], include_spam_trash: bool) -> list[FakeMessage]:
        found = sorted(self.messages.values(), key=lambda m: (m.internal_date, m.id), reverse=True)
        if not include_spam_trash:
            found = [m for m in found if not HIDDEN_LABELS.intersection(m.label_ids)]
        if label_ids:
            found = [m for m in found if set(label_ids) <= set(m.label_ids)]
        return found

    def history_since(self, start: int, kinds: list[str]) -> list[HistoryRecord]:
        wanted = {_HISTORY_TYPES.get(k, k) for k in kinds}
        return [r for r in self.history if r.id > start and (not wanted or r.kind in wanted)]


#: historyTypes query values -> record keys
_HISTORY_TYPES = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}


# -- partial responses (fields=) ----------------------------------------------------------

FieldTree = dict[str, "FieldTree | None"]


def parse_fields(spec: str) -> FieldTree:
    """Parse Google's partial-response syntax: ``a,b/c,d(e,f/g)``."""
    tree, rest = _parse_list(spec.replace(" ", ""), 0)
    if rest != len(spec.replace(" ", "")):
        raise ValueError(f"invalid fields parameter: {spec!r}")
    return tree


def _parse_list(spec: str, pos: int) -> tuple[FieldTree, int]:
    tree: FieldTree = {}
    while pos < len(spec) and spec[pos] != ")":
        start = pos
        while pos < len(spec) and spec[pos] not in ",()":
            pos += 1
        path = spec[start:pos].split("/")
        if not all(path):
            raise ValueError(f"invalid fields parameter near {spec[start:]!r}")
        sub: FieldTree | None = None
        if pos < len(spec) and spec[pos] == "(":
            sub, pos = _parse_list(spec, pos + 1)
            if pos >= len(spec) or spec[pos] != ")":
                raise ValueError("unbalanced parentheses in fields")
            pos += 1
        _merge_path(tree, path, sub)
        if pos < len(spec) and spec[pos] == ",":
            pos += 1
    return tree, pos


def _merge_path(tree: FieldTree, path: list[str], leaf: FieldTree | None) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = leaf


def select_fields(value: Any, tree: FieldTree | None) -> Any:
    """Keep only the selected fields of ``value`` (lists are selected element-wise)."""
    if tree is None:
        return value
    if isinstance(value, list):
        return [select_fields(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    return {k: select_fields(value[k], sub) for k, sub in tree.items() if k in value}

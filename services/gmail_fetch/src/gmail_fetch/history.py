"""The mailbox's history as history.list gives it, folded into what a sync must do:
messages to (re)fetch with the record that last touched them, messages gone from the
view (deleted, or moved to spam or trash), and the mailbox's current historyId."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the record types an incremental sync needs (history.list ``historyTypes``)
HISTORY_TYPES = ["messageAdded", "messageDeleted", "labelAdded", "labelRemoved"]
#: messages in these labels are outside messages.list's default view
HIDDEN_LABELS = frozenset({"SPAM", "TRASH"})


@dataclass
class HistoryDelta:
    """What changed since a historyId: messages to (re)fetch with the record id that last
    touched them, messages gone from the view, and the mailbox's current historyId."""

    upserts: dict[str, int] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    history_id: int = 0


def apply_history_record(delta: HistoryDelta, record: dict[str, Any]) -> None:
    """Fold one history record into ``delta``; later records win over earlier ones."""
    record_id = int(record["id"])
    for kind in ("messagesAdded", "labelsAdded", "labelsRemoved"):
        for entry in record.get(kind, []):
            message = entry.get("message", {})
            message_id = message.get("id")
            if not message_id:
                continue
            if HIDDEN_LABELS.intersection(message.get("labelIds", [])):
                delta.upserts.pop(message_id, None)
                delta.deletes.add(message_id)
            else:
                delta.deletes.discard(message_id)
                delta.upserts[message_id] = max(record_id, delta.upserts.get(message_id, 0))
    for entry in record.get("messagesDeleted", []):
        message_id = entry.get("message", {}).get("id")
        if message_id:
            delta.upserts.pop(message_id, None)
            delta.deletes.add(message_id)

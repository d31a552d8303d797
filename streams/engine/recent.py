"""The latest status changes and dead letters this worker's fold published, for the dashboard
(``GET /recent``, ``streams/http/dashboard.py``).

A bounded ring per topic: the engine hands over every batch it published (one call), the ring
keeps the raw values of the last :data:`RECENT_SIZE` of each kind, and only a request parses
them (into a small summary: no record bodies, no dead letter's value bytes). A value over
:data:`MAX_VALUE_BYTES` is kept as its key only, so the ring holds at most about
``2 x RECENT_SIZE x MAX_VALUE_BYTES`` bytes whatever the records' size.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

RECENT_SIZE = 50
MAX_VALUE_BYTES = 32 * 1024


class _Output(Protocol):
    topic: str
    key: bytes | None
    value: bytes


_Kept = tuple[bytes | None, bytes | None]


class RecentOutputs:
    """The last :data:`RECENT_SIZE` status changes and dead letters published, newest last."""

    def __init__(self, status_changes: str, dead_letters: str, size: int = RECENT_SIZE) -> None:
        self.status_changes_topic = status_changes
        self.dead_letters_topic = dead_letters
        self._changes: deque[_Kept] = deque(maxlen=size)
        self._letters: deque[_Kept] = deque(maxlen=size)

    def note(self, outputs: Iterable[_Output]) -> None:
        """Called with every batch the engine published (cheap: no parsing here)."""
        changes, letters = self.status_changes_topic, self.dead_letters_topic
        for out in outputs:
            if out.topic == changes:
                self._changes.append(_kept(out))
            elif out.topic == letters:
                self._letters.append(_kept(out))

    def status_changes(self) -> list[dict[str, Any]]:
        """Newest first: messageId, previousStatus, status, providerId, type, source, at."""
        return [_change(key, value) for key, value in reversed(self._changes)]

    def dead_letters(self) -> list[dict[str, Any]]:
        """Newest first: topic, partition, offset, key, reason, error, failedAt."""
        return [_letter(key, value) for key, value in reversed(self._letters)]


def _kept(out: _Output) -> _Kept:
    value = out.value if len(out.value) <= MAX_VALUE_BYTES else None
    return out.key, value


def _text(key: bytes | None) -> str | None:
    return None if key is None else key[:200].decode(errors="replace")


def _parsed(value: bytes | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _change(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    event = _parsed(value)
    record = event.get("record")
    if record is None:
        record = event.get("changes")  # a slim status change: providerId and type are in it
    if not isinstance(record, dict):
        record = {}
    return {
        "messageId": event.get("messageId", _text(key)),
        "previousStatus": event.get("previousStatus"),
        "status": event.get("status"),
        "providerId": record.get("providerId"),
        "type": record.get("type"),
        "source": event.get("source"),
        "at": event.get("changedAt"),
    }


def _letter(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    letter = _parsed(value)
    key_text = _text(key)
    raw_key = letter.get("keyBase64")
    if isinstance(raw_key, str):
        try:
            key_text = base64.b64decode(raw_key).decode(errors="replace")
        except ValueError:
            pass
    return {
        "topic": letter.get("topic"),
        "partition": letter.get("partition"),
        "offset": letter.get("offset"),
        "key": key_text,
        "reason": letter.get("reason"),
        "error": letter.get("error"),
        "failedAt": letter.get("failedAt"),
    }

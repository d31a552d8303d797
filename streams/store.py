"""RocksDB state of one partition: records, the due index and the applied offsets.

One RocksDB database per partition (as Faust's rocksdb store does), through rocksdict in raw
mode. Key space, by one-byte prefix:

- ``r`` + messageId -> TrackingRecord JSON
- ``d`` + due key (big-endian due ms + messageId) -> empty; see ``tables.due_index``
- ``m`` + name -> bookkeeping JSON (source offsets, changelog position)

Every batch is one atomic WriteBatch: records, due-index changes and offsets together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from rocksdict import Options, Rdict, WriteBatch

from deliverytrack.models.codec import decode_record
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.due_index import due_index_change, parse_due_key, upper_bound

RECORD = b"r"
DUE = b"d"
META = b"m"
_META_POSITION = META + b"position"


@dataclass(slots=True)
class Position:
    """What the local state reflects: next source offsets and next changelog offset."""

    offsets: dict[str, int] = field(default_factory=dict)
    changelog_next: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({"offsets": self.offsets, "changelogNext": self.changelog_next})

    @classmethod
    def from_json(cls, raw: bytes) -> Position:
        data = orjson.loads(raw)
        return cls(offsets=dict(data.get("offsets", {})), changelog_next=data["changelogNext"])


class PartitionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.path = path
        self._db = Rdict(str(path), options)

    def close(self) -> None:
        self._db.close()

    # --- reads ------------------------------------------------------------------------------

    def get_raw(self, message_id: str) -> bytes | None:
        value: bytes | None = self._db.get(RECORD + message_id.encode())
        return value

    def get(self, message_id: str) -> TrackingRecord | None:
        raw = self.get_raw(message_id)
        return None if raw is None else decode_record(raw)

    def iter_raw(self) -> Iterator[tuple[str, bytes]]:
        for key, value in self._db.items(from_key=RECORD):
            if not isinstance(key, bytes) or not key.startswith(RECORD):
                break
            yield key[1:].decode(), value

    def records(self) -> Iterator[TrackingRecord]:
        for _, raw in self.iter_raw():
            yield decode_record(raw)

    def due(self, now: datetime, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (due ms, messageId) pairs due at or before ``now``, oldest first."""
        bound = DUE + upper_bound(now)
        found: list[tuple[int, str]] = []
        if limit <= 0:
            return found
        for key in self._db.keys(from_key=DUE):
            if not isinstance(key, bytes) or key >= bound or not key.startswith(DUE):
                break
            found.append(parse_due_key(key[1:]))
            if len(found) >= limit:
                break
        return found

    def position(self) -> Position | None:
        raw = self._db.get(_META_POSITION)
        return None if raw is None else Position.from_json(raw)

    # --- writes -----------------------------------------------------------------------------

    def write(
        self,
        changes: Mapping[str, tuple[TrackingRecord | None, TrackingRecord | None, bytes | None]],
        position: Position,
    ) -> None:
        """Apply ``{messageId: (old, new, new_json)}`` and the new position atomically."""
        batch = WriteBatch(raw_mode=True)
        for message_id, (old, new, raw) in changes.items():
            key = RECORD + message_id.encode()
            if new is None or raw is None:
                batch.delete(key)
            else:
                batch.put(key, raw)
            removed, added = due_index_change(old, new)
            if removed is not None:
                batch.delete(DUE + removed)
            if added is not None:
                batch.put(DUE + added, b"")
        batch.put(_META_POSITION, position.to_json())
        self._db.write(batch)

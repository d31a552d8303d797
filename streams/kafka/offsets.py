"""Commit bookkeeping of consumers that finish their inputs out of order (the poll loop, the
webhook dispatcher): an offset is committed only once every input before it has finished."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.structs import TopicPartition


class PendingOffsets:
    """Per partition: offsets handed out and not yet finished; what may be committed."""

    def __init__(self) -> None:
        self.next_fetched: dict[TopicPartition, int] = {}
        self.in_flight: dict[TopicPartition, set[int]] = {}
        self.committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self.in_flight.setdefault(tp, set()).add(offset)
        self.next_fetched[tp] = max(self.next_fetched.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self.in_flight.get(tp, set()).discard(offset)

    def committable(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offset to read per partition: below the oldest request still in flight."""
        result: dict[TopicPartition, int] = {}
        for tp in partitions:
            if tp not in self.next_fetched:
                continue
            pending = self.in_flight.get(tp)
            position = min(pending) if pending else self.next_fetched[tp]
            if position > self.committed.get(tp, -1):
                result[tp] = position
        return result

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.next_fetched.pop(tp, None)
            self.in_flight.pop(tp, None)
            self.committed.pop(tp, None)

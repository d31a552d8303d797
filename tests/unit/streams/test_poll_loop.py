"""The poll loop commits a partition only up to its oldest request still in flight."""

from __future__ import annotations

from aiokafka.structs import TopicPartition

from deliverytrack.streams.poll_loop import _Offsets

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_commit_stops_below_the_oldest_call_in_flight() -> None:
    offsets = _Offsets()
    for offset in (10, 11, 12):
        offsets.started(P0, offset)
    offsets.finished(P0, 11)
    offsets.finished(P0, 12)
    assert offsets.committable([P0]) == {P0: 10}  # 10 is still being polled
    offsets.finished(P0, 10)
    assert offsets.committable([P0]) == {P0: 13}


def test_only_new_positions_of_the_asked_partitions_are_committable() -> None:
    offsets = _Offsets()
    offsets.started(P0, 5)
    offsets.started(P1, 7)
    offsets.finished(P0, 5)
    offsets.finished(P1, 7)
    assert offsets.committable([P0]) == {P0: 6}
    offsets.committed.update({P0: 6})
    assert offsets.committable([P0, P1]) == {P1: 8}  # P0 has nothing new
    offsets.forget([P1])
    assert offsets.committable([P0, P1]) == {}
    offsets.finished(P1, 7)  # a call that ends after its partition was revoked: ignored
    assert offsets.committable([P1]) == {}

"""A partition whose restore fails is neither folded nor answered for: it never joins the
engine's stores, and the fold loop raises the error (the worker restarts) instead of folding
against a store that is not caught up."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.state.store import PartitionStore, Position


async def test_a_failed_restore_keeps_the_partition_out_and_fails_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FoldEngine(Settings(data_dir=tmp_path))
    restored: list[int] = []

    async def catch_up(partition: int, store: PartitionStore) -> Position:
        if partition == 1:
            raise KafkaConnectionError("the broker went away mid-restore")
        restored.append(partition)
        return Position()

    monkeypatch.setattr(engine.changelog, "catch_up", catch_up)
    assigned = {TopicPartition(engine.topics.send_results, p) for p in (0, 1)}
    with pytest.raises(KafkaConnectionError):
        await engine.on_partitions_assigned(assigned)
    assert restored == [0]
    assert 1 not in engine.partitions.stores and 1 not in engine.ready_partitions
    assert engine.ready_partitions == set()  # nothing is answered for until all are restored
    assert not engine.ready.is_set()
    with pytest.raises(KafkaConnectionError):
        await engine.run()  # the loop raises before it fetches anything
    engine.partitions.close_all()

"""Invariant 2 end to end: replaying the input topics (send results, commands, due checks,
observations) into an empty table rebuilds exactly the live table."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.streams.engine.loop import FoldEngine
from tests.factories import update_status_factory
from tests.integration.support import Provider, polling_settings, send

pytestmark = pytest.mark.integration


async def test_replaying_the_inputs_rebuilds_the_same_table(
    settings_factory: Any,
    worker_factory: Any,
    kafka_io_factory: Any,
    provider: Provider,
    tmp_path: Any,
) -> None:
    settings = polling_settings(settings_factory, provider, maxTrackingDurationMs=4_000)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    outcomes = ["DELIVERED", "FAILED", "PENDING", "ERROR_RETRYABLE", "ERROR_FATAL", "NOT_FOUND"]
    ids = [f"rp-{i}" for i in range(60)]
    for i, message_id in enumerate(ids):
        pmid = await provider.accept(outcome=outcomes[i % len(outcomes)], delayMs=300 * (i % 4))
        await io.send(io.topics.send_results, message_id, send(message_id, pmid))
    for message_id in ids[::7]:
        command = update_status_factory(TrackingStatus.CANCELLED, message_id)
        await io.send(io.topics.commands, message_id, command)

    final = {"DELIVERED", "FAILED", "CANCELLED", "UNKNOWN"}
    live = {mid: await worker.arecord(mid, lambda r: r["status"] in final, 30) for mid in ids}
    assert {r["status"] for r in live.values()} == final
    assert worker.stop() == 0

    # A fresh engine (own group, own changelog, own outputs) over the same input topics.
    replay_settings = settings.model_copy(
        update={"app_id": settings.app_id + "-replay", "data_dir": tmp_path / "replay"}
    )
    topics = dataclasses.replace(
        io.topics,
        status_changes=io.topics.status_changes + "-replay",
        dead_letters=io.topics.dead_letters + "-replay",
        poll_requests=io.topics.poll_requests + "-replay",
        records_changelog=io.topics.records_changelog + "-replay",
    )
    engine = FoldEngine(replay_settings, topics)
    await engine.start()
    try:
        deadline = time.monotonic() + 60
        while engine.stats.events < await _input_count(io, topics) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        replayed = {mid: engine.get_record(mid) for mid in ids}
    finally:
        await engine.stop()
    for mid in ids:
        record = replayed[mid]
        assert record is not None, mid
        assert encode(record) == _reencode(live[mid]), mid


async def _input_count(io: Any, topics: Any) -> int:
    total = 0
    for topic in topics.fold_inputs:
        messages = await io.read(topic, lambda ms: True, timeout=10)
        total += len(messages)
    return total


def _reencode(body: dict[str, Any]) -> bytes:
    from deliverytrack.models.codec import RecordAdapter

    return encode(RecordAdapter.validate_python(body))

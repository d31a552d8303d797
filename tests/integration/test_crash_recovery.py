"""Invariant 7: a worker killed with SIGKILL mid-stream resumes without losing or
double-applying events, and every transition is published at least once with a stable id."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import MessageEvent
from deliverytrack.tables.fold import replay
from tests.factories import send_recorded_factory, update_status_factory

pytestmark = pytest.mark.integration

S = TrackingStatus
MESSAGES = 1_500


async def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = settings_factory(fold_batch_max_records=200)
    io = await kafka_io_factory(settings)
    topics = io.topics
    ids = [f"k-{i}" for i in range(MESSAGES)]
    events: dict[str, list[MessageEvent]] = defaultdict(list)
    worker = worker_factory(settings).start()

    sends = [send_recorded_factory(mid, event_id=f"send-{mid}") for mid in ids]
    for event in sends:
        events[event.message_id].append(event)
    await asyncio.gather(*(io.send(topics.send_results, e.message_id, e) for e in sends))
    await io.read(topics.status_changes, lambda ms: len(ms) >= MESSAGES, timeout=60)

    # Three commands per message, the middle one a duplicate eventId of the first.
    commands: list[MessageEvent] = []
    for mid in ids:
        delivered = update_status_factory(S.DELIVERED, mid, event_id=f"dlv-{mid}")
        clicked = update_status_factory(S.CLICKED, mid, event_id=f"clk-{mid}")
        commands += [delivered, delivered, clicked]
        events[mid] += [delivered, delivered, clicked]

    async def produce() -> None:
        for start in range(0, len(commands), 100):
            chunk = commands[start : start + 100]
            await asyncio.gather(*(io.send(topics.commands, e.message_id, e) for e in chunk))
            await asyncio.sleep(0.01)

    producing = asyncio.create_task(produce())
    # Kill the worker once it is part-way through the commands.
    deadline = time.monotonic() + 60
    while True:
        _, health = worker.http_get("/health")
        if health and health["applied"] >= 600:
            break
        assert time.monotonic() < deadline, "worker made no progress"
        await asyncio.sleep(0.02)
    worker.kill()
    await producing

    worker = worker_factory(settings).start()
    expected = {mid: replay(evs)[0] for mid, evs in events.items()}
    changes = await io.read_json(
        topics.status_changes,
        lambda es: len({e["eventId"] for e in es}) >= 3 * MESSAGES,
        timeout=90,
    )
    # Every transition published, each with its stable id; a repeat is an exact copy.
    by_id: dict[str, dict[str, Any]] = {}
    for change in changes:
        if change["eventId"] in by_id:
            assert by_id[change["eventId"]] == change
        by_id[change["eventId"]] = change
    assert set(by_id) == {f"{mid}:{n}" for mid in ids for n in (1, 2, 3)}
    assert all(by_id[f"{mid}:3"]["status"] == "CLICKED" for mid in ids)

    # The table equals the pure fold of the same events: nothing lost, nothing applied twice.
    for mid in ids:
        record = worker.record(mid, lambda r: r["status"] == "CLICKED")
        want = expected[mid]
        assert want is not None
        assert record["sequence"] == 3 == want.sequence
        assert [h["eventId"] for h in record["statusHistory"]] == [
            f"send-{mid}",
            f"dlv-{mid}",
            f"clk-{mid}",
        ]
    assert worker.stop() == 0

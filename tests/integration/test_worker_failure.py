"""A worker whose fold engine fails does not linger half-alive: it exits non-zero, and a restart
recovers every record (the failed batch was published and changelogged before its write)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

from tests.factories import send_recorded_factory

pytestmark = pytest.mark.integration

FAULTY = [sys.executable, "tests/integration/faulty_worker.py"]


async def test_a_failed_rocksdb_write_exits_the_worker_and_a_restart_recovers(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = settings_factory()
    io = await kafka_io_factory(settings)
    first = send_recorded_factory("f-0")
    faulty = await worker_factory(settings, [*FAULTY, "1"]).astart()
    # The first batch is written; the next one's RocksDB write fails.
    await io.send(io.topics.send_results, first.message_id, first)
    await faulty.arecord("f-0")
    ids = [f"f-{i}" for i in range(1, 30)]
    for message_id in ids:
        await io.send(io.topics.send_results, message_id, send_recorded_factory(message_id))

    deadline = time.monotonic() + 30
    assert faulty.proc is not None
    while faulty.proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert faulty.proc.returncode not in (None, 0), faulty.log_tail()
    log = faulty.log_path.read_text(errors="replace")
    assert "fold: fold-engine stopped on an error" in log
    assert "No space left on device (injected)" in log

    healthy = await worker_factory(settings).astart()
    for message_id in ["f-0", *ids]:
        record = await healthy.arecord(message_id)
        assert record["status"] == "SENT"
    # At least once: the failed batch's transitions may be published twice, same eventIds.
    expected = {f"{m}:1" for m in ["f-0", *ids]}
    changes = await io.read_json(
        io.topics.status_changes, lambda es: {e["eventId"] for e in es} >= expected
    )
    assert {e["eventId"] for e in changes} == expected
    assert healthy.stop() == 0

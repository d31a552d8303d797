"""Retention and cleanup on a real broker: records past their retention or expiresAt, and
purged ones, disappear from the table (RocksDB, HTTP, changelog) with a RecordDeleted each,
late duplicates do not bring them back, and they stay gone after a restart on the same data dir,
after a restore from the changelog into a fresh one, and in a replay of the topics."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import DeliveryTrackClient
from deliverytrack.streams.api.facades import DeliveryTracker
from deliverytrack.streams.state.store import EXPIRY, MARKER, RECORD, PartitionStore
from tests.factories import send_recorded_factory, update_status_factory
from tests.integration.conftest import free_port
from tests.integration.test_replay_cli import run_cli, settle

pytestmark = pytest.mark.integration

S = TrackingStatus
RETENTION_S = 8.64  # opsLogs overridden to 0.0001 days
OPS = [f"ops-{i}" for i in range(5)]  # DELIVERED, opsLogs: deleted by retention
EXPIRING = "exp-1"  # SENT, expiresAt in 4 s: deleted as expired while still tracked
PURGED = "purge-1"  # DELIVERED, then purged by the facade's cleanup command
KEPT = ["keep-telecom", "keep-polled"]  # 365-day class; opsLogs but still polled
DELETED = [*OPS, EXPIRING, PURGED]


def state_counts(settings: Settings) -> dict[bytes, set[str]]:
    """messageIds under the record, expiry-index and marker prefixes of the worker's RocksDB
    (the worker must be stopped)."""
    found: dict[bytes, set[str]] = {RECORD: set(), EXPIRY: set(), MARKER: set()}
    folder = Path(settings.data_dir) / settings.app_id / "records"
    for path in sorted(folder.glob("partition-*.db")):
        store = PartitionStore(path)
        try:
            for key in store._db.keys():
                if isinstance(key, bytes) and key[:1] in found:
                    name = key[9:] if key[:1] == EXPIRY else key[1:]
                    found[key[:1]].add(name.decode())
        finally:
            store.close()
    return found


async def check_table(worker: Any, settings: Settings, timeout: float = 15.0) -> None:
    """Deleted records answer 404 (within ``timeout``: deletions are published before the
    state that reflects them is written), the kept ones 200; the query API lists and counts
    only the kept ones (aggregates included)."""
    deadline = time.monotonic() + timeout
    for mid in DELETED:
        while True:
            status, body = await worker.aget(f"/records/{mid}")
            if status == 404:
                break
            assert time.monotonic() < deadline, (mid, status, body)
            await asyncio.sleep(0.1)
    for mid in KEPT:
        await worker.arecord(mid)
    async with DeliveryTrackClient(worker.base_url, settings) as client:
        assert {r.message_id for r in await client.list_records()} == set(KEPT)
        assert await client.count_records() == len(KEPT)
        assert await client.count_records({"messageId": DELETED}) == 0
        rows = await client.count_by({}, ["status"])
        assert sorted((row["key"]["status"], row["count"]) for row in rows) == [
            ("DELIVERED", 1),
            ("SENT", 1),
        ]
        stats = await client.stats()
        assert stats["totalMessages"] == len(KEPT), stats


async def test_expired_and_purged_records_are_gone_and_stay_gone(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, tmp_path: Path
) -> None:
    settings = settings_factory(
        retention={
            "enabled": True,
            "tenantOverrideDays": {"opsLogs": 0.0001},
            "intervalMs": 300,
        },
        # "nobody"'s command below is held for its send result, then dead-lettered.
        command_hold_ms=1_000,
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    topics = io.topics
    now = datetime.now(UTC)

    sends = [send_recorded_factory(mid, requested_at=now, retention_class="opsLogs") for mid in OPS]
    sends += [
        send_recorded_factory(EXPIRING, requested_at=now, expires_at=now + timedelta(seconds=4)),
        send_recorded_factory(PURGED, requested_at=now),
        send_recorded_factory("keep-telecom", requested_at=now),
        send_recorded_factory("keep-polled", requested_at=now, retention_class="opsLogs"),
    ]
    for event in sends:
        await io.send(topics.send_results, event.message_id, event)
    for mid in [*OPS, PURGED, "keep-telecom"]:
        await io.send(topics.commands, mid, update_status_factory(S.DELIVERED, mid, at=now))
    for mid in [*DELETED, *KEPT]:
        await worker.arecord(mid)
    async with DeliveryTrackClient(worker.base_url, settings) as client:
        deadline = time.monotonic() + 15
        while await client.count_records() < len(DELETED) + len(KEPT):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    purged = await worker.arecord(PURGED, lambda body: body["status"] == "DELIVERED")
    assert purged["retentionClass"] == "telecomMetadata"
    assert purged["retentionBucketYm"] == int((now + timedelta(days=365)).strftime("%Y%m"))
    ops = await worker.arecord(OPS[0], lambda body: body["status"] == "DELIVERED")
    assert ops["retentionClass"] == "opsLogs" and "retentionUntil" in ops

    # The DeliveryTracker facade's cleanup(): exactly the JSON it publishes.
    cleanup = {
        "eventType": "purge",
        "messageId": PURGED,
        "eventId": f"cleanup:{PURGED}",
        "at": datetime.now(UTC).isoformat(),
        "reason": "cleanup",
        "schemaVersion": 1,
    }
    await io.send(topics.commands, PURGED, cleanup)
    await worker.arecord(EXPIRING)  # not expired yet...

    deletions = await io.read_json(
        topics.record_deletions, lambda es: len(es) >= len(DELETED), timeout=RETENTION_S + 45
    )
    reasons = {event["messageId"]: event["reason"] for event in deletions}
    assert reasons == {**dict.fromkeys(OPS, "retention"), EXPIRING: "expired", PURGED: "purge"}
    by_id = {event["messageId"]: event for event in deletions}
    assert by_id[PURGED]["eventId"] == f"{PURGED}:deleted:cleanup:{PURGED}"
    assert by_id[PURGED]["detail"] == "cleanup"
    assert by_id[EXPIRING]["status"] == "SENT"
    await check_table(worker, settings)

    # Late duplicates: the original send result again, a command for a deleted record, the
    # cleanup again. None brings a record back or makes a dead letter; a sentinel does.
    await io.send(topics.send_results, OPS[0], sends[0])
    await io.send(topics.commands, PURGED, update_status_factory(S.CLICKED, PURGED))
    await io.send(topics.commands, PURGED, cleanup)
    await io.send(topics.commands, "nobody", update_status_factory(S.FAILED, "nobody"))
    await io.read_json(topics.dead_letters, lambda es: len(es) >= 1)
    await settle(worker)
    letters = await io.read_json(topics.dead_letters, lambda es: len(es) >= 1)
    assert [letter["reason"] for letter in letters] == ["unknown-message"]
    assert "nobody" in letters[0]["valueText"]
    # Deletion is not a transition: status-changes has the sends and the DELIVERED updates.
    changes = await io.read_json(topics.status_changes, lambda es: len(es) >= 16)
    assert len(changes) == len(sends) + len(OPS) + 2
    await check_table(worker, settings)
    _, health = await worker.aget("/health")
    assert health["recordsDeleted"] == len(DELETED)
    assert health["expiries"] >= len(OPS) + 1
    worker.stop()

    state = state_counts(settings)
    assert state[RECORD] == set(KEPT)
    assert state[EXPIRY] == {"keep-telecom"}  # in the index for 2027, not due
    assert state[MARKER] == set(DELETED)

    # Restart on the same data dir: still gone, and no deletion happens twice.
    again = await worker_factory(settings).astart()
    await check_table(again, settings)
    await asyncio.sleep(1.0)  # a few timer ticks
    _, health = await again.aget("/health")
    assert health["recordsDeleted"] == 0
    again.stop()

    # A fresh data dir restores everything, tombstones and markers, from the changelog.
    fresh = settings.model_copy(
        update={
            "data_dir": tmp_path / "fresh",
            "web_port": free_port(),
            "webhook_port": free_port(),
        }
    )
    restored = await worker_factory(fresh).astart()
    await check_table(restored, fresh)
    await asyncio.sleep(1.0)
    _, health = await restored.aget("/health")
    assert health["restored"] > 0 and health["recordsDeleted"] == 0
    restored.stop()
    assert state_counts(fresh) == state

    # The DeliveryTracker facade: cleanup() purges the terminal records (keep-telecom),
    # stop_tracking() stops and purges keep-polled; both through the same purge command.
    restored = await worker_factory(fresh).astart()
    async with DeliveryTrackClient(restored.base_url, fresh) as client:
        tracker = DeliveryTracker(client)
        cleaned: list[Any] = []
        tracker.once("cleanup:completed", cleaned.append)
        assert await tracker.cleanup() == 1
        assert cleaned == [{"removedCount": 1}]
        assert await tracker.stop_tracking("keep-polled") is True
        deadline = time.monotonic() + 15
        while await client.count_records() > 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert await client.get_record("keep-telecom") is None
        assert (await client.stats())["totalMessages"] == 0
    deletions = await io.read_json(
        topics.record_deletions, lambda es: len(es) >= len(DELETED) + len(KEPT)
    )
    facade = {e["messageId"]: (e["reason"], e.get("detail")) for e in deletions}
    assert facade["keep-telecom"] == ("purge", "cleanup")
    assert facade["keep-polled"] == ("purge", "stop_tracking")
    restored.stop()

    # Replaying the input topics (expiries included: they are on the due-checks topic)
    # rebuilds the same table.
    started = time.monotonic()
    code, out, err = await run_cli(settings, "replay", "--verify")
    assert code == 0, out + err
    assert "identical" in err, err
    assert time.monotonic() - started < 120
    deletions = await io.read_json(
        topics.record_deletions, lambda es: len(es) >= len(DELETED) + len(KEPT)
    )
    assert len(deletions) == len(DELETED) + len(KEPT)  # the replay wrote to its own topics

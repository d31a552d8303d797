"""The worker on a real broker: send results become records, commands move them, bad input is
dead-lettered, and state survives restarts (RocksDB) and data-dir loss (changelog)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from typing import Any

import pytest

from deliverytrack.models.enums import TrackingStatus
from tests.factories import (
    T0,
    send_recorded_factory,
    update_status_factory,
)

pytestmark = pytest.mark.integration

S = TrackingStatus


def changes_for(events: list[dict[str, Any]], message_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["messageId"] == message_id]


async def test_send_results_commands_and_dead_letters(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = settings_factory()
    worker = worker_factory(settings).start()
    io = await kafka_io_factory(settings)
    topics = io.topics
    scheduled_at = T0 + timedelta(minutes=10)

    # Send results: unscheduled, scheduled, and without a provider message id.
    for event in [
        send_recorded_factory("m-sent"),
        send_recorded_factory("m-sched", scheduled_at=scheduled_at),
        send_recorded_factory("m-noid", provider_message_id=None),
    ]:
        await io.send(topics.send_results, event.message_id, event)
    changes = await io.read_json(topics.status_changes, lambda es: len(es) >= 3)
    by_id = {e["messageId"]: e for e in changes}
    assert by_id["m-sent"]["status"] == "SENT"
    assert by_id["m-sent"]["previousStatus"] is None
    assert by_id["m-sent"]["eventId"] == "m-sent:1"
    assert by_id["m-sent"]["record"]["nextCheckAt"] == "2026-11-23T09:00:30Z"
    assert by_id["m-sched"]["status"] == "PENDING"
    assert by_id["m-sched"]["record"]["nextCheckAt"] == "2026-11-23T09:12:00Z"
    assert by_id["m-noid"]["status"] == "UNKNOWN"
    assert by_id["m-noid"]["record"]["lastError"]["code"] == "MISSING_PROVIDER_MESSAGE_ID"
    assert "nextCheckAt" not in by_id["m-noid"]["record"]

    # The same records are in the table.
    body = worker.record("m-sched")
    assert body["status"] == "PENDING"
    assert body["nextCheckAt"] == "2026-11-23T09:12:00Z"
    status, body = worker.http_get("/records/does-not-exist")
    assert status == 404 and "does-not-exist" in body["error"]

    # A forward command, a backward one, and a duplicate of the forward one.
    forward = update_status_factory(S.DELIVERED, "m-sent", event_id="cmd-forward")
    backward = update_status_factory(S.SENT, "m-sent", event_id="cmd-backward")
    await io.send(topics.commands, "m-sent", forward)
    await io.send(topics.commands, "m-sent", backward)
    await io.send(topics.commands, "m-sent", forward)
    # Bad input between good events: malformed JSON, schema-invalid, wrong key.
    await io.send(topics.send_results, "m-bad", b"{this is not json")
    await io.send(topics.send_results, "m-bad", {"eventId": "x", "messageId": "m-bad"})
    await io.send(topics.commands, "m-wrong", update_status_factory(S.FAILED, "m-sched"))
    # ...and a good event after them still folds.
    await io.send(topics.send_results, "m-after", send_recorded_factory("m-after"))
    # A sentinel transition after everything else tells us the worker got this far.
    await io.send(topics.commands, "m-sched", update_status_factory(S.CANCELLED, "m-sched"))

    changes = await io.read_json(
        topics.status_changes,
        lambda es: (
            any(e["messageId"] == "m-sched" and e["status"] == "CANCELLED" for e in es)
            and any(e["messageId"] == "m-after" for e in es)
        ),
    )
    sent_changes = changes_for(changes, "m-sent")
    assert [(e["previousStatus"], e["status"]) for e in sent_changes] == [
        (None, "SENT"),
        ("SENT", "DELIVERED"),
    ]
    assert sent_changes[1]["eventId"] == "m-sent:2"
    assert sent_changes[1]["causedBy"] == "cmd-forward"
    assert sent_changes[1]["source"] == "manual"
    body = worker.record("m-sent", lambda r: r["status"] == "DELIVERED")
    assert [h["status"] for h in body["statusHistory"]] == ["SENT", "DELIVERED"]

    letters = await io.read_json(topics.dead_letters, lambda es: len(es) >= 3)
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == ["malformed-json", "schema-invalid", "wrong-key"]
    malformed = next(letter for letter in letters if letter["reason"] == "malformed-json")
    assert malformed["topic"] == topics.send_results
    assert malformed["valueText"] == "{this is not json"
    assert isinstance(malformed["offset"], int) and isinstance(malformed["partition"], int)
    assert malformed["keyBase64"] == "bS1iYWQ="  # base64("m-bad")
    _, health = worker.http_get("/health")
    assert health["deadLetters"] == 3
    assert worker.stop() == 0


async def test_restart_keeps_records_and_changelog_rebuilds_them(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    # Compressed output batches (stdlib gzip): the rebuild below reads them back.
    settings = settings_factory(producer_compression="gzip")
    io = await kafka_io_factory(settings)
    topics = io.topics
    worker = worker_factory(settings).start()
    ids = [f"r-{i}" for i in range(200)]
    for message_id in ids:
        await io.send(topics.send_results, message_id, send_recorded_factory(message_id))
    for message_id in ids[::2]:
        await io.send(topics.commands, message_id, update_status_factory(S.FAILED, message_id))
    await io.read_json(topics.status_changes, lambda es: len(es) >= 300)
    worker.record("r-198", lambda r: r["status"] == "FAILED")
    before = {mid: worker.record(mid) for mid in ids}
    assert sum(1 for r in before.values() if r["status"] == "FAILED") == 100
    assert worker.stop() == 0

    # Restart on the same data dir: everything is still there, nothing is re-applied.
    worker = worker_factory(settings).start()
    after = {mid: worker.record(mid) for mid in ids}
    assert after == before
    _, health = worker.http_get("/health")
    assert health["applied"] == 0 and health["restored"] == 0
    assert worker.stop() == 0

    # Lose the data dir: the records come back from the compacted changelog.
    shutil.rmtree(settings.data_dir)
    worker = worker_factory(settings).start()
    rebuilt = {mid: worker.record(mid) for mid in ids}
    assert rebuilt == before
    _, health = worker.http_get("/health")
    assert health["restored"] >= 200 and health["applied"] == 0
    # ...and it carries on from where the changelog says, folding only new events.
    await io.send(topics.commands, "r-1", update_status_factory(S.DELIVERED, "r-1"))
    changes = await io.read_json(topics.status_changes, lambda es: len(es) >= 301)
    assert len(changes) == 301
    worker.record("r-1", lambda r: r["status"] == "DELIVERED")
    assert worker.stop() == 0

"""A worker with ``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes`` on the real broker: the status
changes carry what each transition changed instead of the record (valid on the published
schema), and everything else works as with the record: the table and its queries, outbound
webhooks to global and per-message endpoints, the dashboard's recent list, the client's
follower (what ``tail`` and ``DeliveryTracker`` read)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from deliverytrack.models.enums import TrackingStatus as S
from deliverytrack.streams.api.client import follow_status_changes
from tests.factories import send_recorded_factory, update_status_factory
from tests.integration.test_outbound_webhooks import Receiver, endpoint, receiver  # noqa: F401
from tests.schema_check import problems

pytestmark = pytest.mark.integration


def _of(changes: list[dict[str, Any]], message_id: str) -> list[dict[str, Any]]:
    return [c for c in changes if c["messageId"] == message_id]


async def test_a_worker_publishing_changes_works_as_one_publishing_records(
    settings_factory: Any,
    worker_factory: Any,
    kafka_io_factory: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    settings = settings_factory(
        status_change_record="changes",
        webhooks=[endpoint(receiver, "ops", events=["*"])],
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    topics = io.topics
    own = {"id": "own", "url": f"{receiver.base_url}/own", "events": ["message.delivered"]}
    await io.send(topics.send_results, "sl-1", send_recorded_factory("sl-1", metadata={"o": 1}))
    await io.send(topics.send_results, "sl-2", send_recorded_factory("sl-2", webhooks=(own,)))
    for message_id in ("sl-1", "sl-2"):
        update = update_status_factory(S.DELIVERED, message_id, provider_status_code="4000")
        await io.send(topics.commands, message_id, update)

    changes = await io.read_json(topics.status_changes, lambda es: len(es) >= 4)
    assert len(changes) == 4
    for change in changes:
        assert "record" not in change and not problems("status-changes", change), change
    first, delivered = _of(changes, "sl-1")
    assert (first["previousStatus"], first["status"], delivered["status"]) == (
        None,
        "SENT",
        "DELIVERED",
    )
    assert first["changes"]["requestedAt"] == "2026-11-23T09:00:00Z"  # a new record: all of it
    assert first["changes"]["metadata"] == {"o": 1}
    assert "statusHistory" not in first["changes"]
    assert delivered["changes"] == {
        "providerId": "solapi",
        "type": "SMS",
        "status": "DELIVERED",
        "providerStatusCode": "4000",
        "statusUpdatedAt": delivered["changedAt"],
        "nextCheckAt": None,
        "sequence": 2,
    }
    # The per-message endpoints travel with every change of their message.
    assert [c["changes"]["webhooks"][0]["id"] for c in _of(changes, "sl-2")] == ["own", "own"]

    # The table is what it is with full status changes: queries answer the whole record.
    record = worker.record("sl-1", lambda r: r["status"] == "DELIVERED")
    assert [h["status"] for h in record["statusHistory"]] == ["SENT", "DELIVERED"]
    assert record["providerStatusCode"] == "4000" and record["metadata"] == {"o": 1}
    status, counted = worker.http_get("/records/count?status=DELIVERED")
    assert status == 200 and counted["count"] == 2, counted

    # Outbound webhooks: the global endpoint gets all four, the message's own one its
    # delivery, each with the provider in metadata and the slim change as data.
    await receiver.wait("ops", 4)
    await receiver.wait("own", 1)
    await asyncio.sleep(0.5)
    assert len(receiver.calls["own"]) == 1
    posted = [orjson.loads(body) for _, _, body in receiver.calls["ops"]]
    assert sorted(p["type"] for p in posted) == ["message.delivered"] * 2 + ["message.sent"] * 2
    assert {p["metadata"]["providerId"] for p in posted} == {"solapi"}
    (mine,) = [orjson.loads(body) for _, _, body in receiver.calls["own"]]
    assert mine["id"] == "sl-2:2" and mine["data"]["changes"]["status"] == "DELIVERED"
    outcomes = await io.read_json(topics.webhook_deliveries, lambda es: len(es) >= 5)
    assert {o["outcome"] for o in outcomes} == {"delivered"}

    # The dashboard's recent list names provider and type from the changes.
    _, recent = worker.http_get("/recent")
    latest = {c["messageId"]: c for c in reversed(recent["statusChanges"])}
    assert (latest["sl-1"]["providerId"], latest["sl-1"]["type"]) == ("solapi", "SMS")

    # The client's follower (tail, DeliveryTracker) decodes them.
    followed = []
    stream = follow_status_changes(settings, from_beginning=True)
    async with asyncio.timeout(30):
        async for change in stream:
            followed.append(change)
            if len(followed) == 4:
                break
    await stream.aclose()
    assert all(c.record is None and c.changes is not None for c in followed)
    assert worker.stop() == 0

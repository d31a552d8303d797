"""The query API and the k-msg facades against real workers: k-msg's list/count/count-by/
filter/ordering/stats cases, over HTTP and through the Python facade, with one worker and then
with the table spread over two (every answer must be the same)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import SendRecorded, UpdateStatus
from deliverytrack.models.records import TrackingRecord
from deliverytrack.streams.api.client import DeliveryTrackClient
from deliverytrack.streams.api.facades import (
    DeliveryTracker,
    DeliveryTrackingAnalyticsService,
    DeliveryTrackingService,
    DeliveryTrackingStore,
)
from deliverytrack.tables.fold import fold
from tests.factories import T0, send_recorded_factory, update_status_factory
from tests.integration.conftest import free_port
from tests.integration.test_replay_cli import run_cli

pytestmark = pytest.mark.integration

S = TrackingStatus
PROVIDERS = ("solapi", "iwinv", "sim")
TYPES = (MessageType.SMS, MessageType.ALIMTALK, MessageType.LMS)
N = 120


def workload() -> list[SendRecorded | UpdateStatus]:
    """N sends over ~74 minutes (crossing minute and hour buckets), then status updates."""
    events: list[SendRecorded | UpdateStatus] = []
    for i in range(N):
        events.append(
            send_recorded_factory(
                f"q-{i:03d}",
                provider_id=PROVIDERS[i % 3],
                type=TYPES[(i // 3) % 3],
                requested_at=T0 + timedelta(seconds=37 * i),
                event_id=f"q-send-{i}",
            )
        )
    for i in range(N):
        sent = T0 + timedelta(seconds=37 * i + 1)
        if i % 5 == 0:
            events.append(
                update_status_factory(
                    S.DELIVERED,
                    f"q-{i:03d}",
                    at=sent + timedelta(seconds=i),
                    event_id=f"q-upd-{i}",
                    sent_at=sent,
                    delivered_at=sent + timedelta(seconds=i),
                    provider_status_code="4000",
                )
            )
        elif i % 5 == 1:
            events.append(
                update_status_factory(
                    S.FAILED, f"q-{i:03d}", at=sent + timedelta(seconds=5), event_id=f"q-upd-{i}"
                )
            )
    return events


def expected_records(events: list[SendRecorded | UpdateStatus]) -> dict[str, TrackingRecord]:
    records: dict[str, TrackingRecord] = {}
    for event in events:
        new, _ = fold(records.get(event.message_id), event)
        assert new is not None
        records[event.message_id] = new
    return records


def brute_count(records: dict[str, TrackingRecord], pred: Any) -> int:
    return sum(1 for r in records.values() if pred(r))


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def wait_count(client: DeliveryTrackClient, flt: dict[str, Any], n: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            got = await client.count_records(flt)
        except Exception as exc:  # a worker still starting
            got = repr(exc)
        if got == n:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"count {flt}: {got}, expected {n}")
        await asyncio.sleep(0.2)


async def answers(client: DeliveryTrackClient) -> dict[str, Any]:
    """A fixed set of queries; two deployments must give identical answers."""
    w0, w1 = T0 + timedelta(minutes=10, seconds=13), T0 + timedelta(minutes=55, seconds=1)
    out: dict[str, Any] = {
        "count": await client.count_records(),
        "count_in": await client.count_records(
            {"providerId": ["solapi", "iwinv"], "status": ["DELIVERED"]}
        ),
        "count_window": await client.count_records(
            {"type": ["SMS"], "requestedAtFrom": iso(w0), "requestedAtTo": iso(w1)}
        ),
        "count_to": await client.count_records({"to": ["01012345678"], "status": ["FAILED"]}),
        "count_updated": await client.count_records(
            {"statusUpdatedAtFrom": iso(T0 + timedelta(minutes=30))}
        ),
        "count_empty": await client.count_records({"status": []}),
        "by_status": await client.count_by(None, ["status"]),
        "by_provider_type": await client.count_by({"status": ["SENT"]}, ["providerId", "type"]),
        "stats": await client.stats(),
        "stats_period": await client.stats(w0, w1),
    }
    for order_by in ("requestedAt", "statusUpdatedAt"):
        for direction in ("asc", "desc"):
            page = await client.list_records(
                {"providerId": ["iwinv"]},
                limit=7,
                offset=3,
                order_by=order_by,
                order_direction=direction,
            )
            out[f"list_{order_by}_{direction}"] = [r.message_id for r in page]
    return out


def expected_answers(records: dict[str, TrackingRecord]) -> dict[str, Any]:
    w0, w1 = T0 + timedelta(minutes=10, seconds=13), T0 + timedelta(minutes=55, seconds=1)
    rs = list(records.values())
    by_status = Tally(r.status.value for r in rs)
    sent = [r for r in rs if r.status is S.SENT]
    by_pt = Tally((r.provider_id, r.type.value) for r in sent)
    delivered = [r for r in rs if r.delivered_at and r.sent_at]
    in_window = [r for r in rs if w0 <= r.requested_at <= w1]

    def stats_of(group: list[TrackingRecord]) -> dict[str, Any]:
        total = len(group)
        d = [r for r in group if r.delivered_at and r.sent_at]
        return {
            "totalMessages": total,
            "deliveryRate": sum(r.status is S.DELIVERED for r in group) / total * 100,
            "failureRate": sum(r.status is S.FAILED for r in group) / total * 100,
            "averageDeliveryTime": sum(
                (r.delivered_at - r.sent_at).total_seconds() * 1000  # type: ignore[operator]
                for r in d
            )
            / len(d),
            "byProvider": dict(sorted(Tally(r.provider_id for r in group).items())),
            "byStatus": dict(sorted(Tally(r.status.value for r in group).items())),
        }

    out: dict[str, Any] = {
        "count": len(rs),
        "count_in": brute_count(
            records, lambda r: r.provider_id in ("solapi", "iwinv") and r.status is S.DELIVERED
        ),
        "count_window": brute_count(
            records, lambda r: r.type is MessageType.SMS and w0 <= r.requested_at <= w1
        ),
        "count_to": brute_count(records, lambda r: r.status is S.FAILED),
        "count_updated": brute_count(
            records, lambda r: r.status_updated_at >= T0 + timedelta(minutes=30)
        ),
        "count_empty": 0,
        "by_status": sorted(
            ({"key": {"status": k}, "count": v} for k, v in by_status.items()),
            key=lambda row: (-row["count"], row["key"]["status"]),
        ),
        "by_provider_type": sorted(
            ({"key": {"providerId": p, "type": t}, "count": v} for (p, t), v in by_pt.items()),
            key=lambda row: (-row["count"], row["key"]["providerId"], row["key"]["type"]),
        ),
        "stats": stats_of(rs),
        "stats_period": stats_of(in_window),
    }
    assert delivered
    iwinv = [r for r in rs if r.provider_id == "iwinv"]
    for order_by, attr in (
        ("requestedAt", "requested_at"),
        ("statusUpdatedAt", "status_updated_at"),
    ):
        for direction in ("asc", "desc"):
            ordered = sorted(
                iwinv, key=lambda r: (getattr(r, attr), r.message_id), reverse=direction == "desc"
            )
            out[f"list_{order_by}_{direction}"] = [r.message_id for r in ordered[3:10]]
    return out


def comparable(got: dict[str, Any]) -> dict[str, Any]:
    """Stats carry more fields (byType, period); compare the k-msg ones."""
    out = dict(got)
    for name in ("stats", "stats_period"):
        stats = got[name]
        out[name] = {
            key: stats[key]
            for key in (
                "totalMessages",
                "deliveryRate",
                "failureRate",
                "averageDeliveryTime",
                "byProvider",
                "byStatus",
            )
        }
    return out


async def test_queries_facades_and_two_workers(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, tmp_path: Path
) -> None:
    settings = settings_factory()
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    events = workload()
    for event in events:
        topic = io.topics.send_results if isinstance(event, SendRecorded) else io.topics.commands
        await io.send(topic, event.message_id, event)
    records = expected_records(events)
    expected = expected_answers(records)

    client = DeliveryTrackClient(worker.base_url, settings)
    try:
        await wait_count(client, {}, N)
        await wait_count(client, {"status": ["DELIVERED", "FAILED"]}, 48)
        one = await answers(client)
        assert comparable(one) == expected

        # --- HTTP: the same answers, and 400/404 with reasons -------------------------------
        status, body = await worker.aget("/records/count?providerId=solapi,iwinv&status=DELIVERED")
        assert (status, body) == (200, {"count": expected["count_in"]})
        status, body = await worker.aget(
            "/records/count?providerId=solapi&providerId=iwinv&status=delivered"
        )
        assert (status, body) == (200, {"count": expected["count_in"]})
        status, body = await worker.aget("/records/count-by?groupBy=status")
        assert status == 200 and body["rows"] == expected["by_status"]
        status, body = await worker.aget("/records/q-005/history")
        assert status == 200
        assert [h["status"] for h in body["history"]] == ["SENT", "DELIVERED"]
        for path, fragment in [
            ("/records?status=DONE", "status: unknown value 'DONE'"),
            ("/records?limit=-1", "limit: must be between 0 and 10000"),
            ("/records?limit=ten", "limit: 'ten' is not an integer"),
            ("/records?orderBy=createdAt", "orderBy"),
            ("/records?requestedAtFrom=yesterday", "requestedAtFrom: 'yesterday' is not a time"),
            ("/records?requestedAtFrom=2026-11-23T09:00:00", "has no timezone"),
            ("/records?colour=red", "unknown parameter 'colour'"),
            ("/records/count-by", "groupBy: required"),
            ("/records/count-by?groupBy=to", "groupBy: 'to'"),
            ("/stats?from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z", "from: must not be after"),
            ("/records?type=WHATSAPP", "type: unknown value 'WHATSAPP'"),
        ]:
            status, body = await worker.aget(path)
            assert status == 400, (path, status, body)
            assert fragment in body["error"], (path, body)
        status, body = await worker.aget("/records/nope")
        assert status == 404 and "nope" in body["error"]

        # --- the CLI: the same answers, tables or JSON, clear exits -------------------------
        code, out, _ = await run_cli(
            settings, "count", "--provider-id", "solapi,iwinv", "--status", "DELIVERED"
        )
        assert (code, out.strip()) == (0, str(expected["count_in"]))
        code, out, _ = await run_cli(settings, "count-by", "status", "--json")
        assert code == 0 and orjson.loads(out) == expected["by_status"]
        code, out, _ = await run_cli(settings, "count-by", "providerId,type", "--status", "SENT")
        assert code == 0 and out.splitlines()[0].split() == ["providerId", "type", "count"]
        code, out, _ = await run_cli(
            settings,
            "list",
            "--provider-id",
            "iwinv",
            "--limit",
            "7",
            "--offset",
            "3",
            "--order",
            "asc",
            "--json",
        )
        assert code == 0
        assert [r["messageId"] for r in orjson.loads(out)] == expected["list_requestedAt_asc"]
        code, out, _ = await run_cli(settings, "get", "q-005")
        assert code == 0 and "DELIVERED" in out and "history:" in out
        code, out, _ = await run_cli(settings, "stats", "--json")
        assert code == 0 and orjson.loads(out)["totalMessages"] == N
        code, out, _ = await run_cli(settings, "stats")
        assert code == 0 and "delivery rate" in out
        code, _, err = await run_cli(settings, "count", "--status", "DONE")
        assert code == 2 and "unknown value 'DONE'" in err
        code, _, err = await run_cli(settings, "get", "nope")
        assert code == 1 and "nope" in err
        code, out, _ = await run_cli(settings, "tail", "--from-beginning", "--max", "3", "--json")
        assert code == 0 and len(out.splitlines()) == 3
        assert all(orjson.loads(line)["eventType"] == "StatusChanged" for line in out.splitlines())

        # --- k-msg delivery-tracking.test.ts 9: listDue, list/count in a window, countBy,
        # patch -> DELIVERED keeps providerStatusCode --------------------------------------
        store = DeliveryTrackingStore(client)
        await store.init()
        due = await store.list_due(datetime.now(UTC), 5)
        assert len(due) == 5
        assert all(r.status is S.SENT for r in due)
        assert [r.next_check_at for r in due] == sorted(r.next_check_at for r in due)  # type: ignore[type-var]
        target = records["q-002"]
        window = {
            "providerId": target.provider_id,
            "requestedAtFrom": iso(target.requested_at - timedelta(milliseconds=10)),
            "requestedAtTo": iso(target.requested_at + timedelta(milliseconds=10)),
        }
        listed = await store.list_records({**window, "limit": 10})
        assert [r.message_id for r in listed] == ["q-002"]
        assert await store.count_records(window) == 1
        assert await store.count_by(window, ["status"]) == [{"key": {"status": "SENT"}, "count": 1}]
        # The same over HTTP.
        query = urlencode(window)
        status, body = await worker.aget(f"/records?{query}&limit=10")
        assert status == 200 and [r["messageId"] for r in body["records"]] == ["q-002"]
        assert await worker.aget(f"/records/count?{query}") == (200, {"count": 1})
        status, body = await worker.aget(f"/records/count-by?{query}&groupBy=status")
        assert (status, body["rows"]) == (200, [{"key": {"status": "SENT"}, "count": 1}])
        status, body = await worker.aget(
            f"/records/due?{urlencode({'now': iso(datetime.now(UTC))})}&limit=5"
        )
        assert status == 200 and [r["messageId"] for r in body["records"]] == [
            r.message_id for r in due
        ]
        await store.patch("q-002", {"status": "DELIVERED", "providerStatusCode": "2000"})
        patched = await client.wait_for("q-002", lambda r: r.status is S.DELIVERED)
        assert patched.provider_status_code == "2000"
        await store.patch("no-such-id", {"status": "DELIVERED"})  # k-msg: silent no-op
        with pytest.raises(ValueError, match="cannot be patched"):
            await store.patch("q-002", {"metadata": {"x": 1}})
        await store.patch("q-002", {"status": "SENT"})  # never regresses from terminal
        await asyncio.sleep(1)
        assert (await store.get("q-002")).status is S.DELIVERED  # type: ignore[union-attr]

        # --- DeliveryTrackingService: recordSend from a hook context, reads, runOnce ----------
        service = DeliveryTrackingService(client)
        await service.start()
        await service.record_send(
            {
                "messageId": "svc-1",
                "options": {"type": "SMS", "to": "01000000000", "from": "0200000000"},
                "timestamp": int((T0 - timedelta(days=30)).timestamp() * 1000),
                "providerId": "sim",
            },
            {"messageId": "svc-1", "providerId": "sim", "providerMessageId": "pm-svc-1"},
        )
        svc = await client.wait_for("svc-1")
        assert svc.status is S.SENT and svc.provider_message_id == "pm-svc-1"
        assert (await service.get_record("svc-1")) == svc
        # A messageId that /records/<id> cannot name (/records/count is the count): found.
        await service.record_send(
            {"messageId": "count", "options": {"type": "SMS", "to": "01000000000"},
             "timestamp": int((T0 - timedelta(days=30)).timestamp() * 1000), "providerId": "sim"},
            {"messageId": "count", "providerId": "sim", "providerMessageId": "pm-count"},
        )  # fmt: skip
        named_count = await client.wait_for("count")
        assert named_count.provider_message_id == "pm-count"
        assert await service.get_record("count") == named_count
        assert await service.get_record("due") is None
        code, out, _ = await run_cli(settings, "get", "count", "--json")
        assert code == 0 and orjson.loads(out)["providerMessageId"] == "pm-count"
        code, _, err = await run_cli(settings, "get", "due")
        assert code == 1 and "no record for messageId 'due'" in err
        assert await service.count_records({"messageId": ["svc-1"]}) == 1
        assert await service.count_by({"messageId": "svc-1"}, ["providerId"]) == [
            {"key": {"providerId": "sim"}, "count": 1}
        ]
        assert [
            r.message_id for r in await service.list_records({"messageId": "svc-1", "limit": 5})
        ] == ["svc-1"]
        # runOnce: the workers scan now; the due records are polled (their providers are not
        # configured here: PROVIDER_NOT_FOUND -> UNKNOWN, kmsg-behaviour.md 3.3).
        assert await service.run_once() >= 1
        await wait_count(
            client, {"status": ["SENT"], "requestedAtTo": iso(T0 + timedelta(hours=2))}, 0
        )

        # --- DeliveryTracker (old tracker tests 1-4 and the analytics case) -------------------
        tracker = DeliveryTracker(client)
        seen: list[tuple[str, Any]] = []
        tracker.on("tracking:started", lambda e: seen.append(("started", e["data"]["messageId"])))
        tracker.on("status:updated", lambda e: seen.append(("updated", e["data"]["messageId"])))
        tracker.on("tracking:completed", lambda e: seen.append(("done", e["data"]["messageId"])))
        cleaned: list[Any] = []
        tracker.once("cleanup:completed", cleaned.append)
        await tracker.start()
        await tracker.track_message("t-1", "01099998888", "TPL-1", "solapi")
        report = None
        deadline = time.monotonic() + 30
        while report is None and time.monotonic() < deadline:
            report = await tracker.get_delivery_report("t-1")
            await asyncio.sleep(0.1)
        assert report is not None and report["status"] == "QUEUED"
        assert report["templateId"] == "TPL-1"
        assert await tracker.update_status("t-1", "SENT") is True
        await client.wait_for("t-1", lambda r: r.status is S.SENT)
        assert (await tracker.get_delivery_report("t-1"))["status"] == "SENT"  # type: ignore[index]
        assert await tracker.update_status("unknown-id", "SENT") is False
        await tracker.track_message("t-2", "01099997777", "TPL-1", "solapi")
        await client.wait_for("t-2")
        assert await tracker.update_status("t-2", S.FAILED) is True
        await client.wait_for("t-2", lambda r: r.status is S.FAILED)
        assert await tracker.update_status("t-2", S.SENT) is False  # k-msg quirk: allowed there
        sent_ids = {r.message_id for r in await tracker.get_messages_by_status("SENT")}
        failed_ids = {r.message_id for r in await tracker.get_messages_by_status("FAILED")}
        assert "t-1" in sent_ids and "t-2" in failed_ids and "t-2" not in sent_ids
        deadline = time.monotonic() + 15
        while len(seen) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert ("started", "t-1") in seen and ("updated", "t-1") in seen
        assert ("started", "t-2") in seen and ("done", "t-2") in seen

        # Old tracker test 3 and the analytics case, each in its own period.
        p1 = T0 - timedelta(days=10)
        for i in range(10):
            mid = f"rate-{i}"
            await io.send(
                io.topics.send_results,
                mid,
                send_recorded_factory(mid, requested_at=p1 + timedelta(seconds=i)),
            )
            status = S.DELIVERED if i < 7 else S.FAILED
            await io.send(
                io.topics.commands,
                mid,
                update_status_factory(status, mid, at=p1 + timedelta(minutes=1)),
            )
        p2 = T0 - timedelta(days=20)
        analytics = [
            ("solapi", MessageType.SMS, S.DELIVERED),
            ("solapi", MessageType.SMS, S.FAILED),
            ("iwinv", MessageType.ALIMTALK, None),
            ("solapi", MessageType.ALIMTALK, S.DELIVERED),
        ]
        for i, (provider, kind, final) in enumerate(analytics):
            mid = f"an-{i}"
            await io.send(
                io.topics.send_results,
                mid,
                send_recorded_factory(
                    mid,
                    provider_id=provider,
                    type=kind,
                    requested_at=p2 + timedelta(seconds=i),
                    scheduled_at=p2 + timedelta(hours=1) if final is None else None,
                ),
            )
            if final is not None:
                await io.send(
                    io.topics.commands,
                    mid,
                    update_status_factory(final, mid, at=p2 + timedelta(minutes=1)),
                )
        # Issue 14 items 4 and 6: a requestedAt with sub-millisecond digits, and no sender.
        at = T0 - timedelta(days=40) + timedelta(seconds=7, microseconds=123_456)
        await io.send(
            io.topics.send_results,
            "us-1",
            send_recorded_factory(
                "us-1",
                provider_message_id=None,  # with initialStatus: not polled, stays QUEUED
                initial_status=S.QUEUED,
                requested_at=at,
                recorded_at=at,
            ).model_copy(update={"from_": None}),
        )
        await wait_count(
            client,
            {"status": ["DELIVERED", "FAILED"], "requestedAtTo": iso(p1 + timedelta(hours=1))},
            13,
        )
        await client.wait_for("us-1")
        rate = await tracker.get_stats_for_period(p1, p1 + timedelta(minutes=1))
        assert (rate["totalMessages"], rate["deliveryRate"], rate["failureRate"]) == (10, 70, 30)
        period = urlencode({"from": iso(p1), "to": iso(p1 + timedelta(minutes=1))})
        status, body = await worker.aget(f"/stats?{period}")
        assert status == 200
        assert (body["totalMessages"], body["deliveryRate"], body["failureRate"]) == (10, 70, 30)
        period = urlencode({"from": iso(p2), "to": iso(p2 + timedelta(minutes=1))})
        status, body = await worker.aget(f"/stats?{period}")
        assert (body["totalMessages"], body["deliveryRate"], body["failureRate"]) == (4, 50, 25)
        assert body["byProvider"] == {"iwinv": 1, "solapi": 3}
        status, body = await worker.aget("/records?status=SENT&messageId=t-1,t-2")
        assert [r["messageId"] for r in body["records"]] == ["t-1"]
        an = await tracker.get_stats_for_period(p2, p2 + timedelta(minutes=1))
        assert an["totalMessages"] == 4
        assert an["deliveryRate"] == 50 and an["failureRate"] == 25
        assert an["byProvider"] == {"iwinv": 1, "solapi": 3}
        assert an["byType"] == {"ALIMTALK": 2, "SMS": 2}
        assert an["byStatus"] == {"DELIVERED": 2, "FAILED": 1, "PENDING": 1}

        # --- k-msg analytics getSummary: over HTTP and the facade ----------------------------
        period = urlencode(
            {
                "from": iso(p2),
                "to": iso(p2 + timedelta(minutes=1)),
                "includeByProviderId": "true",
                "includeByType": "true",
            }
        )
        status, body = await worker.aget(f"/stats/summary?{period}")
        assert status == 200, body
        assert body["total"] == 4
        assert body["byStatus"]["DELIVERED"] == 2 and body["byStatus"]["CANCELLED"] == 0
        rates = body["rates"]
        assert (rates["deliveredOfTotalPct"], rates["failedOfTotalPct"]) == (50, 25)
        assert rates["deliveredOfFinalizedPct"] == pytest.approx(200 / 3)
        assert {k: v["total"] for k, v in body["byProviderId"].items()} == {"iwinv": 1, "solapi": 3}
        assert {k: v["total"] for k, v in body["byType"].items()} == {"ALIMTALK": 2, "SMS": 2}
        analytics = DeliveryTrackingAnalyticsService(client)
        await analytics.init()
        got = await analytics.get_summary(
            {"requestedAt": {"start": p2, "end": p2 + timedelta(minutes=1)}},
            {"includeByProviderId": True, "includeByType": True},
        )
        assert got == body
        only = await analytics.get_summary(
            {"requestedAt": {"start": p2, "end": p2 + timedelta(minutes=1)}, "type": "ALIMTALK"}
        )
        assert only["total"] == 2 and "byType" not in only
        for path, fragment in [
            (f"/stats/summary?from={iso(p2)}", "to: required"),
            ("/stats/summary?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "after"),
            (f"/stats/summary?{period}&status=SENT", "unknown parameter"),
        ]:
            status, body = await worker.aget(path)
            assert status == 400 and fragment in body["error"], (path, body)

        # --- a bound equal to a record's own sub-millisecond time matches it -----------------
        exact = {"requestedAtFrom": iso(at), "requestedAtTo": iso(at)}
        assert await client.count_records(exact) == 1
        assert await client.count_by(exact, ["status"]) == [
            {"key": {"status": "QUEUED"}, "count": 1}
        ]
        assert [r.message_id for r in await client.list_records(exact)] == ["us-1"]
        assert [
            r.message_id
            for r in await client.list_records(
                {"statusUpdatedAtFrom": iso(at), "statusUpdatedAtTo": iso(at)},
                order_by="statusUpdatedAt",
            )
        ] == ["us-1"]
        assert (await client.stats(at, at))["totalMessages"] == 1
        assert (await client.summary(at, at))["total"] == 1
        assert (await worker.aget(f"/records/count?{urlencode(exact)}")) == (200, {"count": 1})
        # --- from="" matches records without a sender (k-msg compares a missing from as "") --
        both = {"messageId": ["us-1", "q-000"]}
        assert await client.count_records({**both, "from": ""}) == 1
        assert await store.count_records({**both, "from": ["", "0212345678"]}) == 2
        status, body = await worker.aget("/records?from=&messageId=us-1,q-000")
        assert status == 200 and [r["messageId"] for r in body["records"]] == ["us-1"]

        total = await tracker.get_stats()
        assert total["totalMessages"] == N + 1 + 1 + 2 + 10 + 4 + 1  # svc-1, "count", ...

        await tracker.stop()
        await service.stop()

        # --- the same table over two workers ------------------------------------------------
        snapshot = await answers(client)
        snapshot["all_stats"] = await client.stats()
        snapshot["summary"] = await client.summary(
            T0 - timedelta(days=60), T0 + timedelta(days=1), include_by_provider_id=True
        )
        snapshot["records"] = [r.model_dump() for r in await client.list_records(limit=1000)]
        assert len(snapshot["records"]) == total["totalMessages"]
        two = settings.model_copy(
            update={
                "web_port": free_port(),
                "webhook_port": free_port(),
                "data_dir": tmp_path / "data-2",
            }
        )
        worker2 = await worker_factory(two).astart()
        deadline = time.monotonic() + 60
        while True:
            _, h1 = await worker.aget("/health")
            _, h2 = await worker2.aget("/health")
            owners = set((h1 or {}).get("owners", {}).values())
            ready = sorted(
                (h1 or {}).get("readyPartitions", []) + (h2 or {}).get("readyPartitions", [])
            )
            if (
                len(owners) == 2
                and ready == [0, 1, 2, 3]
                and h1["readyPartitions"]
                and h2["readyPartitions"]
            ):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"two workers never shared the partitions: {h1} {h2}")
            await asyncio.sleep(0.3)
        for url in (worker.base_url, worker2.base_url):
            async with DeliveryTrackClient(url, settings) as other:
                got = await answers(other)
                got["all_stats"] = await other.stats()
                got["summary"] = await other.summary(
                    T0 - timedelta(days=60), T0 + timedelta(days=1), include_by_provider_id=True
                )
                got["records"] = [r.model_dump() for r in await other.list_records(limit=1000)]
                assert got == snapshot
                for mid in ("q-000", "q-001", "q-002", "q-003", "t-1", "svc-1"):
                    assert (await other.get_record(mid)) is not None
    finally:
        await client.close()

"""The k-msg facades without a broker: a client whose "topics" are the pure fold (what a facade
publishes is encoded, decoded as the worker would, and folded at once) and whose "query API"
answers from the folded records with the same query functions the workers use."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from pydantic import BaseModel

from deliverytrack.models.codec import decode_command, decode_send_result, encode, encode_record
from deliverytrack.models.common import ErrorInfo
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import SendRecorded
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import DeliveryTrackClient, QueryFailed
from deliverytrack.streams.api.facades import (
    DeliveryTracker,
    DeliveryTrackingAnalyticsService,
    DeliveryTrackingService,
    DeliveryTrackingStore,
)
from deliverytrack.tables.aggregates import Counter, contribution
from deliverytrack.tables.due_index import effective_due
from deliverytrack.tables.fold import fold
from deliverytrack.tables.query import matches, parse_summary, summary
from tests.factories import T0

S = TrackingStatus


class FoldingClient(DeliveryTrackClient):
    """Publishes into the fold, reads from the folded records (no Kafka, no HTTP)."""

    def __init__(self) -> None:
        super().__init__("http://fold.invalid", Settings())
        self.records: dict[str, TrackingRecord] = {}
        self.published: list[BaseModel] = []
        self.gets: list[tuple[str, list[tuple[str, str]]]] = []

    async def publish(self, topic: str, key: str, event: BaseModel) -> None:
        raw = encode(event)
        decoded = (
            decode_send_result(raw) if isinstance(event, SendRecorded) else decode_command(raw)
        )
        self.published.append(decoded)
        record, _ = fold(self.records.get(decoded.message_id), decoded)
        if record is not None:
            self.records[record.message_id] = record

    async def _get(self, path: str, params: Iterable[tuple[str, str]] = ()) -> Any:
        items = list(params)
        self.gets.append((path, items))
        query: dict[str, list[str]] = {}
        for name, value in items:
            query.setdefault(name, []).append(value)
        if path == "/stats/summary":
            parsed = parse_summary(query)
            rows: dict[Any, Counter] = {}
            for record in self.records.values():
                if matches(record, parsed.filter):
                    item = contribution(record)
                    rows.setdefault(item.dims, Counter()).add(item.counter)
            return summary(rows, by_provider_id=parsed.by_provider_id, by_type=parsed.by_type)
        if path == "/records/due":
            now = datetime.fromisoformat(query["now"][0])
            due = sorted(
                (due_at, r.message_id, r)
                for r in self.records.values()
                if (due_at := effective_due(r)) is not None and due_at <= now
            )
            return {"records": [_json(r) for _, _, r in due[: int(query["limit"][0])]]}
        if path.startswith("/records/"):
            record = self.records.get(unquote(path.removeprefix("/records/")))
            if record is None:
                raise QueryFailed(404, "no tracking record")
            return _json(record)
        raise AssertionError(f"the facade asked for {path}, not served here")


def _json(record: TrackingRecord) -> Any:
    return orjson.loads(encode_record(record))


@pytest.fixture
def client() -> FoldingClient:
    return FoldingClient()


def hook_context(message_id: str, type_: str = "SMS", **options: Any) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "options": {"type": type_, "to": "01012345678", "from": "0212345678", **options},
        "timestamp": int(T0.timestamp() * 1000),
        "providerId": "iwinv",
    }


# --- DeliveryTrackingService.record_send (kmsg-behaviour.md 3.2) ----------------------------


async def test_status_updated_at_is_when_the_send_result_was_recorded(
    client: FoldingClient,
) -> None:
    """k-msg 3.2 step 5: statusUpdatedAt = now (the recording), not the send's start time
    (the hook context's timestamp, which is requestedAt)."""

    before = datetime.now(UTC)
    await DeliveryTrackingService(client).record_send(
        hook_context("m-1"), {"providerId": "iwinv", "providerMessageId": "77"}
    )
    record = client.records["m-1"]
    assert record.requested_at == T0
    assert before <= record.status_updated_at <= datetime.now(UTC)
    assert record.status_history[0].at == record.status_updated_at


@pytest.mark.parametrize("provider_message_id", [12345, 0, 1.5, True, ["77"], {"id": "77"}])
async def test_a_provider_message_id_that_is_not_a_string_is_missing(
    client: FoldingClient, provider_message_id: Any
) -> None:
    """k-msg 3.2 step 3: a non-string providerMessageId counts as "", so the record is
    UNKNOWN with MISSING_PROVIDER_MESSAGE_ID (it used to raise and record nothing)."""

    await DeliveryTrackingService(client).record_send(
        hook_context("m-int", "ALIMTALK"),
        {"providerId": "iwinv", "providerMessageId": provider_message_id},
    )
    record = client.records["m-int"]
    assert record.status is S.UNKNOWN
    assert record.provider_message_id == ""
    assert record.last_error == ErrorInfo(
        code="MISSING_PROVIDER_MESSAGE_ID", message="providerMessageId missing"
    )


async def test_an_alimtalk_send_without_failover_options_gets_the_failover_block(
    client: FoldingClient,
) -> None:
    """k-msg 3.2 step 4: every AlimTalk send records metadata.failover (request,
    sendWarningCodes, apiAttempt not_attempted), failover options or not."""

    await DeliveryTrackingService(client).record_send(
        hook_context("m-ak", "ALIMTALK", templateId="TPL-1"),
        {
            "providerId": "iwinv",
            "providerMessageId": "9",
            "warnings": [{"code": "FAILOVER_PARTIAL_PROVIDER"}],
        },
    )
    metadata = client.records["m-ak"].metadata
    assert metadata is not None
    assert metadata["failover"] == {
        "request": {},
        "sendWarningCodes": ["FAILOVER_PARTIAL_PROVIDER"],
        "apiAttempt": {"attempted": False, "status": "not_attempted"},
    }
    await DeliveryTrackingService(client).record_send(
        hook_context("m-sms"), {"providerId": "iwinv", "providerMessageId": "10"}
    )
    assert client.records["m-sms"].metadata is None  # not AlimTalk: no block


async def test_an_upserted_record_keeps_its_status_updated_at(client: FoldingClient) -> None:
    """k-msg's upsert stores the record as given: its statusUpdatedAt too (the send result
    carries it as recordedAt; it used to become requestedAt)."""
    updated = T0 + timedelta(seconds=5)
    record = _sent("m-up").model_copy(update={"status_updated_at": updated})
    await DeliveryTrackingStore(client).upsert(record)
    assert client.records["m-up"].status_updated_at == updated


# --- DeliveryTrackingStore.list_due (kmsg-behaviour.md 4.3) ---------------------------------


@pytest.mark.parametrize("limit", [math.nan, math.inf, -math.inf, 0, -3, 0.99, None, "5"])
async def test_list_due_with_a_limit_that_is_not_a_positive_number_is_empty(
    client: FoldingClient, limit: Any
) -> None:

    await DeliveryTrackingStore(client).upsert(_sent("m-due"))
    assert await DeliveryTrackingStore(client).list_due(T0 + timedelta(days=1), limit) == []
    assert client.gets == []  # answered without asking the workers


async def test_list_due_floors_its_limit_and_caps_it_at_the_query_maximum(
    client: FoldingClient,
) -> None:

    store = DeliveryTrackingStore(client)
    for i in range(3):
        await store.upsert(_sent(f"m-{i}", requested_at=T0 + timedelta(seconds=i)))
    due = await store.list_due(T0 + timedelta(days=1), 2.7)
    assert [r.message_id for r in due] == ["m-0", "m-1"]
    await store.list_due(T0 + timedelta(days=1), 10**9)
    assert dict(client.gets[-1][1])["limit"] == "10000"


def _sent(message_id: str, requested_at: datetime = T0) -> TrackingRecord:
    record, _ = fold(
        None,
        SendRecorded(
            event_id=f"send-{message_id}",
            message_id=message_id,
            provider_id="iwinv",
            provider_message_id=f"pm-{message_id}",
            type="SMS",  # type: ignore[arg-type]
            to="01012345678",
            requested_at=requested_at,
        ),
    )
    assert record is not None
    return record


# --- DeliveryTracker.update_status (kmsg-behaviour.md 10) -----------------------------------


async def test_an_error_in_details_becomes_last_error_and_the_reports_error(
    client: FoldingClient,
) -> None:
    """k-msg copies details.error into the delivery report; here it is the record's
    lastError (and so the report's error), its own details kept in the history entry."""

    tracker = DeliveryTracker(client)
    await tracker.track_message("t-1", "01099998888", "TPL-1", "iwinv")
    failed_at = T0 + timedelta(minutes=2)
    error = {"code": "NON_KAKAO_USER", "message": "not a KakaoTalk user", "details": {"n": 1}}
    assert await tracker.update_status("t-1", S.FAILED, {"error": error, "failedAt": failed_at})
    record = client.records["t-1"]
    assert record.status is S.FAILED and record.failed_at == failed_at
    assert record.last_error == ErrorInfo(code="NON_KAKAO_USER", message="not a KakaoTalk user")
    report = await tracker.get_delivery_report("t-1")
    assert report is not None
    assert report["error"] == {"code": "NON_KAKAO_USER", "message": "not a KakaoTalk user"}
    assert report["failedAt"] == failed_at
    details = record.status_history[-1].details
    assert details is not None and details["errorDetails"] == {"n": 1}
    assert details["error"] == {"code": "NON_KAKAO_USER", "message": "not a KakaoTalk user"}


async def test_an_error_argument_becomes_last_error(client: FoldingClient) -> None:

    tracker = DeliveryTracker(client)
    await tracker.track_message("t-2", "01099998888", "TPL-1", "iwinv")
    assert await tracker.update_status(
        "t-2",
        "FAILED",
        {"metadata": {"operator": "kim"}, "error": {"code": "IGNORED", "message": ""}},
        error=ErrorInfo(code="E42", message="boom"),
    )
    report = await tracker.get_delivery_report("t-2")
    assert report is not None and report["error"] == {"code": "E42", "message": "boom"}
    assert client.records["t-2"].status_history[-1].details == {
        "operator": "kim",
        "error": {"code": "E42", "message": "boom"},
    }
    with pytest.raises(ValueError, match="a code is required"):
        await tracker.update_status("t-2", "FAILED", {"error": {"message": "no code"}})


# --- DeliveryTrackingAnalyticsService.get_summary (kmsg-behaviour.md 12) ----------------------


async def test_get_summary_of_the_analytics_case(client: FoldingClient) -> None:

    tracker = DeliveryTracker(client)
    for i, (provider, kind, final) in enumerate(
        [
            ("solapi", "SMS", S.DELIVERED),
            ("solapi", "SMS", S.FAILED),
            ("iwinv", "ALIMTALK", None),
            ("solapi", "ALIMTALK", S.DELIVERED),
        ]
    ):
        await tracker.track_message(
            f"an-{i}", "010", None, provider, message_type=kind, initial_status="PENDING"
        )
        if final is not None:
            assert await tracker.update_status(f"an-{i}", final)
    analytics = DeliveryTrackingAnalyticsService(client)
    now = datetime.now(UTC)
    period = {"start": now - timedelta(minutes=1), "end": now + timedelta(minutes=1)}
    result = await analytics.get_summary(
        {"requestedAt": period}, {"includeByProviderId": True, "includeByType": True}
    )
    assert result["total"] == 4
    assert (result["byStatus"]["DELIVERED"], result["byStatus"]["CANCELLED"]) == (2, 0)
    assert result["rates"]["deliveredOfTotalPct"] == 50
    assert result["rates"]["failedOfTotalPct"] == 25
    assert result["rates"]["deliveredOfFinalizedPct"] == pytest.approx(66.667, abs=1e-3)
    assert {k: v["total"] for k, v in result["byProviderId"].items()} == {"iwinv": 1, "solapi": 3}
    assert {k: v["total"] for k, v in result["byType"].items()} == {"ALIMTALK": 2, "SMS": 2}
    only = await analytics.get_summary({"requestedAt": period, "providerId": ["iwinv"]})
    assert only["total"] == 1 and "byProviderId" not in only
    sms = await analytics.get_summary({"requestedAt": period, "type": "SMS"})
    assert sms["total"] == 2
    for query, message in [
        ({}, "start must be a datetime"),
        ({"requestedAt": {"start": now}}, "end must be a datetime"),
        ({"requestedAt": {"start": now, "end": now - timedelta(1)}}, "start must be <="),
        ({"requestedAt": {"start": datetime(2026, 1, 1), "end": now}}, "timezone-aware"),
    ]:
        with pytest.raises(ValueError, match=message):
            await analytics.get_summary(query)


@pytest.mark.parametrize("mode", ["full", "changes"])
async def test_tracker_events_carry_the_record_or_its_changes(
    client: FoldingClient, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """DELIVERYTRACK_STATUS_CHANGE_RECORD=changes: the events' data has ``changes`` and no
    record (None), the rest as with the record."""
    import asyncio
    from collections.abc import AsyncIterator, Callable

    from deliverytrack.models.events import StatusChanged
    from deliverytrack.models.policy import FoldPolicy
    from deliverytrack.streams.api import facades
    from tests.factories import send_recorded_factory

    _, (change, *_) = fold(
        None, send_recorded_factory("m-1"), FoldPolicy(status_change_record=mode)
    )
    assert isinstance(change, StatusChanged)

    async def follow(settings: Any, on_ready: Callable[[], None]) -> AsyncIterator[StatusChanged]:
        on_ready()
        yield change
        await asyncio.Event().wait()

    monkeypatch.setattr(facades, "follow_status_changes", follow)
    tracker = DeliveryTracker(client)
    seen: list[dict[str, Any]] = []
    tracker.on("tracking:started", seen.append)
    await tracker.start()
    for _ in range(20):
        if seen:
            break
        await asyncio.sleep(0.01)
    await tracker.stop()
    (event,) = seen
    data = event["data"]
    assert (data["messageId"], data["currentStatus"]) == ("m-1", S.SENT)
    if mode == "full":
        assert data["record"] is change.record and "changes" not in data
    else:
        assert data["record"] is None and data["changes"]["status"] == "SENT"


async def test_a_status_change_that_does_not_decode_is_skipped_not_the_end_of_the_stream(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``tail`` and DeliveryTracker read status-changes, a topic others can write to: one
    value that is not a status change (garbage, another version's, a record of someone else)
    is skipped with a warning; the changes after it still come."""
    from types import SimpleNamespace

    from deliverytrack.models.codec import encode_status_changed
    from deliverytrack.models.events import StatusChanged
    from deliverytrack.models.policy import FoldPolicy
    from deliverytrack.streams.api import client as client_module
    from tests.factories import send_recorded_factory

    _, (change, *_) = fold(None, send_recorded_factory("m-1"), FoldPolicy())
    assert isinstance(change, StatusChanged)
    good = encode_status_changed(change)
    values = [b"{", b'{"eventType":"StatusChanged"}', b"[]", None, good]

    class Consumer:
        async def start(self) -> None: ...

        async def stop(self) -> None: ...

        def subscribe(self, topics: list[str]) -> None: ...

        async def __aiter__(self) -> Any:
            for offset, value in enumerate(values):
                yield SimpleNamespace(topic="t", partition=0, offset=offset, value=value)

    monkeypatch.setattr(client_module, "new_consumer", lambda *a, **k: Consumer())
    stream = client_module.follow_status_changes(Settings(), group_id="g")
    followed = [c async for c in stream]
    assert followed == [change]
    assert "t@0:0" in caplog.text and "t@0:2" in caplog.text

"""The correlator: reports meet the provider-id index, in any order, without loss."""

from __future__ import annotations

import base64
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from deliverytrack.models.correlation import CorrelationState, SourceRef
from deliverytrack.models.enums import TrackingStatus as S
from deliverytrack.models.events import (
    CorrelationEvent,
    DeadLetter,
    EventRejected,
    HoldExpiryDue,
    ProviderIdLinked,
    ReportCorrelated,
    StatusChanged,
)
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.correlation import (
    MAX_HELD_PER_KEY,
    correlate,
    hold_deadline,
    hold_index_change,
)
from deliverytrack.tables.due_index import due_key
from deliverytrack.tables.fold import fold
from tests.factories import T0, report_factory, send_recorded_factory

HOLD_MS = 60_000
SOURCE = SourceRef(topic="pw", partition=0, offset=7, value_base64=base64.b64encode(b"{}").decode())


def link(message_id: str = "msg-1", pmid: str = "pm-1") -> ProviderIdLinked:
    return ProviderIdLinked(
        event_id=f"{message_id}:link",
        provider_id="solapi",
        provider_message_id=pmid,
        message_id=message_id,
        linked_at=T0,
    )


def expiry(at_ms: int) -> HoldExpiryDue:
    return HoldExpiryDue(
        event_id=f"exp-{at_ms}",
        provider_id="solapi",
        provider_message_id="pm-1",
        issued_at=T0 + timedelta(milliseconds=at_ms),
    )


def run(
    events: list[CorrelationEvent], state: CorrelationState | None = None
) -> tuple[CorrelationState | None, list[object]]:
    out: list[object] = []
    for event in events:
        state, emitted = correlate(state, event, source=SOURCE, hold_ms=HOLD_MS)
        out.extend(emitted)
    return state, out


def test_a_report_after_its_link_is_correlated_at_once() -> None:
    report = report_factory(S.DELIVERED)
    state, out = run([link(), report])
    assert out == [ReportCorrelated(event_id=report.event_id, message_id="msg-1", report=report)]
    assert state is not None and state.held == ()


def test_a_report_before_its_link_is_held_then_released_in_arrival_order() -> None:
    first, second = report_factory(S.SENT), report_factory(S.DELIVERED)
    state, out = run([first, second])
    assert out == []
    assert state is not None and [h.report for h in state.held] == [first, second]
    assert state.held[0].source == SOURCE
    assert hold_deadline(state) == first.received_at + timedelta(milliseconds=HOLD_MS)
    state, out = run([link()], state)
    assert [o.report for o in out if isinstance(o, ReportCorrelated)] == [first, second]
    assert state is not None and state.held == () and state.message_id == "msg-1"


def test_a_duplicate_report_is_dropped_held_or_not() -> None:
    report = report_factory(S.DELIVERED)
    state, out = run([report, report, link(), report])
    assert len(out) == 1
    state2, out2 = run([link(), report, report])
    assert len(out2) == 1


def test_a_held_report_expires_to_a_dead_letter_with_its_original_bytes() -> None:
    report = report_factory(S.DELIVERED, received_at=T0)
    state, _ = run([report])
    still, out = run([expiry(HOLD_MS - 1)], state)
    assert out == [] and still == state
    gone, out = run([expiry(HOLD_MS)], state)
    (letter,) = out
    assert isinstance(letter, DeadLetter)
    assert letter.reason == "unmatched-report"
    assert (letter.topic, letter.partition, letter.offset) == ("pw", 0, 7)
    assert letter.value_base64 == SOURCE.value_base64
    assert base64.b64decode(letter.key_base64 or "") == b"solapi:pm-1"
    assert letter.failed_at == T0 + timedelta(milliseconds=HOLD_MS)
    assert gone is None  # nothing left to remember; a provider's retry is held afresh
    again, out = run([expiry(HOLD_MS)], gone)
    assert (again, out) == (None, [])


def test_expiry_works_at_the_millisecond_resolution_of_the_hold_index() -> None:
    received = T0 + timedelta(microseconds=700)  # held until ...000.700, indexed at ...000
    state, _ = run([report_factory(S.DELIVERED, received_at=received)])
    _, out = run([expiry(HOLD_MS)], state)  # issued at ...000.000: same millisecond
    assert len(out) == 1


def test_a_link_after_expiry_does_not_resurrect_the_dead_letter() -> None:
    state, _ = run([report_factory(S.DELIVERED, received_at=T0), expiry(HOLD_MS)])
    state, out = run([link()], state)
    assert out == [] and state is not None and state.message_id == "msg-1"


def test_the_first_link_wins_and_a_conflicting_one_is_rejected() -> None:
    state, out = run([link("msg-1"), link("msg-1"), link("msg-2")])
    (rejected,) = out
    assert isinstance(rejected, EventRejected) and rejected.reason == "provider-id-conflict"
    assert state is not None and state.message_id == "msg-1"


def test_the_holding_area_is_bounded_per_key() -> None:
    reports = [report_factory(S.SENT) for _ in range(MAX_HELD_PER_KEY + 1)]
    state, out = run(list(reports))
    (rejected,) = out
    assert isinstance(rejected, EventRejected) and rejected.reason == "hold-full"
    assert state is not None and len(state.held) == MAX_HELD_PER_KEY


def test_hold_index_follows_the_oldest_held_report() -> None:
    state, _ = run([report_factory(S.SENT, received_at=T0)])
    removed, added = hold_index_change(None, state)
    assert removed is None
    assert added == due_key(T0 + timedelta(milliseconds=HOLD_MS), "solapi:pm-1")
    linked, _ = run([link()], state)
    assert hold_index_change(state, linked) == (added, None)


# --- the fold side: correlated reports on records -------------------------------------------


def correlated(status: S, **extra: object) -> ReportCorrelated:
    report = report_factory(status, **extra)  # type: ignore[arg-type]
    return ReportCorrelated(event_id=report.event_id, message_id="msg-1", report=report)


def sent_record() -> TrackingRecord:
    record, _ = fold(None, send_recorded_factory())
    assert record is not None
    return record


def test_a_delivered_report_makes_the_record_delivered_with_the_providers_time_and_codes() -> None:
    delivered_at = T0 + timedelta(seconds=20)
    event = correlated(
        S.DELIVERED, delivered_at=delivered_at, status_code="4000", status_message="ok"
    )
    record, (change,) = fold(sent_record(), event)
    assert record is not None and record.status == S.DELIVERED
    assert record.status_updated_at == delivered_at and record.delivered_at == delivered_at
    assert (record.provider_status_code, record.provider_status_message) == ("4000", "ok")
    assert record.next_check_at is None  # terminal: out of the due index
    assert isinstance(change, StatusChanged) and change.source == "webhook"
    assert record.status_history[-1].details == {
        "providerMessageId": "pm-1",
        "statusCode": "4000",
        "statusMessage": "ok",
    }


def test_out_of_order_reports_end_in_the_furthest_status_with_one_change_each() -> None:
    delivered, sent = correlated(S.DELIVERED), correlated(S.SENDING)
    record, first = fold(sent_record(), delivered)
    record, second = fold(record, sent)
    assert record is not None and record.status == S.DELIVERED
    assert len(first) == 1 and second == ()
    again, third = fold(record, delivered)
    assert third == () and again == record


def test_a_late_report_resolves_an_unknown_record() -> None:
    record, _ = fold(None, send_recorded_factory(provider_message_id=None))
    assert record is not None and record.status == S.UNKNOWN
    record, (change,) = fold(record, correlated(S.FAILED, status_code="3059"))
    assert record is not None and record.status == S.FAILED and record.last_error is None
    assert isinstance(change, StatusChanged) and change.previous_status == S.UNKNOWN


def test_a_report_for_a_missing_record_is_rejected() -> None:
    record, (rejected,) = fold(None, correlated(S.DELIVERED))
    assert record is None
    assert isinstance(rejected, EventRejected) and rejected.reason == "unknown-message"


REPORT_STATUSES = [S.SENDING, S.SENT, S.DELIVERED, S.FAILED, S.CLICKED]


@settings(max_examples=200, deadline=None)
@given(
    statuses=st.lists(st.sampled_from(REPORT_STATUSES), min_size=1, max_size=6),
    link_at=st.integers(min_value=0, max_value=6),
    order=st.randoms(use_true_random=False),
    duplicate=st.booleans(),
)
def test_any_arrival_order_gives_the_same_final_status_and_one_change_per_transition(
    statuses: list[S], link_at: int, order: object, duplicate: bool
) -> None:
    reports = [report_factory(status, received_at=T0) for status in statuses]
    shuffled = list(reports)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    if duplicate:
        shuffled.append(shuffled[0])
    events: list[CorrelationEvent] = list(shuffled)
    events.insert(min(link_at, len(events)), link())
    _, out = run(events)
    correlated_reports = [o for o in out if isinstance(o, ReportCorrelated)]
    assert len({o.event_id for o in correlated_reports}) == len(reports)  # nothing lost
    record: TrackingRecord | None = sent_record()
    changes = []
    for event in correlated_reports:
        record, emitted = fold(record, event)
        changes.extend(emitted)
    assert record is not None
    # Each applied change is a real forward transition, and the sequence counts them.
    assert [c.sequence for c in changes] == list(range(2, 2 + len(changes)))  # type: ignore[union-attr]
    assert all(c.previous_status != c.status for c in changes)  # type: ignore[union-attr]
    if S.FAILED in statuses or S.DELIVERED in statuses or S.CLICKED in statuses:
        assert record.status in (S.FAILED, S.DELIVERED, S.CLICKED)


def test_the_source_of_a_report_is_asked_for_only_when_the_report_is_held() -> None:
    asked: list[int] = []

    def source() -> SourceRef:
        asked.append(1)
        return SOURCE

    linked, _ = correlate(None, link(), source=source, hold_ms=HOLD_MS)
    correlate(linked, report_factory(S.DELIVERED), source=source, hold_ms=HOLD_MS)
    assert asked == []
    held, _ = correlate(None, report_factory(S.DELIVERED), source=source, hold_ms=HOLD_MS)
    assert asked == [1] and held is not None and held.held[0].source == SOURCE


def test_a_report_whose_key_another_provider_message_holds_is_refused_not_misrouted() -> None:
    """providerId may contain ':': ("a:b", "c") and ("a", "b:c") share the key "a:b:c". A
    report of the second must not reach the first's message."""
    first = ProviderIdLinked(
        event_id="m1:link",
        provider_id="a:b",
        provider_message_id="c",
        message_id="m1",
        linked_at=T0,
    )
    state, _ = run([first])
    report = report_factory(S.DELIVERED, provider_id="a", provider_message_id="b:c")
    after, out = run([report], state)
    (rejected,) = out
    assert isinstance(rejected, EventRejected) and rejected.reason == "provider-key-collision"
    assert rejected.message_id == "" and "'a:b:c'" in (rejected.detail or "")
    assert after == state  # nothing remembered, nothing held


def test_a_link_whose_key_another_provider_message_holds_releases_nothing_of_it() -> None:
    held = report_factory(S.DELIVERED, provider_id="a:b", provider_message_id="c")
    state, _ = run([held])
    other = ProviderIdLinked(
        event_id="m2:link",
        provider_id="a",
        provider_message_id="b:c",
        message_id="m2",
        linked_at=T0,
    )
    after, out = run([other], state)
    (rejected,) = out
    assert isinstance(rejected, EventRejected) and rejected.reason == "provider-key-collision"
    assert rejected.message_id == "m2"
    assert after == state and after is not None and after.held  # still held for its own link

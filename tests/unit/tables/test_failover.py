"""AlimTalk API failover in the fold (kmsg-behaviour.md 5, test cases 4-8 of section 14)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from deliverytrack.models.enums import FallbackChannel, MessageType
from deliverytrack.models.enums import TrackingStatus as S
from deliverytrack.models.events import (
    FailoverRequest,
    FailoverRequested,
    RecordFailoverOutcome,
    SendWarning,
    StatusChanged,
)
from deliverytrack.models.policy import ApiFailoverPolicy, FailoverRule, FoldPolicy, PollingPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.fold import fold, replay
from tests.factories import T0, send_recorded_factory, update_status_factory

ON = FoldPolicy(api_failover=ApiFailoverPolicy(enabled=True))


def alimtalk(
    provider: str = "solapi",
    warning: str | None = "FAILOVER_PARTIAL_PROVIDER",
    content: str | None = "Your code is 1234",
    channel: FallbackChannel = FallbackChannel.SMS,
    title: str | None = None,
    enabled: bool = True,
) -> TrackingRecord:
    event = send_recorded_factory(
        "at-1",
        provider_id=provider,
        type=MessageType.ALIMTALK,
        failover=FailoverRequest(
            enabled=enabled,
            fallback_channel=channel,
            fallback_content=content,
            fallback_title=title,
        ),
        warnings=(SendWarning(code=warning),) if warning else (),
    )
    record, _ = fold(None, event, ON)
    assert record is not None
    return record


def fail(
    record: TrackingRecord, code: str, message: str = "", policy: PollingPolicy = ON
) -> tuple[TrackingRecord, tuple[Any, ...]]:
    event = update_status_factory(
        S.FAILED,
        record.message_id,
        provider_status_code=code,
        provider_status_message=message,
        source="provider",
    )
    new, emitted = fold(record, event, policy)
    assert new is not None
    return new, emitted


def attempt(record: TrackingRecord) -> dict[str, Any]:
    assert record.metadata is not None
    result: dict[str, Any] = record.metadata["failover"]["apiAttempt"]  # type: ignore[index,assignment]
    return result


@pytest.mark.parametrize("code", ["3104", "3107"])
def test_a_solapi_non_kakao_failure_requests_one_sms_fallback(code: str) -> None:
    record, emitted = fail(alimtalk(), code, "카카오톡 미사용자")
    change, request = emitted
    assert isinstance(change, StatusChanged) and change.status == S.FAILED
    assert isinstance(request, FailoverRequested)
    assert request.fallback_type == MessageType.SMS and request.subject is None
    assert request.fallback_message_id == request.event_id == "at-1:api-fallback"
    assert request.text == "Your code is 1234" and request.to == record.to
    assert attempt(record)["attempted"] is True and attempt(record)["status"] == "requested"
    # Once: the record is FAILED and attempted; nothing can request it again.
    again, more = fold(record, update_status_factory(S.FAILED, "at-1"), ON)
    assert more == () and again is record


def test_the_fallbacks_send_result_records_the_outcome_on_the_original() -> None:
    record, (_, request) = fail(alimtalk(), "3104")
    fallback = send_recorded_factory(
        request.fallback_message_id,
        provider_id="sms-provider",
        type=MessageType.SMS,
        failover_of="at-1",
    )
    fallback_record, emitted = fold(None, fallback, ON)
    assert fallback_record is not None and fallback_record.metadata == {"failoverOf": "at-1"}
    outcome = next(e for e in emitted if isinstance(e, RecordFailoverOutcome))
    assert outcome.message_id == "at-1" and outcome.outcome == "sent"
    done, changes = fold(record, outcome, ON)
    assert done is not None and changes == ()  # no status change: the original stays FAILED
    assert done.status == S.FAILED
    assert attempt(done) | {} == {
        "attempted": True,
        "status": "completed",
        "attemptedAt": attempt(record)["attemptedAt"],
        "outcome": "sent",
        "completedAt": outcome.at.isoformat().replace("+00:00", "Z"),
        "fallbackMessageId": "at-1:api-fallback",
        "fallbackProviderId": "sms-provider",
    }


def test_iwinv_classification_needs_kakao_and_non_user_in_code_and_message() -> None:
    _, emitted = fail(alimtalk(provider="iwinv"), "ERR", "카카오 미사용 대상")
    assert any(isinstance(e, FailoverRequested) for e in emitted)
    _, emitted = fail(alimtalk(provider="iwinv"), "ERR", "카카오 오류")
    assert not any(isinstance(e, FailoverRequested) for e in emitted)


def test_without_fallback_content_the_attempt_is_skipped_with_kmsgs_warning() -> None:
    record, emitted = fail(alimtalk(content="  "), "3104")
    assert not any(isinstance(e, FailoverRequested) for e in emitted)
    assert attempt(record)["outcome"] == "skipped"
    assert attempt(record)["warningCode"] == "FALLBACK_CONTENT_MISSING"


def test_a_custom_providers_rule_classifies_its_codes() -> None:
    policy = FoldPolicy(
        api_failover=ApiFailoverPolicy(
            enabled=True, rules_by_provider_id={"acme": FailoverRule(status_codes=("9999",))}
        )
    )
    base = alimtalk(provider="acme", warning="FAILOVER_UNSUPPORTED_PROVIDER")
    _, emitted = fail(base, "9999", policy=policy)
    assert any(isinstance(e, FailoverRequested) for e in emitted)
    _, emitted = fail(base, "9999", policy=ON)  # no rule, no built-in: not a non-Kakao user
    assert not any(isinstance(e, FailoverRequested) for e in emitted)


def test_a_failed_sender_is_recorded_with_its_error_and_lms_carries_the_title() -> None:
    record, (_, request) = fail(alimtalk(channel=FallbackChannel.LMS, title=" Notice "), "3104")
    assert request.fallback_type == MessageType.LMS and request.subject == "Notice"
    failed = RecordFailoverOutcome(
        event_id="sender-1",
        message_id="at-1",
        outcome="failed",
        at=T0 + timedelta(minutes=3),
        error_code="PROVIDER_ERROR",
        error_message="SMS fallback failed",
    )
    done, _ = fold(record, failed, ON)
    assert done is not None
    assert attempt(done)["outcome"] == "failed"
    assert attempt(done)["errorCode"] == "PROVIDER_ERROR"
    assert attempt(done)["errorMessage"] == "SMS fallback failed"


@pytest.mark.parametrize(
    ("why", "record", "code", "policy"),
    [
        ("failover disabled in settings", lambda: alimtalk(), "3104", FoldPolicy()),
        ("not requested on the send", lambda: alimtalk(enabled=False), "3104", ON),
        ("no eligible send warning", lambda: alimtalk(warning=None), "3104", ON),
        ("another warning", lambda: alimtalk(warning="OTHER"), "3104", ON),
        ("a failure of another kind", lambda: alimtalk(), "3059", ON),
    ],
)
def test_ineligible_failures_never_request_a_fallback(
    why: str, record: Any, code: str, policy: PollingPolicy
) -> None:
    failed, emitted = fail(record(), code, policy=policy)
    assert not any(isinstance(e, FailoverRequested) for e in emitted), why
    block = (failed.metadata or {}).get("failover")
    assert not isinstance(block, dict) or block["apiAttempt"]["attempted"] is False


def test_not_alimtalk_never_fails_over() -> None:
    sms = send_recorded_factory(
        "sms-1", type=MessageType.SMS, failover=FailoverRequest(enabled=True)
    )
    record, _ = fold(None, sms, ON)
    assert record is not None
    _, emitted = fail(record, "3104")
    assert not any(isinstance(e, FailoverRequested) for e in emitted)


def test_replaying_the_same_events_requests_the_same_fallback_once() -> None:
    events = [
        send_recorded_factory(
            "at-9",
            provider_id="solapi",
            type=MessageType.ALIMTALK,
            failover=FailoverRequest(enabled=True, fallback_content="x"),
            warnings=(SendWarning(code="FAILOVER_PARTIAL_PROVIDER"),),
            event_id="s-9",
        ),
        update_status_factory(S.FAILED, "at-9", provider_status_code="3104", event_id="f-9"),
        update_status_factory(S.FAILED, "at-9", provider_status_code="3104", event_id="f-10"),
    ]
    first = replay(events, policy=ON)
    second = replay(events, policy=ON)
    assert first == second
    assert [e for e in first[1] if isinstance(e, FailoverRequested)] == [
        e for e in second[1] if isinstance(e, FailoverRequested)
    ]
    assert sum(isinstance(e, FailoverRequested) for e in first[1]) == 1

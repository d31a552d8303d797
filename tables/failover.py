"""k-msg's AlimTalk API failover (kmsg-behaviour.md section 5), event-sourced and pure.

When an AlimTalk record becomes FAILED and the rules hold, the fold records the attempt on the
record (``metadata.failover.apiAttempt``) and emits one ``FailoverRequested``; the attempt mark
makes it once per record, across restarts and replays (the request's eventId is derived). The
fallback's own send result (``failoverOf``) reports ``sent`` back to the original record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import FailoverRequested, RecordFailoverOutcome, SendRecorded
from deliverytrack.models.policy import ApiFailoverPolicy
from deliverytrack.models.records import TrackingRecord

ELIGIBLE_WARNINGS = frozenset({"FAILOVER_UNSUPPORTED_PROVIDER", "FAILOVER_PARTIAL_PROVIDER"})
FALLBACK_CONTENT_MISSING = "FALLBACK_CONTENT_MISSING"


def fallback_message_id(message_id: str) -> str:
    return f"{message_id}:api-fallback"


def _failover_block(record: TrackingRecord) -> dict[str, Any] | None:
    block = (record.metadata or {}).get("failover")
    return block if isinstance(block, dict) else None


def is_non_kakao_user(record: TrackingRecord, policy: ApiFailoverPolicy) -> bool:
    """k-msg 5.3: the provider's rule, then the built-ins for SOLAPI and IWINV."""
    code = record.provider_status_code or ""
    message = record.provider_status_message or ""
    rule = policy.rules_by_provider_id.get(record.provider_id)
    if rule is not None and (
        code in rule.status_codes or any(token in message for token in rule.message_includes)
    ):
        return True
    if record.provider_id == "solapi":
        return code in ("3104", "3107") or "미사용자" in message
    if record.provider_id == "iwinv":
        text = f"{code} {message}"
        return "카카오" in text and "미사용" in text
    return False


def eligible(record: TrackingRecord, policy: ApiFailoverPolicy) -> bool:
    """k-msg 5.2, on the record after the FAILED transition."""
    block = _failover_block(record)
    if not policy.enabled or block is None:
        return False
    request = block.get("request")
    attempt = block.get("apiAttempt")
    warnings = block.get("sendWarningCodes")
    return (
        record.type == MessageType.ALIMTALK
        and record.status == TrackingStatus.FAILED
        and isinstance(request, dict)
        and request.get("enabled") is True
        and not (isinstance(attempt, dict) and attempt.get("attempted") is True)
        and isinstance(warnings, list)
        and bool(ELIGIBLE_WARNINGS.intersection(str(w) for w in warnings))
        and is_non_kakao_user(record, policy)
    )


def _with_attempt(record: TrackingRecord, attempt: dict[str, Any]) -> TrackingRecord:
    metadata = dict(record.metadata or {})
    block = dict(_failover_block(record) or {})
    block["apiAttempt"] = attempt
    metadata["failover"] = block
    return record.model_copy(update={"metadata": metadata})


def request_failover(
    record: TrackingRecord, policy: ApiFailoverPolicy, at: datetime
) -> tuple[TrackingRecord, tuple[FailoverRequested, ...]]:
    """Called by the fold when a record has just become FAILED."""
    if not eligible(record, policy):
        return record, ()
    block = _failover_block(record) or {}
    request = block.get("request") or {}
    stamp = at.isoformat().replace("+00:00", "Z")
    content = str(request.get("fallbackContent") or "").strip()
    if not content:
        skipped = {
            "attempted": True,
            "status": "completed",
            "attemptedAt": stamp,
            "outcome": "skipped",
            "warningCode": FALLBACK_CONTENT_MISSING,
            "warningMessage": "failover requested without fallbackContent",
        }
        return _with_attempt(record, skipped), ()
    lms = request.get("fallbackChannel") == "lms"
    title = str(request.get("fallbackTitle") or "").strip()
    fallback_id = fallback_message_id(record.message_id)
    event = FailoverRequested(
        event_id=fallback_id,
        message_id=record.message_id,
        fallback_message_id=fallback_id,
        fallback_type=MessageType.LMS if lms else MessageType.SMS,
        to=record.to,
        to_encrypted=record.to_encrypted,
        from_=record.from_,
        from_encrypted=record.from_encrypted,
        text=content,
        subject=title if lms and title else None,
        original_provider_id=record.provider_id,
        original_provider_message_id=record.provider_message_id,
        requested_at=at,
    )
    attempt = {
        "attempted": True,
        "status": "requested",
        "attemptedAt": stamp,
        "fallbackMessageId": fallback_id,
    }
    return _with_attempt(record, attempt), (event,)


def outcome_of_fallback(event: SendRecorded) -> RecordFailoverOutcome | None:
    """The fallback's send result tells the original record that the fallback went out."""
    if event.failover_of is None:
        return None
    return RecordFailoverOutcome(
        event_id=f"{event.failover_of}:failover-outcome:{event.message_id}",
        message_id=event.failover_of,
        outcome="sent",
        at=event.recorded_at or event.requested_at,
        fallback_message_id=event.message_id,
        fallback_provider_id=event.provider_id,
    )


def record_outcome(record: TrackingRecord, event: RecordFailoverOutcome) -> TrackingRecord | None:
    """The outcome merged into ``apiAttempt``; None when there is no attempt to complete."""
    block = _failover_block(record)
    attempt = block.get("apiAttempt") if block else None
    if not isinstance(attempt, dict) or attempt.get("attempted") is not True:
        return None
    if attempt.get("outcome") in ("sent", "skipped"):
        return None  # settled; a late "failed" after "sent" changes nothing
    merged = {
        **attempt,
        "status": "completed",
        "outcome": event.outcome,
        "completedAt": event.at.isoformat().replace("+00:00", "Z"),
    }
    for key, value in (
        ("fallbackMessageId", event.fallback_message_id),
        ("fallbackProviderId", event.fallback_provider_id),
        ("errorCode", event.error_code),
        ("errorMessage", event.error_message),
    ):
        if value is not None:
            merged[key] = value
    return _with_attempt(record, merged)

"""Hypothesis strategies for fold inputs as the topics carry them: every event type the fold
takes, as bytes, valid and not, for a few messageIds, with policies to fold them under.

Times sit on a coarse grid (30 s steps) so that due checks meet a record's due time, polls
meet their lease and reports race updates often. Event ids come from a small pool, so
duplicates happen. Each encoded event may be rewritten before it is sent: times spelt with
``+00:00`` or a fraction, defaults dropped, nulls written out, an unknown or a snake_case key
added, keys reordered, or one value replaced by anything at all (mostly a dead letter).
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import POLLABLE_STATUSES, MessageType, TrackingStatus
from deliverytrack.models.events import (
    CancelMessage,
    DueCheckIssued,
    FailoverRequest,
    ProviderReportReceived,
    PurgeRecord,
    RecordExpiryDue,
    RecordFailoverOutcome,
    ReportCorrelated,
    SendRecorded,
    SendWarning,
    StatusObserved,
    StopTracking,
    UpdateStatus,
)
from deliverytrack.models.policy import (
    ApiFailoverPolicy,
    FailoverRule,
    FoldPolicy,
    PiiPolicy,
    PollingPolicy,
)
from deliverytrack.models.retention import RetentionPolicy
from deliverytrack.tables.due_index import effective_due
from deliverytrack.tables.fold import fold
from deliverytrack.tables.retention import expiry_of
from tests.factories import T0

MESSAGE_IDS = ("m-a", "m-b")
KINDS = ("send", "command", "due", "observation", "report")
Input = tuple[str, bytes | None, bytes | None]
"""(kind, Kafka key, value): ``kind`` as in ``deliverytrack.tables.hot.codec.KINDS``."""

_KEY = base64.b64encode(bytes(range(32))).decode()
POLICIES: dict[str, FoldPolicy] = {
    "default": FoldPolicy(),
    "strict": FoldPolicy(
        polling=PollingPolicy(
            max_tracking_duration_ms=90_000,
            unsupported_provider_strategy="unknown",
            backoff_ms=(),
            lease_ms=30_000,
            scheduled_grace_ms=60_000,
        ),
        command_hold_ms=0,
        retention=RetentionPolicy(enabled=True, tenant_override_days={"opsLogs": 0.5}),
    ),
    "relaxed": FoldPolicy(
        polling=PollingPolicy(
            max_tracking_duration_ms=0, initial_delay_ms=0, backoff_ms=(30_000, 60_000)
        )
    ),
    "failover": FoldPolicy(
        api_failover=ApiFailoverPolicy(
            enabled=True, rules_by_provider_id={"p": FailoverRule(status_codes=("NK",))}
        )
    ),
    "pii": FoldPolicy(
        pii=PiiPolicy(
            enabled=True,
            active_kid="k1",
            hash_keys={"k1": "hash-secret"},
            encryption_keys={"k1": _KEY},
            hash_metadata_paths=("tenant",),
        )
    ),
    "pii-plain": FoldPolicy(
        pii=PiiPolicy(enabled=True, store_plain=True, active_kid="k1", hash_keys={"k1": "h"})
    ),
}
STATUS_CHANGE_RECORDS = ("full", "changes")
"""``FoldPolicy.status_change_record``: status changes with the record, or with its changes."""


def with_status_change_record(policy: FoldPolicy, mode: str) -> FoldPolicy:
    return policy.model_copy(update={"status_change_record": mode})


times = st.integers(min_value=0, max_value=12).map(lambda i: T0 + timedelta(seconds=30 * i))
event_ids = st.integers(min_value=0, max_value=15).map(lambda i: f"e-{i}")
statuses = st.sampled_from(list(TrackingStatus))
short_text = st.text(max_size=6)
codes = st.none() | st.sampled_from(["", "1000", "3104", "NK", "미사용자"])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(short_text, json_values, max_size=4)
metadata = st.one_of(
    json_objects,
    st.fixed_dictionaries({"tenant": st.sampled_from(["t-1", "010-1234-5678"])}),
    st.fixed_dictionaries({"failover": st.just({"request": {}}), "a": st.integers()}),
)


@st.composite
def _send(draw: st.DrawFn, message_id: str, event_id: str, record: Any) -> SendRecorded:
    type_ = draw(st.sampled_from([MessageType.SMS, MessageType.ALIMTALK, MessageType.LMS]))
    failover = draw(
        st.none()
        | st.builds(
            FailoverRequest,
            enabled=st.none() | st.booleans(),
            fallback_channel=st.none() | st.sampled_from(["sms", "lms"]),
            fallback_content=st.none() | st.sampled_from(["", "hi"]),
            fallback_title=st.none() | st.just("t"),
        )
    )
    rare = draw(st.integers(min_value=0, max_value=15))
    return SendRecorded(
        event_id=event_id,
        message_id=message_id,
        provider_id=draw(st.sampled_from(["solapi", "iwinv", "p"])),
        provider_message_id=draw(
            st.sampled_from([f"pm-{message_id}", "", None, f" pm-{message_id} ", "pm-x"])
        ),
        type=type_,
        to=draw(st.sampled_from(["01012345678", "+82 10-1234-5678", "x"])),
        from_=draw(st.none() | st.just("0212345678")),
        requested_at=draw(times),
        scheduled_at=draw(st.none() | times),
        recorded_at=draw(st.none() | times),
        initial_status=draw(st.none() | st.sampled_from(sorted(POLLABLE_STATUSES))),
        metadata=draw(st.none() | metadata),
        custom_fields=draw(st.none() | st.dictionaries(short_text, short_text, max_size=2)),
        failover=failover,
        warnings=tuple(
            SendWarning(code=code)
            for code in draw(
                st.lists(st.sampled_from(["FAILOVER_PARTIAL_PROVIDER", "OTHER"]), max_size=2)
            )
        ),
        failover_of="m-b" if rare == 0 and message_id == "m-a" else None,
        webhooks=({"id": "w1", "url": "https://example.com/hook"},) if rare == 1 else (),  # type: ignore[arg-type]
        retention_class=draw(st.none() | st.sampled_from(["opsLogs", "billingEvidence"])),
        expires_at=draw(st.none() | times),
    )


@st.composite
def _command(draw: st.DrawFn, message_id: str, event_id: str, record: Any) -> Any:
    kind = draw(st.sampled_from(["update"] * 6 + ["cancel", "stop", "outcome", "purge"]))
    at = draw(times)
    if kind == "update":
        return UpdateStatus(
            event_id=event_id,
            message_id=message_id,
            status=draw(statuses),
            at=at,
            source=draw(st.sampled_from(["manual", "provider", "webhook", "system"])),
            provider=draw(st.none() | st.sampled_from(["", "solapi"])),
            provider_status_code=draw(codes),
            provider_status_message=draw(codes),
            sent_at=draw(st.none() | times),
            delivered_at=draw(st.none() | times),
            failed_at=draw(st.none() | times),
            clicked_at=draw(st.none() | times),
            error=draw(st.none() | st.builds(dict, code=st.just("E1"), message=short_text)),
            details=draw(st.none() | json_objects),
        )
    if kind == "cancel":
        return CancelMessage(event_id=event_id, message_id=message_id, at=at, reason="r")
    if kind == "stop":
        return StopTracking(event_id=event_id, message_id=message_id, at=at)
    if kind == "purge":
        return PurgeRecord(event_id=event_id, message_id=message_id, at=at)
    return RecordFailoverOutcome(
        event_id=event_id,
        message_id=message_id,
        outcome=draw(st.sampled_from(["sent", "failed"])),
        at=at,
        error_code=draw(st.none() | st.just("E")),
    )


@st.composite
def _due(draw: st.DrawFn, message_id: str, event_id: str, record: Any) -> Any:
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        expiry = None if record is None else expiry_of(record)
        expire_at = expiry[0] if expiry and draw(st.booleans()) else draw(times)
        return RecordExpiryDue(
            event_id=event_id, message_id=message_id, expire_at=expire_at, issued_at=draw(times)
        )
    due = None if record is None else effective_due(record)
    due_at = due if due is not None and draw(st.integers(0, 3)) else draw(times)
    issued_at = draw(times | st.just(due_at + timedelta(seconds=1)))
    return DueCheckIssued(
        event_id=event_id, message_id=message_id, due_at=due_at, issued_at=issued_at
    )


@st.composite
def _observation(draw: st.DrawFn, message_id: str, event_id: str, record: Any) -> StatusObserved:
    outcome = draw(
        st.sampled_from(
            ["result", "result", "not_yet", "error", "provider_not_found", "unsupported"]
        )
    )
    result = None
    if outcome == "result":
        result = {
            "status": draw(statuses),
            "statusCode": draw(codes),
            "statusMessage": draw(codes),
            "sentAt": draw(st.none() | times),
            "deliveredAt": draw(st.none() | times),
            "failedAt": draw(st.none() | times),
            "raw": draw(st.none() | json_objects | st.just({"to": "01012345678"})),
        }
    error = None
    if outcome == "error":
        error = {"code": "E", "message": draw(short_text), "retryable": draw(st.booleans())}
    return StatusObserved(
        event_id=event_id,
        message_id=message_id,
        check_seq=(
            record.check_seq
            if record is not None and record.check_seq and draw(st.integers(0, 3))
            else draw(st.integers(min_value=1, max_value=3))
        ),
        provider_id=draw(st.sampled_from(["solapi", "p"])),
        outcome=outcome,
        observed_at=draw(times),
        result=result,  # type: ignore[arg-type]
        error=error,  # type: ignore[arg-type]
    )


@st.composite
def _report(draw: st.DrawFn, message_id: str, event_id: str, record: Any) -> ReportCorrelated:
    report = ProviderReportReceived(
        event_id=event_id,
        provider_id=draw(st.sampled_from(["solapi", "p"])),
        provider_message_id=f"pm-{message_id}",
        status=draw(statuses),
        status_code=draw(codes),
        status_message=draw(codes),
        sent_at=draw(st.none() | times),
        delivered_at=draw(st.none() | times),
        failed_at=draw(st.none() | times),
        received_at=draw(times),
        raw=draw(st.none() | json_objects | st.just({"phone": "010-1234-5678"})),
    )
    return ReportCorrelated(event_id=event_id, message_id=message_id, report=report)


_BUILDERS = {
    "send": _send,
    "command": _command,
    "due": _due,
    "observation": _observation,
    "report": _report,
}


def _times_as(value: Any, spelling: str) -> Any:
    if isinstance(value, str) and len(value) == 20 and value.endswith("Z") and value[10] == "T":
        return value[:-1] + spelling
    if isinstance(value, dict):
        return {k: _times_as(v, spelling) for k, v in value.items()}
    return value


@st.composite
def _rewritten(draw: st.DrawFn, payload: dict[str, Any]) -> bytes | None:
    rewrite = draw(
        st.sampled_from(
            ["none"] * 8
            + ["+00:00", ".5Z", ".000000Z", "drop", "null", "extra", "snake", "reorder"]
            + ["mutate"] * 3
            + ["garbage"]
        )
    )
    match rewrite:
        case "+00:00" | ".5Z" | ".000000Z":
            spelling = {"+00:00": "+00:00", ".5Z": ".5Z", ".000000Z": ".000000Z"}[rewrite]
            payload = _times_as(payload, spelling)
        case "drop":
            for key in ("schemaVersion", "eventType", "warnings", "webhooks", "source"):
                if draw(st.booleans()):
                    payload.pop(key, None)
        case "null":
            payload[draw(st.sampled_from(["provider", "details", "raw", "metadata", "from"]))] = (
                None
            )
        case "extra":
            payload["unknownField"] = draw(json_values)
        case "snake":
            payload[draw(st.sampled_from(["message_id", "event_id", "status"]))] = "m-a"
        case "reorder":
            payload = dict(reversed(list(payload.items())))
        case "mutate":
            key = draw(st.sampled_from(sorted(payload)))
            payload[key] = draw(
                json_values
                | st.sampled_from(
                    [
                        "2026-11-23T09:00:00+09:00",
                        "2026-11-23T24:00:00Z",
                        "2026-11-23T09:00:00z",
                        "1969-12-31T23:59:59Z",
                        "9000-01-01T00:00:00Z",
                        "x" * 513,
                        "",
                        1.0,
                        "1",
                        True,
                    ]
                )
            )
        case "garbage":
            return draw(st.sampled_from([None, b"", b"[]", b"{", b'{"eventId":"e"}', b"\xff"]))
    # The standard library writes what it reads (integers beyond 64 bits too; orjson does not).
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@st.composite
def fold_inputs(draw: st.DrawFn, max_size: int = 30) -> list[Input]:
    """Inputs for one partition, in the order it folds them."""
    count = draw(st.integers(min_value=1, max_value=max_size))
    out: list[Input] = []
    state: dict[str, Any] = {}
    for _ in range(count):
        message_id = draw(st.sampled_from(MESSAGE_IDS))
        record = state.get(message_id)
        if record is None:
            kinds = ["send"] * 6 + ["command", "due", "observation", "report"]
        elif record.check_lease_until is not None:  # a poll is out: its answer, mostly
            kinds = ["observation"] * 6 + ["send", "command", "due", "report"]
        else:
            kinds = ["send"] + ["command"] * 3 + ["due"] * 3 + ["observation"] + ["report"] * 3
        kind = draw(st.sampled_from(kinds))
        event = draw(_BUILDERS[kind](message_id, draw(event_ids), record))
        try:  # what the record becomes, roughly: the next due checks and polls aim at it
            state[message_id] = fold(record, event)[0]
        except Exception:  # noqa: BLE001, S110 - a refused input changes nothing
            pass
        value = draw(_rewritten(json.loads(encode(event))))
        key = (
            message_id.encode() if draw(st.integers(0, 30)) else draw(st.sampled_from([None, b"?"]))
        )
        out.append((kind, key, value))
    return out

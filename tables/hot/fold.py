"""The fold on JSON dicts: ``tables.fold`` for the common inputs, byte for byte.

Each function here mirrors one of ``tables.fold`` (named in its docstring) on records kept as
their canonical JSON dicts (``codec.HotRecord``), with times as their canonical texts. What it
does not cover it declines: :meth:`HotFold.fold` returns None and the caller folds that input
with ``tables.deletion.fold_marked`` on the models. Declined:

- held commands, deletion markers, unknown messageIds (``fold_marked``'s own cases);
- personal data: a send result while ``pii.enabled`` (hashes, masks, ciphertexts), a report or
  observation with ``raw`` while plain numbers are protected (masking);
- API failover: a transition to FAILED while ``apiFailover.enabled``;
- a send result with ``failoverOf`` or webhooks (declined by the decoder already);
- anything that raises (an overflowing date): the pydantic path raises it with its own
  traceback, which is what the dead letter keeps.

``tests/unit/tables/test_hot_equivalence.py`` checks that both paths give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

from orjson import JSONDecodeError
from orjson import loads as _loads

from deliverytrack.models.enums import POLLABLE_STATUSES, TrackingStatus
from deliverytrack.models.events import PollRequested
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.models.records import RetentionClass
from deliverytrack.tables.changes import record_changes
from deliverytrack.tables.due_index import epoch_ms
from deliverytrack.tables.fold import (
    MISSING_PROVIDER_MESSAGE_ID,
    REMEMBERED_EVENT_IDS,
    TRACKING_TIMEOUT,
    UNSUPPORTED_PROVIDER,
    can_transition,
)
from deliverytrack.tables.hot import codec
from deliverytrack.tables.hot.codec import (
    COMMAND,
    DUE,
    OBSERVATION,
    REPORT,
    SEND,
    SPECS,
    HotEvent,
    HotRecord,
    dump,
    provider_id_link,
    status_change,
)
from deliverytrack.tables.hot.schema import BAD, parse_utc, text_of
from deliverytrack.tables.retention import resolve_retention_days, to_retention_bucket_ym

STATUS_CHANGE: Final = "status-change"
"""Output kinds. A status change and a poll request go out keyed by the input's key (key
None), a provider-id link with its own key."""
POLL_REQUEST: Final = "poll-request"
PROVIDER_ID_LINK: Final = "provider-id-link"

HotOutput = tuple[str, bytes | None, bytes, str | None]
"""(kind, key or None for the input's, value, the new status of a status change)."""

# tables.fold's status model, tabulated from its own functions.
_CAN: Final = {
    (old.value, new.value): can_transition(old, new)
    for old in TrackingStatus
    for new in TrackingStatus
}
_POLLABLE: Final = frozenset(status.value for status in POLLABLE_STATUSES)
_ERRORS: Final = {
    error.code: error.model_dump(mode="json", by_alias=True)
    for error in (MISSING_PROVIDER_MESSAGE_ID, TRACKING_TIMEOUT, UNSUPPORTED_PROVIDER)
}
_MISSING_ID = _ERRORS[MISSING_PROVIDER_MESSAGE_ID.code]
_TIMEOUT = _ERRORS[TRACKING_TIMEOUT.code]
_UNSUPPORTED = _ERRORS[UNSUPPORTED_PROVIDER.code]
_PMID_MAX: Final = PollRequested.model_fields["provider_message_id"].metadata[-1].max_length
_RANK: Final = {alias: rank for rank, alias in enumerate(codec.RECORD_SPEC.order)}
_NO_ATTEMPT: Final = {"attempted": False, "status": "not_attempted"}
_SEND_OPTIONAL: Final = (
    "from",
    "scheduledAt",
    "nextCheckAt",
    "lastError",
    "metadata",
    "retentionUntil",
    "expiresAt",
)


class HotStep:
    """What one input did: the record after it (the very object given when nothing changed)
    and its outputs in publishing order."""

    __slots__ = ("record", "outputs")

    def __init__(self, record: HotRecord | None, outputs: tuple[HotOutput, ...] = ()) -> None:
        self.record = record
        self.outputs = outputs


class _Decline(Exception):  # noqa: N818 - control flow: this input takes the pydantic path
    pass


class _Policy:
    """What the hot fold reads of a ``FoldPolicy``, worked out once."""

    __slots__ = (
        "policy",
        "hashes_sends",
        "masks_raw",
        "failover",
        "initial_delay",
        "grace",
        "lease",
        "max_tracking",
        "tracks_forever",
        "unsupported_gives_up",
        "default_class",
        "retention_days",
        "retention_enabled",
        "slim",
    )

    def __init__(self, policy: FoldPolicy) -> None:
        self.policy = policy
        self.hashes_sends = policy.pii.enabled
        self.masks_raw = policy.pii.protects_plain
        self.failover = policy.api_failover.enabled
        polling = policy.polling
        self.initial_delay = timedelta(milliseconds=polling.initial_delay_ms)
        self.grace = timedelta(milliseconds=polling.scheduled_grace_ms)
        self.lease = timedelta(milliseconds=polling.lease_ms)
        self.max_tracking = timedelta(milliseconds=polling.max_tracking_duration_ms)
        self.tracks_forever = polling.max_tracking_duration_ms <= 0
        self.unsupported_gives_up = polling.unsupported_provider_strategy == "unknown"
        retention = policy.retention
        self.default_class: RetentionClass = retention.default_class
        self.retention_days = {
            name: timedelta(days=resolve_retention_days(retention, name))
            for name in ("opsLogs", "telecomMetadata", "billingEvidence")
        }
        self.retention_enabled = retention.enabled
        self.slim = policy.status_change_record == "changes"


Handler = Callable[[_Policy, HotRecord, dict[str, Any]], HotStep]


class HotFold:
    """The hot fold under one policy (the worker's ``Settings.fold_policy``)."""

    def __init__(self, policy: FoldPolicy) -> None:
        self.policy = policy
        self.enabled = codec.ENABLED
        self._policy = _Policy(policy)
        self._readers = {
            kind: (event_type, spec.read) for kind, (event_type, spec) in SPECS.items()
        }

    def decode(self, kind: str, raw: bytes | None) -> HotEvent | None:
        """The input of ``kind`` (``codec.KINDS``), or None: decode it with ``models.codec``
        (``codec.decode``, inlined: it runs for every input)."""
        if raw is None or not self.enabled:
            return None
        try:
            payload = _loads(raw)
        except JSONDecodeError:
            return None
        if type(payload) is not dict:
            return None
        event_type, read = self._readers[kind]
        if event_type is not None and payload.get("eventType") != event_type:
            return None
        data = read(payload)
        return None if data is BAD else data

    def fold(self, record: HotRecord | None, kind: str, event: HotEvent) -> HotStep | None:
        """``fold_marked(record, None, event)``, or None: fold this input on the models.
        ``record`` None means the messageId has neither a record nor a marker."""
        if not self.enabled:
            return None
        try:
            if record is None:
                if kind == SEND:
                    return _record_send(self._policy, event)
                if kind == DUE or kind == OBSERVATION:
                    return HotStep(None)  # a stale timer or poll: nothing to do
                return None  # held, or an unknown message: fold_marked decides
            if event["eventId"] in record.data["processedEventIds"]:
                return HotStep(record)  # a duplicate
            if kind == SEND:
                return HotStep(record)  # the first send result wins
            return _HANDLERS[kind](self._policy, record, event)
        except _Decline:
            return None
        except Exception:  # noqa: BLE001 - the pydantic path raises it with its own traceback
            return None


# --- send results (tables.fold._record_send, _send_metadata) ----------------------------


def _record_send(p: _Policy, e: dict[str, Any]) -> HotStep:
    if p.hashes_sends or e.get("failoverOf") is not None or e["webhooks"]:
        raise _Decline
    message_id, provider_id, event_id = e["messageId"], e["providerId"], e["eventId"]
    requested_at = e["requestedAt"]
    recorded_at = e.get("recordedAt") or requested_at
    provider_message_id = (e.get("providerMessageId") or "").strip()
    scheduled_at = e.get("scheduledAt")
    status, next_check_at, last_error = _first_status(p, e, provider_message_id)
    entry: dict[str, Any] = {
        "status": status,
        "at": recorded_at,
        "source": "system",
        "provider": provider_id,
    }
    if last_error is not None:
        entry["details"] = {"code": last_error["code"], "message": last_error["message"]}
    entry["eventId"] = event_id
    retention_class = e.get("retentionClass") or p.default_class
    until = parse_utc(requested_at) + p.retention_days[retention_class]
    # One literal (one allocation) in field order, then the absent fields out: the
    # models omit nulls.
    record: dict[str, Any] = {
        "messageId": message_id,
        "providerId": provider_id,
        "providerMessageId": provider_message_id,
        "type": e["type"],
        "to": e["to"],
        "from": e.get("from"),
        "requestedAt": requested_at,
        "scheduledAt": scheduled_at,
        "status": status,
        "statusUpdatedAt": recorded_at,
        "attemptCount": 0,
        "nextCheckAt": next_check_at,
        "lastError": last_error,
        "metadata": _send_metadata(e),
        "cryptoState": "plain",
        "retentionClass": retention_class,
        "retentionBucketYm": to_retention_bucket_ym(until),
        "retentionUntil": text_of(until) if p.retention_enabled else None,
        "expiresAt": e.get("expiresAt"),
        "webhooks": [],
        "checkSeq": 0,
        "sequence": 1,
        "statusHistory": [entry],
        "processedEventIds": [event_id],
    }
    for key in _SEND_OPTIONAL:
        if record[key] is None:
            del record[key]
    return _sent(p, HotRecord(record, dump(record)), provider_message_id)


def _sent(p: _Policy, new: HotRecord, provider_message_id: str) -> HotStep:
    """A new record's outputs: its first status change, and the link of its provider id."""
    data = new.data
    recorded_at, event_id = data["statusUpdatedAt"], data["processedEventIds"][0]
    changes = record_changes(None, data) if p.slim else None
    change = status_change(new, None, "system", recorded_at, event_id, changes)
    outputs: tuple[HotOutput, ...] = ((STATUS_CHANGE, None, change, data["status"]),)
    if provider_message_id:
        message_id, provider_id = data["messageId"], data["providerId"]
        link = provider_id_link(message_id, provider_id, provider_message_id, recorded_at)
        outputs = (*outputs, (PROVIDER_ID_LINK, *link, None))
    return HotStep(new, outputs)


def _first_status(
    p: _Policy, e: dict[str, Any], provider_message_id: str
) -> tuple[str, str | None, dict[str, str] | None]:
    """(status, nextCheckAt, lastError) of a new record."""
    initial = e.get("initialStatus")
    scheduled_at = e.get("scheduledAt")
    if initial is not None and not provider_message_id:
        return initial, None, None
    if not provider_message_id:
        return "UNKNOWN", None, _MISSING_ID
    if scheduled_at is not None:
        return "PENDING", text_of(parse_utc(scheduled_at) + p.grace), None
    next_check_at = text_of(parse_utc(e["requestedAt"]) + p.initial_delay)
    return initial or "SENT", next_check_at, None


def _send_metadata(e: dict[str, Any]) -> dict[str, Any] | None:
    metadata: dict[str, Any] = dict(e.get("metadata") or {})
    custom_fields = e.get("customFields")
    if custom_fields:
        metadata["customFields"] = dict(custom_fields)
    failover = e.get("failover")
    if e["type"] == "ALIMTALK" and (
        failover is not None or not isinstance(metadata.get("failover"), dict)
    ):
        metadata["failover"] = {
            "request": dict(failover or {}),
            "sendWarningCodes": [warning["code"] for warning in e["warnings"]],
            "apiAttempt": dict(_NO_ATTEMPT),
        }
    return metadata or None


# --- commands (tables.fold._update_status) -------------------------------------------------


def _update_status(p: _Policy, record: HotRecord, e: dict[str, Any]) -> HotStep:
    data = record.data
    updates: dict[str, Any] = {}
    for key in ("sentAt", "deliveredAt", "failedAt", "clickedAt"):
        value = e.get(key)
        if value is not None:
            updates[key] = value
    if e.get("providerStatusCode"):
        updates["providerStatusCode"] = e["providerStatusCode"]
    if e.get("providerStatusMessage"):
        updates["providerStatusMessage"] = e["providerStatusMessage"]
    error = e.get("error")
    if error is not None:
        updates["lastError"] = error
    status = e["status"]
    if status == data["status"]:
        fresh = {k: v for k, v in updates.items() if data.get(k) != v}
        return _changed(record, e["eventId"], fresh) if fresh else HotStep(record)
    if not _CAN[data["status"], status]:
        return HotStep(record)
    details: dict[str, Any] = dict(e.get("details") or {})
    if error is not None:
        details["error"] = {"code": error["code"], "message": error["message"]}
    return _transition(
        p,
        record,
        status=status,
        at=e["at"],
        source=e["source"],
        event_id=e["eventId"],
        provider=e.get("provider"),
        details=details or None,
        updates=updates,
    )


# --- polling (tables.fold._due_check, _observed, _apply_result) ----------------------------


def _due_check(p: _Policy, record: HotRecord, e: dict[str, Any]) -> HotStep:
    data = record.data
    if data["status"] not in _POLLABLE or "trackingStoppedAt" in data:
        return HotStep(record)
    due = data.get("checkLeaseUntil") or data.get("nextCheckAt")
    if due is None:
        return HotStep(record)
    if due != e["dueAt"] and epoch_ms(parse_utc(due)) != epoch_ms(parse_utc(e["dueAt"])):
        return HotStep(record)
    event_id = e["eventId"]
    now = e["issuedAt"]
    checked: dict[str, Any] = {
        "attemptCount": data["attemptCount"] + 1,
        "lastCheckedAt": now,
        "checkLeaseUntil": None,
    }
    if not data["providerMessageId"]:
        return _give_up(p, record, event_id, now, _MISSING_ID, checked)
    moment = parse_utc(now)
    scheduled_at = data.get("scheduledAt")
    if scheduled_at is not None:
        grace_end = parse_utc(scheduled_at) + p.grace
        if moment < grace_end:
            checked["nextCheckAt"] = text_of(grace_end)
            return _changed(record, event_id, checked)
        tracking_start = grace_end
    else:
        tracking_start = parse_utc(data["requestedAt"])
    if not p.tracks_forever and moment - tracking_start > p.max_tracking:
        return _give_up(p, record, event_id, now, _TIMEOUT, checked)
    check_seq = data["checkSeq"] + 1
    lease_until = text_of(moment + p.lease)
    provider_message_id = data["providerMessageId"]
    if len(provider_message_id) > _PMID_MAX:
        raise _Decline  # PollRequested refuses it: the pydantic path raises
    leased = _changed(record, event_id, {"checkSeq": check_seq, "checkLeaseUntil": lease_until})
    message_id = data["messageId"]
    to = data["to"]
    request: dict[str, Any] = {
        "eventId": f"{message_id}:poll:{check_seq}",
        "schemaVersion": 1,
        "eventType": "PollRequested",
        "messageId": message_id,
        "checkSeq": check_seq,
        "providerId": data["providerId"],
        "providerMessageId": provider_message_id,
        "type": data["type"],
        # tables.pii.plain_to: "" when the record keeps the mask, not the number
        "to": "" if data.get("toMasked") is not None and to == data["toMasked"] else to,
    }
    if data.get("toEncrypted") is not None:
        request["toEncrypted"] = data["toEncrypted"]
    request["requestedAt"] = data["requestedAt"]
    if scheduled_at is not None:
        request["scheduledAt"] = scheduled_at
    request["dueAt"] = e["dueAt"]
    request["issuedAt"] = now
    return HotStep(leased.record, ((POLL_REQUEST, None, dump(request), None),))


def _observed(p: _Policy, record: HotRecord, e: dict[str, Any]) -> HotStep:
    data = record.data
    if data.get("checkLeaseUntil") is None or e["checkSeq"] != data["checkSeq"]:
        return HotStep(record)
    event_id = e["eventId"]
    now = e["observedAt"]
    attempts = data["attemptCount"] + 1
    checked: dict[str, Any] = {
        "attemptCount": attempts,
        "lastCheckedAt": now,
        "checkLeaseUntil": None,
    }
    delay = timedelta(milliseconds=p.policy.polling.backoff_delay_ms(attempts))
    backoff = text_of(parse_utc(now) + delay)
    outcome = e["outcome"]
    if outcome == "provider_not_found":
        error = {
            "code": "PROVIDER_NOT_FOUND",
            "message": f"Provider not found: {e['providerId']}",
        }
        return _give_up(p, record, event_id, now, error, checked)
    if outcome == "unsupported":
        if p.unsupported_gives_up:
            return _give_up(p, record, event_id, now, _UNSUPPORTED, checked)
        checked.update(lastError=_UNSUPPORTED, nextCheckAt=backoff)
        return _changed(record, event_id, checked)
    if outcome == "error":
        observed = e["error"]
        error = {"code": observed["code"], "message": observed["message"]}
        if not observed["retryable"]:
            return _give_up(p, record, event_id, now, error, checked)
        checked.update(lastError=error, nextCheckAt=backoff)
        return _changed(record, event_id, checked)
    if outcome == "not_yet":
        checked.update(lastError=None, nextCheckAt=backoff)
        return _changed(record, event_id, checked)
    return _apply_result(p, record, e, checked, backoff)


def _apply_result(
    p: _Policy, record: HotRecord, e: dict[str, Any], checked: dict[str, Any], backoff: str
) -> HotStep:
    """``tables.fold._apply_result``: an observation's result, the lease answered."""
    result = e["result"]
    if result.get("raw") is not None and p.masks_raw:
        raise _Decline
    checked["lastError"] = None
    if result.get("statusCode"):
        checked["providerStatusCode"] = result["statusCode"]
    if result.get("statusMessage"):
        checked["providerStatusMessage"] = result["statusMessage"]
    for key in ("sentAt", "deliveredAt", "failedAt"):
        value = result.get(key)
        if value is not None:
            checked[key] = value
    if result.get("raw") is not None:
        checked["raw"] = result["raw"]
    checked["nextCheckAt"] = backoff
    status = result["status"]
    if not _CAN[record.data["status"], status]:
        return _changed(record, e["eventId"], checked)
    details: dict[str, Any] = {}
    if result.get("statusCode"):
        details["statusCode"] = result["statusCode"]
    if result.get("statusMessage"):
        details["statusMessage"] = result["statusMessage"]
    return _transition(
        p,
        record,
        status=status,
        at=e["observedAt"],
        source="provider",
        event_id=e["eventId"],
        provider=e["providerId"],
        details=details or None,
        updates=checked,
    )


# --- provider reports (tables.fold._reported, _report_time) --------------------------------


def _reported(p: _Policy, record: HotRecord, e: dict[str, Any]) -> HotStep:
    data = record.data
    report = e["report"]
    event_id = e["eventId"]
    updates: dict[str, Any] = {}
    if report.get("statusCode"):
        updates["providerStatusCode"] = report["statusCode"]
    if report.get("statusMessage"):
        updates["providerStatusMessage"] = report["statusMessage"]
    for key in ("sentAt", "deliveredAt", "failedAt"):
        value = report.get(key)
        if value is not None and data.get(key) is None:
            updates[key] = value
    if report.get("raw") is not None:
        if p.masks_raw:
            raise _Decline
        updates["raw"] = report["raw"]
    status = report["status"]
    if not _CAN[data["status"], status]:
        if not updates or status != data["status"]:
            return _changed(record, event_id, {})
        return _changed(record, event_id, updates)
    updates["lastError"] = None
    details: dict[str, Any] = {"providerMessageId": report["providerMessageId"]}
    if report.get("statusCode"):
        details["statusCode"] = report["statusCode"]
    if report.get("statusMessage"):
        details["statusMessage"] = report["statusMessage"]
    if status in ("DELIVERED", "CLICKED"):
        at = report.get("deliveredAt") or report["receivedAt"]
    elif status == "FAILED":
        at = report.get("failedAt") or report["receivedAt"]
    elif status == "SENT":
        at = report.get("sentAt") or report["receivedAt"]
    else:
        at = report["receivedAt"]
    return _transition(
        p,
        record,
        status=status,
        at=at,
        source="webhook",
        event_id=event_id,
        provider=report["providerId"],
        details=details,
        updates=updates,
    )


# --- shared (tables.fold._give_up, _changed, _apply_transition, _remember) -----------------


def _give_up(
    p: _Policy,
    record: HotRecord,
    event_id: str,
    at: str,
    error: dict[str, Any],
    checked: dict[str, Any],
) -> HotStep:
    if not _CAN[record.data["status"], "UNKNOWN"]:
        return _changed(record, event_id, checked)
    return _transition(
        p,
        record,
        status="UNKNOWN",
        at=at,
        source="system",
        event_id=event_id,
        provider=None,
        details={"code": error["code"], "message": error["message"]},
        updates={**checked, "lastError": error},
    )


def _changed(record: HotRecord, event_id: str, updates: dict[str, Any]) -> HotStep:
    updates["processedEventIds"] = _remember(record.data, event_id)
    new = _updated(record.data, updates)
    return HotStep(HotRecord(new, dump(new)))


def _transition(
    p: _Policy,
    record: HotRecord,
    *,
    status: str,
    at: str,
    source: str,
    event_id: str,
    provider: str | None,
    details: dict[str, Any] | None,
    updates: dict[str, Any],
) -> HotStep:
    data = record.data
    previous = data["status"]
    if status == "FAILED" and previous != "FAILED" and p.failover:
        raise _Decline  # tables.failover.request_failover may change the record
    entry: dict[str, Any] = {
        "status": status,
        "at": at,
        "source": source,
        "provider": provider or data["providerId"],
    }
    if details is not None:
        entry["details"] = details
    entry["eventId"] = event_id
    changes = updates  # every caller passes a dict of its own
    changes["status"] = status
    changes["statusUpdatedAt"] = at
    changes["sequence"] = data["sequence"] + 1
    changes["statusHistory"] = [*data["statusHistory"], entry]
    changes["processedEventIds"] = _remember(data, event_id)
    if status not in _POLLABLE or "trackingStoppedAt" in data:
        changes["nextCheckAt"] = None
        changes["checkLeaseUntil"] = None
    new_data = _updated(data, changes)
    new = HotRecord(new_data, dump(new_data))
    slim = record_changes(data, new_data) if p.slim else None
    change = status_change(new, previous, source, at, event_id, slim)
    return HotStep(new, ((STATUS_CHANGE, None, change, status),))


def _remember(data: dict[str, Any], event_id: str) -> list[str]:
    remembered: list[str] = [*data["processedEventIds"], event_id]
    if len(remembered) > REMEMBERED_EVENT_IDS:
        del remembered[:-REMEMBERED_EVENT_IDS]
    return remembered


def _updated(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``model_copy(update=changes)`` on the JSON dict: None removes a field (the models omit
    nulls); a field that was absent goes to its place in the field order."""
    new = data.copy()
    grown = False
    for key, value in changes.items():
        if value is None:
            if key in new:
                del new[key]
        else:
            if not grown and key not in new:
                grown = True
            new[key] = value
    if not grown:
        return new
    # Re-ordered through a template of the new key set (records share a few shapes): copying
    # a dict and updating its existing keys costs a fraction of building one key by key.
    shape = tuple(new)
    template = _TEMPLATES.get(shape)
    if template is None:
        if len(_TEMPLATES) >= 4096:
            _TEMPLATES.clear()
        template = _TEMPLATES[shape] = dict.fromkeys(sorted(new, key=_RANK.__getitem__))
    ordered = template.copy()
    ordered.update(new)
    return ordered


_TEMPLATES: dict[tuple[str, ...], dict[str, None]] = {}


_HANDLERS: Final[dict[str, Handler]] = {
    COMMAND: _update_status,
    DUE: _due_check,
    OBSERVATION: _observed,
    REPORT: _reported,
}

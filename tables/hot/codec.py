"""The hot path's codec: inputs and records as their JSON dicts, outputs as bytes.

Byte for byte what ``models.codec`` writes: a record's JSON is ``orjson.dumps`` of its dict,
which holds the canonical JSON values in the model's field order with nulls omitted (see
``schema``). An input the hot decoders are not sure of gives ``None``: decode it with
``models.codec``, which accepts it or refuses it with the reason a dead letter gets.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import BaseModel

from deliverytrack.models.codec import decode_record
from deliverytrack.models.common import ErrorInfo
from deliverytrack.models.enums import POLLABLE_STATUSES
from deliverytrack.models.events import (
    SCHEMA_VERSION,
    DueCheckIssued,
    FailoverRequest,
    PollRequested,
    ProviderIdLinked,
    ProviderReportReceived,
    ProviderStatus,
    ReportCorrelated,
    SendRecorded,
    SendWarning,
    StatusChanged,
    StatusObserved,
    UpdateStatus,
)
from deliverytrack.models.policy import ApiFailoverPolicy, FoldPolicy, PiiPolicy, PollingPolicy
from deliverytrack.models.records import StatusHistoryEntry, TrackingRecord
from deliverytrack.models.retention import RetentionPolicy
from deliverytrack.tables.hot.facts import HotFacts
from deliverytrack.tables.hot.schema import BAD, ModelSpec, compile_model, digest

SEND: Final = "send"
"""Input kinds, one per fold input topic: send-results (``SendRecorded``), commands
(``UpdateStatus`` here; other commands take the pydantic path), due checks
(``DueCheckIssued``; record expiries take the pydantic path), observations
(``StatusObserved``), correlated reports (``ReportCorrelated``)."""
COMMAND: Final = "command"
DUE: Final = "due"
OBSERVATION: Final = "observation"
REPORT: Final = "report"
KINDS: Final = (SEND, COMMAND, DUE, OBSERVATION, REPORT)

_POLLABLE = frozenset(status.value for status in POLLABLE_STATUSES)


def _outcome_has_its_payload(payload: dict[str, Any]) -> bool:
    """``StatusObserved._outcome_has_its_payload``."""
    outcome = payload["outcome"]
    result = payload.get("result") is not None
    error = payload.get("error") is not None
    return bool((outcome == "result") == result and (outcome == "error") == error)


_SEND_SPEC = compile_model(
    SendRecorded,
    {
        # A before-validator refusing anything but text or null: the ``str | None`` checker
        # accepts nothing else either.
        "_provider_message_id_is_text": lambda payload: True,
        "_initial_is_pollable": lambda payload: payload.get("initialStatus") in (None, *_POLLABLE),
    },
)
_OBSERVATION_SPEC = compile_model(
    StatusObserved, {"_outcome_has_its_payload": _outcome_has_its_payload}
)
SPECS: Final[dict[str, tuple[str | None, ModelSpec]]] = {
    # kind: (eventType it must carry, None when absent means this model; the model's checkers)
    SEND: (None, _SEND_SPEC),
    COMMAND: ("UpdateStatus", compile_model(UpdateStatus)),
    DUE: ("DueCheckIssued", compile_model(DueCheckIssued)),
    OBSERVATION: (None, _OBSERVATION_SPEC),
    REPORT: (None, compile_model(ReportCorrelated)),
}
RECORD_SPEC: Final = compile_model(TrackingRecord)


HotEvent = dict[str, Any]
"""A decoded input: its JSON payload with canonical values and defaults filled in (the
decoder of its kind checked it; the fold reads it by its camelCase keys)."""


class HotRecord:
    """A tracking record as its canonical JSON dict and the bytes ``encode_record`` writes
    for it. Never changed in place: the fold builds new ones (as it does with models)."""

    __slots__ = ("data", "json", "_facts")

    def __init__(self, data: dict[str, Any], json: bytes) -> None:
        self.data = data
        self.json = json
        self._facts: HotFacts | None = None

    def facts(self) -> HotFacts:
        """What the store's derived data reads of the record (parsed on first use)."""
        facts = self._facts
        if facts is None:
            facts = self._facts = HotFacts(self.data)
        return facts

    def __repr__(self) -> str:
        return f"HotRecord({self.json!r})"


def decode(kind: str, raw: bytes | None) -> HotEvent | None:
    """The input of ``kind`` as a :data:`HotEvent`, or None: then ``models.codec`` decides."""
    if raw is None or not ENABLED:
        return None
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(payload) is not dict:
        return None
    event_type, spec = SPECS[kind]
    if event_type is not None and payload.get("eventType") != event_type:
        return None
    data = spec.read(payload)
    return None if data is BAD else data


def load_record(raw: bytes) -> HotRecord | None:
    """A stored record, if it is exactly what ``encode_record`` writes for a valid record (so
    the pydantic path would read the same values and write the same bytes); else None, and
    the pydantic path reads it (or refuses it as unreadable state)."""
    if not ENABLED:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if RECORD_SPEC.verify(data) is BAD or orjson.dumps(data) != raw:
        return None
    return HotRecord(data, raw)


def to_model(record: HotRecord) -> TrackingRecord:
    """The record for the pydantic path."""
    return decode_record(record.json)


def dump(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


# --- outputs ------------------------------------------------------------------------------------

# The keys the hot path writes, in the models' field order (checked by contract_problems).
STATUS_CHANGE_KEYS: Final = (
    "eventId",
    "schemaVersion",
    "eventType",
    "messageId",
    "sequence",
    "previousStatus",
    "status",
    "source",
    "changedAt",
    "causedBy",
    "record",
    "changes",
)
POLL_REQUEST_KEYS: Final = (
    "eventId",
    "schemaVersion",
    "eventType",
    "messageId",
    "checkSeq",
    "providerId",
    "providerMessageId",
    "type",
    "to",
    "toEncrypted",
    "requestedAt",
    "scheduledAt",
    "dueAt",
    "issuedAt",
)
LINK_KEYS: Final = (
    "eventId",
    "schemaVersion",
    "eventType",
    "providerId",
    "providerMessageId",
    "messageId",
    "linkedAt",
)
ENTRY_KEYS: Final = ("status", "at", "source", "provider", "details", "eventId")
ERROR_KEYS: Final = ("code", "message")


def status_change(
    record: HotRecord,
    previous: str | None,
    source: str,
    changed_at: str,
    caused_by: str,
    changes: dict[str, Any] | None = None,
) -> bytes:
    """``encode_status_changed`` of the transition that made ``record``: with the record, or
    with ``changes`` (``tables.changes.record_changes``) instead when they are given."""
    data = record.data
    message_id = data["messageId"]
    sequence = data["sequence"]
    head = orjson.dumps(
        {
            "eventId": f"{message_id}:{sequence}",
            "schemaVersion": SCHEMA_VERSION,
            "eventType": "StatusChanged",
            "messageId": message_id,
            "sequence": sequence,
            "previousStatus": previous,
            "status": data["status"],
            "source": source,
            "changedAt": changed_at,
            "causedBy": caused_by,
        }
    )
    if changes is not None:
        return b"".join((head[:-1], b',"changes":', orjson.dumps(changes), b"}"))
    return b"".join((head[:-1], b',"record":', record.json, b"}"))


def provider_id_link(
    message_id: str, provider_id: str, provider_message_id: str, linked_at: str
) -> tuple[bytes, bytes]:
    """(key, value) of the ``ProviderIdLinked`` of a new record."""
    value = orjson.dumps(
        {
            "eventId": f"{message_id}:link",
            "schemaVersion": SCHEMA_VERSION,
            "eventType": "ProviderIdLinked",
            "providerId": provider_id,
            "providerMessageId": provider_message_id,
            "messageId": message_id,
            "linkedAt": linked_at,
        }
    )
    return f"{provider_id}:{provider_message_id}".encode(), value


# --- the contract -------------------------------------------------------------------------------

MODELS: Final[tuple[type[BaseModel], ...]] = (
    TrackingRecord,
    StatusHistoryEntry,
    ErrorInfo,
    SendRecorded,
    SendWarning,
    FailoverRequest,
    UpdateStatus,
    DueCheckIssued,
    StatusObserved,
    ProviderStatus,
    ReportCorrelated,
    ProviderReportReceived,
    StatusChanged,
    PollRequested,
    ProviderIdLinked,
    FoldPolicy,
    PollingPolicy,
    ApiFailoverPolicy,
    PiiPolicy,
    RetentionPolicy,
)
MODELS_DIGEST: Final = "a5d86dbe1bc1f205"
"""``schema.digest(MODELS)`` when the hot path was last checked against the models. A model
change (a field, its type, constraints, default, order, a validator) changes it: the hot path
then switches itself off (every input takes the pydantic path) and the contract test fails
until someone has brought the hot path in line and updated this value."""


def _aliases(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(info.alias or name for name, info in model.model_fields.items())


def contract_problems() -> list[str]:
    """What no longer holds between the hot path and the models (empty: it may run)."""
    problems: list[str] = []
    current = digest(MODELS)
    if current != MODELS_DIGEST:
        problems.append(
            f"the models changed (digest {current}, hot path checked against {MODELS_DIGEST}):"
            " review tables/hot against them, then update codec.MODELS_DIGEST"
        )
    for keys, model in (
        (STATUS_CHANGE_KEYS, StatusChanged),
        (POLL_REQUEST_KEYS, PollRequested),
        (LINK_KEYS, ProviderIdLinked),
        (ENTRY_KEYS, StatusHistoryEntry),
        (ERROR_KEYS, ErrorInfo),
    ):
        if keys != _aliases(model):
            problems.append(f"{model.__name__} fields are {_aliases(model)}, hot path: {keys}")
    return problems


ENABLED: Final = not contract_problems()

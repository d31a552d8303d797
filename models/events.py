"""Events and commands: the public topic contract (ARCHITECTURE.md section 3).

Input events carry ``eventId`` (used to drop duplicates) and ``schemaVersion``. Topics that carry
several kinds of event discriminate on ``eventType`` (``type`` is the message type).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, field_validator, model_validator

from deliverytrack.models.common import (
    DerivedId,
    ErrorInfo,
    Frozen,
    JsonObject,
    NonEmptyStr,
    Tolerant,
    UtcDatetime,
)
from deliverytrack.models.enums import (
    POLLABLE_STATUSES,
    FallbackChannel,
    MessageType,
    StatusSource,
    TrackingStatus,
)
from deliverytrack.models.outbound import WebhookEndpoint
from deliverytrack.models.records import (
    CHANGES_FIELDS,
    ChangesJsonSchema,
    RetentionClass,
    TrackingRecord,
)
from deliverytrack.models.retention import DeletionReason

SCHEMA_VERSION = 1

# Strict: the one-pass JSON validation must not take ``true`` or ``1.0`` for 1 (the full path
# refuses them as invalid-schema-version).
SchemaVersion = Annotated[int, Strict(), Field(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]


class Event(Tolerant):
    """Fields every input event has."""

    event_id: NonEmptyStr
    schema_version: SchemaVersion = SCHEMA_VERSION


class SendWarning(Tolerant):
    """k-msg ``SendWarning``: e.g. FAILOVER_PARTIAL_PROVIDER."""

    code: NonEmptyStr
    message: str = ""
    details: JsonObject | None = None


class FailoverRequest(Tolerant):
    """k-msg AlimTalk ``failover`` options as given on the send."""

    enabled: bool | None = None
    fallback_channel: FallbackChannel | None = None
    fallback_content: str | None = None
    fallback_title: str | None = None


# --- deliverytrack.send-results (key: messageId) -------------------------------------------------


class SendRecorded(Event):
    """A message was handed to a provider (k-msg ``recordSend``)."""

    event_type: Literal["SendRecorded"] = "SendRecorded"
    message_id: NonEmptyStr
    provider_id: NonEmptyStr
    # Missing or blank means the provider gave no id: the record starts UNKNOWN. Not a string
    # (e.g. a number): refused, the send result is a dead letter naming the field.
    provider_message_id: str | None = Field(default=None, max_length=512)
    type: MessageType
    to: NonEmptyStr
    from_: str | None = Field(default=None, alias="from")
    requested_at: UtcDatetime
    scheduled_at: UtcDatetime | None = None
    # When the send result was recorded; defaults to requestedAt. Used as statusUpdatedAt.
    recorded_at: UtcDatetime | None = None
    custom_fields: dict[str, str] | None = None
    metadata: JsonObject | None = None
    failover: FailoverRequest | None = None
    warnings: tuple[SendWarning, ...] = ()
    failover_of: str | None = Field(
        default=None,
        min_length=1,
        description="For a fallback sent because of a FailoverRequested: the original messageId",
    )
    webhooks: tuple[WebhookEndpoint, ...] = Field(
        default=(), description="Endpoints that get this message's status changes"
    )
    initial_status: TrackingStatus | None = Field(
        default=None,
        description="k-msg DeliveryTracker trackMessage's initialStatus (QUEUED, PENDING, "
        "SENDING or SENT): the record starts there; without a providerMessageId it is then "
        "driven by updates and reports only (not polled), instead of becoming UNKNOWN",
    )
    retention_class: RetentionClass | None = Field(
        default=None, description="k-msg retention class; default: the policy's defaultClass"
    )
    expires_at: UtcDatetime | None = Field(
        default=None,
        description="Delete the record at this time whatever its status (k-msg's old tracker: "
        "createdAt + maxTrackingDuration)",
    )

    @field_validator("provider_message_id", mode="before")
    @classmethod
    def _provider_message_id_is_text(cls, value: object) -> object:
        """k-msg turns a non-string id into "" (a record UNKNOWN for a "missing" id it was
        given); on the topic it is a producer bug, refused with a reason that says so."""
        if value is None or isinstance(value, str):
            return value
        given = type(value).__name__
        if isinstance(value, int | float):  # bool too; containers are not printed
            given = f"{given} {repr(value)[:40]}"
        raise ValueError(
            f'must be a string or null, got {given}: send the provider\'s id as text ("12345")'
        )

    @field_validator("initial_status")
    @classmethod
    def _initial_is_pollable(cls, value: TrackingStatus | None) -> TrackingStatus | None:
        if value is not None and value not in POLLABLE_STATUSES:
            raise ValueError("initialStatus must be QUEUED, PENDING, SENDING or SENT")
        return value


# --- deliverytrack.commands (key: messageId) -----------------------------------------------------


class UpdateStatus(Event):
    """Set a status by hand (k-msg DeliveryTracker ``updateStatus``); refused if it goes back."""

    event_type: Literal["UpdateStatus"] = "UpdateStatus"
    message_id: NonEmptyStr
    status: TrackingStatus
    at: UtcDatetime
    source: StatusSource = StatusSource.MANUAL
    provider: str | None = None
    provider_status_code: str | None = None
    provider_status_message: str | None = None
    sent_at: UtcDatetime | None = None
    delivered_at: UtcDatetime | None = None
    failed_at: UtcDatetime | None = None
    clicked_at: UtcDatetime | None = None
    error: ErrorInfo | None = None
    details: JsonObject | None = None


class RecordFailoverOutcome(Event):
    """What became of a failover request, recorded on the original message (k-msg's
    ``apiAttempt`` outcome). The fold emits ``sent`` itself when the fallback's send result
    (``failoverOf``) arrives; a sender that could not send publishes ``failed``."""

    event_id: DerivedId
    event_type: Literal["RecordFailoverOutcome"] = "RecordFailoverOutcome"
    message_id: NonEmptyStr
    outcome: Literal["sent", "failed"]
    at: UtcDatetime
    fallback_message_id: str | None = None
    fallback_provider_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class CancelMessage(Event):
    """Cancel a message that has not reached a final status (status CANCELLED, source manual)."""

    event_type: Literal["CancelMessage"] = "CancelMessage"
    message_id: NonEmptyStr
    at: UtcDatetime
    reason: str | None = None


class StopTracking(Event):
    """Stop polling a message. The record stays; later provider reports still apply."""

    event_type: Literal["StopTracking"] = "StopTracking"
    message_id: NonEmptyStr
    at: UtcDatetime
    reason: str | None = None


class PurgeRecord(Event):
    """Delete a record now (the DeliveryTracker facade's ``cleanup()``, operators). Unlike
    ``StopTracking`` (stop polling, keep the record) it removes the record from the table."""

    event_type: Literal["purge"] = "purge"
    message_id: NonEmptyStr
    at: UtcDatetime
    reason: str | None = None


# --- deliverytrack.provider-webhooks (key: providerId:providerMessageId) -------------------------


class ProviderReportReceived(Event):
    """A provider's delivery report (webhook), normalised. Knows the provider's id only."""

    event_id: DerivedId
    event_type: Literal["ProviderReportReceived"] = "ProviderReportReceived"
    provider_id: NonEmptyStr
    provider_message_id: NonEmptyStr
    status: TrackingStatus
    status_code: str | None = None
    status_message: str | None = None
    sent_at: UtcDatetime | None = None
    delivered_at: UtcDatetime | None = None
    failed_at: UtcDatetime | None = None
    received_at: UtcDatetime
    raw: JsonObject | None = None


# --- internal: correlation of provider reports (key: providerId:providerMessageId) ------------


def provider_key(provider_id: str, provider_message_id: str) -> str:
    """The key of provider-webhooks and of the provider-id index."""
    return f"{provider_id}:{provider_message_id}"


class ProviderIdLinked(Event):
    """The fold created a record with a provider message id: index it (re-keyed by provider)."""

    event_id: DerivedId
    event_type: Literal["ProviderIdLinked"] = "ProviderIdLinked"
    provider_id: NonEmptyStr
    provider_message_id: NonEmptyStr
    message_id: NonEmptyStr
    linked_at: UtcDatetime


class HoldExpiryDue(Event):
    """A timer saw held reports of this provider key past their holding time at ``issuedAt``."""

    event_id: DerivedId
    event_type: Literal["HoldExpiryDue"] = "HoldExpiryDue"
    provider_id: NonEmptyStr
    provider_message_id: NonEmptyStr
    issued_at: UtcDatetime


CorrelationEvent = ProviderReportReceived | ProviderIdLinked | HoldExpiryDue
"""Everything the correlator accepts, keyed by ``providerId:providerMessageId``."""


class ReportCorrelated(Event):
    """A provider report matched to our messageId (``eventId`` is the report's eventId)."""

    event_id: DerivedId
    event_type: Literal["ReportCorrelated"] = "ReportCorrelated"
    message_id: NonEmptyStr
    report: ProviderReportReceived


# --- internal: due checks, poll requests, observations (key: messageId) -------------------------


class DueCheckIssued(Event):
    """A timer found the record due at ``dueAt`` while scanning at ``issuedAt`` (its clock)."""

    event_id: DerivedId
    event_type: Literal["DueCheckIssued"] = "DueCheckIssued"
    message_id: NonEmptyStr
    due_at: UtcDatetime
    issued_at: UtcDatetime


class RecordExpiryDue(Event):
    """A timer saw the record (or the deletion marker of a deleted record) expire at
    ``expireAt`` while scanning at ``issuedAt`` (its clock). Folded like a due check: stale
    when the record's expiry moved. ``eventId`` is ``expire:<messageId>:<expireAt ms>``."""

    event_id: DerivedId
    event_type: Literal["RecordExpiryDue"] = "RecordExpiryDue"
    message_id: NonEmptyStr
    expire_at: UtcDatetime
    issued_at: UtcDatetime


TimerEvent = DueCheckIssued | RecordExpiryDue
"""What the timers publish on the due-checks topic (keyed by messageId)."""


class ProviderStatus(Tolerant):
    """k-msg ``DeliveryStatusResult``: what a provider's status API said."""

    status: TrackingStatus
    status_code: str | None = None
    status_message: str | None = None
    sent_at: UtcDatetime | None = None
    delivered_at: UtcDatetime | None = None
    failed_at: UtcDatetime | None = None
    raw: JsonObject | None = None


class PollRequested(Event):
    """The fold leased a due record to the poller: ask the provider, answer with ``checkSeq``."""

    event_id: DerivedId
    event_type: Literal["PollRequested"] = "PollRequested"
    message_id: NonEmptyStr
    check_seq: int = Field(ge=1)
    provider_id: NonEmptyStr
    provider_message_id: NonEmptyStr
    type: MessageType
    # "" when the record keeps no plain number (personal data on): the poller decrypts
    # ``toEncrypted`` with its keys for providers that query by phone (IWINV).
    to: str
    to_encrypted: str | None = None
    requested_at: UtcDatetime
    scheduled_at: UtcDatetime | None = None
    due_at: UtcDatetime
    issued_at: UtcDatetime


ObservationOutcome = Literal["result", "not_yet", "error", "provider_not_found", "unsupported"]


class ProviderErrorInfo(Tolerant):
    code: NonEmptyStr
    message: str = ""
    retryable: bool
    http_status: int | None = None


class StatusObserved(Event):
    """What the poller saw for one poll request (its ``checkSeq``), at ``observedAt``."""

    event_id: DerivedId
    event_type: Literal["StatusObserved"] = "StatusObserved"
    message_id: NonEmptyStr
    check_seq: int = Field(ge=1)
    provider_id: NonEmptyStr
    outcome: ObservationOutcome
    observed_at: UtcDatetime
    result: ProviderStatus | None = None
    error: ProviderErrorInfo | None = None

    @model_validator(mode="after")
    def _outcome_has_its_payload(self) -> StatusObserved:
        if (self.outcome == "result") != (self.result is not None):
            raise ValueError("result is required exactly when outcome is 'result'")
        if (self.outcome == "error") != (self.error is not None):
            raise ValueError("error is required exactly when outcome is 'error'")
        return self


# --- deliverytrack.failover-requests (key: the original messageId) -------------------------------


class FailoverRequested(Frozen):
    """An AlimTalk message failed for a non-Kakao user: send this SMS/LMS instead (once).

    ``eventId`` is ``<messageId>:api-fallback`` and so is ``fallbackMessageId``: publish the
    fallback's send result with that messageId and ``failoverOf`` = ``messageId``."""

    event_id: DerivedId
    schema_version: SchemaVersion = SCHEMA_VERSION
    event_type: Literal["FailoverRequested"] = "FailoverRequested"
    message_id: NonEmptyStr
    fallback_message_id: DerivedId
    fallback_type: MessageType
    # The record's to/from: masked when personal data is on without storePlain; the sender
    # decrypts ``toEncrypted``/``fromEncrypted`` (tables.pii.decrypt_field) to send.
    to: str
    to_encrypted: str | None = None
    from_: str | None = Field(default=None, alias="from")
    from_encrypted: str | None = None
    text: NonEmptyStr
    subject: str | None = None
    original_provider_id: str
    original_provider_message_id: str
    requested_at: UtcDatetime


# --- deliverytrack.status-changes (key: messageId) -----------------------------------------------


RecordChanges = Annotated[JsonObject, ChangesJsonSchema()]
"""A status change's ``changes`` (``models.records.ChangesJsonSchema`` says what it holds)."""


class StatusChanged(Frozen):
    """One applied transition. ``eventId`` is ``<messageId>:<sequence>``, stable across replays.

    It carries either the whole ``record`` after the transition (the default,
    ``DELIVERYTRACK_STATUS_CHANGE_RECORD=full``) or only its ``changes``
    (``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes``), never both."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["record"]}, {"required": ["changes"]}]}
    )

    event_id: DerivedId
    schema_version: SchemaVersion = SCHEMA_VERSION
    event_type: Literal["StatusChanged"] = "StatusChanged"
    message_id: NonEmptyStr
    sequence: int = Field(ge=1)
    previous_status: TrackingStatus | None
    status: TrackingStatus
    source: StatusSource
    changed_at: UtcDatetime
    caused_by: str = Field(description="eventId of the input event that caused the transition")
    record: TrackingRecord | None = Field(
        default=None,
        description="The whole record after the transition (DELIVERYTRACK_STATUS_CHANGE_RECORD"
        "=full, the default)",
    )
    changes: RecordChanges | None = Field(
        default=None,
        description="Instead of record (DELIVERYTRACK_STATUS_CHANGE_RECORD=changes): the "
        "record's fields this transition changed, with their new values (null: the field was "
        "removed), plus providerId, type and (when the message has endpoints of its own) "
        "webhooks, always; statusHistory and processedEventIds are left out. A record's first "
        "status change has all its fields",
    )

    @field_validator("changes")
    @classmethod
    def _changes_are_record_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            unknown = sorted(set(value) - CHANGES_FIELDS)
            if unknown:
                raise ValueError(f"not a field a status change's changes may hold: {unknown}")
        return value

    @model_validator(mode="after")
    def _ids_agree(self) -> StatusChanged:
        if self.event_id != f"{self.message_id}:{self.sequence}":
            raise ValueError("eventId must be '<messageId>:<sequence>'")
        if (self.record is None) == (self.changes is None):
            raise ValueError("a status change carries exactly one of record and changes")
        return self


# --- deliverytrack.record-deletions (key: messageId) ---------------------------------------------


class RecordDeleted(Frozen):
    """The fold deleted a record (a tombstone on the changelog; no status change is
    published). ``eventId`` is ``<messageId>:deleted:<eventId of the cause>``, stable across
    retries and replays."""

    event_id: DerivedId
    schema_version: SchemaVersion = SCHEMA_VERSION
    event_type: Literal["RecordDeleted"] = "RecordDeleted"
    message_id: NonEmptyStr
    reason: DeletionReason
    at: UtcDatetime
    caused_by: str = Field(description="eventId of the expiry or purge that deleted it")
    status: TrackingStatus = Field(description="The record's last status")
    detail: str | None = Field(default=None, description="The purge command's reason")


# --- deliverytrack.dead-letters (key: the original key) ------------------------------------------


class DeadLetter(Frozen):
    """An input that could not be processed, with the original bytes (base64) and the reason."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    event_type: Literal["DeadLetter"] = "DeadLetter"
    topic: str
    partition: int
    offset: int
    key_base64: str | None = None
    value_base64: str | None = None
    value_text: str | None = Field(
        default=None, description="The kept value as UTF-8 when it decodes, for humans"
    )
    value_size: int | None = Field(default=None, description="Size of the original value")
    value_sha256: str | None = Field(default=None, description="SHA-256 of the original value")
    value_truncated: bool | None = Field(
        default=None,
        description="true when only the first DELIVERYTRACK_DEAD_LETTER_VALUE_BYTES are kept",
    )
    key_truncated: bool | None = Field(
        default=None, description="true when only the first 1,024 bytes of the key are kept"
    )
    value_masked: bool | None = Field(
        default=None,
        description="true when personal-data protection kept a copy with phone numbers masked "
        "(valueText) instead of the bytes (no valueBase64, no valueSha256)",
    )
    reason: str
    error: str
    failed_at: UtcDatetime


CommandEvent = UpdateStatus | CancelMessage | StopTracking | RecordFailoverOutcome | PurgeRecord
MessageEvent = (
    SendRecorded
    | UpdateStatus
    | CancelMessage
    | StopTracking
    | RecordFailoverOutcome
    | PurgeRecord
    | DueCheckIssued
    | RecordExpiryDue
    | StatusObserved
    | ReportCorrelated
)
"""Everything the fold accepts, keyed by messageId."""


class EventRejected(Frozen):
    """The fold could not apply an input event (e.g. a command for an unknown messageId).

    Not published as is: the worker turns it into a dead-letter record with the original bytes.
    A refused backward transition is not a rejection of this kind: it emits nothing.
    """

    event_id: str
    message_id: str
    reason: str
    detail: str

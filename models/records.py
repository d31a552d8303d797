"""The tracking record: k-msg's ``TrackingRecord`` plus a status history."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, GetJsonSchemaHandler

from deliverytrack.models.common import ErrorInfo, Frozen, JsonObject, NonEmptyStr, UtcDatetime
from deliverytrack.models.enums import MessageType, StatusSource, TrackingStatus
from deliverytrack.models.outbound import WebhookEndpoint

CryptoState = Literal["plain", "encrypted", "degraded"]
RetentionClass = Literal["opsLogs", "telecomMetadata", "billingEvidence"]


class StatusHistoryEntry(Frozen):
    """One applied transition (k-msg DeliveryTracker's ``statusHistory`` entry)."""

    status: TrackingStatus
    at: UtcDatetime
    source: StatusSource
    provider: str | None = None
    details: JsonObject | None = None
    event_id: str = Field(description="eventId of the input event that caused the transition")


class TrackingRecord(Frozen):
    """The state of one tracked message, keyed by ``messageId``.

    Built and changed only by the fold. ``nextCheckAt`` is null when the record is not polled
    (terminal status or tracking stopped); k-msg sets it to "now" instead.
    """

    message_id: NonEmptyStr
    provider_id: NonEmptyStr
    provider_message_id: str
    type: MessageType
    to: str
    to_hash: str | None = None
    to_masked: str | None = None
    to_encrypted: str | None = Field(
        default=None, description="AES-GCM envelope of the plain `to` (personal data on)"
    )
    from_: str | None = Field(default=None, alias="from")
    from_encrypted: str | None = None
    from_hash: str | None = None
    from_masked: str | None = None
    requested_at: UtcDatetime
    scheduled_at: UtcDatetime | None = None
    status: TrackingStatus
    provider_status_code: str | None = None
    provider_status_message: str | None = None
    sent_at: UtcDatetime | None = None
    delivered_at: UtcDatetime | None = None
    failed_at: UtcDatetime | None = None
    clicked_at: UtcDatetime | None = None
    status_updated_at: UtcDatetime
    attempt_count: int = Field(default=0, ge=0)
    last_checked_at: UtcDatetime | None = None
    next_check_at: UtcDatetime | None = None
    last_error: ErrorInfo | None = None
    raw: JsonObject | None = None
    metadata: JsonObject | None = None
    metadata_hashes: dict[str, str] | None = None
    metadata_encrypted: str | None = None
    crypto_kid: str | None = None
    crypto_version: int | None = None
    crypto_state: CryptoState | None = None
    retention_class: RetentionClass | None = None
    retention_bucket_ym: int | None = None
    # Deletion deadlines (tables/retention.py): requestedAt + retention days, applied once the
    # record is no longer polled (set only while retention is enabled); and k-msg's old
    # tracker's expiresAt, applied whatever the status (only when the send result gives one).
    retention_until: UtcDatetime | None = None
    expires_at: UtcDatetime | None = None
    tracking_stopped_at: UtcDatetime | None = None
    webhooks: tuple[WebhookEndpoint, ...] = ()
    # Polling lease: set when a poll is handed to the poller, cleared by its observation.
    check_seq: int = Field(default=0, ge=0, description="Number of polls handed out")
    check_lease_until: UtcDatetime | None = None
    # deliverytrack's own bookkeeping
    sequence: int = Field(default=0, ge=0, description="Number of applied transitions")
    status_history: tuple[StatusHistoryEntry, ...] = ()
    processed_event_ids: tuple[str, ...] = Field(
        default=(), description="Recent input eventIds applied to this record (duplicate guard)"
    )


RECORD_FIELDS: Final = tuple(
    info.alias or name for name, info in TrackingRecord.model_fields.items()
)
"""The record's JSON field names, in the order it is written."""
CHANGES_LEFT_OUT: Final = frozenset({"statusHistory", "processedEventIds"})
"""Never in a status change's ``changes``: the envelope is the transition (status, source,
changedAt, causedBy), the input eventIds are the fold's bookkeeping."""
CHANGES_CARRIED: Final = ("providerId", "type", "webhooks")
"""In every status change's ``changes``, changed or not (``webhooks`` when the message has
endpoints of its own): what a consumer needs to route one change without the record (the
outbound-webhook dispatcher posts to the message's own endpoints and names its provider; the
dashboard shows provider and type). None of them changes after the send result."""
CHANGES_FIELDS: Final = frozenset(RECORD_FIELDS) - CHANGES_LEFT_OUT


class ChangesJsonSchema:
    """The JSON Schema of a status change's ``changes``: the record's properties (but
    ``statusHistory`` and ``processedEventIds``), each as in the record or null (removed) when
    the record may leave it out, none required but those every change has."""

    def __repr__(self) -> str:
        return "ChangesJsonSchema()"  # stable: tables.hot's digest of the models reads it

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> Any:
        record = handler.resolve_ref_schema(handler(TrackingRecord.__pydantic_core_schema__))
        always = set(record.get("required", ()))
        properties = {}
        for name, schema in record["properties"].items():
            if name in CHANGES_LEFT_OUT:
                continue
            nullable = {"type": "null"} in schema.get("anyOf", ())
            properties[name] = (
                schema if name in always or nullable else {"anyOf": [schema, {"type": "null"}]}
            )
        return {
            "type": "object",
            "properties": properties,
            "required": ["providerId", "type", "status", "sequence"],
            "additionalProperties": False,
        }

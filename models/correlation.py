"""State of the provider-id index: one value per ``providerId:providerMessageId``."""

from __future__ import annotations

from pydantic import Field

from deliverytrack.models.common import Frozen, NonEmptyStr, UtcDatetime
from deliverytrack.models.events import ProviderReportReceived


class SourceRef(Frozen):
    """Where an input came from, kept so that a report that expires unmatched can be
    dead-lettered with its original bytes and coordinates."""

    topic: str
    partition: int
    offset: int
    value_base64: str | None = None


class HeldReport(Frozen):
    """A report that arrived before the send result that names its provider message id."""

    report: ProviderReportReceived
    source: SourceRef
    held_until: UtcDatetime


class CorrelationState(Frozen):
    """``providerId:providerMessageId -> messageId`` plus the reports waiting for it."""

    provider_id: NonEmptyStr
    provider_message_id: NonEmptyStr
    message_id: str | None = None
    held: tuple[HeldReport, ...] = ()
    processed_event_ids: tuple[str, ...] = Field(
        default=(), description="Recent report eventIds seen for this key (duplicate guard)"
    )

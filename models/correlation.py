"""State of the provider-id index: one value per ``providerId:providerMessageId``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from deliverytrack.models.common import Frozen, NonEmptyStr, UtcDatetime
from deliverytrack.models.events import CommandEvent, ProviderReportReceived


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


class HeldCommand(Frozen):
    """A command that arrived before the send result of its messageId (a producer that
    pipelines sends and commands): applied when the send result arrives."""

    command: Annotated[CommandEvent, Field(discriminator="event_type")]
    source: SourceRef


class CommandHold(Frozen):
    """Commands waiting for the first send result of ``messageId``, kept in the record's
    marker slot (store prefix ``z``, changelog key ``\\0z:`` + messageId) until ``forgetAt``,
    when the expiry timer dead-letters them as unknown-message."""

    message_id: NonEmptyStr
    forget_at: UtcDatetime
    commands: tuple[HeldCommand, ...] = Field(min_length=1)

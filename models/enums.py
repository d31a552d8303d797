"""Enumerations shared by events and records (k-msg's vocabularies, merged)."""

from __future__ import annotations

from enum import StrEnum


class MessageType(StrEnum):
    """k-msg's 14 message types (``packages/core/src/types/message.ts``)."""

    ALIMTALK = "ALIMTALK"
    FRIENDTALK = "FRIENDTALK"
    SMS = "SMS"
    LMS = "LMS"
    MMS = "MMS"
    NSA = "NSA"
    VOICE = "VOICE"
    FAX = "FAX"
    RCS_SMS = "RCS_SMS"
    RCS_LMS = "RCS_LMS"
    RCS_MMS = "RCS_MMS"
    RCS_TPL = "RCS_TPL"
    RCS_ITPL = "RCS_ITPL"
    RCS_LTPL = "RCS_LTPL"


class TrackingStatus(StrEnum):
    """One status vocabulary covering k-msg's ``DeliveryStatus`` and ``MessageStatus``.

    Forward order: QUEUED/PENDING < SENDING < SENT < DELIVERED < CLICKED. FAILED and CANCELLED may
    follow any non-final status. UNKNOWN (gave up) stops polling, but a later provider report may
    still resolve it to DELIVERED or FAILED. DELIVERED, FAILED, CANCELLED and CLICKED never go back
    (DELIVERED may still move on to CLICKED).
    """

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    SENDING = "SENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    CLICKED = "CLICKED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"


# Rank in the forward order; statuses outside it (FAILED, CANCELLED, UNKNOWN) have none.
FORWARD_RANK: dict[TrackingStatus, int] = {
    TrackingStatus.QUEUED: 0,
    TrackingStatus.PENDING: 0,
    TrackingStatus.SENDING: 1,
    TrackingStatus.SENT: 2,
    TrackingStatus.DELIVERED: 3,
    TrackingStatus.CLICKED: 4,
}

# Statuses that are still being polled (k-msg: PENDING and SENT; we add QUEUED and SENDING).
POLLABLE_STATUSES: frozenset[TrackingStatus] = frozenset(
    {TrackingStatus.QUEUED, TrackingStatus.PENDING, TrackingStatus.SENDING, TrackingStatus.SENT}
)

# Statuses that never change again (UNKNOWN is terminal for polling but not final).
FINAL_STATUSES: frozenset[TrackingStatus] = frozenset(
    {TrackingStatus.CLICKED, TrackingStatus.FAILED, TrackingStatus.CANCELLED}
)


def is_pollable(status: TrackingStatus) -> bool:
    return status in POLLABLE_STATUSES


def is_terminal(status: TrackingStatus) -> bool:
    """Terminal for tracking purposes: polling stops (k-msg's ``isTerminalDeliveryStatus``)."""
    return status not in POLLABLE_STATUSES


class StatusSource(StrEnum):
    """Who caused a transition (k-msg DeliveryTracker's ``source``)."""

    PROVIDER = "provider"
    WEBHOOK = "webhook"
    MANUAL = "manual"
    SYSTEM = "system"


class FallbackChannel(StrEnum):
    SMS = "sms"
    LMS = "lms"

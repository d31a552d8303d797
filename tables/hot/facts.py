"""``tables.facts.RecordFacts`` of a record kept as its JSON dict: what the store's derived data
(due and expiry indexes, time indexes, aggregates) reads, parsed once per record. The dict
holds the canonical JSON values ``encode_record`` writes, so these are the values the model
would hold (``tests/unit/tables/test_hot_facts.py`` checks them against the model's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from deliverytrack.models.enums import MessageType, TrackingStatus

_STATUS = {status.value: status for status in TrackingStatus}
_TYPE = {kind.value: kind for kind in MessageType}
_parse = datetime.fromisoformat


def _when(value: str | None) -> datetime | None:
    return None if value is None else _parse(value)


class HotFacts:
    __slots__ = (
        "message_id",
        "provider_id",
        "type",
        "status",
        "requested_at",
        "status_updated_at",
        "sent_at",
        "delivered_at",
        "next_check_at",
        "check_lease_until",
        "tracking_stopped_at",
        "retention_until",
        "expires_at",
    )

    def __init__(self, data: dict[str, Any]) -> None:
        get = data.get
        self.message_id: str = data["messageId"]
        self.provider_id: str = data["providerId"]
        self.type: MessageType = _TYPE[data["type"]]
        self.status: TrackingStatus = _STATUS[data["status"]]
        self.requested_at: datetime = _parse(data["requestedAt"])
        self.status_updated_at: datetime = _parse(data["statusUpdatedAt"])
        self.sent_at = _when(get("sentAt"))
        self.delivered_at = _when(get("deliveredAt"))
        self.next_check_at = _when(get("nextCheckAt"))
        self.check_lease_until = _when(get("checkLeaseUntil"))
        self.tracking_stopped_at = _when(get("trackingStoppedAt"))
        self.retention_until = _when(get("retentionUntil"))
        self.expires_at = _when(get("expiresAt"))

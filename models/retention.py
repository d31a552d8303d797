"""Retention policy (k-msg ``delivery-tracking/retention.ts``) and the deletion marker.

k-msg labels every record with a retention class and a ``retentionBucketYm`` but never purges
anything [quirk]. Here the same labels are set, and with ``enabled`` the records are deleted
once their retention has passed (see ``tables/retention.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from deliverytrack.models.common import DerivedId, Frozen, NonEmptyStr, UtcDatetime
from deliverytrack.models.records import RetentionClass

RetentionPreset = Literal["kr-b2b-baseline"]
DeletionReason = Literal["retention", "expired", "purge"]

# k-msg's only preset. Days per retention class.
PRESET_DAYS: dict[RetentionPreset, dict[RetentionClass, float]] = {
    "kr-b2b-baseline": {"opsLogs": 90, "telecomMetadata": 365, "billingEvidence": 1825},
}


class RetentionPolicy(BaseModel):
    """``DELIVERYTRACK_RETENTION``: k-msg's retention config plus the deletion timer.

    ``tenantOverrideDays[class]`` replaces the preset's days when it is > 0 (k-msg's rule;
    fractions of a day are allowed, which tests use). Class, bucket and deletion deadline are
    fixed when a record is created; changing the policy does not move existing records.
    """

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, alias_generator=to_camel, extra="forbid"
    )

    enabled: bool = Field(
        default=False,
        description="Delete records whose retention has passed (labels are set either way)",
    )
    preset: RetentionPreset = "kr-b2b-baseline"
    tenant_override_days: dict[RetentionClass, float] = Field(default_factory=dict)
    default_class: RetentionClass = "telecomMetadata"
    # The deletion timer: how often it scans, and how many expiries it emits per scan.
    interval_ms: int = Field(default=60_000, ge=1)
    scan_batch_size: int = Field(default=1_000, ge=1)
    # How long a deleted messageId remembers its deletion, so that a late duplicate of one of
    # its old events (e.g. its send result published again) does not bring the record back.
    deleted_marker_ms: int = Field(default=7 * 86_400_000, ge=0)


DEFAULT_RETENTION = RetentionPolicy()


class DeletionMarker(Frozen):
    """What is left of a deleted record for ``deletedMarkerMs``: late duplicates of its old
    events are dropped while it exists. Kept beside the records (store prefix ``z``,
    changelog key ``\\0z:`` + messageId) and forgotten through the expiry timer."""

    message_id: NonEmptyStr
    deleted_at: UtcDatetime
    forget_at: UtcDatetime
    reason: DeletionReason
    event_id: DerivedId

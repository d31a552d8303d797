"""Polling policy: k-msg's DEFAULT_POLLING_CONFIG (all configurable)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from deliverytrack.models.retention import DEFAULT_RETENTION, RetentionPolicy


class FailoverRule(BaseModel):
    """k-msg ``rulesByProviderId`` entry: exact status codes, or message substrings."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    status_codes: tuple[str, ...] = ()
    message_includes: tuple[str, ...] = ()


class ApiFailoverPolicy(BaseModel):
    """k-msg ``apiFailover``: when an AlimTalk message fails because the recipient does not use
    KakaoTalk, ask for an SMS/LMS fallback, once. The sender is whoever consumes
    ``failover-requests`` (k-msg's ``sender`` callback)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    enabled: bool = False
    rules_by_provider_id: dict[str, FailoverRule] = Field(default_factory=dict)


class PollingPolicy(BaseModel):
    """k-msg ``DeliveryTrackingService`` polling configuration, same names and defaults."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    interval_ms: int = Field(default=5_000, ge=1)
    batch_size: int = Field(default=200, ge=1)
    concurrency: int = Field(default=10, ge=1)
    initial_delay_ms: int = Field(default=30_000, ge=0)
    scheduled_grace_ms: int = Field(default=120_000, ge=0)
    backoff_ms: tuple[int, ...] = (30_000, 120_000, 600_000, 1_800_000, 7_200_000)
    max_tracking_duration_ms: int = Field(default=86_400_000, ge=0)
    unsupported_provider_strategy: Literal["skip", "unknown"] = "skip"
    provider_timeout_ms: int = Field(default=10_000, ge=1)
    # How long a poll may stay unanswered before the record is due again (a lost request).
    lease_ms: int = Field(default=60_000, ge=1)
    # Set from Settings.api_failover by the worker (the fold reads one policy object).
    api_failover: ApiFailoverPolicy = ApiFailoverPolicy()
    # Set from Settings.retention by the worker: record labels and deletion deadlines.
    retention: RetentionPolicy = DEFAULT_RETENTION

    def backoff_delay_ms(self, attempt_count_after: int) -> int:
        """k-msg ``computeNextCheckAt``: delay after the Nth poll; an empty table gives 60 s."""
        if not self.backoff_ms:
            return 60_000
        index = min(max(attempt_count_after - 1, 0), len(self.backoff_ms) - 1)
        return max(0, self.backoff_ms[index])


DEFAULT_POLICY = PollingPolicy()

"""Polling policy: k-msg's DEFAULT_POLLING_CONFIG (all configurable)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
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


_KID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

StatusChangeRecord = Literal["full", "changes"]
"""What a status change carries (``DELIVERYTRACK_STATUS_CHANGE_RECORD``): ``full``, the whole
record after the transition (``record``); ``changes``, only what the transition changed in it
(``changes``; ``models.records.ChangesJsonSchema``)."""

WebhookRawMode = Literal["masked", "none", "full"]
"""What provider reports keep of ``raw`` (``DELIVERYTRACK_WEBHOOK_RAW``): ``masked`` (phone
numbers masked when personal data is protected), ``none`` (dropped), ``full`` (as received)."""


class PiiPolicy(BaseModel):
    """Personal data (phone numbers, metadata): README "Personal data".

    ``hashKeys`` and ``encryptionKeys`` map a key id (kid) to a secret; ``activeKid`` writes new
    records. Keep retired kids in both maps: filters hash under every hash kid, and records are
    decrypted with the kid in their envelope. Encryption keys are base64 of 32 bytes (AES-256).
    """

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, alias_generator=to_camel, extra="forbid"
    )

    enabled: bool = False
    store_plain: bool = Field(
        default=False,
        description="Keep the plain to/from on the record (and so in the changelog, RocksDB and "
        "status changes); when false they are masked, with the number kept encrypted only",
    )
    active_kid: str | None = None
    hash_keys: dict[str, SecretStr] = Field(default_factory=dict)
    encryption_keys: dict[str, SecretStr] = Field(default_factory=dict)
    encrypt_metadata: bool = False
    hash_metadata_paths: tuple[str, ...] = Field(
        default=(), description="Dotted metadata paths whose phone-normalised value is hashed"
    )

    @field_validator("hash_keys", "encryption_keys")
    @classmethod
    def _check_kids(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for kid, secret in value.items():
            if not _KID.match(kid):
                raise ValueError(f"key id {kid!r} must match {_KID.pattern}")
            if not secret.get_secret_value():
                raise ValueError(f"key {kid!r} is empty")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _check_aes_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for kid, secret in value.items():
            try:
                raw = base64.b64decode(secret.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"encryption key {kid!r} is not base64") from None
            if len(raw) != 32:
                raise ValueError(f"encryption key {kid!r} must be 32 bytes, got {len(raw)}")
        return value

    @model_validator(mode="after")
    def _check_active(self) -> PiiPolicy:
        if self.enabled:
            if self.active_kid is None:
                raise ValueError("pii.activeKid is required when pii is enabled")
            if self.active_kid not in self.hash_keys:
                raise ValueError(f"pii.hashKeys has no key for activeKid {self.active_kid!r}")
        return self

    def hash_key(self, kid: str) -> bytes | None:
        secret = self.hash_keys.get(kid)
        return None if secret is None else secret.get_secret_value().encode()

    def encryption_key(self, kid: str) -> bytes | None:
        secret = self.encryption_keys.get(kid)
        return None if secret is None else base64.b64decode(secret.get_secret_value())

    @property
    def protects_plain(self) -> bool:
        """True when plain phone numbers must not be written (enabled, storePlain off)."""
        return self.enabled and not self.store_plain


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

    def backoff_delay_ms(self, attempt_count_after: int) -> int:
        """k-msg ``computeNextCheckAt``: delay after the Nth poll; an empty table gives 60 s."""
        if not self.backoff_ms:
            return 60_000
        index = min(max(attempt_count_after - 1, 0), len(self.backoff_ms) - 1)
        return max(0, self.backoff_ms[index])


class FoldPolicy(BaseModel):
    """Everything the fold is configured with, one policy per concern (``Settings.fold_policy``
    builds it from the worker's settings)."""

    model_config = ConfigDict(frozen=True)

    polling: PollingPolicy = PollingPolicy()
    """k-msg's polling rules: first check, backoff, grace, tracking timeout, leases."""
    api_failover: ApiFailoverPolicy = ApiFailoverPolicy()
    pii: PiiPolicy = PiiPolicy()
    """Personal data: what the fold hashes, masks or encrypts before it writes."""
    retention: RetentionPolicy = DEFAULT_RETENTION
    """Record labels and deletion deadlines."""
    command_hold_ms: int = Field(default=3_600_000, ge=0)
    """How long a command for a messageId with no record yet waits for its send result."""
    status_change_record: StatusChangeRecord = "full"
    """What the status changes the fold emits carry: the whole record, or its changes."""


DEFAULT_POLICY = FoldPolicy()

"""The per-input boundary: whatever goes wrong with ONE input becomes a dead letter.

Every path that handles inputs one by one (the fold, correlation, changelog restore, the poll
loop, the webhook dispatcher) runs each input's work through :func:`refusal` and
:func:`dead_letter`:

- the input's own work (decode, validate, fold, correlate, encode, read its record or state
  back, size-check its outputs) happens before anything is published or written, and any
  exception it raises is that input's fault: the input becomes a dead letter with the reason
  and (a bounded copy of) its original bytes, and the next input is processed;
- publishing and writing (Kafka acks, the RocksDB write batch) happen for the whole batch,
  outside the boundary: their failures are infrastructure failures and may stop the worker.

Dead letters are bounded, so no input can make one the broker refuses: the Kafka key is kept
when it is at most ``MAX_KEY_BYTES`` (else its SHA-256 stands in), the value is kept up to
``Settings.dead_letter_value_bytes`` (base64, plus the same bytes as text when they are UTF-8),
with its full size and SHA-256, and the error text is cut at ``MAX_ERROR_CHARS``. With
personal-data protection on, the engine's dead letters keep a masked readable copy instead of
the bytes (see :func:`dead_letter`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from deliverytrack.models.codec import encode
from deliverytrack.models.events import DeadLetter
from deliverytrack.tables.pii import mask_phone_text, masked_copy
from deliverytrack.tables.refusals import Refused as Refused
from deliverytrack.tables.refusals import check_size as check_size
from deliverytrack.tables.refusals import refusal as refusal

MAX_KEY_BYTES = 1_024
MAX_ERROR_CHARS = 4_000


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input came from: its coordinates and its original bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def bounded_key(key: bytes | None) -> bytes | None:
    """The Kafka key a dead letter gets: the original one, or its digest when too long."""
    if key is None or len(key) <= MAX_KEY_BYTES:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


def dead_letter(
    source: Source,
    reason: str,
    detail: str,
    failed_at: datetime,
    keep_bytes: int,
    *,
    mask_phones: bool = False,
) -> tuple[bytes | None, bytes]:
    """(Kafka key, value) of the dead letter of one input: bounded whatever the input.

    ``mask_phones`` (personal-data protection on): the letter keeps no bytes of the value, only
    a readable copy with every phone number masked (``valueText``, ``valueMasked: true``; no
    ``valueBase64``, and no ``valueSha256``, which would let a guessed number be confirmed),
    and the error text is masked too. The key is kept (ids are not masked)."""
    if mask_phones:
        return _masked_dead_letter(source, reason, detail, failed_at, keep_bytes)
    key, value = source.key, source.value
    kept = None if value is None else value[:keep_bytes]
    truncated = value is not None and kept is not None and len(kept) < len(value)
    value_text: str | None
    try:
        value_text = None if kept is None else kept.decode()
    except UnicodeDecodeError:
        value_text = None
    kept_key = None if key is None else key[:MAX_KEY_BYTES]
    letter = DeadLetter(
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        key_base64=None if kept_key is None else base64.b64encode(kept_key).decode(),
        value_base64=None if kept is None else base64.b64encode(kept).decode(),
        value_text=value_text,
        value_size=None if value is None else len(value),
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        value_truncated=truncated or None,
        key_truncated=(key is not None and len(key) > MAX_KEY_BYTES) or None,
        reason=reason[:200],
        error=detail[:MAX_ERROR_CHARS],
        failed_at=failed_at,
    )
    return bounded_key(key), encode(letter)


def _masked_dead_letter(
    source: Source, reason: str, detail: str, failed_at: datetime, keep_bytes: int
) -> tuple[bytes | None, bytes]:
    key, value = source.key, source.value
    text, truncated = (None, False) if value is None else masked_copy(value, keep_bytes)
    kept_key = None if key is None else key[:MAX_KEY_BYTES]
    letter = DeadLetter(
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        key_base64=None if kept_key is None else base64.b64encode(kept_key).decode(),
        value_text=text,
        value_size=None if value is None else len(value),
        value_truncated=truncated or None,
        key_truncated=(key is not None and len(key) > MAX_KEY_BYTES) or None,
        value_masked=True,
        reason=reason[:200],
        error=mask_phone_text(detail)[:MAX_ERROR_CHARS],
        failed_at=failed_at,
    )
    return bounded_key(key), encode(letter)


REFUSED_RECORD_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)
"""Publish errors that concern one record (the broker or the producer refuses it), not the
broker's availability: the input that produced the record is dead-lettered."""


def published_refusal(exc: KafkaError) -> Refused:
    """The refusal of an input whose own output the producer or the broker refused."""
    return Refused("output-refused", f"{type(exc).__name__}: {exc}")

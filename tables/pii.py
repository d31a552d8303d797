"""Personal data: keyed hashes, masks and field encryption of phone numbers and metadata.

Pure (no I/O, no clock, no randomness), so the fold stays deterministic: the same send result
under the same settings gives byte-identical records, and ``replay --verify`` still holds.

* Hash (``toHash``/``fromHash``, ``metadataHashes``): hex HMAC-SHA256 of the phone-normalised
  value (trim, keep a leading ``+``, drop every other non-digit; a value with no digit is
  hashed trimmed) under the hash key of ``activeKid``; the kid is on the record
  (``cryptoKid``). Filters hash under *every* configured hash kid (:func:`to_filter_hashes`),
  so records written before a key rotation are still found.
* Mask (``toMasked``/``fromMasked``): the first 3 and last 2 characters kept, the rest starred;
  5 characters or fewer become all stars (k-msg's default masker).
* Encryption (``toEncrypted``/``fromEncrypted``/``metadataEncrypted``): AES-256-GCM, envelope
  ``{"v":1,"alg":"A256GCM","kid":...,"iv":...,"tag":...,"ct":...}`` (base64 fields, k-msg's
  shape). AAD = ``{"fieldPath", "messageId", "providerId"}`` as canonical JSON, so a ciphertext
  moved to another field or record fails to decrypt.

Why the nonce is derived, not random: the fold may not use randomness, and a replay must give
the same bytes. The 12-byte nonce is the start of HMAC-SHA256(nonce key, AAD || 0 ||
plaintext), the nonce key being HMAC-SHA256(encryption key, a fixed label). That is
deterministic (synthetic-IV style) encryption: a nonce repeats only for the same key, field,
messageId, providerId *and* plaintext, where the ciphertext repeats too, so what leaks is only
"this is the same value of the same field of the same message" (which replay makes identical
anyway). Two records with the same phone number get different nonces and ciphertexts; GCM's
nonce-reuse failure (two different plaintexts under one nonce) cannot happen.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from deliverytrack.models.common import JsonObject
from deliverytrack.models.events import ProviderReportReceived, SendRecorded
from deliverytrack.models.policy import PiiPolicy, WebhookRawMode
from deliverytrack.models.records import CryptoState, TrackingRecord

ENVELOPE_VERSION = 1
CRYPTO_VERSION = 1
ALG = "A256GCM"
_NONCE_LABEL = b"deliverytrack/pii/nonce/v1"

BOOKKEEPING_METADATA_KEYS = frozenset({"failover", "failoverOf"})
"""Metadata keys deliverytrack itself reads (API failover): never encrypted."""

PHONE_KEYS = frozenset(
    {
        "phone",
        "phoneno",
        "phonenumber",
        "to",
        "from",
        "receiver",
        "receivernumber",
        "recipient",
        "recipientno",
        "recipientnumber",
        "callback",
        "callbacknumber",
        "sender",
        "sendernumber",
        "sendno",
        "tel",
        "mobile",
        "msisdn",
    }
)
"""Keys of provider payloads (``raw``) whose phone-like values are masked (lower-case, letters
and digits only)."""

_PHONE_LIKE = re.compile(r"^\+?[0-9][0-9 ()./-]{5,30}$")


class PiiError(ValueError):
    """A value could not be decrypted (no key for its kid, wrong AAD, tampered envelope)."""


# --- hashing and masking -----------------------------------------------------------------------


_NOT_ASCII_DIGIT = re.compile(r"[^0-9]")


def normalize_phone(value: str) -> str:
    """k-msg ``normalizePhoneForHash``: trim, keep a leading "+", drop other non-digits."""
    text = value.strip()
    digits = _NOT_ASCII_DIGIT.sub("", text)
    return f"+{digits}" if text.startswith("+") else digits


def _hash_input(value: str) -> str:
    normalized = normalize_phone(value)
    return normalized if normalized.strip("+") else value.strip()


def hmac_hex(value: str, key: bytes) -> str:
    return hmac.new(key, _hash_input(value).encode(), hashlib.sha256).hexdigest()


def hash_phone(value: str, policy: PiiPolicy, kid: str | None = None) -> str:
    """The hash written for ``value`` under ``kid`` (default: the active kid)."""
    kid = kid or policy.active_kid or ""
    key = policy.hash_key(kid)
    if key is None:
        raise PiiError(f"no hash key for kid {kid!r}")
    return hmac_hex(value, key)


def mask(value: str) -> str:
    """First 3 and last 2 characters kept, the rest starred; <= 5 characters: all stars."""
    text = value.strip()
    if len(text) <= 5:
        return "*" * len(text)
    return f"{text[:3]}{'*' * (len(text) - 5)}{text[-2:]}"


def to_filter_hashes(values: Sequence[str], policy: PiiPolicy) -> set[str]:
    """Every hash a record with one of ``values`` as ``to`` (or ``from``) may carry: each value
    hashed under *every* configured hash kid, so records written under a retired kid match too
    (k-msg hashes filters without a kid and misses them).

    With personal data on, match records with ``record.to_hash in hashes`` (``from_hash`` for
    a from-filter). With it off this returns an empty set: compare ``record.to`` instead."""
    if not policy.enabled:
        return set()
    hashes: set[str] = set()
    for value in values:
        if not value.strip():
            continue
        for kid in policy.hash_keys:
            key = policy.hash_key(kid)
            if key is not None:
                hashes.add(hmac_hex(value, key))
    return hashes


# --- encryption --------------------------------------------------------------------------------


def _aad(field: str, message_id: str, provider_id: str) -> bytes:
    parts = {"fieldPath": field, "messageId": message_id}
    if provider_id:
        parts["providerId"] = provider_id
    return json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def encrypt_field(
    plaintext: str, *, field: str, message_id: str, provider_id: str, policy: PiiPolicy
) -> str | None:
    """The envelope of ``plaintext`` under the active kid; None when that kid has no key."""
    kid = policy.active_kid
    key = None if kid is None else policy.encryption_key(kid)
    if kid is None or key is None:
        return None
    aad = _aad(field, message_id, provider_id)
    data = plaintext.encode()
    nonce_key = hmac.new(key, _NONCE_LABEL, hashlib.sha256).digest()
    nonce = hmac.new(nonce_key, aad + b"\x00" + data, hashlib.sha256).digest()[:12]
    sealed = AESGCM(key).encrypt(nonce, data, aad)
    envelope = {
        "v": ENVELOPE_VERSION,
        "alg": ALG,
        "kid": kid,
        "iv": _b64(nonce),
        "tag": _b64(sealed[-16:]),
        "ct": _b64(sealed[:-16]),
    }
    return json.dumps(envelope, separators=(",", ":"))


def envelope_kid(envelope: str) -> str | None:
    try:
        kid = json.loads(envelope).get("kid")
    except (ValueError, AttributeError):
        return None
    return kid if isinstance(kid, str) else None


def decrypt_field(
    envelope: str, *, field: str, message_id: str, provider_id: str, policy: PiiPolicy
) -> str:
    """Decrypt an envelope written by :func:`encrypt_field`; raises :class:`PiiError`.

    Candidate keys: the envelope's kid first, then every other configured encryption key."""
    try:
        parsed = json.loads(envelope)
        if not isinstance(parsed, dict) or parsed.get("v") != ENVELOPE_VERSION:
            raise PiiError(f"{field}: unsupported ciphertext envelope")
        if parsed.get("alg") != ALG:
            raise PiiError(f"{field}: unsupported algorithm {parsed.get('alg')!r}")
        nonce = base64.b64decode(parsed["iv"], validate=True)
        sealed = base64.b64decode(parsed["ct"], validate=True) + base64.b64decode(
            parsed["tag"], validate=True
        )
        kid = parsed.get("kid")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        if isinstance(exc, PiiError):
            raise
        raise PiiError(f"{field}: invalid ciphertext envelope") from exc
    kids = [kid] if isinstance(kid, str) and kid in policy.encryption_keys else []
    kids += [k for k in policy.encryption_keys if k != kid]
    if not kids:
        raise PiiError(f"{field}: no decryption key (envelope kid {kid!r})")
    aad = _aad(field, message_id, provider_id)
    for candidate in kids:
        key = policy.encryption_key(candidate)
        if key is None:
            continue
        try:
            return AESGCM(key).decrypt(nonce, sealed, aad).decode()
        except (InvalidTag, ValueError):
            continue
    raise PiiError(f"{field}: decryption failed (kid {kid!r}: wrong key, AAD or tampered data)")


# --- the write path (the fold) -----------------------------------------------------------------


def _values_at(node: Any, segments: Sequence[str]) -> list[str]:
    if not segments:
        if isinstance(node, bool):
            return ["true" if node else "false"]
        if isinstance(node, int | float | str):
            return [str(node)]
        return []
    head, rest = segments[0], segments[1:]
    if head.endswith("[*]"):
        items = node.get(head[:-3]) if isinstance(node, dict) else None
        if not isinstance(items, list):
            return []
        return [value for item in items for value in _values_at(item, rest)]
    if not isinstance(node, dict) or head not in node:
        return []
    return _values_at(node[head], rest)


def metadata_hashes(metadata: JsonObject, policy: PiiPolicy) -> dict[str, str] | None:
    """k-msg metadataHashes: the values at each configured path, phone-normalised and joined
    with ",", hashed under the active kid."""
    key = policy.hash_key(policy.active_kid or "")
    if key is None:
        return None
    hashes: dict[str, str] = {}
    for path in policy.hash_metadata_paths:
        values = _values_at(metadata, path.split("."))
        if values:
            joined = ",".join(_hash_input(value) for value in values)
            hashes[path] = hmac.new(key, joined.encode(), hashlib.sha256).hexdigest()
    return hashes or None


def protect_send(
    event: SendRecorded, metadata: JsonObject | None, policy: PiiPolicy
) -> dict[str, Any]:
    """The personal-data fields of a new record (to, from, hashes, masks, ciphertexts,
    metadata and the crypto bookkeeping), from its send result and its built metadata.

    ``cryptoState``: ``plain`` when nothing is encrypted (personal data off, or storePlain
    without metadata encryption: hashes and masks are then only an index); ``encrypted`` when
    every encryption asked for was done; ``degraded`` when one could not be done because the
    active kid has no encryption key. Degraded fails safe, not open: the value that could not
    be encrypted is dropped (kept as hash and mask only), never written in plain."""
    if not policy.enabled:
        return {"to": event.to, "from_": event.from_, "metadata": metadata, "crypto_state": "plain"}

    def seal(value: str, field: str) -> str | None:
        return encrypt_field(
            value,
            field=field,
            message_id=event.message_id,
            provider_id=event.provider_id,
            policy=policy,
        )

    encrypted = degraded = False
    fields: dict[str, Any] = {
        "to_hash": hash_phone(event.to, policy),
        "to_masked": mask(event.to),
        "crypto_kid": policy.active_kid,
        "crypto_version": CRYPTO_VERSION,
    }
    if event.from_ is not None:
        fields["from_hash"] = hash_phone(event.from_, policy)
        fields["from_masked"] = mask(event.from_)
    if policy.store_plain:
        fields["to"] = event.to
        fields["from_"] = event.from_
    else:
        fields["to"] = fields["to_masked"]
        fields["from_"] = fields.get("from_masked")
        for name, value in (("to", event.to), ("from", event.from_)):
            if value is None:
                continue
            envelope = seal(value, name)
            fields[f"{name}_encrypted"] = envelope
            encrypted, degraded = encrypted or envelope is not None, degraded or envelope is None
    user = {k: v for k, v in (metadata or {}).items() if k not in BOOKKEEPING_METADATA_KEYS}
    if policy.hash_metadata_paths and user:
        fields["metadata_hashes"] = metadata_hashes(user, policy)
    if policy.encrypt_metadata and user:
        kept = {k: v for k, v in (metadata or {}).items() if k in BOOKKEEPING_METADATA_KEYS}
        text = json.dumps(user, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        envelope = seal(text, "metadata")
        fields["metadata_encrypted"] = envelope
        fields["metadata"] = kept or None
        encrypted, degraded = encrypted or envelope is not None, degraded or envelope is None
    else:
        fields["metadata"] = metadata
    state: CryptoState = "degraded" if degraded else "encrypted" if encrypted else "plain"
    fields["crypto_state"] = state
    return fields


def plain_to(record: TrackingRecord) -> str:
    """The record's ``to`` if it is the plain number, else "" (it is the mask)."""
    if record.to_masked is not None and record.to == record.to_masked:
        return ""
    return record.to


# --- phone numbers in provider payloads and free text ------------------------------------------

_KR_AREA = r"(?:1[016789]|2|[3-6][1-5]|70|50[2-8]|80)"
# What follows the trunk 0 (or the country code 82) of a Korean number: mobile 010, 011,
# 016-019; Seoul 02; the regional 031-064; VoIP 070; safe numbers 0502-0508; toll-free 080.
_GAP = r"[ .-]?"
_KR_TAIL = rf"\)?{_GAP}[0-9]{{3,4}}{_GAP}[0-9]{{4}}"
_KR_AFTER_82 = rf"{_GAP}(?:\(0\){_GAP}|0)?\(?{_KR_AREA}{_KR_TAIL}"
# "Not preceded by a digit", written after the first character: a pattern that starts with
# literal characters lets the regex engine skip ahead to them (~10x faster on long text than
# a leading lookbehind).
_START = r"(?<![0-9].)"
_PHONE_IN_TEXT = re.compile(
    r"(?:"
    # +82 10-1234-5678, +82 (0)10-1234-5678, +82 010 1234 5678, +821012345678; or E.164 of
    # any country: a + and 7 to 15 digits, separated by at most two of " .()-".
    rf"\+{_START}(?:82{_KR_AFTER_82}|[1-9](?:[ .()-]{{0,2}}[0-9]){{6,14}})"
    # (02) 1234-5678
    rf"|\({_START}0{_KR_AREA}{_KR_TAIL}"
    # 0082 10 1234 5678; 01012345678, 010-1234-5678, 010 1234 5678, 010.1234.5678,
    # 02)1234-5678, 031-123-4567
    rf"|0{_START}(?:082{_KR_AFTER_82}|{_KR_AREA}{_KR_TAIL})"
    # 821012345678, 82-10-1234-5678
    rf"|8{_START}2{_KR_AFTER_82}"
    r")(?![0-9])"
)
# A JSON integer that is a Korean number without its leading 0 or +: 1012345678 (010 mobile),
# 821012345678 / 82212345678 (country code, no +).
_PHONE_INTEGER = re.compile(rf"(?:82{_KR_AREA}[0-9]{{7,8}}|10[0-9]{{8}})")
# Any run of 7 to 16 digits with separators: checked against the record's own numbers.
_DIGIT_RUN = re.compile(
    rf"(?:\+{_START}[0-9]|[0-9]{_START})(?:[ .()-]{{0,2}}[0-9]){{6,15}}(?![0-9])"
)
_LARGEST_INTEGER = 10**17

Sensitive = Callable[[str], bool]
"""Recognises a specific number (a record's own ``to``/``from``) in any spelling."""


def _mask_match(match: re.Match[str]) -> str:
    return mask(match.group())


def mask_phone_text(text: str) -> str:
    """``text`` with every phone-number-shaped part masked like :func:`mask` (first 3 and last
    2 characters kept): Korean mobile and landline numbers with or without dashes, dots, spaces,
    brackets, the leading 0 or the country code (``+82``, ``0082``, ``82``), and E.164 numbers
    of any country (a leading ``+``). A number glued to other digits is not one (a date, an
    id). Returns ``text`` itself when nothing is masked."""
    return _PHONE_IN_TEXT.sub(_mask_match, text)


def _mask_own(text: str, sensitive: Sensitive) -> str:
    """``text`` with every digit run that ``sensitive`` recognises masked."""
    if isinstance(sensitive, _OwnNumbers) and not sensitive.may_be_in(text):
        return text

    def own(match: re.Match[str]) -> str:
        return mask(match.group()) if sensitive(match.group()) else match.group()

    masked = _DIGIT_RUN.sub(own, text)
    return text if masked == text else masked


@functools.lru_cache(maxsize=4096)
def _key(key: str) -> tuple[str, bool]:
    """(the key masked, whether it names a phone field): keys repeat from report to report."""
    return mask_phone_text(key), re.sub(r"[^a-z0-9]", "", key.lower()) in PHONE_KEYS


def _mask_string(text: str, named: bool, sensitive: Sensitive | None) -> str:
    if named or sensitive is not None:
        stripped = text.strip()
        if _PHONE_LIKE.match(stripped) and 7 <= len(normalize_phone(stripped).lstrip("+")) <= 16:
            if named or (sensitive is not None and sensitive(stripped)):
                return mask(text)
    masked = mask_phone_text(text)
    return masked if sensitive is None else _mask_own(masked, sensitive)


def _mask_integer(number: int, named: bool, sensitive: Sensitive | None) -> int | str:
    if not 0 < number < _LARGEST_INTEGER:
        return number
    digits = str(number)
    if (
        (named and len(digits) >= 7)
        or _PHONE_INTEGER.fullmatch(digits)
        or (sensitive is not None and (sensitive(digits) or sensitive("0" + digits)))
    ):
        return mask(digits)
    return number


def _mask_node(node: Any, named: bool, sensitive: Sensitive | None) -> Any:
    """``node`` with phone numbers masked (keys too); the same object when nothing changed."""
    if isinstance(node, str):
        if named or sensitive is not None:
            return _mask_string(node, named, sensitive)
        return _PHONE_IN_TEXT.sub(_mask_match, node)
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        changed = False
        for key, value in node.items():
            new_key, phone_key = _key(key) if isinstance(key, str) else (key, False)
            if sensitive is not None and isinstance(new_key, str):
                new_key = _mask_own(new_key, sensitive)  # a payload keyed by the record's number
            new_value = _mask_node(value, phone_key, sensitive)
            changed = changed or new_key != key or new_value is not value
            out[new_key] = new_value
        return out if changed else node
    if isinstance(node, list):
        items = [_mask_node(value, named, sensitive) for value in node]
        return items if any(a is not b for a, b in zip(items, node, strict=True)) else node
    if isinstance(node, int) and not isinstance(node, bool):
        return _mask_integer(node, named, sensitive)
    return node


def mask_phone_numbers(value: Any, sensitive: Sensitive | None = None) -> Any:
    """A JSON value with phone numbers masked at any depth, under any key: every
    phone-number-shaped part of a string or key (:func:`mask_phone_text`), a phone-like string
    or an integer of 7+ digits under a phone-ish key (``phone``, ``to``, ``receiver``, ...), an
    integer that is a Korean number without its leading 0 (``1012345678``, ``821012345678``),
    and any spelling ``sensitive`` recognises (a record's own numbers). Masked integers
    become strings. Returns ``value`` itself when nothing is masked."""
    return _mask_node(value, False, sensitive)


def redact_raw(
    raw: JsonObject | None, policy: PiiPolicy, sensitive: Sensitive | None = None
) -> JsonObject | None:
    """A provider payload with phone numbers masked (:func:`mask_phone_numbers`) when plain
    numbers may not be written; as it is otherwise."""
    if raw is None or not policy.protects_plain:
        return raw
    redacted: JsonObject = _mask_node(raw, False, sensitive)
    return redacted


def protect_report(
    report: ProviderReportReceived, policy: PiiPolicy, raw_mode: WebhookRawMode = "masked"
) -> ProviderReportReceived:
    """A provider report as it may be written (``DELIVERYTRACK_WEBHOOK_RAW``): ``none`` drops
    ``raw``; ``masked`` masks its phone numbers (:func:`redact_raw`) when plain numbers may not
    be written; ``full`` keeps it as received. With protection on, phone numbers in
    ``statusMessage`` and ``statusCode`` are masked whatever the mode. Ids
    (``providerMessageId``, ``eventId``) are kept: they are the report's identity.
    Returns ``report`` itself when nothing changes (the common case: the ingress already
    protected it)."""
    updates: dict[str, Any] = {}
    if report.raw is not None:
        if raw_mode == "none":
            updates["raw"] = None
        elif raw_mode == "masked":
            raw = redact_raw(report.raw, policy)
            if raw is not report.raw:
                updates["raw"] = raw
    if policy.protects_plain:
        for field in ("status_message", "status_code"):
            text = getattr(report, field)
            if text is not None and (masked := mask_phone_text(text)) is not text:
                updates[field] = masked
    return report.model_copy(update=updates) if updates else report


MASK_PARSE_LIMIT = 1_048_576
"""Values up to this size are masked as JSON (escapes decoded); larger ones as text."""


def masked_copy(value: bytes, keep_bytes: int) -> tuple[str, bool]:
    """(readable copy, truncated) of an input value with every phone number masked, cut to
    ``keep_bytes`` UTF-8 bytes: the copy a dead letter keeps instead of the bytes when plain
    numbers may not be written. A JSON value is masked value by value
    (:func:`mask_phone_numbers`) and written back compactly; anything else (or a value over
    :data:`MASK_PARSE_LIMIT`) is masked as text, invalid UTF-8 replaced by U+FFFD. A number
    that straddles the cut is masked before the cut is made."""
    if len(value) <= MASK_PARSE_LIMIT:
        try:
            parsed = json.loads(value)
            text = json.dumps(mask_phone_numbers(parsed), ensure_ascii=False, separators=(",", ":"))
        except (ValueError, RecursionError):
            pass
        else:
            data = text.encode()
            return data[:keep_bytes].decode("utf-8", "ignore"), len(data) > keep_bytes
    # 64 bytes past the cut, so that a number crossing it is seen whole and masked.
    text = mask_phone_text(value[: keep_bytes + 64].decode("utf-8", "replace"))
    data = text.encode()
    truncated = len(value) > keep_bytes or len(data) > keep_bytes
    return data[:keep_bytes].decode("utf-8", "ignore"), truncated


class _OwnNumbers:
    """Recognises a record's own to/from in any spelling (by keyed hash, under the kid the
    record was written with; also without the "+" k-msg's hash keeps: "1-415-555-2671" for
    "+14155552671")."""

    def __init__(self, key: bytes, hashes: set[str], masks: Sequence[str | None]) -> None:
        self.key = key
        self.hashes = hashes
        # The masks keep each number's last two characters: a value that does not end like
        # one of them is not one (most digit runs, such as dates, need no HMAC).
        self.tails = tuple({normalize_phone(m[-2:]).lstrip("+") for m in masks if m is not None})

    def may_be_in(self, text: str) -> bool:
        return not self.tails or any(tail in text for tail in self.tails)

    def __call__(self, value: str) -> bool:
        normalized = normalize_phone(value)
        if self.tails and not normalized.endswith(self.tails):
            return False
        if hmac_hex(value, self.key) in self.hashes:
            return True
        return (
            bool(normalized)
            and not normalized.startswith("+")
            and hmac_hex("+" + normalized, self.key) in self.hashes
        )


def record_numbers(record: TrackingRecord, policy: PiiPolicy) -> Callable[[str], bool]:
    """Recognises the record's own to/from (by hash, under the kid the record was written with)."""
    hashes = {h for h in (record.to_hash, record.from_hash) if h}
    key = policy.hash_key(record.crypto_kid or policy.active_kid or "")
    if not hashes or key is None:
        return lambda _: False
    return _OwnNumbers(key, hashes, (record.to_masked, record.from_masked))


def redact_record_raw(
    raw: JsonObject | None, record: TrackingRecord, policy: PiiPolicy
) -> JsonObject | None:
    """:func:`redact_raw` for a payload about ``record`` (the fold's use)."""
    if raw is None or not policy.protects_plain:
        return raw
    return redact_raw(raw, policy, record_numbers(record, policy))


# --- the read path -----------------------------------------------------------------------------


def reveal(record: TrackingRecord, policy: PiiPolicy, *, strict: bool = True) -> TrackingRecord:
    """The record with plain ``to``/``from`` and decrypted metadata, for authorised reads.

    ``strict`` raises :class:`PiiError` when something cannot be decrypted; otherwise the
    undecryptable fields stay as stored and the copy says ``cryptoState: degraded``."""
    updates: dict[str, Any] = {}
    failed = False

    def unseal(envelope: str, field: str) -> str:
        return decrypt_field(
            envelope,
            field=field,
            message_id=record.message_id,
            provider_id=record.provider_id,
            policy=policy,
        )

    for name, attribute in (("to", "to"), ("from", "from_")):
        envelope = getattr(record, f"{name}_encrypted")
        if envelope is None:
            continue
        try:
            updates[attribute] = unseal(envelope, name)
        except PiiError:
            if strict:
                raise
            failed = True
    if record.metadata_encrypted is not None:
        try:
            text = unseal(record.metadata_encrypted, "metadata")
            updates["metadata"] = {**json.loads(text), **(record.metadata or {})}
        except PiiError:
            if strict:
                raise
            failed = True
    if failed:
        updates["crypto_state"] = "degraded"
    return record.model_copy(update=updates) if updates else record

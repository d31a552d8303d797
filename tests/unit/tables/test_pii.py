"""Personal data: hashing, masking, deterministic field encryption, key rotation, the degraded
path, and what the fold writes (no plain number anywhere in the record when storePlain is off)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deliverytrack.models.codec import encode, encode_record, encode_status_changed
from deliverytrack.models.enums import FallbackChannel, MessageType, TrackingStatus
from deliverytrack.models.events import (
    FailoverRequest,
    FailoverRequested,
    PollRequested,
    ProviderStatus,
    SendWarning,
    StatusChanged,
)
from deliverytrack.models.policy import ApiFailoverPolicy, FoldPolicy, PiiPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.settings import Settings
from deliverytrack.tables.fold import fold, replay
from deliverytrack.tables.pii import (
    MASK_PARSE_LIMIT,
    PiiError,
    decrypt_field,
    encrypt_field,
    envelope_kid,
    hash_phone,
    mask,
    mask_phone_numbers,
    mask_phone_text,
    masked_copy,
    normalize_phone,
    protect_report,
    redact_raw,
    redact_record_raw,
    reveal,
    to_filter_hashes,
)
from tests.factories import (
    T0,
    due_check_factory,
    observed_factory,
    report_factory,
    send_recorded_factory,
    update_status_factory,
)

K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(100, 132))).decode()
PLAIN_SPELLINGS = (b"01012345678", b"010-1234-5678", b"0212345678", b"02-1234-5678")


def pii(**extra: Any) -> PiiPolicy:
    values: dict[str, Any] = {
        "enabled": True,
        "activeKid": "k1",
        "hashKeys": {"k1": "hash-secret-1"},
        "encryptionKeys": {"k1": K1},
        "encryptMetadata": True,
    }
    values.update(extra)
    return PiiPolicy.model_validate(values)


def rotated(**extra: Any) -> PiiPolicy:
    """k2 active, k1 kept for old records."""
    return pii(
        activeKid="k2",
        hashKeys={"k1": "hash-secret-1", "k2": "hash-secret-2"},
        encryptionKeys={"k1": K1, "k2": K2},
        **extra,
    )


def policy_with(p: PiiPolicy, **extra: Any) -> FoldPolicy:
    return FoldPolicy(pii=p, **extra)


def recorded(p: PiiPolicy, message_id: str = "msg-1", **extra: Any) -> TrackingRecord:
    event = send_recorded_factory(
        message_id,
        metadata={"orderId": "o-1", "contact": {"phone": "010-1234-5678"}},
        custom_fields={"campaign": "c-7"},
        **extra,
    )
    record, _ = fold(None, event, policy_with(p))
    assert record is not None
    return record


def assert_no_plain(raw: bytes) -> None:
    for spelling in PLAIN_SPELLINGS:
        assert spelling not in raw, f"{spelling!r} found in {raw[:400]!r}"


# --- hashing and masking -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("01012345678", "01012345678"),
        (" 010-1234-5678 ", "01012345678"),
        ("(010) 1234.5678", "01012345678"),
        ("+82 10-1234-5678", "+821012345678"),
        ("82+10", "8210"),
        ("", ""),
    ],
)
def test_hash_input_is_normalised_like_kmsg(given: str, normalized: str) -> None:
    assert normalize_phone(given) == normalized


def test_spellings_of_one_number_hash_alike_and_the_hash_is_keyed() -> None:
    p = pii()
    h = hash_phone("01012345678", p)
    assert h == hash_phone("010-1234-5678", p) == hash_phone(" 010 1234 5678", p)
    assert len(h) == 64 and int(h, 16) >= 0
    assert h != hash_phone("01012345679", p)
    assert h != hash_phone("01012345678", rotated(), "k2")
    assert hash_phone("+821012345678", p) != hash_phone("821012345678", p)


@pytest.mark.parametrize(
    ("given", "masked"),
    [
        ("01012345678", "010******78"),
        ("010-1234-5678", "010********78"),
        ("123456", "123*56"),
        ("12345", "*****"),
        ("abc", "***"),
    ],
)
def test_mask_keeps_the_first_three_and_last_two(given: str, masked: str) -> None:
    assert mask(given) == masked


# --- the write path ------------------------------------------------------------------------------


def test_off_keeps_the_plain_number_and_says_plain() -> None:
    record = recorded(PiiPolicy())
    assert record.to == "01012345678" and record.from_ == "0212345678"
    assert record.crypto_state == "plain"
    assert record.to_hash is None and record.to_encrypted is None
    assert record.metadata is not None and record.metadata["orderId"] == "o-1"
    assert to_filter_hashes(["01012345678"], PiiPolicy()) == set()


def test_on_without_store_plain_writes_hash_mask_and_ciphertext_only() -> None:
    p = pii()
    record = recorded(p)
    assert record.to == record.to_masked == "010******78"
    assert record.from_ == record.from_masked == "021*****78"
    assert record.to_hash == hash_phone("01012345678", p)
    assert record.from_hash == hash_phone("0212345678", p)
    assert record.to_encrypted is not None and envelope_kid(record.to_encrypted) == "k1"
    assert record.metadata is None  # everything was the user's: encrypted
    assert record.metadata_encrypted is not None
    assert (record.crypto_kid, record.crypto_version, record.crypto_state) == (
        "k1",
        1,
        "encrypted",
    )
    assert_no_plain(encode_record(record))


def test_status_changes_and_poll_requests_carry_no_plain_number() -> None:
    p = pii()
    policy = policy_with(p)
    record, emitted = fold(None, send_recorded_factory(), policy)
    assert record is not None
    (change, _link) = emitted
    assert isinstance(change, StatusChanged)
    assert_no_plain(encode_status_changed(change))
    leased, (request,) = fold(record, due_check_factory(record, T0 + timedelta(seconds=31)), policy)
    assert isinstance(request, PollRequested)
    assert request.to == "" and request.to_encrypted == record.to_encrypted
    assert_no_plain(encode(request))
    # Without personal data the poll request carries the plain number as before.
    plain, _ = fold(None, send_recorded_factory(), FoldPolicy())
    assert plain is not None
    _, (plain_request,) = fold(plain, due_check_factory(plain, T0 + timedelta(seconds=31)))
    assert isinstance(plain_request, PollRequested) and plain_request.to == "01012345678"


def test_the_fold_is_deterministic_with_encryption() -> None:
    p = pii()
    events = [
        send_recorded_factory(event_id="s-1"),
        update_status_factory(TrackingStatus.DELIVERED),
    ]
    first, out1 = replay(events, policy=policy_with(p))
    second, out2 = replay(events, policy=policy_with(p))
    assert first is not None and second is not None
    assert encode_record(first) == encode_record(second)
    assert [encode(e) for e in out1] == [encode(e) for e in out2]
    # Same number, other message: other nonce and ciphertext, same hash.
    other = recorded(p, "msg-2")
    assert other.to_hash == first.to_hash
    assert other.to_encrypted != first.to_encrypted


def test_store_plain_keeps_the_number_and_still_indexes_it() -> None:
    record = recorded(pii(storePlain=True, encryptMetadata=False))
    assert record.to == "01012345678" and record.to_masked == "010******78"
    assert record.to_hash is not None and record.to_encrypted is None
    assert record.crypto_state == "plain"  # nothing encrypted (k-msg would say "encrypted")
    assert recorded(pii(storePlain=True)).crypto_state == "encrypted"  # metadata is


def test_metadata_encryption_keeps_deliverytracks_own_failover_block_plain() -> None:
    event = send_recorded_factory(
        "at-1",
        type=MessageType.ALIMTALK,
        metadata={"note": "call 010-1234-5678"},
        failover=FailoverRequest(
            enabled=True, fallback_channel=FallbackChannel.SMS, fallback_content="Your code"
        ),
        warnings=(SendWarning(code="FAILOVER_PARTIAL_PROVIDER"),),
    )
    policy = policy_with(pii(), api_failover=ApiFailoverPolicy(enabled=True))
    record, _ = fold(None, event, policy)
    assert record is not None and record.metadata is not None
    assert set(record.metadata) == {"failover"}
    assert_no_plain(encode_record(record))
    # The failover still works, and its request carries the ciphertexts, not the number.
    failed = update_status_factory(
        TrackingStatus.FAILED, "at-1", provider_status_code="3104", source="provider"
    )
    _, emitted = fold(record, failed, policy)
    (request,) = [e for e in emitted if isinstance(e, FailoverRequested)]
    assert request.to == "010******78" and request.to_encrypted == record.to_encrypted
    assert request.from_encrypted == record.from_encrypted
    assert_no_plain(encode(request))
    revealed = reveal(record, policy.pii)
    assert revealed.metadata is not None and revealed.metadata["note"] == "call 010-1234-5678"
    assert "failover" in revealed.metadata


def test_metadata_hashes_index_configured_paths() -> None:
    p = pii(hashMetadataPaths=["contact.phone", "absent.path"])
    record = recorded(p)
    assert record.metadata_hashes == {"contact.phone": hash_phone("01012345678", p)}


def test_degraded_when_the_active_kid_has_no_encryption_key_fails_safe() -> None:
    p = pii(encryptionKeys={})
    record = recorded(p)
    assert record.crypto_state == "degraded"
    assert record.to == "010******78" and record.to_encrypted is None
    assert record.to_hash == hash_phone("01012345678", p)  # still findable
    assert record.metadata is None and record.metadata_encrypted is None  # dropped, not leaked
    assert_no_plain(encode_record(record))
    # Polling a degraded record sends no number: a provider that needs one says so.
    leased, (request,) = fold(
        record, due_check_factory(record, T0 + timedelta(seconds=31)), policy_with(p)
    )
    assert isinstance(request, PollRequested) and request.to == "" and request.to_encrypted is None


# --- encryption, the read path, rotation ---------------------------------------------------------


def test_reveal_round_trips_to_from_and_metadata() -> None:
    p = pii()
    record = recorded(p)
    revealed = reveal(record, p)
    assert revealed.to == "01012345678" and revealed.from_ == "0212345678"
    assert revealed.metadata == {
        "orderId": "o-1",
        "contact": {"phone": "010-1234-5678"},
        "customFields": {"campaign": "c-7"},
    }
    assert revealed.crypto_state == "encrypted"


def test_the_envelope_is_bound_to_its_field_and_message() -> None:
    p = pii()
    envelope = encrypt_field("01012345678", field="to", message_id="m", provider_id="x", policy=p)
    assert envelope is not None
    assert json.loads(envelope).keys() == {"v", "alg", "kid", "iv", "tag", "ct"}
    ok = decrypt_field(envelope, field="to", message_id="m", provider_id="x", policy=p)
    assert ok == "01012345678"
    for field, message_id, provider_id in (("from", "m", "x"), ("to", "m2", "x"), ("to", "m", "y")):
        with pytest.raises(PiiError, match="decryption failed"):
            decrypt_field(
                envelope, field=field, message_id=message_id, provider_id=provider_id, policy=p
            )
    tampered = json.loads(envelope)
    ct = bytearray(base64.b64decode(tampered["ct"]))
    ct[0] ^= 1
    tampered["ct"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(PiiError):
        decrypt_field(json.dumps(tampered), field="to", message_id="m", provider_id="x", policy=p)
    with pytest.raises(PiiError, match="invalid ciphertext envelope"):
        decrypt_field("not json", field="to", message_id="m", provider_id="x", policy=p)


def test_after_rotation_old_records_stay_readable_and_findable() -> None:
    old = recorded(pii(), "msg-old")
    new_policy = rotated()
    new = recorded(new_policy, "msg-new")
    assert (old.crypto_kid, new.crypto_kid) == ("k1", "k2")
    assert envelope_kid(new.to_encrypted or "") == "k2"
    assert old.to_hash != new.to_hash
    hashes = to_filter_hashes(["010-1234-5678"], new_policy)
    assert old.to_hash in hashes and new.to_hash in hashes
    assert to_filter_hashes(["01099999999", " "], new_policy).isdisjoint({old.to_hash})
    assert reveal(old, new_policy).to == "01012345678"
    assert reveal(new, new_policy).to == "01012345678"


def test_a_record_whose_key_was_removed_reads_degraded_or_raises() -> None:
    record = recorded(pii())
    without_k1 = pii(activeKid="k2", hashKeys={"k2": "hash-secret-2"}, encryptionKeys={"k2": K2})
    with pytest.raises(PiiError):
        reveal(record, without_k1)
    soft = reveal(record, without_k1, strict=False)
    assert soft.crypto_state == "degraded" and soft.to == "010******78"


# --- provider payloads ---------------------------------------------------------------------------


def test_provider_payloads_are_masked_before_they_reach_the_record() -> None:
    p = pii()
    policy = policy_with(p)
    record = recorded(p)
    leased, _ = fold(record, due_check_factory(record, T0 + timedelta(seconds=31)), policy)
    assert leased is not None
    raw = {
        "seqNo": 1001,
        "phone": "01012345678",
        "sendDate": "2026-11-23 09:00:40",
        "requestNo": "20261123",
        "nested": [{"number": "010 1234 5678"}, {"callback": "0311112222"}],
    }
    observed = observed_factory(
        leased,
        "result",
        T0 + timedelta(seconds=32),
        result=ProviderStatus(status=TrackingStatus.DELIVERED, raw=raw),
    )
    done, _ = fold(leased, observed, policy)
    assert done is not None and done.raw is not None
    assert done.raw["phone"] == "010******78"
    assert done.raw["nested"] == [{"number": "010********78"}, {"callback": "031*****22"}]
    assert done.raw["seqNo"] == 1001 and done.raw["requestNo"] == "20261123"
    assert done.raw["sendDate"] == "2026-11-23 09:00:40"
    assert_no_plain(encode_record(done))
    # A webhook report's payload too.
    reported, _ = fold(
        record,
        _correlated(report_factory(TrackingStatus.DELIVERED, raw={"to": "010-1234-5678"})),
        policy,
    )
    assert reported is not None and reported.raw == {"to": "010********78"}
    # Off (or storePlain): untouched.
    assert redact_raw(raw, pii(storePlain=True)) == raw


def _correlated(report: Any) -> Any:
    from deliverytrack.models.events import ReportCorrelated

    return ReportCorrelated(event_id=report.event_id, message_id="msg-1", report=report)


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"enabled": True}, "activeKid is required"),
        ({"enabled": True, "activeKid": "k9", "hashKeys": {"k1": "s"}}, "no key for activeKid"),
        ({"encryptionKeys": {"k1": base64.b64encode(b"short").decode()}}, "32 bytes"),
        ({"encryptionKeys": {"k1": "%%%"}}, "not base64"),
        ({"hashKeys": {"bad kid": "s"}}, "must match"),
    ],
)
def test_invalid_policies_are_refused(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        PiiPolicy.model_validate(values)


def test_settings_read_the_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DELIVERYTRACK_PII",
        json.dumps(
            {
                "enabled": True,
                "activeKid": "k1",
                "hashKeys": {"k1": "hash-secret-1"},
                "encryptionKeys": {"k1": K1},
            }
        ),
    )
    settings = Settings()
    assert settings.pii.protects_plain
    assert settings.fold_policy.pii == settings.pii
    assert "hash-secret-1" not in repr(settings)


# --- phone numbers anywhere in a payload (provider reports, dead letters) -------------------------

NUMBERS_IN_TEXT = [
    ("01012345678", "010******78"),
    ("010-1234-5678", "010********78"),
    ("010 1234 5678", "010********78"),
    ("010.1234.5678", "010********78"),
    ("0101234567", "010*****67"),
    ("011-123-4567", "011*******67"),
    ("02-1234-5678", "02-*******78"),
    ("(02) 1234-5678", "(02*********78"),
    ("02)1234-5678", "02)*******78"),
    ("031-123-4567", "031*******67"),
    ("070-1234-5678", "070********78"),
    ("0505-123-4567", "050********67"),
    ("+821012345678", "+82********78"),
    ("+82 10-1234-5678", "+82***********78"),
    ("+82 (0)10-1234-5678", "+82**************78"),
    ("+82 010 1234 5678", "+82************78"),
    ("0082-10-1234-5678", "008************78"),
    ("821012345678", "821*******78"),
    ("+1 (415) 555-2671", "+1 ************71"),
    ("+44 20 7946 0958", "+44***********58"),
    ("고객 010-1234-5678에게 발송", "고객 010********78에게 발송"),
    ("call 010 1234 5678, or +82 2 1234 5678.", "call 010********78, or +82**********78."),
    ("tel:01012345678;ext=1", "tel:010******78;ext=1"),
]
NOT_NUMBERS = [
    "2026-11-24 10:00:05",
    "2026-11-24T10:00:05+09:00",
    "20261123",
    "20261124100005",
    "2026.01.01 12:00",
    "M4V20180307110044DHGZUDIJAP3LZ4T",
    "10.0.0.1",
    "1588-1234",
    "1234567890123",
    "v1.2.3",
    "3000",
    "order 12345",
    "",
]


@pytest.mark.parametrize(("given", "masked"), NUMBERS_IN_TEXT)
def test_phone_numbers_are_masked_wherever_they_sit_in_text(given: str, masked: str) -> None:
    assert mask_phone_text(given) == masked


@pytest.mark.parametrize("given", NOT_NUMBERS)
def test_dates_ids_and_business_numbers_are_not_phone_numbers(given: str) -> None:
    assert mask_phone_text(given) is given


def test_payloads_are_masked_under_any_key_at_any_depth() -> None:
    raw = {
        "memo": "고객 010-1234-5678 에게 발송",
        "detail": {"rcv": {"num": "01012345678"}, "list": ["+82 10 1234 5678", "ok"]},
        "010-1234-5678": "a number as a key",
        "n": 1012345678,
        "cc": 821012345678,
        "to": 5551234567,
        "mobile": "555 123 4567",
        "count": 7,
        "ts": 1732442405,
        "flag": True,
        "ratio": 0.5,
        "date": "2026-11-24 10:00:05",
    }
    masked = mask_phone_numbers(raw)
    assert masked == {
        "memo": "고객 010********78 에게 발송",
        "detail": {"rcv": {"num": "010******78"}, "list": ["+82***********78", "ok"]},
        "010********78": "a number as a key",
        "n": "101*****78",
        "cc": "821*******78",
        "to": "555*****67",
        "mobile": "555*******67",
        "count": 7,
        "ts": 1732442405,
        "flag": True,
        "ratio": 0.5,
        "date": "2026-11-24 10:00:05",
    }
    assert_no_plain(json.dumps(masked, ensure_ascii=False).encode())
    assert b"1012345678" not in json.dumps(masked).encode()
    clean = {"a": ["x", {"b": 1}], "c": "2026-11-24"}
    assert mask_phone_numbers(clean) is clean  # nothing masked: the same object
    assert mask_phone_numbers(masked) == masked  # masking twice changes nothing


def test_the_record_s_own_number_is_masked_in_any_spelling_in_free_text() -> None:
    p = pii()
    send = send_recorded_factory("msg-1").model_copy(update={"to": "+1 415 555 2671"})
    record, _ = fold(None, send, policy_with(p))
    assert record is not None
    raw = {"note": "sent to 1-415-555-2671 at noon", "n": 14155552671}
    masked = redact_record_raw(raw, record, p)
    assert masked == {"note": "sent to 1-4*********71 at noon", "n": "141******71"}


def test_the_record_s_own_number_is_masked_as_a_key_too() -> None:
    # A payload keyed by recipient: the key is the record's own number, in a spelling the
    # patterns do not know (no +). Values and keys are masked alike.
    p = pii()
    send = send_recorded_factory("msg-1").model_copy(update={"to": "4155552671"})
    record, _ = fold(None, send, policy_with(p))
    assert record is not None
    raw = {"results": {"4155552671": {"status": "ok"}, "415-555-2671": 1}}
    masked = redact_record_raw(raw, record, p)
    assert masked == {"results": {"415*****71": {"status": "ok"}, "415*******71": 1}}


_SPELLINGS = st.sampled_from(["{a}{b}{c}", "{a}-{b}-{c}", "{a} {b} {c}", "{a}.{b}.{c}"])
_PREFIXES = st.sampled_from(["010", "011", "016", "017", "018", "019", "02", "031", "064", "070"])
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    _PREFIXES,
    st.integers(1000, 9999),
    st.integers(1000, 9999),
    _SPELLINGS,
    st.sampled_from(["", "+82 ", "+82", "82-", "0082 "]),
    _TEXT,
    _TEXT,
)
def test_no_korean_number_survives_in_any_spelling(
    prefix: str, middle: int, last: int, spelling: str, country: str, before: str, after: str
) -> None:
    national = f"{prefix}{middle}{last}"
    area = prefix[1:] if country else prefix
    written = country + spelling.format(a=area, b=middle, c=last)
    masked = mask_phone_text(before + written + after)
    digits = "".join(ch for ch in masked if ch.isdigit())
    assert national not in digits and national[1:] not in digits
    assert str(middle) not in masked.replace(" ", "").replace("-", "").replace(".", "")
    assert mask_phone_text(masked) == masked


def test_a_report_keeps_raw_as_the_setting_says() -> None:
    report = report_factory(
        TrackingStatus.DELIVERED,
        status_message="delivered to 010-1234-5678",
        raw={"memo": {"x": "01012345678"}, "code": "0"},
    )
    on, off = pii(), PiiPolicy()
    masked = protect_report(report, on, "masked")
    assert masked.raw == {"memo": {"x": "010******78"}, "code": "0"}
    assert masked.status_message == "delivered to 010********78"
    assert (masked.event_id, masked.provider_message_id) == (report.event_id, "pm-1")
    assert protect_report(report, on, "none").raw is None
    full = protect_report(report, on, "full")
    assert full.raw == report.raw and full.status_message == "delivered to 010********78"
    # Protection off (or storePlain): masked keeps raw as received; none still drops it.
    assert protect_report(report, off, "masked") is report
    assert protect_report(report, pii(storePlain=True), "masked") is report
    assert protect_report(report, off, "none").raw is None
    # Already protected: the same object (the correlator re-encodes nothing).
    assert protect_report(masked, on, "masked") is masked


def test_a_dead_letter_copy_masks_json_text_and_anything_else() -> None:
    # JSON: values and keys masked after decoding, so escapes cannot hide a number.
    escaped = b'{"raw": {"x": "\\u0030101234 5678"}, "010-1234-5678": 1}'
    text, cut = masked_copy(escaped, 1_000)
    assert (text, cut) == ('{"raw":{"x":"010*******78"},"010********78":1}', False)
    # Not JSON: as text; invalid UTF-8 replaced.
    text, cut = masked_copy(b"\xff\xfeto 010-1234-5678 {", 1_000)
    assert text == "\ufffd\ufffdto 010********78 {" and not cut
    # A number across the cut is masked before the cut is made.
    value = b"x" * 10 + b" 010-1234-5678 and more"
    for keep in range(0, len(value) + 1):
        text, cut = masked_copy(value, keep)
        assert cut == (keep < len(value)) and len(text.encode()) <= keep
        assert "1234" not in text and "234-5" not in text
    # Deeper than the JSON reader goes: masked as text.
    deep = b'{"a":' * 5_000 + b'"010-1234-5678"' + b"}" * 5_000
    text, _ = masked_copy(deep, len(deep))
    assert "010********78" in text and "1234" not in text
    # Larger than the JSON limit: the kept part is masked as text.
    big = b'{"n": "010-1234-5678", "pad": "' + b"p" * MASK_PARSE_LIMIT + b'"}'
    text, cut = masked_copy(big, 100)
    assert cut and text.startswith('{"n": "010********78"')


def test_settings_read_what_reports_keep_of_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().webhook_raw == "masked"
    monkeypatch.setenv("DELIVERYTRACK_WEBHOOK_RAW", "none")
    assert Settings().webhook_raw == "none"
    monkeypatch.setenv("DELIVERYTRACK_WEBHOOK_RAW", "plain")
    with pytest.raises(ValidationError, match="webhook_raw"):
        Settings()


_KEYS = st.text(alphabet="abcdefgxyz_-", min_size=1, max_size=6)
_LEAVES = st.none() | st.booleans() | st.integers(-1000, 1000) | _TEXT


@st.composite
def _payload_with_number(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON payload with one Korean number, in some spelling, at some depth, under some key,
    alone or inside text; returns (payload, the number's national digits)."""
    prefix = draw(st.sampled_from(["010", "011", "02", "031", "070"]))
    middle, last = draw(st.integers(1000, 9999)), draw(st.integers(1000, 9999))
    national = f"{prefix}{middle}{last}"
    spelled = draw(_SPELLINGS).format(a=prefix, b=middle, c=last)
    leaf: Any = draw(
        st.sampled_from([spelled, f"memo {spelled} end", f"+82 {spelled[1:]}"])
        | st.just(int(national[1:])).filter(lambda _: prefix == "010")
    )
    node = leaf
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            node = {draw(_KEYS): node, **draw(st.dictionaries(_KEYS, _LEAVES, max_size=2))}
        else:
            node = [*draw(st.lists(_LEAVES, max_size=2)), node]
    return {"raw": node}, national


@settings(max_examples=300, deadline=None)
@given(_payload_with_number())
def test_a_number_is_masked_whatever_key_depth_or_spelling(case: tuple[Any, str]) -> None:
    payload, national = case
    text = json.dumps(mask_phone_numbers(payload), ensure_ascii=False)
    digits = "".join(ch for ch in text if ch.isdigit())
    assert national[1:] not in digits, text

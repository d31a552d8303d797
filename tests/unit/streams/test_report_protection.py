"""Provider reports that apps publish on provider-webhooks themselves pass personal-data
protection in the correlator (streams/engine/loop.py ``_correlate_one``) before anything of them is
stored or forwarded: the held state (and the bytes it keeps for a dead letter), the correlated
reports and the dead letters hold no plain phone number, whatever key, depth or spelling it
had. Engine batch functions on a real RocksDB, no broker."""

from __future__ import annotations

import base64
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from deliverytrack.models.codec import decode_correlated_report, encode
from deliverytrack.models.correlation import CorrelationState
from deliverytrack.models.events import DeadLetter, HoldExpiryDue, ProviderIdLinked
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Source, dead_letter
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.engine.routing import Output
from deliverytrack.streams.state.store import PartitionStore, Position
from tests.factories import T0

K1 = base64.b64encode(bytes(range(32))).decode()
PII = {
    "enabled": True,
    "activeKid": "k1",
    "hashKeys": {"k1": "hash-secret-1"},
    "encryptionKeys": {"k1": K1},
}
PLAIN = (
    b"01023456789",
    b"010-2345-6789",
    b"010 2345 6789",
    b"1023456789",
    b"2345-6789",
    b"23456789",
    b"0319876543",
    b"031-987-6543",
)
KEY = b"acme:pm-1"


def report(pmid: str = "pm-1", status: str = "DELIVERED", **extra: Any) -> dict[str, Any]:
    """A report as an app would publish it, with the record's numbers everywhere but under a
    phone-ish key: nested, in free text, with dashes, as an integer, and in a field our tolerant
    reader does not know."""
    return {
        "eventId": f"r-{pmid}-{status}",
        "eventType": "ProviderReportReceived",
        "schemaVersion": 1,
        "providerId": "acme",
        "providerMessageId": pmid,
        "status": status,
        "statusMessage": "delivered to 010 2345 6789",
        "receivedAt": T0.isoformat(),
        "customerPhone": "010-2345-6789",
        "raw": {
            "memo": "고객 010-2345-6789 에게 발송, 회신 031-987-6543",
            "deep": {"a": [{"b": "01023456789"}]},
            "n": 1023456789,
            "code": "0",
        },
        **extra,
    }


def leaks(blob: bytes) -> list[bytes]:
    """Plain spellings in ``blob`` and in every base64 value inside it (a held state keeps the
    input's bytes base64-encoded)."""
    expanded = [blob]
    for match in re.finditer(rb'[Bb]ase64"\s*:\s*"([A-Za-z0-9+/=]+)"', blob):
        expanded.append(base64.b64decode(match.group(1)))
    return [spelling for part in expanded for spelling in PLAIN if spelling in part]


@contextmanager
def engine_on_store(**settings: Any) -> Iterator[tuple[FoldEngine, PartitionStore]]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = FoldEngine(Settings(data_dir=Path(tmp), **settings))
        store = PartitionStore(Path(tmp) / "p0.db")
        engine.partitions.attach(0, store)
        try:
            yield engine, store
        finally:
            store.close()


def correlate(
    engine: FoldEngine, inputs: list[tuple[str, bytes | None, bytes]]
) -> tuple[dict[str, Any], list[Output]]:
    topics = engine.topics
    topic_of = {"report": topics.provider_webhooks, "link": topics.provider_ids}
    records = [
        ConsumerRecord(topic_of[kind], 0, offset, 0, 1, key, value, None, 0, 0, ())  # type: ignore[arg-type]
        for offset, (kind, key, value) in enumerate(inputs)
    ]
    outputs: list[Output] = []
    states = engine.batch.correlate(engine.store(0), records, outputs)
    return states, outputs


def linked(pmid: str = "pm-1") -> tuple[str, bytes, bytes]:
    link = ProviderIdLinked(
        event_id=f"m-{pmid}:link",
        provider_id="acme",
        provider_message_id=pmid,
        message_id=f"m-{pmid}",
        linked_at=T0,
    )
    return "link", f"acme:{pmid}".encode(), encode(link)


def expired(pmid: str = "pm-1") -> tuple[str, bytes, bytes]:
    expiry = HoldExpiryDue(
        event_id=f"{pmid}:expiry",
        provider_id="acme",
        provider_message_id=pmid,
        issued_at=T0 + timedelta(days=1),
    )
    return "link", f"acme:{pmid}".encode(), encode(expiry)


def letters(engine: FoldEngine, outputs: list[Output]) -> list[DeadLetter]:
    return [
        DeadLetter.model_validate_json(out.value)
        for out in outputs
        if out.topic == engine.topics.dead_letters
    ]


def test_a_report_held_before_its_send_result_is_stored_and_forwarded_masked() -> None:
    with engine_on_store(pii=PII) as (engine, store):
        states, outputs = correlate(engine, [("report", KEY, orjson.dumps(report()))])
        assert outputs == []
        ((_, state, raw),) = states.values()
        assert isinstance(state, CorrelationState) and len(state.held) == 1
        assert raw is not None and not leaks(raw), leaks(raw)
        held = state.held[0]
        assert held.report.raw is not None
        assert held.report.raw["memo"] == "고객 010********89 에게 발송, 회신 031*******43"
        assert held.report.status_message == "delivered to 010********89"
        # The bytes kept for a dead letter are the protected report's, not the input's (which
        # had a number in a field the tolerant reader dropped).
        assert held.source.value_base64 is not None
        kept = base64.b64decode(held.source.value_base64)
        assert b"customerPhone" not in kept and not leaks(kept)
        store.write({}, Position(), states, None)
        # The send result's link releases it: the correlated report is masked too.
        _, outputs = correlate(engine, [linked()])
        (out,) = outputs
        assert out.topic == engine.topics.correlated_reports and not leaks(out.value)
        assert decode_correlated_report(out.value).report.raw == held.report.raw


def test_a_report_after_its_send_result_is_forwarded_masked() -> None:
    with engine_on_store(pii=PII) as (engine, _):
        _, outputs = correlate(engine, [linked(), ("report", KEY, orjson.dumps(report()))])
        (out,) = outputs
        assert out.topic == engine.topics.correlated_reports and not leaks(out.value)


def test_dead_letters_of_reports_keep_a_masked_copy_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = report("pm-2", status="BOGUS")
    wrong_key = report("pm-3")
    with engine_on_store(pii=PII) as (engine, store):
        states, _ = correlate(engine, [("report", KEY, orjson.dumps(report()))])
        store.write({}, Position(), states, None)
        _, outputs = correlate(
            engine,
            [
                expired(),  # the held report, unmatched
                ("report", b"acme:pm-2", orjson.dumps(bad)),  # schema-invalid
                ("report", b"acme:other", orjson.dumps(wrong_key)),  # wrong-key
                ("report", b"acme:pm-4", b"not json 010-2345-6789"),  # malformed-json
            ],
        )
        found = letters(engine, outputs)
        assert sorted(letter.reason for letter in found) == [
            "malformed-json",
            "schema-invalid",
            "unmatched-report",
            "wrong-key",
        ]
        for letter, out in zip(found, outputs, strict=True):
            assert not leaks(out.value), (letter.reason, leaks(out.value))
            assert letter.value_masked is True
            assert letter.value_base64 is None and letter.value_sha256 is None
            assert letter.value_text and "010********89" in letter.value_text
            assert letter.value_size and letter.key_base64
        assert not leaks(caplog.text.encode()), caplog.text


def test_what_reports_keep_of_raw_follows_the_setting() -> None:
    with engine_on_store(pii=PII, webhook_raw="none") as (engine, _):
        states, _ = correlate(engine, [("report", KEY, orjson.dumps(report()))])
        ((_, state, raw),) = states.values()
        assert state.held[0].report.raw is None and not leaks(raw)
    with engine_on_store(pii=PII, webhook_raw="full") as (engine, _):
        _, outputs = correlate(engine, [linked(), ("report", KEY, orjson.dumps(report()))])
        correlated = decode_correlated_report(outputs[0].value).report
        assert correlated.raw == report()["raw"]  # as received, by the operator's choice
        assert correlated.status_message == "delivered to 010********89"
    # Protection off: the held report keeps the input's own bytes, as before.
    with engine_on_store() as (engine, _):
        value = orjson.dumps(report())
        states, _ = correlate(engine, [("report", KEY, value)])
        ((_, state, _),) = states.values()
        assert state.held[0].source.value_base64 == base64.b64encode(value).decode()
        assert state.held[0].report.raw == report()["raw"]


def test_a_masked_dead_letter_is_bounded_and_keeps_no_bytes() -> None:
    value = orjson.dumps(report()) * 3
    source = Source("t.provider-webhooks", 1, 9, KEY, value)
    _, plain = dead_letter(source, "schema-invalid", "input 010-2345-6789", T0, 64)
    assert leaks(plain)  # the control: unmasked, the bytes are there
    key, masked = dead_letter(
        source, "schema-invalid", "input 010-2345-6789", T0, 64, mask_phones=True
    )
    letter = DeadLetter.model_validate_json(masked)
    assert key == KEY and not leaks(masked)
    assert letter.value_truncated and letter.value_size == len(value)
    assert letter.value_text is not None and len(letter.value_text.encode()) <= 64
    assert letter.error == "input 010********89"

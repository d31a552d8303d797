"""Personal data in provider reports, audited byte by byte on the real broker (issue 19).

With protection on (``pii.enabled``, ``storePlain`` off), reports carry the record's own phone
numbers everywhere a provider may put them: under keys the ingress does not know, nested,
in lists, as a JSON integer, in free text and in ``statusMessage``, with dashes, dots, spaces
and the country code, and (for reports that an app publishes itself on provider-webhooks) in a
top-level field the tolerant reader drops. Some arrive before their send result and are held
in the correlation state; one never finds its send result and one is invalid: both become dead
letters. Then every topic the worker wrote, the changelog, the RocksDB databases (read back
through RocksDB, and the raw files including the write-ahead log) and the worker's log are
scanned for the numbers, base64 values decoded, and hold none; the same scan finds them on the
input topics, where the test's producers wrote them in plain."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer
from rocksdict import Options, Rdict

from deliverytrack.models.events import SendRecorded
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from deliverytrack.tables.pii import hash_phone
from tests.factories import next_event_id
from tests.integration.test_pii import PII, read_to_end

SECRET = "whsec-pii-1"
TO, FROM = "010-2345-6789", "031-987-6543"
PLAIN = (
    b"01023456789",
    b"010-2345-6789",
    b"010 2345 6789",
    b"010.2345.6789",
    b"+821023456789",
    b"+82 10 2345 6789",
    b"1023456789",
    b"2345-6789",
    b"23456789",
    b"0319876543",
    b"031-987-6543",
    b"987-6543",
)
MASKED = b"010********89"


def payload(note: str) -> dict[str, Any]:
    """A provider's raw payload with the record's numbers under keys nobody would call a phone
    field, at several depths and in several spellings."""
    return {
        "memo": f"고객 {TO} 에게 발송 (회신 {FROM}) - {note}",
        "detail": {"rcv": {"num": "01023456789"}, "list": [{"n": 1023456789}, "010.2345.6789"]},
        "intl": "+82 10 2345 6789",
        "code": "0",
    }


def generic_report(pmid: str) -> dict[str, Any]:
    """The generic signed format, posted to the worker's webhook ingress."""
    return {
        "providerMessageId": pmid,
        "status": "DELIVERED",
        "statusMessage": "delivered to 010 2345 6789",
        "raw": payload(pmid),
    }


def app_report(pmid: str, status: str = "DELIVERED") -> dict[str, Any]:
    """A report an app publishes on provider-webhooks itself (no ingress in between)."""
    return {
        "eventId": f"app:{pmid}:{status}",
        "eventType": "ProviderReportReceived",
        "schemaVersion": 1,
        "providerId": "app",
        "providerMessageId": pmid,
        "status": status,
        "statusMessage": "delivered to +82 10-2345-6789",
        "receivedAt": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z",
        "customerPhone": "010-2345-6789",  # unknown to the tolerant reader
        "raw": payload(pmid),
    }


def send_result(message_id: str, provider_id: str, pmid: str, to: str) -> SendRecorded:
    return SendRecorded.model_validate(
        {
            "eventId": next_event_id("send"),
            "messageId": message_id,
            "providerId": provider_id,
            "providerMessageId": pmid,
            "type": "SMS",
            "to": to,
            "from": FROM,
            "requestedAt": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z",
        }
    )


def leaks(blob: bytes) -> list[bytes]:
    """The plain spellings in ``blob`` and in every base64 value inside it (dead letters and
    held states keep bytes base64-encoded)."""
    parts = [blob]
    for match in re.finditer(rb'[Bb]ase64"\s*:\s*"([A-Za-z0-9+/=]*)"', blob):
        parts.append(base64.b64decode(match.group(1)))
    return sorted({spelling for part in parts for spelling in PLAIN if spelling in part})


async def all_topics(settings: Any) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        names = await consumer.topics()
    finally:
        await consumer.stop()
    mine = (settings.topic_prefix, settings.app_id)
    return sorted(name for name in names if name.startswith(mine))


async def post(url: str, body: dict[str, Any]) -> None:
    data = orjson.dumps(body)
    stamp = int(time.time())
    headers = {
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(SECRET, stamp, data),
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=data, headers=headers) as response:
            assert response.status == 200, await response.text()


async def test_no_plain_number_of_a_report_is_written_whatever_key_depth_or_spelling(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = settings_factory(
        pii=PII,
        providers={"acme": {"kind": "none", "webhookSecret": SECRET}},
        # No polls (no status API); the 300 ms timer also finds reports held too long.
        polling={"initialDelayMs": 3_600_000, "intervalMs": 300},
        webhook_hold_ms=8_000,
    )
    assert settings.webhook_raw == "masked"  # the default
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    topics = io.topics
    # Before the record exists, the worker cannot know these are its numbers.
    hooks = f"{getattr(worker, 'webhook_url', worker.base_url)}/webhooks/acme"
    await post(hooks, generic_report("h-before"))
    await io.send(topics.provider_webhooks, "app:a-before", app_report("a-before"))
    await io.send(topics.provider_webhooks, "app:ghost", app_report("ghost"))  # never sent
    await io.send(topics.provider_webhooks, "app:bad", app_report("bad", status="BOGUS"))
    sends = [
        send_result("m-h-before", "acme", "h-before", TO),
        send_result("m-h-after", "acme", "h-after", "01023456789"),
        send_result("m-a-before", "app", "a-before", "+82 10-2345-6789"),
        send_result("m-a-after", "app", "a-after", TO),
    ]
    for event in sends:
        await io.send(topics.send_results, event.message_id, event)
    await post(hooks, generic_report("h-after"))
    await io.send(topics.provider_webhooks, "app:a-after", app_report("a-after"))

    pii = settings.pii
    for event in sends:
        record = await worker.arecord(event.message_id, lambda r: r["status"] == "DELIVERED", 30)
        assert record["toHash"] == hash_phone(TO, pii) or event.to.startswith("+")
        assert record["raw"]["detail"]["rcv"]["num"] == "010******89"
        assert record["providerStatusMessage"].startswith("delivered to ")
        assert not leaks(orjson.dumps(record)), (event.message_id, leaks(orjson.dumps(record)))
    letters = await io.read_json(
        topics.dead_letters,
        lambda found: {"unmatched-report", "schema-invalid"} <= {e["reason"] for e in found},
        timeout=40,
    )
    for letter in letters:
        assert letter["valueMasked"] is True and "valueBase64" not in letter
        assert MASKED.decode() in letter["valueText"]
    # SIGKILL, not a clean stop: RocksDB then keeps every write of the run (overwritten held
    # states too) in its write-ahead log, uncompressed, for the raw scan below; a clean stop
    # flushes them into Snappy-compressed SSTs, where a byte scan could miss a string.
    worker.kill()

    # Every topic the worker wrote, the changelog among them, read to its end.
    names = await all_topics(settings)
    inputs = {topics.send_results, topics.provider_webhooks}
    assert {topics.records_changelog, topics.correlated_reports, topics.dead_letters} <= set(names)
    contents = {name: await read_to_end(settings, name) for name in names}
    for name in sorted(set(names) - inputs):
        for key, value in contents[name]:
            assert not leaks(key + b"\n" + value), (name, leaks(key + value), value[:400])
    # provider-webhooks: what the ingress wrote is masked; what the test's app wrote is not.
    by_writer: dict[bool, list[bytes]] = {True: [], False: []}
    for key, value in contents[topics.provider_webhooks]:
        by_writer[key.startswith(b"acme:")].append(value)
    assert len(by_writer[True]) == 2 and len(by_writer[False]) == 4
    assert not [v for v in by_writer[True] if leaks(v)]
    # The control: the same scan finds the numbers where producers wrote them in plain.
    assert all(leaks(v) for v in by_writer[False])
    assert all(leaks(v) for _, v in contents[topics.send_results])
    # The scan saw what matters: held states (with the bytes they keep) on the changelog,
    # the correlated reports, and the masked numbers in them.
    changelog = [v for _, v in contents[topics.records_changelog]]
    held = [v for v in changelog if b'"held":[{' in v]
    assert len(held) >= 2 and all(b'"valueBase64"' in v or b'"value_base64"' in v for v in held)
    for value in held:
        kept = re.search(rb'[Bb]ase64"\s*:\s*"([A-Za-z0-9+/=]+)"', value)
        assert kept is not None and MASKED in base64.b64decode(kept.group(1))
    assert len(contents[topics.correlated_reports]) == 4
    assert all(MASKED in v for _, v in contents[topics.correlated_reports])

    # RocksDB's raw files, before anything opens them again (opening replays the write-ahead
    # log into an SST): the log holds every value written, overwritten held states included.
    files = [path for path in Path(settings.data_dir).rglob("*") if path.is_file()]
    found = {str(path): leaks(path.read_bytes()) for path in files}
    assert not {path: hits for path, hits in found.items() if hits}
    wal = b"".join(path.read_bytes() for path in files if path.suffix == ".log")
    # The raw scan sees the content: the held states' masked numbers, and the records' hash.
    assert MASKED in wal and hash_phone(TO, pii).encode() in wal and b'"held":[{' in wal
    # ... and read back through RocksDB: every key and value of every partition.
    databases = sorted(Path(settings.data_dir).rglob("partition-*.db"))
    assert databases
    read_back = 0
    for path in databases:
        db = Rdict(str(path), Options(raw_mode=True))
        try:
            for key, value in db.items():
                read_back += 1
                assert not leaks(key + b"\n" + value), (path.name, key, leaks(value))
        finally:
            db.close()
    assert read_back > len(sends)
    # The worker's log (dead letters are logged with their reason).
    log = worker.log_path.read_bytes()
    assert b"dead letter" in log and not leaks(log), leaks(log)

"""Personal data on the real broker: with ``pii.enabled`` and ``storePlain`` off, no plain phone
number is written anywhere the worker writes (every topic it produces to, the changelog, its
RocksDB files, outbound webhook bodies), while IWINV, which looks messages up by phone, is
still polled with the decrypted number and the records carry the hash, the mask and the
ciphertext."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from deliverytrack.models.codec import decode_record
from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import SendRecorded
from deliverytrack.models.settings import Settings
from deliverytrack.tables.pii import hash_phone, mask, reveal
from tests.factories import next_event_id
from tests.fakes.iwinv_api import FakeIwinvApi
from tests.integration.support import FAST_POLLING
from tests.integration.test_native_providers import kst
from tests.integration.test_outbound_webhooks import Receiver
from tests.integration.test_replay_cli import run_cli

TOKEN = "provider-hook-token"
PLAIN = (
    b"01012345678",
    b"010-1234-5678",
    b"0212345678",
    b"02-1234-5678",
    b"+821012345678",
)
PII = {
    "enabled": True,
    "storePlain": False,
    "activeKid": "k1",
    "hashKeys": {"k1": "integration-hash-secret"},
    "encryptionKeys": {"k1": base64.b64encode(bytes(range(32))).decode()},
    "encryptMetadata": True,
}


@pytest.fixture
async def iwinv() -> AsyncIterator[FakeIwinvApi]:
    server = FakeIwinvApi()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def sent(message_id: str, pmid: str, type: MessageType, to: str) -> SendRecorded:
    return SendRecorded(
        event_id=next_event_id("send"),
        message_id=message_id,
        provider_id="iwinv",
        provider_message_id=pmid,
        type=type,
        to=to,
        from_="02-1234-5678",
        requested_at=datetime.now(UTC),
        metadata={"contact": {"phone": "+82 10-1234-5678"}, "orderId": "o-1"},
    )


async def read_to_end(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) on ``topic`` up to its end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[tuple[bytes, bytes]] = []
        deadline = asyncio.get_running_loop().time() + 30
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out reading {topic}")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend((m.key or b"", m.value or b"") for m in records)
        return out
    finally:
        await consumer.stop()


def found_plain(blob: bytes) -> list[bytes]:
    return [spelling for spelling in PLAIN if spelling in blob]


async def test_no_plain_phone_number_is_written_when_store_plain_is_off(
    settings_factory: Any,
    worker_factory: Any,
    kafka_io_factory: Any,
    iwinv: FakeIwinvApi,
    receiver: Receiver,
) -> None:
    settings = settings_factory(
        polling=FAST_POLLING,
        pii=PII,
        # The helper's token may filter by phone number (to=, from=): a PII token.
        api_tokens=(),
        api_pii_tokens=(secrets.token_urlsafe(24),),
        providers={
            "iwinv": {
                "kind": "iwinv",
                "baseUrl": iwinv.alimtalk_url,
                "smsBaseUrl": iwinv.sms_url,
                "apiKey": "iwinv-alimtalk-key",
                "smsApiKey": "iwinv-sms-key",
                "smsAuthKey": "iwinv-sms-auth",
                "smsCompanyId": "company-1",
                "webhookSecret": TOKEN,
            },
        },
        webhooks=[
            {
                "id": "ops",
                "url": f"{receiver.base_url}/ops",
                "events": ["message.delivered", "message.failed"],
            }
        ],
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    now = datetime.now(UTC)
    # IWINV answers only when asked with the right phone number: polling needs the decrypted to.
    iwinv.set_alimtalk_status(1001, "OK", "성공", send_date=kst(now), receive_date=kst(now))
    iwinv.set_sms_status("R-2", "03", "수신거부", send_date=kst(now))
    sends = [
        sent("pii-at", "1001", MessageType.ALIMTALK, "01012345678"),
        sent("pii-sms", "R-2", MessageType.SMS, "010-1234-5678"),
        sent("pii-hook", "2001", MessageType.ALIMTALK, "010 1234 5678"),
    ]
    for event in sends:
        await io.send(io.topics.send_results, event.message_id, event)
    # A delivery report through the worker's own webhook ingress, with the phone in it.
    report = {
        "list": [
            {
                "seqNo": 2001,
                "phone": "01012345678",
                "statusCode": "OK",
                "statusCodeName": "성공",
                "sendDate": "2026-11-24 10:00:00",
                "receiveDate": "2026-11-24 10:00:05",
            }
        ]
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{worker.webhook_url}/webhooks/iwinv",
            data=orjson.dumps(report),
            headers={"X-Webhook-Token": TOKEN},
        ) as response:
            assert response.status == 200, await response.text()

    final = {"DELIVERED", "FAILED"}
    records = {
        e.message_id: await worker.arecord(e.message_id, lambda r: r["status"] in final, 45)
        for e in sends
    }
    assert records["pii-at"]["status"] == "DELIVERED"  # polled by phone: the decrypted number
    assert records["pii-sms"]["status"] == "FAILED"
    assert records["pii-hook"]["status"] == "DELIVERED"
    phones = [q.body.get("phone") for q in iwinv.requests if isinstance(q.body, dict)]
    assert phones and set(phones) == {"01012345678"}
    pii = settings.pii
    for event in sends:
        record = records[event.message_id]
        assert record["to"] == record["toMasked"] == mask(event.to)
        assert record["toHash"] == hash_phone(event.to, pii) == hash_phone("01012345678", pii)
        assert record["fromHash"] == hash_phone("0212345678", pii)
        assert record["toEncrypted"] and record["fromEncrypted"] and record["metadataEncrypted"]
        assert (record["cryptoState"], record["cryptoKid"], record["cryptoVersion"]) == (
            "encrypted",
            "k1",
            1,
        )
        # Only deliverytrack's own bookkeeping stays plain: every AlimTalk send's failover
        # block (k-msg writes it with or without failover options; no personal data in it).
        if event.type is MessageType.ALIMTALK:
            assert record["metadata"] == {
                "failover": {
                    "request": {},
                    "sendWarningCodes": [],
                    "apiAttempt": {"attempted": False, "status": "not_attempted"},
                }
            }
        else:
            assert "metadata" not in record
        revealed = reveal(decode_record(orjson.dumps(record)), pii)
        assert (revealed.to, revealed.from_) == (event.to, "02-1234-5678")
        assert revealed.metadata is not None and revealed.metadata["orderId"] == "o-1"
    assert records["pii-at"]["raw"]["phone"] == "010******78"
    assert records["pii-sms"]["raw"]["callback"] == "021*****78"
    assert records["pii-hook"]["raw"]["phone"] == "010******78"
    # Filters by phone number work through the hash (any spelling of the number).
    for query in ("to=01012345678", "to=010-1234-5678", "from=02-1234-5678"):
        status, body = await worker.aget(f"/records/count?{query}")
        assert (status, body) == (200, {"count": len(sends)}), query
    status, body = await worker.aget("/records?to=01099999999")
    assert (status, body["records"]) == (200, [])
    await receiver.wait("ops", 3)
    for _, _, body in receiver.calls["ops"]:
        assert not found_plain(body), body
    assert worker.stop() == 0
    # The encrypted table is still a deterministic fold of its topics.
    code, out, err = await run_cli(settings, "replay", "--verify", "--app-id", "pii-replay")
    assert code == 0, (out[-2000:], err[-3000:])
    assert "identical to the live table" in err

    # Every topic the worker writes, read to its end.
    topics = io.topics
    written = [
        topics.status_changes,
        topics.records_changelog,
        topics.poll_requests,
        topics.observations,
        topics.provider_ids,
        topics.provider_webhooks,
        topics.correlated_reports,
        topics.due_checks,
        topics.dead_letters,
        topics.failover_requests,
        topics.webhook_deliveries,
        topics.webhook_retries,
    ]
    contents = {topic: await read_to_end(settings, topic) for topic in written}
    for topic, messages in contents.items():
        for key, value in messages:
            assert not found_plain(key + b"\n" + value), f"{topic}: {value[:300]!r}"
    assert len(contents[topics.status_changes]) >= 6
    assert len(contents[topics.poll_requests]) >= 2
    assert len(contents[topics.provider_webhooks]) == 1
    # Controls: the scan sees the records (their hash and mask are there).
    to_hash = hash_phone("01012345678", pii).encode()
    for topic in (topics.status_changes, topics.records_changelog):
        blob = b"".join(value for _, value in contents[topic])
        assert to_hash in blob and b"010******78" in blob

    # Every file under the worker's data dir (RocksDB SSTs, WAL, manifests, Faust's state).
    files = [path for path in Path(settings.data_dir).rglob("*") if path.is_file()]
    assert files
    leaks = {str(path): found_plain(path.read_bytes()) for path in files}
    assert not {path: hits for path, hits in leaks.items() if hits}
    assert any(to_hash in path.read_bytes() for path in files)


async def test_control_the_same_scan_finds_the_number_when_store_plain_is_on(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    """The scan above would see a plain number if one were written (RocksDB's files included)."""
    settings = settings_factory(pii={**PII, "storePlain": True})
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    event = sent("pii-control", "1001", MessageType.ALIMTALK, "010-1234-5678")
    await io.send(io.topics.send_results, event.message_id, event)
    record = await worker.arecord(event.message_id)
    assert record["to"] == "010-1234-5678" and record["toHash"]
    assert worker.stop() == 0
    for topic in (io.topics.status_changes, io.topics.records_changelog):
        blob = b"".join(value for _, value in await read_to_end(settings, topic))
        assert b"010-1234-5678" in blob
    files = [path for path in Path(settings.data_dir).rglob("*") if path.is_file()]
    assert any(b"010-1234-5678" in path.read_bytes() for path in files)

"""No input can stop the pipeline: a corpus of hostile records, published into a live worker
between good events on every input topic. The worker stays up, every hostile record is a dead
letter with its reason, every good event before and after it is folded, and a restart on the
same data dir comes up and folds new events (no crash loop)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deliverytrack.models.codec import encode, encode_record
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import ProviderReportReceived
from deliverytrack.tables.fold import fold
from tests.factories import T0, send_recorded_factory, update_status_factory
from tests.integration.test_replay_cli import run_cli

pytestmark = pytest.mark.integration

S = TrackingStatus
OVERFLOW = "9999-12-31T23:59:59-01:00"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


def send_json(message_id: str, **changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(encode(send_recorded_factory(message_id)))
    value.update(changes)
    return value


def command_json(message_id: str, **changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(encode(update_status_factory(S.DELIVERED, message_id)))
    value.update(changes)
    return value


def report_json(provider_message_id: str, **changes: Any) -> dict[str, Any]:
    report = ProviderReportReceived(
        event_id=f"rep-{provider_message_id}",
        provider_id="solapi",
        provider_message_id=provider_message_id,
        status=S.DELIVERED,
        received_at=T0,
    )
    value: dict[str, Any] = orjson.loads(encode(report))
    value.update(changes)
    return value


def hostile_corpus(topics: Any) -> list[tuple[str, str, bytes | None, bytes | None]]:
    """(expected reason, topic, key, value) of every hostile record."""
    sends, commands, reports = topics.send_results, topics.commands, topics.provider_webhooks
    long_id = "p" * 513
    corpus: list[tuple[str, str, bytes | None, Any]] = [
        ("malformed-json", sends, b"h-huge", b"{" + b"x" * 999_999),
        ("too-large", sends, b"h-huge2", orjson.dumps(send_json("h-huge2", to="1" * 1_100_000))),
        ("malformed-json", sends, b"h-utf8", b'{"eventId": "\xff\xfe"}'),
        ("empty-value", sends, b"h-null", None),
        ("malformed-json", sends, b"h-list", b"[1, 2, 3]"),
        ("schema-invalid", sends, b"h-ovf", send_json("h-ovf", requestedAt=OVERFLOW)),
        ("schema-invalid", sends, b"h-deep", send_json("h-deep", metadata=nested(220))),
        ("schema-invalid", sends, b"h-deep2", send_json("h-deep2", metadata=nested(40))),
        ("schema-invalid", sends, b"h-pmid", send_json("h-pmid", providerMessageId=long_id)),
        ("malformed-json", sends, b"h-nan", b'{"eventId": "e", "metadata": {"x": NaN}}'),
        (
            "schema-invalid",
            sends,
            b"h-late",
            send_json("h-late", requestedAt="9500-01-01T00:00:00Z"),
        ),
        ("wrong-key", sends, b"k" * 100_000, send_json("h-bigkey")),
        ("wrong-key", sends, None, send_json("h-nokey")),
        ("schema-invalid", commands, b"g-0", command_json("g-0", at=OVERFLOW)),
        ("schema-invalid", commands, b"g-0", command_json("g-0", details=nested(220))),
        ("schema-invalid", commands, b"g-0", command_json("g-0", eventId="e" * 600)),
        ("schema-invalid", reports, b"solapi:r-1", report_json("r-1", receivedAt=OVERFLOW)),
        ("schema-invalid", reports, b"solapi:r-2", report_json("r-2", raw=nested(220))),
        ("wrong-key", reports, b"solapi:other", report_json("r-3")),
        ("malformed-json", reports, b"solapi:r-4", b"\x00\x01\x02"),
    ]
    out = []
    for reason, topic, key, value in corpus:
        raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        out.append((reason, topic, key, raw))
    return out


async def test_hostile_records_are_dead_lettered_and_the_worker_folds_on(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = settings_factory(partitions=2)
    worker = worker_factory(settings).start()
    io = await kafka_io_factory(settings)
    topics = io.topics
    corpus = hostile_corpus(topics)

    # Good events before, between and after every hostile record. (The topics the worker
    # created take values up to max.message.bytes: this producer may send 1.1 MB.)
    big = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, max_request_size=4 << 20)
    await big.start()
    good: list[str] = []
    try:
        for n, (_, topic, key, value) in enumerate(corpus):
            before = f"g-{n}"
            good.append(before)
            await io.send(topics.send_results, before, send_recorded_factory(before))
            await big.send_and_wait(topic, value, key=key)
    finally:
        await big.stop()
    # A command published before its send result (a pipelining producer) is held, not lost;
    # a purge with a 512-character eventId folds (its derived ids are longer than 512).
    await io.send(topics.commands, "g-late", update_status_factory(S.DELIVERED, "g-late"))
    await io.send(topics.send_results, "g-late", send_recorded_factory("g-late"))
    purge = {
        "eventType": "purge",
        "eventId": "x" * 512,
        "messageId": "g-1",
        "at": T0.isoformat(),
        "schemaVersion": 1,
    }
    await io.send(topics.commands, "g-1", purge)
    # An input with a field this worker does not know is read (tolerant reader).
    await io.send(topics.send_results, "g-extra", send_json("g-extra", futureField={"a": 1}))
    good += ["g-late", "g-extra"]

    changes = await io.read_json(
        topics.status_changes,
        lambda es: (
            set(good) <= {e["messageId"] for e in es}
            and any(e["messageId"] == "g-late" and e["status"] == "DELIVERED" for e in es)
        ),
        timeout=60,
    )
    assert not {e["messageId"] for e in changes} - set(good)
    deletions = await io.read_json(topics.record_deletions, lambda es: len(es) >= 1)
    assert deletions[0]["messageId"] == "g-1" and deletions[0]["reason"] == "purge"

    letters = await io.read(topics.dead_letters, lambda ms: len(ms) >= len(corpus), timeout=60)
    assert len(letters) == len(corpus)
    by_origin = {}
    for message in letters:
        assert len(message.value) < 200_000  # bounded, whatever the input
        letter = orjson.loads(message.value)
        by_origin[(letter["topic"], letter["offset"], letter["partition"])] = letter
    _, health = worker.http_get("/health")
    assert health["status"] == "ok" and health["deadLetters"] == len(corpus)
    reasons = sorted(letter["reason"] for letter in by_origin.values())
    assert reasons == sorted(reason for reason, *_ in corpus)
    huge = next(v for v in by_origin.values() if v["reason"] == "too-large")
    assert huge["valueTruncated"] is True and huge["valueSize"] > 1_048_576
    original = next(value for _, _, key, value in corpus if key == b"h-huge2")
    assert huge["valueSha256"] == hashlib.sha256(original or b"").hexdigest()
    big_key = next(letter for letter in letters if letter.key and letter.key.startswith(b"sha256:"))
    assert orjson.loads(big_key.value)["keyTruncated"] is True
    for letter in by_origin.values():
        if letter.get("valueBase64") is not None and not letter.get("valueTruncated"):
            raw = base64.b64decode(letter["valueBase64"])
            assert len(raw) == letter["valueSize"]

    # The worker never restarted, and a restart on the same data dir comes up and folds on.
    assert worker.stop() == 0
    worker = worker_factory(settings).start()
    await io.send(topics.send_results, "g-restart", send_recorded_factory("g-restart"))
    assert worker.record("g-restart")["status"] == "SENT"
    assert worker.record("g-late")["status"] == "DELIVERED"
    status, _ = worker.http_get("/records/g-1")
    assert status == 404
    assert worker.stop() == 0
    # Replaying the same topics (hostile records included) ends, and agrees with the table.
    code, _, err = await run_cli(settings, "replay", "--verify", "--app-id", "hostile-replay")
    assert code == 0, err
    assert "identical to the live table" in err


async def test_a_changelog_value_that_does_not_decode_is_dead_lettered_on_restore(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    """Restore goes through the per-input boundary: a changelog value the worker cannot read
    (an older version's, or damaged) is dead-lettered, the rest is restored, and the partition
    is folded only after that."""
    settings = settings_factory(partitions=1)
    io = await kafka_io_factory(settings)
    topics = io.topics
    worker = worker_factory(settings).start()
    for mid in ("c-1", "c-2"):
        await io.send(topics.send_results, mid, send_recorded_factory(mid))
    worker.record("c-2")
    assert worker.stop() == 0
    # A record nested too deep to read back (an older version accepted it), on the changelog.
    record, _ = fold(None, send_recorded_factory("c-bad"))
    assert record is not None
    deep = b'{"n":' * 300 + b"1" + b"}" * 300
    value = encode_record(record)[:-1] + b',"metadata":' + deep + b"}"
    await io.producer.send_and_wait(topics.records_changelog, value, key=b"c-bad")
    restarted = settings.model_copy(update={"data_dir": settings.data_dir.parent / "fresh"})
    worker = worker_factory(restarted).start()
    assert worker.record("c-1")["status"] == "SENT"
    await io.send(topics.commands, "c-2", update_status_factory(S.DELIVERED, "c-2"))
    assert worker.record("c-2", lambda r: r["status"] == "DELIVERED")
    letters = await io.read_json(topics.dead_letters, lambda es: len(es) >= 1)
    assert [(e["topic"], e["reason"]) for e in letters] == [
        (topics.records_changelog, "unreadable-state")
    ]
    assert worker.stop() == 0


async def test_pipelined_sends_and_commands_lose_no_command(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    """A producer that does not await each ack (what most do) gets a command appended before
    its send result now and then: the command is held and applied, never dead-lettered."""
    settings = settings_factory()
    io = await kafka_io_factory(settings)
    topics = io.topics
    worker = worker_factory(settings).start()
    count = 3_000
    futures = []
    for n in range(count):
        mid = f"p-{n}"
        send = encode(send_recorded_factory(mid))
        command = encode(update_status_factory(S.DELIVERED, mid, event_id=f"dlv-{mid}"))
        pair = [(topics.send_results, send), (topics.commands, command)]
        if n % 3 == 0:  # the broker appended the command first (1-19 ms apart, measured)
            pair.reverse()
        for topic, value in pair:
            futures.append(await io.producer.send(topic, value, key=mid.encode()))
    for future in futures:
        await future
    changes = await io.read_json(
        topics.status_changes,
        lambda es: sum(e["status"] == "DELIVERED" for e in es) >= count,
        timeout=120,
    )
    assert {e["messageId"] for e in changes if e["status"] == "DELIVERED"} == {
        f"p-{n}" for n in range(count)
    }
    _, health = worker.http_get("/health")
    assert health["deadLetters"] == 0 and health["heldCommands"] == 0
    # A command whose send result never comes is held, and /health shows it.
    await io.send(topics.commands, "p-never", update_status_factory(S.DELIVERED, "p-never"))
    deadline = asyncio.get_running_loop().time() + 15
    while worker.http_get("/health")[1]["heldCommands"] != 1:
        assert asyncio.get_running_loop().time() < deadline, "the command was not held"
        await asyncio.sleep(0.1)
    assert worker.stop() == 0


async def test_topics_that_take_less_than_a_record_make_dead_letters_not_a_crash_loop(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    """Topics created beforehand with a smaller max.message.bytes than the worker would write:
    the worker refuses the inputs whose record would not fit (record-too-large) instead of
    failing its batch, and restarting, on them."""
    settings = settings_factory(partitions=1)
    io = await kafka_io_factory(settings)
    topics = io.topics
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        small = {"max.message.bytes": "200000"}
        await admin.create_topics([NewTopic(topics.status_changes, 1, 1, topic_configs=small)])
    finally:
        await admin.close()
    worker = worker_factory(settings).start()
    big = send_json("t-big", metadata={"blob": "x" * 300_000})
    await io.send(topics.send_results, "t-big", big)
    await io.send(topics.send_results, "t-small", send_recorded_factory("t-small"))
    assert worker.record("t-small")["status"] == "SENT"
    letters = await io.read_json(topics.dead_letters, lambda es: len(es) >= 1)
    assert [letter["reason"] for letter in letters] == ["record-too-large"]
    assert worker.http_get("/records/t-big")[0] == 404
    assert worker.stop() == 0

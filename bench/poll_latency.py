"""Poll-cycle latency: from a record's due time to the provider's answer applied by the fold.

Starts a Kafka broker (or uses --broker), the simulated provider in this process, and one
worker process (``python -m deliverytrack worker``). Publishes send results at ``--rate`` per
second for ``--seconds`` with ``requestedAt`` = now, so each record falls due
``--initial-delay-ms`` later and the worker polls ~``--rate`` records per second; the provider
answers DELIVERED. Latency = broker timestamp of the DELIVERED status change minus the due time.
With ``--burst N`` it also folds N send results + N commands (records not due during the run)
while the polls go on, and prints the fold's events/s with polling active.

    .venv/bin/python bench/poll_latency.py --rate 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import SendRecorded, UpdateStatus
from deliverytrack.streams.dev.kafka_broker import KafkaBroker
from deliverytrack.streams.providers.simulated import (
    SendRequest,
    SimulatedProviderConfig,
    SimulatedProviderServer,
)
from deliverytrack.streams.topics import Topics

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


API_TOKEN = secrets.token_urlsafe(24)
"""The bench workers' API token (/health shows its counters only to a caller with a token)."""


def health(port: int) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310
            result: dict[str, Any] = orjson.loads(r.read())
            return result
    except Exception:  # noqa: BLE001 - not up yet
        return {}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="dt-poll-latency-"))
    broker: KafkaBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    server = SimulatedProviderServer(
        SimulatedProviderConfig(
            delivery_delay_ms_min=0,
            delivery_delay_ms_max=0,
            outcome_mix={"DELIVERED": 1.0},
            latency_ms=args.latency_ms,
        )
    )
    try:
        if args.broker:
            url = args.broker
        else:
            broker = KafkaBroker(tmp / "kafka")
            await asyncio.to_thread(broker.start)
            url = broker.url
        base_url = await server.start()
        port = 16066
        prefix, app_id = f"pl{int(time.time())}.", "pollbench"
        topics = Topics.from_prefix(prefix, app_id)
        polling = {
            "intervalMs": args.interval_ms,
            "batchSize": max(200, args.rate * args.interval_ms // 1000 * 4),
            "concurrency": args.concurrency,
            "initialDelayMs": args.initial_delay_ms,
            "backoffMs": [2_000],
        }
        env = {
            **os.environ,
            "DELIVERYTRACK_BROKER": url,
            "DELIVERYTRACK_APP_ID": app_id,
            "DELIVERYTRACK_TOPIC_PREFIX": prefix,
            "DELIVERYTRACK_DATA_DIR": str(tmp / "data"),
            "DELIVERYTRACK_WEB_PORT": str(port),
            "DELIVERYTRACK_WEBHOOK_PORT": str(port + 1),
            "DELIVERYTRACK_API_TOKENS": API_TOKEN,
            "DELIVERYTRACK_LOG_LEVEL": "warning",
            "DELIVERYTRACK_POLLING": orjson.dumps(polling).decode(),
            "DELIVERYTRACK_PROVIDERS": orjson.dumps(
                {"sim": {"kind": "simulated", "baseUrl": base_url}, "burst": {"kind": "none"}}
            ).decode(),
        }
        log = (tmp / "worker.log").open("wb")
        worker = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "deliverytrack", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while health(port).get("status") != "ok":
            if time.monotonic() > deadline or worker.poll() is not None:
                print((tmp / "worker.log").read_text()[-3000:], file=sys.stderr)
                return 1
            await asyncio.sleep(0.3)

        total = args.rate * args.seconds
        pmids = [
            server.accept(SendRequest(to="01012345678", type=MessageType.SMS)).provider_message_id
            for _ in range(total)
        ]
        producer = AIOKafkaProducer(bootstrap_servers=url.removeprefix("kafka://"), linger_ms=5)
        await producer.start()
        print(
            f"publishing {total:,} send results at {args.rate:,}/s for {args.seconds}s; "
            f"due {args.initial_delay_ms} ms after each; timer every {args.interval_ms} ms"
        )
        cpu_before, started = cpu_seconds(worker.pid), time.monotonic()
        own_before = time.process_time()
        burst_task = asyncio.create_task(burst(producer, topics, args.burst, port))
        for second in range(args.seconds):
            tick = time.monotonic()
            now = datetime.now(UTC)
            futures = []
            for i in range(second * args.rate, (second + 1) * args.rate):
                mid = f"pl-{i}"
                event = SendRecorded(
                    event_id=f"s-{mid}",
                    message_id=mid,
                    provider_id="sim",
                    provider_message_id=pmids[i],
                    type=MessageType.SMS,
                    to="01012345678",
                    requested_at=now + timedelta(milliseconds=(i % args.rate) * 1000 / args.rate),
                )
                futures.append(
                    await producer.send(topics.send_results, encode(event), key=mid.encode())
                )
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        burst_rate = await burst_task

        def calls_at() -> dict[str, float]:
            return {
                f"pl-{i}": server.status_call_times[pmid][0].timestamp() * 1000
                for i, pmid in enumerate(pmids)
                if server.status_call_times.get(pmid)
            }

        latencies, hops = await collect(url, topics, total, args.initial_delay_ms, calls_at)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(worker.pid) - cpu_before
        own = time.process_time() - own_before
        h = health(port)
        calls = sum(server.status_calls.get(p, 0) for p in pmids)
        await producer.stop()
        print(
            f"\nDELIVERED {len(latencies):,}/{total:,} in {elapsed:.1f}s "
            f"(worker CPU {cpu:.1f}s = {100 * cpu / elapsed:.0f}% of a core; this process, the "
            f"provider simulator and load, {100 * own / elapsed:.0f}%)"
        )
        print(
            f"provider status calls {calls:,} for {total:,} records "
            f"({calls / total:.3f} per due time)"
        )
        if latencies:
            print(
                "poll-cycle latency (due time -> DELIVERED applied), ms: "
                f"p50 {percentile(latencies, 50):,.0f}  p95 {percentile(latencies, 95):,.0f}  "
                f"p99 {percentile(latencies, 99):,.0f}  max {max(latencies):,.0f}  "
                f"mean {statistics.fmean(latencies):,.0f}"
            )
            for hop, values in hops.items():
                if values:
                    print(
                        f"  hop -> {hop:<13} p50 {percentile(values, 50):7,.0f}  "
                        f"p95 {percentile(values, 95):7,.0f}  p99 {percentile(values, 99):7,.0f}"
                        f"  ({len(values):,} records)"
                    )
        if burst_rate is not None:
            print(
                f"fold throughput with polling active: {burst_rate:,.0f} events/s "
                f"({2 * args.burst:,} burst events)"
            )
        print(
            "worker /health:",
            {
                k: h.get(k)
                for k in (
                    "events",
                    "applied",
                    "statusChanges",
                    "dueScans",
                    "dueChecks",
                    "pollRequests",
                    "providerCalls",
                    "deadLetters",
                )
            },
        )
        return 0 if len(latencies) == total else 1
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        await server.stop()
        if broker is not None:
            broker.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


async def burst(producer: AIOKafkaProducer, topics: Topics, count: int, port: int) -> float | None:
    """N send results (scheduled far ahead: never due here) + N commands; events/s folded."""
    if count <= 0:
        return None
    await asyncio.sleep(3)  # let the polls get going first
    before = health(port).get("events", 0)
    started = time.monotonic()
    far = datetime.now(UTC) + timedelta(days=30)
    now = datetime.now(UTC)
    for kind in ("send", "command"):
        futures = []
        for i in range(count):
            mid = f"burst-{i}"
            event: SendRecorded | UpdateStatus
            if kind == "send":
                event = SendRecorded(
                    event_id=f"bs-{i}",
                    message_id=mid,
                    provider_id="burst",
                    provider_message_id=f"b-{i}",
                    type=MessageType.SMS,
                    to="01000000000",
                    requested_at=now,
                    scheduled_at=far,
                )
                topic = topics.send_results
            else:
                event = UpdateStatus(
                    event_id=f"bc-{i}", message_id=mid, status=TrackingStatus.DELIVERED, at=now
                )
                topic = topics.commands
            futures.append(await producer.send(topic, encode(event), key=mid.encode()))
        await asyncio.gather(*futures)
    while health(port).get("events", 0) - before < 2 * count:
        await asyncio.sleep(0.1)
    return (health(port).get("events", 0) - before) / (time.monotonic() - started)


HOPS = ("due-check", "poll-request", "provider call", "observation", "DELIVERED")


async def collect(
    url: str,
    topics: Topics,
    total: int,
    initial_delay_ms: int,
    calls: Callable[[], dict[str, float]],
) -> tuple[list[float], dict[str, list[float]]]:
    """Latency per record (due time -> DELIVERED status change), and per hop: the broker
    timestamp of each step's event minus the previous step's (due time first; ``calls``:
    messageId -> when its first status call reached the provider, epoch ms)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=url.removeprefix("kafka://"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    hop_of = {
        topics.due_checks: "due-check",
        topics.poll_requests: "poll-request",
        topics.observations: "observation",
        topics.status_changes: "DELIVERED",
    }
    await consumer.start()
    try:
        assigned = []
        for topic in hop_of:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client._wait_on_metadata(topic)
                partitions = consumer.partitions_for_topic(topic) or set()
            assigned += [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        first: dict[str, dict[str, float]] = {hop: {} for hop in HOPS}
        due: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(first["DELIVERED"]) < total and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                hop = hop_of[tp.topic]
                for msg in records:
                    event = orjson.loads(msg.value or b"{}")
                    mid = event.get("messageId", "")
                    if not mid.startswith("pl-"):
                        continue
                    if hop == "DELIVERED":
                        if event.get("status") != "DELIVERED":
                            continue
                        requested = datetime.fromisoformat(event["record"]["requestedAt"])
                        due[mid] = requested.timestamp() * 1000 + initial_delay_ms
                    first[hop].setdefault(mid, float(msg.timestamp))
        first["provider call"] = calls()
        latencies = [first["DELIVERED"][mid] - due[mid] for mid in first["DELIVERED"]]
        hops: dict[str, list[float]] = {hop: [] for hop in HOPS}
        for mid, at in due.items():
            times = [at, *(first[hop].get(mid) for hop in HOPS)]
            if any(t is None for t in times):
                continue
            for hop, before, after in zip(HOPS, times, times[1:], strict=False):
                hops[hop].append(after - before)  # type: ignore[operator]
        return latencies, hops
    finally:
        await consumer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1_000, help="send results (polls) per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--initial-delay-ms", type=int, default=2_000)
    parser.add_argument("--interval-ms", type=int, default=100, help="timer interval")
    parser.add_argument("--latency-ms", type=int, default=10, help="provider answer latency")
    parser.add_argument("--concurrency", type=int, default=64, help="poller concurrency")
    parser.add_argument("--burst", type=int, default=0, help="also fold N sends + N commands")
    parser.add_argument("--broker", help="kafka://host:port instead of starting one")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

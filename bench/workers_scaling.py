"""Fold throughput of 1 vs N worker processes on one machine (real `deliverytrack worker`s).

The same seeded workload as fold_throughput.py (200,000 events over 50,000 keys: one
SendRecorded and three UpdateStatus per key) goes onto fresh topics with 4 partitions. It is
produced (sends, then commands) as fast as this process can once the N workers (one consumer
group) are ready and own their partitions. Time runs from the first event any worker folds
until the workers' /health counters show the 150,000 transitions a correct fold applies and
every event, plus the 50,000 provider-id links the fold feeds back, folded once. (Loading the
backlog before the workers start would fold part of it twice: the first worker up takes every
partition until the others join.) The load generator shares the machine's cores.

    .venv/bin/python bench/workers_scaling.py [--workers 1,2] [--runs 3] [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fold_throughput import cpu_seconds, generate, produce  # noqa: E402

from deliverytrack.streams.dev.kafka_broker import KafkaBroker  # noqa: E402
from deliverytrack.streams.topics import Topics  # noqa: E402

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
    except Exception:  # noqa: BLE001 - not up yet, or 503 while starting
        return {}


async def run_once(broker: KafkaBroker, workers: int, args: argparse.Namespace, tmp: Path) -> str:
    tag = f"ws{workers}-{int(time.time())}"
    prefix, app_id = f"{tag}.", tag
    topics = Topics.from_prefix(prefix, app_id)
    servers = [broker.url.removeprefix("kafka://")]
    work = generate(args.events, args.keys)
    procs: list[subprocess.Popen[bytes]] = []
    ports = [17100 + 10 * workers + i for i in range(workers)]
    try:
        # The workers start on empty topics; once all are ready and own their partitions, the
        # workload is produced (sends, then commands) and the clock runs from the first event
        # any worker folds to the last transition applied and the last link folded.
        from deliverytrack.models.settings import Settings
        from deliverytrack.streams.kafka.topic_admin import ensure_topics

        await ensure_topics(
            Settings(broker=broker.url, topic_prefix=prefix, app_id=app_id, partitions=4), topics
        )
        for i, port in enumerate(ports):
            env = {
                **os.environ,
                "DELIVERYTRACK_BROKER": broker.url,
                "DELIVERYTRACK_APP_ID": app_id,
                "DELIVERYTRACK_TOPIC_PREFIX": prefix,
                "DELIVERYTRACK_DATA_DIR": str(tmp / f"{tag}-data-{i}"),
                "DELIVERYTRACK_WEB_PORT": str(port),
                "DELIVERYTRACK_WEBHOOK_PORT": str(port + 5),
                "DELIVERYTRACK_API_TOKENS": API_TOKEN,
                "DELIVERYTRACK_LOG_LEVEL": "warning",
                # Nothing is due during the run (the workload's times are in 2026-11).
                "DELIVERYTRACK_POLLING": '{"intervalMs": 3600000}',
            }
            log = (tmp / f"{tag}-worker-{i}.log").open("wb")
            procs.append(
                subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", "deliverytrack", "worker"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 120
        while True:  # every worker ready, and the 4 partitions split among them
            states = [health(p) for p in ports]
            owned_now = [set(h.get("assignedPartitions") or ()) for h in states]
            if (
                all(h.get("status") == "ok" for h in states)
                and sum(len(o) for o in owned_now) == len(set().union(*owned_now)) == 4
            ):
                break
            if time.monotonic() > deadline:
                return f"{workers} worker(s): not ready after 120 s"
            await asyncio.sleep(0.05)
        cpu_before = [cpu_seconds(p.pid) for p in procs]
        broker_before = cpu_seconds(broker.pid) if broker.pid else 0.0

        async def load() -> tuple[float, float]:
            t_send = await produce(servers, topics.send_results, work.sends)
            commands = [item for per_key in work.commands for item in per_key]
            return t_send, await produce(servers, topics.commands, commands)

        loading = asyncio.create_task(load())
        target = work.expected()["applied"]
        applied = folded = 0
        started: float | None = None
        deadline = time.monotonic() + args.timeout
        while (applied < target or folded < work.events + work.keys) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
            states = [health(p) for p in ports]
            applied = sum(h.get("applied", 0) for h in states)
            folded = sum(h.get("events", 0) for h in states)
            if started is None and folded:
                started = time.monotonic()
        elapsed = time.monotonic() - (started or time.monotonic())
        t_send, t_cmd = await loading
        cpu = [cpu_seconds(p.pid) - before for p, before in zip(procs, cpu_before, strict=True)]
        broker_cpu = (cpu_seconds(broker.pid) if broker.pid else 0.0) - broker_before
        finals = [health(p) for p in ports]
        owned = [h.get("assignedPartitions") for h in finals]
        # Every event folded once: the workload plus the provider-id links the fold feeds back
        # (more would mean a rebalance during the run made a worker fold some twice).
        folded = sum(h.get("events", 0) for h in finals)
        rate = work.events / elapsed
        status = "ok" if applied >= target else f"TIMED OUT at {applied:,} applied"
        return (
            f"{workers} worker(s): {work.events:,} events in {elapsed:.2f}s = {rate:,.0f} events/s "
            f"[{status}]; events folded {folded:,} (workload + {work.keys:,} links); "
            f"partitions {owned}; worker CPU "
            + ", ".join(f"{100 * c / elapsed:.0f}%" for c in cpu)
            + f" of a core; broker {100 * broker_cpu / elapsed:.0f}% (load: sends {t_send:.1f}s, "
            f"commands {t_cmd:.1f}s, while the workers fold)"
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dt-scaling-"))
    broker = KafkaBroker(tmp / "kafka")
    await asyncio.to_thread(broker.start)
    try:
        for _ in range(args.runs):
            for workers in (int(n) for n in args.workers.split(",")):
                print(await run_once(broker, workers, args, tmp), flush=True)
    finally:
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a worker holds in memory as its table grows.

Starts a Kafka broker (or uses ``--broker``) and one real worker process (``python -m
deliverytrack worker``, as a user runs it), publishes send results for distinct messageIds
(each becomes a tracking record, a provider-id link and a correlation state), and at each
checkpoint (``--records 50000,1000000``), once the worker has folded every one of them, prints
the worker's resident memory: RSS and its peak (``/proc/<pid>/status``), anonymous vs
file-backed (``smaps_rollup``), and what the worker says it holds (``/health``'s ``memory``
block: record cache entries, RocksDB's shared cache and memtables, heap trims).

    .venv/bin/python bench/worker_memory.py                                  # 50,000 and 1,000,000
    .venv/bin/python bench/worker_memory.py --records 50000 --env DELIVERYTRACK_RECORD_CACHE_SIZE=0
    .venv/bin/python bench/worker_memory.py --broker kafka://127.0.0.1:9092 --keep

No due checks run (polling interval of an hour): the table grows by send results only, so what
is measured is the cost of holding records, not of polling them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from deliverytrack.models.settings import Settings
from deliverytrack.streams.dev.kafka_broker import KafkaBroker
from deliverytrack.streams.kafka.partitioner import partition_for
from deliverytrack.streams.topics import Topics

CHUNK = 50_000
T0 = datetime(2026, 12, 5, tzinfo=UTC)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def send_result(n: int) -> tuple[bytes, bytes]:
    """The README's example send result, one per n (messageId ``mem-<n>``)."""
    message_id = f"mem-{n:08d}"
    value = {
        "eventId": f"send-{n}",
        "schemaVersion": 1,
        "eventType": "SendRecorded",
        "messageId": message_id,
        "providerId": "solapi",
        "providerMessageId": f"M4V{n:012d}",
        "type": "SMS" if n % 3 else "ALIMTALK",
        "to": f"010{n % 100_000_000:08d}",
        "from": "0212345678",
        "requestedAt": (T0 + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z"),
        "customFields": {"tenant": "acme", "campaign": f"c-{n % 17}"},
    }
    return message_id.encode(), orjson.dumps(value)


async def produce(servers: str, topic: str, start: int, stop: int) -> None:
    """Send results start..stop-1, fast (per-partition batches, acks=1): one chunk of live
    traffic; the caller waits for the worker to fold it before the next."""
    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        acks=1,
        linger_ms=50,
        max_batch_size=1_048_576,
        max_request_size=4_194_304,
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        for first in range(start, stop, CHUNK):
            rows: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
            for n in range(first, min(stop, first + CHUNK)):
                key, value = send_result(n)
                rows[partition_for(key, partitions)].append((key, value))

            async def send(partition: int, items: list[tuple[bytes, bytes]]) -> None:
                futures = []
                batch = producer.create_batch()
                for key, value in items:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                await asyncio.gather(*futures)

            await asyncio.gather(*(send(p, items) for p, items in rows.items()))
    finally:
        await producer.stop()


def worker_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERYTRACK_")}
    data = settings.model_dump(mode="json", by_alias=True)
    data["api_tokens"] = ",".join(t.get_secret_value() for t in settings.api_tokens)
    data.pop("api_pii_tokens")
    for name, value in data.items():
        if value is None:
            continue
        text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
        env[f"DELIVERYTRACK_{name.upper()}"] = text
    env.update(extra)
    return env


class Worker:
    def __init__(self, settings: Settings, log: Path, extra: dict[str, str]) -> None:
        self.settings = settings
        self.token = settings.api_tokens[0].get_secret_value()
        self.proc = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [sys.executable, "-m", "deliverytrack", "worker"],
            env=worker_env(settings, extra),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.settings.web_port}/health"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                body: dict[str, Any] = orjson.loads(response.read())
                return body
        except urllib.error.HTTPError as exc:
            return dict(orjson.loads(exc.read() or b"{}"))
        except (urllib.error.URLError, OSError):
            return None

    def wait(self, what: str, check: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the worker exited with {self.proc.returncode}")
            body = self.health()
            if body is not None and check(body):
                return body
            time.sleep(0.5)
        raise SystemExit(f"{what}: not within {timeout:.0f} s")

    def memory(self) -> dict[str, int]:
        """kB figures of /proc: VmRSS, VmHWM (peak RSS), and smaps_rollup's Anonymous."""
        out: dict[str, int] = {}
        pid = self.proc.pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, value = line.partition(":")
            if name in ("Anonymous", "Rss"):
                out[f"smaps_{name}"] = int(value.split()[0])
        out.update(mappings(pid))
        return out

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 300.0) -> float:
        """Wait until the worker has used under 5 % of a core for 3 s: every consumer (the
        webhook dispatcher reads every status change too) has caught up. Returns the wait."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            before = self.cpu_seconds()
            time.sleep(3)
            if self.cpu_seconds() - before < 0.15:
                break
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def mappings(pid: int) -> dict[str, int]:
    """Resident kB by kind of mapping: the main heap (brk), 64 MiB malloc arenas of threads,
    1 MiB anonymous maps (CPython's object allocator arenas), other anonymous maps (large
    buffers, RocksDB), files (code, shared libraries)."""
    kinds: dict[str, int] = defaultdict(int)
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and ":" not in fields[0]:
            low, high = (int(x, 16) for x in fields[0].split("-"))
            size = high - low
            name = fields[5] if len(fields) > 5 else ""
            if name == "[heap]":
                kind = "map_heap"
            elif name.startswith("/"):
                kind = "map_files"
            elif name:
                kind = "map_other"
            elif size >= 60 * 2**20:
                kind = "map_thread_arenas"
            elif size == 2**20:
                kind = "map_python_arenas"
            else:
                kind = "map_anonymous"
        elif fields and fields[0] == "Rss:":
            kinds[kind] += int(fields[1])
    return dict(kinds)


def mb(kb: int) -> str:
    return f"{kb / 1024:,.0f}"


def report(
    records: int,
    seconds: float,
    mem: dict[str, int],
    body: dict[str, Any],
    busy: dict[str, int],
    idle_after: float,
) -> None:
    held = body.get("memory") or {}
    rocks = held.get("rocksdb") or {}
    print(
        f"records {records:>9,}  folded in {seconds:6.1f} s  RSS when folded "
        f"{mb(busy['VmRSS']):>5} MB, idle {idle_after:4.0f} s later {mb(mem['VmRSS']):>5} MB  "
        f"peak {mb(mem['VmHWM']):>5} MB  anonymous {mb(mem['smaps_Anonymous']):>5} MB",
        flush=True,
    )
    print(
        "    resident by mapping: "
        + ", ".join(
            f"{k.removeprefix('map_')} {mb(v)} MB" for k, v in mem.items() if k.startswith("map_")
        ),
        flush=True,
    )
    if held:
        print(
            f"    worker says: record cache {held.get('recordCacheRecords', 0):,} records (limit "
            f"{held.get('recordCacheLimit', 0):,}); RocksDB "
            f"{rocks.get('blockCacheBytes', 0) / 2**20:,.0f} MB "
            f"of its {rocks.get('budgetBytes', 0) / 2**20:,.0f} MB budget (memtables "
            f"{rocks.get('memtableBytes', 0) / 2**20:,.0f} MB of it); C heap trimmed "
            f"{held.get('heapTrims', 0):,} times",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default="50000,1000000", help="checkpoints, ascending")
    parser.add_argument("--broker", help="kafka://host:port (default: start one in a temp dir)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the worker (repeatable)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    checkpoints = [int(part) for part in args.records.split(",")]
    extra = dict(item.split("=", 1) for item in args.env)
    workdir = Path(tempfile.mkdtemp(prefix="dt-memory-"))
    broker = None
    worker = None
    try:
        if args.broker:
            url = args.broker
        else:
            broker = KafkaBroker(workdir / "kafka", heap="1g")
            broker.start()
            url = broker.url
        tag = uuid.uuid4().hex[:6]
        settings = Settings(
            broker=url,
            app_id=f"mem-{tag}",
            topic_prefix=f"mem-{tag}.",
            data_dir=workdir / "data",
            web_port=_free_port(),
            webhook_port=_free_port(),
            api_tokens=(secrets.token_urlsafe(24),),
            partitions=args.partitions,
            polling={"intervalMs": 3_600_000},
        )
        print(
            f"{datetime.now(UTC):%Y-%m-%d} deliverytrack worker memory; "
            f"partitions {args.partitions}; worker env {extra or 'defaults'}",
            flush=True,
        )
        worker = Worker(settings, workdir / "worker.log", extra)
        body = worker.wait("worker ready", lambda b: b.get("status") == "ok", 120)
        base = worker.memory()
        print(f"idle worker: RSS {mb(base['VmRSS'])} MB", flush=True)
        topic = Topics.of(settings).send_results
        done = 0
        for target in checkpoints:
            started = time.monotonic()
            # Traffic in chunks of CHUNK, each folded before the next is sent: a worker keeping
            # up with its input (a 1,000,000-event backlog is another test: catch-up).
            for chunk_end in range(done + CHUNK, target + CHUNK, CHUNK):
                chunk_end = min(chunk_end, target)
                asyncio.run(produce(settings.bootstrap_servers, topic, done, chunk_end))
                body = worker.wait(
                    f"{chunk_end:,} records folded",
                    lambda b, n=chunk_end: b.get("applied", 0) >= n,
                    timeout=600.0,
                )
                done = chunk_end
            folded = time.monotonic() - started
            busy = worker.memory()  # right after the fold, other consumers still reading
            idle_after = worker.wait_idle()
            body = worker.health() or body
            report(target, folded, worker.memory(), body, busy, idle_after)
        return 0
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""``deliverytrack demo``: broker, worker, simulated provider and traffic, with a summary.

Starts a real Kafka broker (jars from Maven Central, cached), the simulated provider's HTTP
status API, one worker process (``deliverytrack worker``, exactly as a user runs it), then sends
messages: mixed types and providers, some scheduled, some failing, some to a provider without a
status API, a few without a provider message id. Progress is printed while it runs, then a
summary table; after it the broker, provider and worker keep running, so the dashboard
(``/ui``) stays up, until Ctrl-C or SIGTERM (``--exit-after-summary``: stop after the summary,
for scripts). Ctrl-C stops everything at any point and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import SendRecorded
from deliverytrack.models.settings import Settings
from deliverytrack.streams.dev.kafka_broker import KafkaBroker
from deliverytrack.streams.kafka.clients import new_consumer, new_producer
from deliverytrack.streams.providers.simulated import (
    SimulatedProvider,
    SimulatedProviderConfig,
    SimulatedProviderServer,
)
from deliverytrack.streams.topics import Topics

TYPES = [
    (MessageType.SMS, 45),
    (MessageType.ALIMTALK, 25),
    (MessageType.LMS, 15),
    (MessageType.MMS, 5),
    (MessageType.RCS_SMS, 5),
    (MessageType.FRIENDTALK, 5),
]
PROVIDERS = [("solapi-sim", 55), ("iwinv-sim", 40), ("legacy", 5)]
DEMO_MAX_TRACKING_MS = 60_000
DEMO_POLLING: dict[str, Any] = {
    "intervalMs": 500,
    "batchSize": 2_000,
    "concurrency": 50,
    "initialDelayMs": 2_000,
    "scheduledGraceMs": 2_000,
    "backoffMs": [2_000, 4_000, 8_000, 15_000],
    "maxTrackingDurationMs": DEMO_MAX_TRACKING_MS,
    "providerTimeoutMs": 5_000,
    "leaseMs": 15_000,
}


@dataclass
class Tally:
    """Latest record per message, from the status-change topic."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    delivered_after: dict[str, float] = field(default_factory=dict)
    changes: int = 0

    def apply(self, change: dict[str, Any]) -> None:
        """A status change with its record, or with the record's changes (then merged into
        what earlier changes of the message told)."""
        self.changes += 1
        current = self.records.get(change["messageId"])
        record = change.get("record")
        if record is None:  # DELIVERYTRACK_STATUS_CHANGE_RECORD=changes
            record = {**(current or {}), **change["changes"]}
            record = {key: value for key, value in record.items() if value is not None}
        if current is None or record["sequence"] >= current["sequence"]:
            self.records[change["messageId"]] = record
        if change["status"] == "DELIVERED" and "requestedAt" in record:
            requested = datetime.fromisoformat(record["requestedAt"])
            scheduled = record.get("scheduledAt")
            start = datetime.fromisoformat(scheduled) if scheduled else requested
            changed = datetime.fromisoformat(change["changedAt"])
            self.delivered_after[change["messageId"]] = (changed - start).total_seconds()

    def by_status(self) -> Counter[str]:
        return Counter(r["status"] for r in self.records.values())

    def open_count(self) -> int:
        final = {"DELIVERED", "FAILED", "CANCELLED", "UNKNOWN", "CLICKED"}
        return sum(1 for r in self.records.values() if r["status"] not in final)


def _weighted(rng: random.Random, table: list[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


SETTLE_S = DEMO_MAX_TRACKING_MS / 1000 + 30
"""After the last send, how long the demo waits at most for every record to reach a final
status (a record still polled at the end of its tracking duration becomes UNKNOWN)."""


class Demo:
    def __init__(
        self,
        messages: int,
        duration: float,
        broker_url: str | None,
        keep: bool,
        provider_url: str | None = None,
        serve: bool = True,
    ):
        self.messages = messages
        self.duration = duration
        self.external_broker = broker_url
        self.external_provider = provider_url
        self.keep = keep
        self.serve = serve
        self.workdir = Path(tempfile.mkdtemp(prefix="deliverytrack-demo-"))
        self.broker: KafkaBroker | None = None
        self.server: SimulatedProviderServer | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.tally = Tally()
        self.sent = 0
        self.started = time.monotonic()
        self.settle_deadline: float | None = None
        self.task: asyncio.Task[int] | None = None
        self.stopping = False
        self.stdout_closed = False
        # After the summary, serving the dashboard until Ctrl-C: stopping then is the normal end.
        self.serving = False

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    def out(self, line: str = "") -> None:
        """Print a line. A closed stdout (``| tee`` or ``| head`` gone) never raises here: it
        stops the demo as Ctrl-C would, and the shutdown still stops everything."""
        if self.stdout_closed:
            return
        try:
            print(line, flush=True)
        except (BrokenPipeError, OSError, ValueError):
            self.stdout_closed = True
            _stdout_to_devnull()
            if self.task is not None and not self.stopping:
                self.task.cancel()

    async def run(self) -> int:
        try:
            return await self._run()
        finally:
            await self.shutdown()

    async def _run(self) -> int:
        if self.external_broker:
            broker_url = self.external_broker
        else:
            self.say("starting Apache Kafka (KRaft) on loopback; first run fetches jars via mvn")
            self.broker = KafkaBroker(self.workdir / "kafka")
            await asyncio.to_thread(self.broker.start)
            broker_url = self.broker.url
        self.say(f"broker ready at {broker_url}")

        if self.external_provider:
            provider_url = self.external_provider.rstrip("/")
            await _configure_provider(provider_url)
        else:
            self.server = SimulatedProviderServer(DEMO_PROVIDER)
            provider_url = await self.server.start()
        self.say(f"simulated provider at {provider_url} (3% of status calls answer 503)")

        tag = uuid.uuid4().hex[:6]
        settings = Settings(
            broker=broker_url,
            app_id=f"demo-{tag}",
            topic_prefix=f"demo-{tag}.",
            data_dir=self.workdir / "data",
            web_port=_free_port(),
            webhook_port=_free_port(),
            api_tokens=(secrets.token_urlsafe(32),),
            polling=DEMO_POLLING,
            providers={
                "solapi-sim": {"kind": "simulated", "baseUrl": provider_url},
                "iwinv-sim": {"kind": "simulated", "baseUrl": provider_url},
                "legacy": {"kind": "none"},
            },
        )
        topics = Topics.of(settings)
        self.worker = _start_worker(settings, self.workdir / "worker.log")
        kept = "kept" if self.keep else "removed on exit; --keep keeps them"
        self.say(
            f"worker started (pid {self.worker.pid}); its log and state in {self.workdir} ({kept})"
        )
        await _wait_http(settings.web_port, self.worker, self.workdir / "worker.log")
        token_file = self.workdir / "api-token"
        token_file.touch(mode=0o600)
        token_file.write_text(settings.api_tokens[0].get_secret_value())
        self.say(
            f"worker ready; HTTP API on http://127.0.0.1:{settings.web_port} (Authorization: "
            f"Bearer $(cat {token_file})), webhooks on http://127.0.0.1:{settings.webhook_port}"
        )
        dashboard = f"http://127.0.0.1:{settings.web_port}/ui"
        self.say(
            f"dashboard: {dashboard} (it asks for the API token: the contents of {token_file})"
        )

        producer = new_producer(settings, linger_ms=10)
        consumer = new_consumer(
            settings,
            topics.status_changes,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await producer.start()
        await consumer.start()
        client = SimulatedProvider("demo", provider_url)
        background = [
            asyncio.create_task(self._watch(consumer)),
            asyncio.create_task(self._progress()),
        ]
        self.say(
            f"sending {self.messages} messages over {self.duration:g} s, then waiting up to "
            f"{SETTLE_S:.0f} s for every record to reach a final status"
        )
        try:
            await self._traffic(producer, client, topics)
            self.say(
                f"all {self.sent} messages sent; waiting up to {SETTLE_S:.0f} s for tracking "
                "to settle (Ctrl-C stops now, without the summary)"
            )
            deadline = self.settle_deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline:
                if len(self.tally.records) >= self.sent and self.tally.open_count() == 0:
                    break
                await asyncio.sleep(0.5)
            self._line()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await client.close()
            await consumer.stop()
            await producer.stop()
        self._summary(settings)
        if not self.serve:
            return 0
        return await self._serve(self.worker, dashboard, token_file)

    async def _serve(
        self, worker: subprocess.Popen[bytes], dashboard: str, token_file: Path
    ) -> int:
        """Keep everything running for the dashboard until Ctrl-C or SIGTERM (run_demo cancels
        the task; shutdown stops everything). A worker that dies meanwhile ends the demo."""
        self.serving = True
        self.out()
        self.out(
            f"dashboard still at {dashboard} (API token in {token_file}); Ctrl-C stops everything"
        )
        while worker.poll() is None:
            await asyncio.sleep(1)
        self.say(f"the worker exited with code {worker.returncode}; stopping")
        return 1

    async def _traffic(
        self, producer: AIOKafkaProducer, client: SimulatedProvider, topics: Topics
    ) -> None:
        rng = random.Random(42)  # noqa: S311 - demo traffic, not crypto
        interval = self.duration / max(self.messages, 1)
        start = time.monotonic()
        for n in range(self.messages):
            message_type = _weighted(rng, TYPES)
            provider_id = _weighted(rng, PROVIDERS)
            now = datetime.now(UTC)
            scheduled_at = None
            if rng.random() < 0.08:
                scheduled_at = now + timedelta(seconds=rng.randint(3, 15))
            to = f"010{rng.randint(0, 99_999_999):08d}"
            accepted = await client.send(to, str(message_type))
            provider_message_id = accepted["providerMessageId"]
            if rng.random() < 0.005:
                provider_message_id = ""  # the provider gave no id: UNKNOWN at once
            event = SendRecorded(
                event_id=str(uuid.uuid4()),
                message_id=f"msg-{n:06d}",
                provider_id=provider_id,
                provider_message_id=provider_message_id,
                type=message_type,
                to=to,
                from_="0215880000",
                requested_at=now,
                scheduled_at=scheduled_at,
                custom_fields={"campaign": rng.choice(["signup", "otp", "receipt"])},
            )
            await producer.send(topics.send_results, encode(event), key=event.message_id.encode())
            self.sent += 1
            lag = start + (n + 1) * interval - time.monotonic()
            if lag > 0:
                await asyncio.sleep(lag)
        await producer.flush()

    async def _watch(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    self.tally.apply(orjson.loads(record.value))

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(2)
            self._line()

    def _line(self) -> None:
        counts = self.tally.by_status()
        shown = " ".join(f"{status}={counts.get(status, 0)}" for status in _STATUS_ORDER)
        line = f"sent {self.sent}/{self.messages} | tracked {len(self.tally.records)} | {shown}"
        if self.settle_deadline is not None:
            left = max(0.0, self.settle_deadline - time.monotonic())
            line += (
                f" | settling: {self.tally.open_count()} still tracked, {left:.0f} s left at most"
            )
        self.say(line)

    def _summary(self, settings: Settings) -> None:
        records = self.tally.records.values()
        total = len(self.tally.records)
        by_status = self.tally.by_status()
        providers = sorted({r["providerId"] for r in records})
        self.out()
        self.out("== deliverytrack demo: summary ==")
        header = f"{'status':<10}" + "".join(f"{p:>12}" for p in providers) + f"{'total':>10}"
        self.out(header)
        self.out("-" * len(header))
        for status in _STATUS_ORDER:
            if not by_status.get(status):
                continue
            row = f"{status:<10}"
            for provider in providers:
                n = sum(1 for r in records if r["providerId"] == provider and r["status"] == status)
                row += f"{n:>12}"
            self.out(row + f"{by_status[status]:>10}")
        self.out("-" * len(header))
        self.out(
            f"{'total':<10}"
            + "".join(f"{sum(1 for r in records if r['providerId'] == p):>12}" for p in providers)
            + f"{total:>10}"
        )
        delivered = by_status.get("DELIVERED", 0)
        failed = by_status.get("FAILED", 0)
        rate = 100 * delivered / total if total else 0.0
        self.out()
        self.out(
            f"delivery rate {rate:.1f}% ({delivered}/{total}), failure rate "
            f"{100 * failed / total if total else 0.0:.1f}%"
        )
        times = sorted(self.tally.delivered_after.values())
        if times:
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            self.out(
                f"time to DELIVERED (send or schedule -> status change): median "
                f"{statistics.median(times):.1f}s, p95 {p95:.1f}s over {len(times)} messages"
            )
        reasons = Counter(
            (r.get("lastError") or {}).get("code") for r in records if r["status"] == "UNKNOWN"
        )
        if reasons:
            self.out("UNKNOWN because: " + ", ".join(f"{k}={v}" for k, v in reasons.most_common()))
        self.out(f"status-change events consumed: {self.tally.changes}")
        if self.keep:
            self.out(f"topics: {settings.topic_prefix}*; worker log: {self.workdir / 'worker.log'}")
        else:
            self.out(
                f"topics: {settings.topic_prefix}* (the worker's log and state are removed on "
                "exit: --keep keeps them)"
            )

    async def shutdown(self) -> None:
        """Stop everything this demo started: each step runs whatever happened before it
        (a closed stdout, a step that failed), and a second Ctrl-C does not cut it short."""
        self.stopping = True
        try:
            await self._stop_worker()
        finally:
            try:
                if self.server is not None:
                    await self.server.stop()
            finally:
                self.server = None
                try:
                    if self.broker is not None:
                        self.say("stopping broker")
                        await asyncio.to_thread(self.broker.stop)
                finally:
                    self.broker = None
                    if not self.keep:
                        shutil.rmtree(self.workdir, ignore_errors=True)

    async def _stop_worker(self) -> None:
        worker = self.worker
        if worker is None or worker.poll() is not None:
            return
        self.say("stopping worker")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)  # its own session: its whole group
        try:
            await asyncio.to_thread(worker.wait, 15)  # it stops within its 5 s timeout
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


_STATUS_ORDER = [s.value for s in TrackingStatus]

DEMO_PROVIDER = SimulatedProviderConfig(
    delivery_delay_ms_min=1_000,
    delivery_delay_ms_max=20_000,
    outcome_mix={"DELIVERED": 0.86, "FAILED": 0.10, "PENDING": 0.04},
    error_rate=0.03,
    latency_ms=15,
)


async def _configure_provider(url: str) -> None:
    """Give a simulated provider started elsewhere (``--provider-url``, e.g. the compose
    file's ``provider`` service) the demo's behaviour."""
    import aiohttp

    body = DEMO_PROVIDER.model_dump(mode="json", by_alias=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(f"{url}/v1/config", json=body) as response:
            if response.status != 200:
                raise RuntimeError(
                    f"the simulated provider at {url} refused the demo's configuration: "
                    f"HTTP {response.status} {await response.text()}"
                )


def _stdout_to_devnull() -> None:
    """Standard output's reader is gone: point the descriptor at /dev/null, so nothing
    written later (the interpreter's last flush included) raises BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no usable stdout at all: nothing more to do
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERYTRACK_")}
    if "DELIVERYTRACK_KAFKA_HOME" in os.environ:
        env["DELIVERYTRACK_KAFKA_HOME"] = os.environ["DELIVERYTRACK_KAFKA_HOME"]
    data = settings.model_dump(mode="json", by_alias=True)
    data["api_tokens"] = ",".join(t.get_secret_value() for t in settings.api_tokens)
    data.pop("api_pii_tokens")
    for name in ("kafka_sasl_password", "kafka_ssl_key_password"):  # in clear, not masked
        secret = getattr(settings, name)
        data[name] = None if secret is None else secret.get_secret_value()
    for name, value in data.items():
        if value is None:
            continue  # unset (str(None) would be the value "None": e.g. a TLS file path)
        if isinstance(value, dict | list):
            env[f"DELIVERYTRACK_{name.upper()}"] = orjson.dumps(value).decode()
        else:
            env[f"DELIVERYTRACK_{name.upper()}"] = str(value)
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "deliverytrack", "worker"],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _wait_http(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    import aiohttp

    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.3)
    raise RuntimeError("worker did not become ready within 90s")


def run_demo(
    messages: int,
    duration: float,
    broker_url: str | None,
    keep: bool,
    provider_url: str | None = None,
    serve: bool = True,
) -> int:
    demo = Demo(messages, duration, broker_url, keep, provider_url, serve)
    loop = asyncio.new_event_loop()
    task = demo.task = loop.create_task(demo.run())

    def interrupt() -> None:
        if not demo.stopping:  # a second Ctrl-C must not cut the shutdown short
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, interrupt)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        demo.out()
        if demo.serving:  # after the summary, Ctrl-C is how the demo ends
            demo.out("everything stopped")
            return 141 if demo.stdout_closed else 0
        demo.out("interrupted: everything stopped")
        return 141 if demo.stdout_closed else 130
    except RuntimeError as exc:
        with contextlib.suppress(OSError):
            print(f"deliverytrack demo: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()

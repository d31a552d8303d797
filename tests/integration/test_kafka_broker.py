"""The session's real Kafka broker accepts topic creation, produce and group consume."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deliverytrack.streams.dev import kafka_broker
from deliverytrack.streams.dev.kafka_broker import BrokerInfo, KafkaBroker, PortInUseError

pytestmark = pytest.mark.integration

N_RECORDS = 100
N_PARTITIONS = 3
STEP_TIMEOUT = 30.0


async def test_produce_and_consume_roundtrip(kafka_broker: BrokerInfo) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    assert kafka_broker.url == f"kafka://{bootstrap.split(',')[0]}"
    topic = f"it-broker-{uuid.uuid4().hex[:12]}"

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    async with asyncio.timeout(STEP_TIMEOUT):
        await admin.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await admin.create_topics(
                [NewTopic(topic, num_partitions=N_PARTITIONS, replication_factor=1)],
                timeout_ms=20_000,
            )
    finally:
        await admin.close()

    sent = {f"value-{i}".encode() for i in range(N_RECORDS)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=20_000)
    async with asyncio.timeout(STEP_TIMEOUT):
        await producer.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            futures = [
                await producer.send(
                    topic,
                    value=f"value-{i}".encode(),
                    key=str(i).encode(),
                    partition=i % N_PARTITIONS,
                )
                for i in range(N_RECORDS)
            ]
            await producer.flush()
            metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert {m.partition for m in metas} == set(range(N_PARTITIONS))

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"it-group-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    async with asyncio.timeout(STEP_TIMEOUT):
        await consumer.start()
    received: dict[bytes, int] = {}
    try:
        async with asyncio.timeout(60.0):
            while len(received) < N_RECORDS:
                batches = await consumer.getmany(timeout_ms=1_000)
                for tp, records in batches.items():
                    for record in records:
                        assert record.value is not None
                        received[record.value] = tp.partition
        async with asyncio.timeout(STEP_TIMEOUT):
            await consumer.commit()
    finally:
        await consumer.stop()

    assert set(received) == sent
    assert set(received.values()) == set(range(N_PARTITIONS))


# --------------------------------------------------------------------------- the launcher CLI


def _listening_socket() -> socket.socket:
    """A socket listening on a free 127.0.0.1 port: "another process" holding the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _existing_workdir(root: Path) -> dict[Path, bytes]:
    """A launcher --dir holding data (formatted as an earlier run leaves it); what it holds.

    The data is a plain file Kafka itself ignores, so only a deletion by the launcher loses it.
    """
    cluster = "q1Sh-9_ISia_zwGINzRvyQ"
    files = {
        root / "data" / "keep-me.bin": os.urandom(64 * 1024),
        root / "data" / "meta.properties": f"version=1\nnode.id=1\ncluster.id={cluster}\n".encode(),
        root / "cluster.id": f"{cluster}\n".encode(),
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def test_cli_taken_port_keeps_existing_data(tmp_path: Path) -> None:
    """`--port P --dir D` with P taken: a clear error naming P, non-zero exit, D untouched."""
    workdir = tmp_path / "broker"
    files = _existing_workdir(workdir)
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "deliverytrack.streams.dev.kafka_broker"]
            + ["--port", str(port), "--dir", str(workdir), "--timeout", "60"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "DELIVERYTRACK_BROKER=" not in proc.stdout
    assert f"port {port}" in proc.stderr and "already in use" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for path, content in files.items():
        assert path.is_file() and path.read_bytes() == content, f"{path} changed or deleted"
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_port_taken_while_starting_keeps_existing_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JVM itself finds the given port taken (lost race after the check): no retry, no
    deletion, an error naming the port."""
    workdir = tmp_path / "broker"
    files = _existing_workdir(workdir)
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        broker = KafkaBroker(workdir, port=port)
        monkeypatch.setattr(broker, "_check_fixed_ports", lambda: None)  # lose the race
        with pytest.raises(PortInUseError) as info:
            broker.start(timeout=60)
    assert info.value.port == port
    assert f"client port {port}" in str(info.value) and "taken" in str(info.value)
    assert broker.log_path.read_text().count("===== deliverytrack: starting") == 1  # no retry
    # The broker ran (and rewrote meta.properties, adding a directory.id): the data is there.
    keep = workdir / "data" / "keep-me.bin"
    assert keep.is_file() and keep.read_bytes() == files[keep]
    assert "cluster.id=q1Sh-9_ISia_zwGINzRvyQ" in (workdir / "data" / "meta.properties").read_text()


@pytest.mark.parametrize("existing", [True, False])
def test_retry_on_picked_port_deletes_only_data_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """Auto-picked ports are retried; the retry clears the data dir only if this start created
    it (no JVM: the first attempt fails as a lost bind(0) race would)."""
    workdir = tmp_path / "broker"
    files = _existing_workdir(workdir) if existing else {}
    monkeypatch.setattr(kafka_broker, "ensure_kafka_classpath", lambda version: "")
    attempts: list[set[Path]] = []

    def start_once(classpath: str, timeout: float) -> None:
        data = workdir / "data"
        attempts.append({p.relative_to(data) for p in data.rglob("*")} if data.exists() else set())
        if len(attempts) == 1:
            (data / "created-by-attempt-1").mkdir(parents=True)
            raise PortInUseError("exited: a port is already in use")

    broker = KafkaBroker(workdir)
    monkeypatch.setattr(broker, "_start_once", start_once)
    broker.start()
    assert len(attempts) == 2
    if existing:
        assert Path("created-by-attempt-1") in attempts[1]
        for path, content in files.items():
            assert path.is_file() and path.read_bytes() == content, f"{path} changed or deleted"
    else:
        assert attempts[1] == set()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A test run killed without teardown (SIGKILL; SIGTERM skips atexit too) leaves no broker
    behind: the kernel stops it when its starter dies (PR_SET_PDEATHSIG)."""
    starter = subprocess.Popen(  # noqa: S603 - fixed argv
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from deliverytrack.streams.dev.kafka_broker import KafkaBroker\n"
            "broker = KafkaBroker(sys.argv[1])\n"
            "broker.start()\n"
            "print(broker.pid, flush=True)\n"
            "time.sleep(600)\n",
            str(tmp_path / "broker"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        line = starter.stdout.readline().strip()
        assert line.isdigit(), f"the starter printed no broker pid (exit {starter.poll()})"
        pid = int(line)
        os.kill(pid, 0)  # running
        starter.kill()
        starter.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            if _reaped_or_zombie(pid):
                return
            time.sleep(0.2)
        os.killpg(pid, 9)
        pytest.fail(f"the broker {pid} outlived the process that started it")
    finally:
        if starter.poll() is None:
            starter.kill()


def _reaped_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"

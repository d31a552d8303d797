"""One format for every time the tools and the worker print, and JSON for what aiohttp's parser
refuses, on a real worker (the Faust web server's own runner) and the real CLI:

- ``history`` (text and --json), ``tail`` (text and --json), ``/stats``'s period and
  ``/records/due``'s now write UTC times with ``Z``, never ``+00:00``;
- a URL over 8,190 bytes gets a JSON 414 from the worker, and its log has no traceback.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from deliverytrack.models.settings import Settings
from tests.factories import send_recorded_factory
from tests.integration.conftest import ROOT, KafkaIO, WorkerProcess, settings_env

pytestmark = pytest.mark.integration


async def _cli(settings: Settings, *args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "deliverytrack", *args],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


async def _raw_get(port: int, target: bytes) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


async def test_times_with_z_and_a_json_414(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
    kafka_io_factory: Callable[[Settings], Any],
) -> None:
    settings = settings_factory()
    io: KafkaIO = await kafka_io_factory(settings)
    worker = await worker_factory(settings).astart()
    await io.send(io.topics.send_results, "z-1", send_recorded_factory("z-1"))
    await worker.arecord("z-1")

    text = await _cli(settings, "history", "z-1")
    as_json = await _cli(settings, "history", "z-1", "--json")
    tail = await _cli(settings, "tail", "--from-beginning", "--max", "1")
    tail_json = await _cli(settings, "tail", "--from-beginning", "--max", "1", "--json")
    for output in (text, as_json, tail, tail_json):
        assert "+00:00" not in output, output
    assert orjson.loads(as_json)[0]["timestamp"].endswith("Z")
    assert tail.split()[0].endswith("Z") and " z-1 " in tail

    status, body = await worker.aget("/stats?from=2026-11-23T09:00:00%2B09:00&to=1796461200000")
    assert status == 200 and body["period"] == {
        "from": "2026-11-23T00:00:00Z",
        "to": "2026-12-05T09:00:00Z",
    }
    status, body = await worker.aget("/records/due?now=2026-11-23T09:00:00%2B09:00")
    assert status == 200 and body["now"] == "2026-11-23T00:00:00Z"

    # The Faust web server's runner answers a URL aiohttp's parser refuses with JSON.
    status, head, raw = await _raw_get(settings.web_port, b"/records?messageId=" + b"m" * 9_000)
    assert status == 414 and b"application/json" in head, head
    assert "longer than 8190 bytes" in orjson.loads(raw)["error"]
    status, _ = await worker.aget("/health")
    assert status == 200
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]

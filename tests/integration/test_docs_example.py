"""The README's hand-run example works as shown: a worker configured as "Running it yourself"
says (the simulated provider as ``sim``, the first status check 2 s after the send), and
``docs/examples/send_one.py`` run as a user runs it sees its message DELIVERED. Without the
provider configured, the same send result ends UNKNOWN with PROVIDER_NOT_FOUND, as the README
says."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from deliverytrack.models.settings import Settings
from deliverytrack.streams.providers.simulated import SimulatedProviderServer
from tests.integration.conftest import ROOT, WorkerProcess, settings_env

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()


async def _run_example(settings: Settings, provider_url: str, worker: WorkerProcess) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            str(ROOT / "docs" / "examples" / "send_one.py"),
            "--provider",
            provider_url,
            "--api",
            worker.base_url,
            "--timeout",
            "45",
        ],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{worker.log_tail()}"
    return done.stdout


async def test_the_hand_run_example_is_delivered(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    # What the README tells the user to configure.
    assert "DELIVERYTRACK_POLLING__INITIAL_DELAY_MS=2000" in README
    assert '{"sim": {"kind": "simulated", "baseUrl": "http://127.0.0.1:8089"}}' in README
    assert ".venv/bin/python docs/examples/send_one.py" in README
    server = SimulatedProviderServer()
    provider_url = await server.start()
    try:
        settings = settings_factory(
            providers={"sim": {"kind": "simulated", "baseUrl": provider_url}},
            polling={"initialDelayMs": 2_000},
        )
        worker = await worker_factory(settings).astart()
        out = await _run_example(settings, provider_url, worker)
        assert "DELIVERED ['SENT', 'DELIVERED']" in out, out
    finally:
        await server.stop()


async def test_without_a_provider_the_record_ends_provider_not_found(
    settings_factory: Callable[..., Settings],
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    from datetime import UTC, datetime

    from deliverytrack.streams.api.client import DeliveryTrackClient
    from tests.factories import send_recorded_factory

    settings = settings_factory(polling={"initialDelayMs": 1_000, "intervalMs": 500})
    worker = await worker_factory(settings).astart()
    async with DeliveryTrackClient(worker.base_url, settings, token=worker.token) as client:
        await client.record_send(
            send_recorded_factory("nope-1", provider_id="sim", requested_at=datetime.now(UTC))
        )
        record: Any = await client.wait_for("nope-1", lambda r: r.status == "UNKNOWN", 30)
    assert record.last_error.code == "PROVIDER_NOT_FOUND"
    assert "PROVIDER_NOT_FOUND" in README and "TRACKING_TIMEOUT" in README

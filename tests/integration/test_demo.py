"""``deliverytrack demo`` on the session broker (``--broker``), as a user runs it.

- Its output piped to a reader that goes away (``| tee demo.log`` and Ctrl-C kills both), then
  SIGINT: the demo stops everything it started, the worker (in its own process group) and the
  temporary directory included, and exits without a traceback. Before, the first ``print`` of
  the shutdown raised BrokenPipeError and left the worker running, orphaned.
- A short demo to its summary: it says up front how long it may wait after sending, shows a
  progress line while it waits, and its summary names no path it deletes on exit. Then it keeps
  serving the dashboard (and the API behind it) and says so, until SIGINT, which stops
  everything and exits with 0.
- ``--exit-after-summary``: the same demo stops everything after the summary on its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def _demo(kafka_broker: Any, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERYTRACK_")}
    return subprocess.Popen(
        [sys.executable, "-m", "deliverytrack", "demo", "--broker", kafka_broker.url, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _read_until(stream: IO[str], pattern: str, timeout: float) -> tuple[re.Match[str], list[str]]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        found = re.search(pattern, line)
        if found:
            return found, seen
    pytest.fail(f"no line matching {pattern!r}:\n" + "\n".join(seen))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_ctrl_c_with_stdout_gone_stops_everything(kafka_broker: Any) -> None:
    demo = _demo(kafka_broker, "--messages", "2000", "--duration", "60")
    assert demo.stdout is not None and demo.stderr is not None
    try:
        started, _ = _read_until(
            demo.stdout, r"worker started \(pid (\d+)\); its log and state in (\S+) ", 60
        )
        worker_pid, workdir = int(started.group(1)), Path(started.group(2))
        _read_until(demo.stdout, r"worker ready", 90)
        _read_until(demo.stdout, r"dashboard: http://127\.0\.0\.1:\d+/ui ", 10)
        assert _alive(worker_pid) and workdir.is_dir()
        # The reader goes away (tee killed by the same Ctrl-C), then the demo gets SIGINT.
        demo.stdout.close()
        os.kill(demo.pid, signal.SIGINT)
        code = demo.wait(60)
        err = demo.stderr.read()
        assert code in (130, 141), err
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
        deadline = time.monotonic() + 10
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker_pid), "the demo left its worker running"
        assert not workdir.exists(), f"the demo left {workdir}"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, response.read()


def test_a_short_demo_summarises_then_serves_the_dashboard_until_ctrl_c(kafka_broker: Any) -> None:
    demo = _demo(kafka_broker, "--messages", "30", "--duration", "3")
    assert demo.stdout is not None and demo.stderr is not None
    try:
        started, seen = _read_until(
            demo.stdout, r"worker started \(pid (\d+)\); its log and state in (\S+) \(removed", 60
        )
        worker_pid, workdir = int(started.group(1)), started.group(2)
        serving, rest = _read_until(
            demo.stdout,
            r"^dashboard still at (http://127\.0\.0\.1:\d+/ui) \(API token in (\S+)\); "
            r"Ctrl-C stops everything$",
            240,
        )
        out = "\n".join(seen + rest)
        assert "sending 30 messages over 3 s, then waiting up to 90 s" in out, out
        assert "waiting up to 90 s for tracking to settle" in out, out
        summary = out[out.index("== deliverytrack demo: summary ==") : out.index("dashboard still")]
        assert "total" in summary and "delivery rate" in summary
        assert workdir not in summary, summary
        assert "--keep keeps them" in summary
        # Still serving after the summary: the dashboard page, and the API it reads with the
        # token the demo names, holding the demo's 30 records.
        dashboard, token_file = serving.group(1), Path(serving.group(2))
        assert _get(dashboard)[0] == 200
        api = dashboard.removesuffix("/ui")
        status, body = _get(api + "/records/count", token_file.read_text())
        assert status == 200 and json.loads(body) == {"count": 30}, body
        assert _alive(worker_pid)

        os.kill(demo.pid, signal.SIGINT)
        code = demo.wait(60)
        tail, err = demo.stdout.read(), demo.stderr.read()
        assert code == 0, err
        assert "Traceback" not in err, err
        assert tail.rstrip().endswith("everything stopped"), tail
        deadline = time.monotonic() + 10
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker_pid), "the demo left its worker running"
        assert not Path(workdir).exists()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)


def test_exit_after_summary_stops_everything_on_its_own(kafka_broker: Any) -> None:
    demo = _demo(kafka_broker, "--messages", "1", "--duration", "1", "--exit-after-summary")
    try:
        out, err = demo.communicate(timeout=240)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
    assert demo.returncode == 0, err
    assert "== deliverytrack demo: summary ==" in out and "dashboard still at" not in out, out
    started = re.search(r"worker started \(pid (\d+)\); its log and state in (\S+) ", out)
    assert started is not None, out
    assert not _alive(int(started.group(1))), "the demo left its worker running"
    assert not Path(started.group(2)).exists()

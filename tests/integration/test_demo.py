"""``deliverytrack demo`` on the session broker (``--broker``), as a user runs it.

- Its output piped to a reader that goes away (``| tee demo.log`` and Ctrl-C kills both), then
  SIGINT: the demo stops everything it started, the worker (in its own process group) and the
  temporary directory included, and exits without a traceback. Before, the first ``print`` of
  the shutdown raised BrokenPipeError and left the worker running, orphaned.
- A short demo to the end: it says up front how long it may wait after sending, shows a
  progress line while it waits, and its summary names no path it deletes on exit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
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


def test_a_short_demo_says_how_long_it_waits_and_names_no_deleted_path(kafka_broker: Any) -> None:
    demo = _demo(kafka_broker, "--messages", "30", "--duration", "3")
    try:
        out, err = demo.communicate(timeout=240)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
    assert demo.returncode == 0, err
    lines = out.splitlines()
    assert any("sending 30 messages over 3 s, then waiting up to 90 s" in line for line in lines)
    assert any("waiting up to 90 s for tracking to settle" in line for line in lines), out
    summary = out[out.index("== deliverytrack demo: summary ==") :]
    assert "total" in summary and "delivery rate" in summary
    started = re.search(r"its log and state in (\S+) \(removed on exit", out)
    assert started is not None, out
    workdir = started.group(1)
    assert workdir not in summary, summary
    assert "--keep keeps them" in summary
    assert not Path(workdir).exists()

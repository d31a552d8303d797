"""The Faust worker that ``deliverytrack worker`` runs: its log and its stop.

- Logging: Faust's own set-up, then the :class:`~deliverytrack.streams.worker.logs.LogGate` on the
  root handlers (expected noise demoted, repeats rate-limited). Standard output is not
  redirected into the log (a traceback printed by a library thread stays one block).
- Stopping: on SIGTERM/SIGINT (or a crash), the worker stops its services as usual, but never
  for longer than ``shutdown_timeout_s``. With the broker gone, Faust's consumer thread alone
  waited 60 s (mode's stop timeout) for a leave-group that cannot happen. Past the deadline the
  process exits at once: 0 if it was asked to stop, 1 if it stops on a crash. Nothing is lost
  by it: every batch is written atomically with the offsets it reflects, as after a SIGKILL
  (the crash tests), and the next start recovers from RocksDB and the changelog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError

from deliverytrack.streams.state.memory import tune_heap
from deliverytrack.streams.worker.logs import install_log_gate

log = logging.getLogger(__name__)


class ShutdownDeadline:
    """Exits the process if a stop that began is not done within ``timeout_s``."""

    def __init__(
        self,
        timeout_s: float,
        exit_code: Callable[[], int],
        exit_now: Callable[[int], Any] = os._exit,
    ) -> None:
        self.timeout_s = timeout_s
        self.exit_code = exit_code
        self.exit_now = exit_now
        self._armed = threading.Event()
        self._done = threading.Event()

    def arm(self) -> None:
        if self._armed.is_set():
            return
        self._armed.set()
        threading.Thread(target=self._wait, name="shutdown-deadline", daemon=True).start()

    def disarm(self) -> None:
        self._done.set()

    def _wait(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        code = self.exit_code()
        log.warning(
            "worker: stopping took longer than %.1f s (DELIVERYTRACK_SHUTDOWN_TIMEOUT_MS; "
            "is the broker unreachable?): exiting now with %d; the next start recovers as "
            "after a crash",
            self.timeout_s,
            code,
        )
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: S110 - exiting: a handler that cannot flush loses its tail
                pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: S110 - same
                pass
        self.exit_now(code)


class Worker(faust.Worker):
    def __init__(
        self,
        app: faust.App,
        *,
        shutdown_timeout_s: float,
        log_repeat_interval_s: float,
        crashed: Callable[[], bool],
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("redirect_stdouts", False)
        tune_heap()  # before Faust's and RocksDB's threads start (streams/state/memory.py)
        super().__init__(app, **kwargs)
        self.log_repeat_interval_s = log_repeat_interval_s
        self.deadline = ShutdownDeadline(
            shutdown_timeout_s, lambda: 1 if crashed() or self.crash_reason else 0
        )

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        install_log_gate(logger, self.log_repeat_interval_s)

    async def stop(self) -> None:
        self.deadline.arm()
        _quiet_thread_errors_while_stopping()
        await super().stop()


def _quiet_thread_errors_while_stopping() -> None:
    """Faust's consumer thread, stopped while the broker is away, ends on the cancelled
    retry of a fetch: one line, not a traceback on stderr at every stop during an outage."""
    previous = threading.excepthook
    if getattr(previous, "_deliverytrack", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, asyncio.CancelledError | KafkaError):
            name = args.thread.name if args.thread is not None else "a thread"
            log.info("worker: %s ended on %r while stopping", name, args.exc_value)
            return
        previous(args)

    hook._deliverytrack = True  # type: ignore[attr-defined]  # noqa: SLF001 - our own marker
    threading.excepthook = hook

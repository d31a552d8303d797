"""What the engine counts (``/health``), how it keeps the cyclic GC out of a batch, and the
sensor a benchmark or a metrics exporter plugs in (as Faust's ``faust/sensors``)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

GC_PAUSE_LIMIT_S = 5.0
"""The longest a batch keeps the cyclic GC paused (see gc_paused)."""


@contextmanager
def gc_paused(limit_s: float | None = None) -> Iterator[None]:
    """Pause the cyclic GC for a batch's synchronous work (turned back on even if it raises).

    A batch allocates millions of short-lived objects without reference cycles (refcounting
    frees them). With the collector on, every 50,000 allocations it scanned whatever was alive
    at that moment (the batch's records, outputs), promoting it to older generations to be
    scanned again (bench/README.md measured the cost). Paused, the next collection
    after the batch sees only what survived it. Nothing the collector has to free is lost,
    only collected a batch later. The engine holds it over a whole batch, awaits included
    (other tasks, poller and web, leave their cyclic garbage to the end of the batch), with
    ``limit_s``: a batch that waits longer (a broker away: the idempotent producer retries
    without end) turns the collector back on at that point."""
    enabled = gc.isenabled()
    gc.disable()
    timer = None
    if enabled and limit_s is not None:
        timer = asyncio.get_running_loop().call_later(limit_s, gc.enable)
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        if enabled:
            gc.enable()


@dataclass(slots=True)
class EngineStats:
    events: int = 0
    applied: int = 0
    hot: int = 0
    """Fold inputs the hot path folded (``tables.hot``); the rest took the models' path."""
    status_changes: int = 0
    dead_letters: int = 0
    batches: int = 0
    changelog_writes: int = 0
    restored: int = 0
    poll_requests: int = 0
    due_checks: int = 0
    due_scans: int = 0
    reports: int = 0
    reports_correlated: int = 0
    hold_expiries: int = 0
    expiries: int = 0
    deletions: int = 0


Batch = Mapping[TopicPartition, Sequence[Any]]

PHASES = ("process", "fold", "correlate", "publish", "changelog", "write", "commit")
"""The steps of a batch a sensor is told about, in the order they run."""


class EngineSensor(Protocol):
    """Told about every batch and the time of each of its steps (``PHASES``); the default
    does nothing. A sensor must not raise."""

    def batch_started(self, batch: Batch) -> None: ...

    def batch_done(self, batch: Batch) -> None: ...

    def phase(self, name: str) -> AbstractContextManager[object]: ...


class NoSensor:
    """The default sensor: nothing is measured."""

    def batch_started(self, batch: Batch) -> None:
        pass

    def batch_done(self, batch: Batch) -> None:
        pass

    def phase(self, name: str) -> AbstractContextManager[object]:
        return nullcontext()

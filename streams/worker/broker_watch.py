"""Is the Kafka cluster reachable? Asked every second, answered by /health.

The Kafka clients retry forever and say so only in their logs; a worker whose broker is gone
kept answering /health 200 "ok" and queries from its (now stale) local state. The watch asks the
cluster for its metadata over the fold producer's connections (so with its TLS/SASL settings)
every ``interval_s``, each ask bounded by ``timeout_s``; the first failure after a success is
the moment the broker became unreachable. /health answers 503 ``"broker unreachable"`` once
that has lasted ``grace_s`` (a broker restart or a leader election shorter than that is not an
outage), and query answers carry ``X-DeliveryTrack-Stale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web as aiohttp_web
from aiokafka.errors import KafkaError

from deliverytrack.models.common import utc_text

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]


class BrokerWatch:
    def __init__(
        self,
        grace_s: float,
        interval_s: float = 1.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.unreachable_since: float | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    # --- state ---------------------------------------------------------------------------

    def ok(self) -> None:
        if self.unreachable_since is not None:
            log.warning(
                "Kafka reachable again after %.0f s unreachable",
                self.clock() - self.unreachable_since,
            )
        self.unreachable_since = None
        self.last_error = None

    def failed(self, error: BaseException) -> None:
        name, text = type(error).__name__, str(error)
        self.last_error = text if text.startswith(name) else f"{name}: {text}" if text else name
        if self.unreachable_since is None:
            self.unreachable_since = self.clock()
            log.warning(
                'Kafka unreachable (%s); /health answers 503 "broker unreachable" if it '
                "lasts %.0f s",
                self.last_error,
                self.grace_s,
            )

    @property
    def unreachable(self) -> bool:
        """Unreachable for at least the grace period."""
        since = self.unreachable_since
        return since is not None and self.clock() - since >= self.grace_s

    def since_text(self) -> str | None:
        since = self.unreachable_since
        return None if since is None else utc_text(datetime.fromtimestamp(since, UTC))

    def describe(self) -> dict[str, object]:
        """/health's ``broker`` block."""
        return {
            "reachable": self.unreachable_since is None,
            "unreachableSince": self.since_text(),
            "lastError": self.last_error,
        }

    # --- the probe loop --------------------------------------------------------------------

    async def check(self, probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), timeout=self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            self.failed(exc)
            return False
        self.ok()
        return True

    def start(self, probe: Probe) -> None:
        async def run() -> None:
            while True:
                await self.check(probe)
                await asyncio.sleep(self.interval_s)

        self._task = asyncio.create_task(run(), name="broker-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def stale_marker(watch: BrokerWatch) -> Callable[..., Awaitable[aiohttp_web.StreamResponse]]:
    """aiohttp middleware: while the broker is unreachable (past the grace period), every
    answer carries ``X-DeliveryTrack-Stale: broker unreachable since <time>``: it comes from
    local state that no longer follows the topics."""

    @aiohttp_web.middleware
    async def mark(
        request: aiohttp_web.Request,
        handler: Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]],
    ) -> aiohttp_web.StreamResponse:
        response = await handler(request)
        if watch.unreachable and not response.prepared:
            response.headers["X-DeliveryTrack-Stale"] = (
                f"broker unreachable since {watch.since_text()}"
            )
        return response

    return mark

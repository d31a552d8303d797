"""What the timers publish from this worker's partitions: due checks, expiries of held
reports, expiries of records and deletion markers. They read the stores and publish events;
they never write the table (the fold applies what they publish).

Every scan is O(entries due), not O(records kept): each store's index is sorted by due time,
read from its start up to ``now`` and at most ``limit`` entries."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from deliverytrack.models.codec import encode
from deliverytrack.models.events import DueCheckIssued, HoldExpiryDue, RecordExpiryDue
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.streams.engine.routing import Output
from deliverytrack.streams.engine.stats import EngineStats
from deliverytrack.streams.state.store import PartitionStore
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.due_index import epoch_ms, from_epoch_ms

Due = tuple[int, str]
"""(due time in epoch ms, key) of an index entry."""
Find = Callable[[PartitionStore], list[Due]]


def scan(stores: Iterable[PartitionStore], limit: int, *finds: Find) -> list[Due]:
    """The first ``limit`` entries, oldest first, that any of ``finds`` returns from any
    store (each find returns at most ``limit`` from one store, itself oldest first)."""
    found: list[Due] = []
    for store in list(stores):
        for find in finds:
            found.extend(find(store))
    found.sort()
    return found[:limit]


class Timers:
    """Scans this worker's stores and publishes what is due (once per lease)."""

    def __init__(
        self,
        policy: FoldPolicy,
        topics: Topics,
        stats: EngineStats,
        stores: Callable[[], Iterable[PartitionStore]],
        publish: Callable[[list[Output]], Awaitable[None]],
    ) -> None:
        self.policy = policy
        self.topics = topics
        self.stats = stats
        self.stores = stores
        self.publish = publish
        self._emitted: dict[tuple[str, int, str], float] = {}
        """What the timers emitted less than a lease ago, by (kind, due ms, key)."""

    # --- due checks --------------------------------------------------------------------------

    def collect_due_checks(self, now: datetime) -> list[tuple[bytes, bytes]]:
        """Up to ``batchSize`` (key, DueCheckIssued JSON) pairs, oldest first. Reads only."""
        return [self._due_check(now, due) for due in self.scan_due(now)]

    def scan_due(self, now: datetime) -> list[Due]:
        """Up to ``batchSize`` due entries, oldest first, passing over the ones whose check is
        already in flight (emitted, not yet folded): at 1,000 polls/s there are more of those
        than ``batchSize``, and counting them would stall the scan behind them. The entries
        skipped are bounded by the number in flight, so a tick stays O(records due)."""
        limit, emitted = self.policy.polling.batch_size, self._emitted

        def in_flight(due_ms: int, message_id: str) -> bool:
            return ("due", due_ms, message_id) in emitted

        return scan(self.stores(), limit, lambda s: s.due(now, limit, in_flight, len(emitted)))

    def scan_holds(self, now: datetime) -> list[Due]:
        limit = self.policy.polling.batch_size
        return scan(self.stores(), limit, lambda s: s.expired_holds(now, limit))

    def scan_expiries(self, now: datetime) -> list[Due]:
        """(expiry ms, messageId) of records and deletion markers past their time, oldest
        first, at most ``scanBatchSize``: O(records expired), not O(records kept)."""
        limit = self.policy.retention.scan_batch_size
        return scan(
            self.stores(),
            limit,
            lambda s: s.expired(now, limit),
            lambda s: s.forgettable_markers(now, limit),
        )

    def _due_check(self, now: datetime, due: Due) -> tuple[bytes, bytes]:
        due_ms, message_id = due
        event = DueCheckIssued(
            event_id=f"{message_id}:due:{due_ms}:{epoch_ms(now)}",
            message_id=message_id,
            due_at=from_epoch_ms(due_ms),
            issued_at=now,
        )
        return message_id.encode(), encode(event)

    def _hold_expiry(self, now: datetime, due: Due) -> tuple[bytes, bytes] | None:
        deadline_ms, key = due
        state = None
        for store in list(self.stores()):
            state = state or store.get_correlation(key)
        if state is None:
            return None
        event = HoldExpiryDue(
            event_id=f"{key}:expiry:{deadline_ms}:{epoch_ms(now)}",
            provider_id=state.provider_id,
            provider_message_id=state.provider_message_id,
            issued_at=now,
        )
        return key.encode(), encode(event)

    def _recent_emissions(self) -> tuple[float, dict[tuple[str, int, str], float]]:
        """(now on the monotonic clock, what the timers emitted less than a lease ago)."""
        clock = time.monotonic()
        horizon = clock - self.policy.polling.lease_ms / 1000
        emitted = self._emitted
        for marker in [marker for marker, at in emitted.items() if at < horizon]:
            del emitted[marker]
        return clock, emitted

    async def emit_due_checks(self, now: datetime) -> int:
        """Publish the due checks and hold expiries of this tick.

        A check the fold has not consumed yet would be found due again by the next tick; the
        fold would drop the repeat as stale, but it costs a round trip, so one emitted less
        than a lease ago (same due time, same key) is not emitted again."""
        self.stats.due_scans += 1
        clock, emitted = self._recent_emissions()
        outputs: list[Output] = []
        for due in self.scan_due(now):  # passes over the checks emitted a lease ago or less
            emitted[("due", *due)] = clock
            key, value = self._due_check(now, due)
            outputs.append(Output(self.topics.due_checks, key, value))
        checks = len(outputs)
        for due in self.scan_holds(now):
            if ("hold", *due) not in emitted and (pair := self._hold_expiry(now, due)):
                emitted[("hold", *due)] = clock
                outputs.append(Output(self.topics.provider_ids, *pair))
        await self.publish(outputs)
        self.stats.due_checks += checks
        return checks

    async def emit_expiries(self, now: datetime) -> int:
        """Publish ``RecordExpiryDue`` events (on the due-checks topic, keyed by messageId)
        for this worker's expired records and markers; the fold deletes them. Like due checks,
        one emitted less than a lease ago is not emitted again."""
        clock, emitted = self._recent_emissions()
        outputs: list[Output] = []
        for expire_ms, message_id in self.scan_expiries(now):
            if ("expire", expire_ms, message_id) in emitted:
                continue
            emitted[("expire", expire_ms, message_id)] = clock
            event = RecordExpiryDue(
                event_id=f"expire:{message_id}:{expire_ms}",
                message_id=message_id,
                expire_at=from_epoch_ms(expire_ms),
                issued_at=now,
            )
            outputs.append(Output(self.topics.due_checks, message_id.encode(), encode(event)))
        await self.publish(outputs)
        self.stats.expiries += len(outputs)
        return len(outputs)

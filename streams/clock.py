"""The wall clock, in one place: the shell reads it (timers, the poller, the dispatcher, the
provider clients), then passes the time on; the fold never reads it (time comes from events)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)

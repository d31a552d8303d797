"""What the worker's log says while Kafka is away, and what it keeps quiet about.

With the broker down, aiokafka alone logged ~400 ERROR lines a second (every fetch, metadata
refresh, heartbeat and coordinator lookup of every client, each a line), and every start logged
``Group Coordinator Request failed: GroupCoordinatorNotAvailableError`` although nothing was
wrong. :class:`LogGate` sits on the root handlers (so it sees aiokafka's, Faust's, mode's and
our records alike) and decides once per record:

- expected noise (a coordinator lookup while a new group's coordinator is being elected, the
  metadata race on the topic Faust has just created) is INFO, not ERROR;
- connection errors, whichever logger and message, are one kind: at most one line per
  interval, which says how many more it stands for;
- any other WARNING or ERROR repeated with the same message template: one line per interval
  too, with the same count.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL_S = 10.0

_CONNECTION = re.compile(
    r"KafkaConnectionError|NodeNotReadyError|Unable connect to node|Unable to update metadata"
    r"|Unable to request metadata|Connect call failed|Connection at \S+ closed"
    r"|RequestTimedOutError|NotCoordinatorError|CoordinatorNotAvailable"
    r"|marking coordinator dead|Marking the coordinator dead|Heartbeat session expired"
    r"|LeaveGroup request failed|Unable to bootstrap|ConnectionRefusedError|Connection refused"
)
"""What a broker that cannot be reached (or is restarting) makes the clients log."""

_EXPECTED = (
    # A new consumer group's coordinator is elected on first use: aiokafka retries the lookup.
    re.compile(r"^Group Coordinator Request failed: .*GroupCoordinatorNotAvailable"),
    # Faust creates its leader topic and reads its metadata before every broker knows it.
    re.compile(r"^Topic \S*__assignor-__leader not found in cluster metadata"),
)

_VERDICT = "_deliverytrack_log_verdict"


@dataclass
class _Window:
    opened: float
    suppressed: int = 0


class NoiseLimiter:
    """Decides, once per record, whether it is shown; shared by every handler's gate."""

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._windows: dict[tuple[str, ...], _Window] = {}

    def allow(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, _VERDICT, None)
        if verdict is None:
            verdict = self._decide(record)
            setattr(record, _VERDICT, verdict)
        return bool(verdict)

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if any(pattern.search(message) for pattern in _EXPECTED):
            record.levelno, record.levelname = logging.INFO, "INFO"
            return True
        if self.interval_s <= 0:
            return True
        text = message
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        if _CONNECTION.search(text):
            key: tuple[str, ...] = ("kafka-connection",)
            kind = "Kafka connection messages"
        else:
            key = (record.name, str(record.levelno), str(record.msg))
            kind = "messages like it"
        now = self.clock()
        window = self._windows.get(key)
        if window is not None and now - window.opened < self.interval_s:
            window.suppressed += 1
            return False
        if window is not None and window.suppressed:
            seconds = now - window.opened
            record.msg = f"{record.msg} [and {window.suppressed:,} more {kind} in the last "
            record.msg += f"{seconds:.0f} s, not shown]"
            record.message = record.getMessage()  # a formatter that already ran sees it too
        self._windows[key] = _Window(opened=now)
        if len(self._windows) > 10_000:  # one entry per message template: never many
            self._windows.clear()
        return True


class LogGate(logging.Filter):
    """A handler's filter: the limiter's verdict, and the handler's own level after a
    record was demoted (the logger let it through as an ERROR; the handler may not want INFO)."""

    def __init__(self, limiter: NoiseLimiter, handler: logging.Handler) -> None:
        super().__init__()
        self.limiter = limiter
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.limiter.allow(record):
            return False
        if record.levelno < self.handler.level:
            return False
        # A demoted record passes the logger's level only if INFO is enabled there.
        return logging.getLogger(record.name).isEnabledFor(record.levelno)


def install_log_gate(
    logger: logging.Logger | None = None, interval_s: float = DEFAULT_INTERVAL_S
) -> NoiseLimiter:
    """Put one :class:`LogGate` on each of ``logger``'s handlers (default: the root's), sharing
    one limiter; replaces gates installed before."""
    logger = logger or logging.getLogger()
    limiter = NoiseLimiter(interval_s)
    for handler in logger.handlers:
        for old in [f for f in handler.filters if isinstance(f, LogGate)]:
            handler.removeFilter(old)
        handler.addFilter(LogGate(limiter, handler))
    return limiter

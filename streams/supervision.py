"""Background tasks that must not die silently: the first error that ends one is kept, logged
as CRITICAL and signalled, so the worker can report it (/health) and exit (FoldService)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class TaskFailure:
    def __init__(self, component: str) -> None:
        self.component = component
        self.error: BaseException | None = None
        self.event = asyncio.Event()

    def watch(self, task: asyncio.Task[None], stopping: Callable[[], bool]) -> None:
        """Record ``task``'s error when it ends on one; a task that returns or is cancelled
        while the component is not stopping is a failure too."""

        def ended(task: asyncio.Task[None]) -> None:
            if stopping():
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "%s: %s ended with an error while stopping",
                        self.component,
                        task.get_name(),
                        exc_info=task.exception(),
                    )
                return
            if task.cancelled():
                error: BaseException = RuntimeError(f"{task.get_name()} was cancelled")
            else:
                error = task.exception() or RuntimeError(f"{task.get_name()} ended")
            if self.error is None:
                self.error = error
                log.critical(
                    "%s: %s stopped on an error", self.component, task.get_name(), exc_info=error
                )
                self.event.set()

        task.add_done_callback(ended)

"""The worker's stop deadline: a stop that is not done in time ends the process (0 when it was
asked to stop, 1 when it stops on a crash); a stop that finishes in time ends nothing."""

from __future__ import annotations

import threading

from deliverytrack.streams.worker.process import ShutdownDeadline


def test_a_stop_past_its_deadline_exits_with_the_stop_code() -> None:
    exited: list[int] = []
    done = threading.Event()

    def exit_now(code: int) -> None:
        exited.append(code)
        done.set()

    deadline = ShutdownDeadline(0.05, exit_code=lambda: 1, exit_now=exit_now)
    deadline.arm()
    deadline.arm()  # a second signal starts no second clock
    assert done.wait(5)
    assert exited == [1]


def test_a_stop_in_time_exits_nothing() -> None:
    exited: list[int] = []
    deadline = ShutdownDeadline(0.2, exit_code=lambda: 0, exit_now=exited.append)
    deadline.arm()
    deadline.disarm()
    threading.Event().wait(0.4)
    assert exited == []

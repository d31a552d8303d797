"""A background task that ends on an error, or ends at all while its component runs, is a
failure; ending while the component stops is not."""

from __future__ import annotations

import asyncio

import pytest

from deliverytrack.streams.supervision import TaskFailure


async def _raise() -> None:
    raise OSError("disk full")


async def _return() -> None:
    return None


async def _settle(task: asyncio.Task[None]) -> None:
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn


async def test_the_first_error_is_kept_and_signalled() -> None:
    failure = TaskFailure("fold")
    first = asyncio.create_task(_raise(), name="a")
    failure.watch(first, lambda: False)
    await _settle(first)
    assert failure.event.is_set() and isinstance(failure.error, OSError)
    second = asyncio.create_task(_return(), name="b")
    failure.watch(second, lambda: False)
    await _settle(second)
    assert isinstance(failure.error, OSError)  # the first one stays


async def test_returning_while_running_is_a_failure() -> None:
    failure = TaskFailure("poller")
    task = asyncio.create_task(_return(), name="loop")
    failure.watch(task, lambda: False)
    await _settle(task)
    assert failure.event.is_set() and isinstance(failure.error, RuntimeError)


async def test_cancelled_while_running_is_a_failure() -> None:
    failure = TaskFailure("poller")
    task = asyncio.create_task(asyncio.sleep(10), name="loop")
    failure.watch(task, lambda: False)
    task.cancel()
    await _settle(task)
    assert failure.event.is_set() and "cancelled" in str(failure.error)


async def test_ending_while_stopping_is_not_a_failure() -> None:
    failure = TaskFailure("webhooks")
    task = asyncio.create_task(_raise(), name="loop")
    failure.watch(task, lambda: True)
    await _settle(task)
    assert not failure.event.is_set() and failure.error is None


async def test_an_error_while_stopping_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    failure = TaskFailure("fold")
    task = asyncio.create_task(_raise(), name="fold-engine")
    failure.watch(task, lambda: True)
    await _settle(task)
    assert "fold: fold-engine ended with an error while stopping" in caplog.text
    assert "disk full" in caplog.text

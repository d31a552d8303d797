"""One input refused: the exception an input's own work raises when it cannot be processed,
and the (reason, detail) its dead letter gets. Pure: the fold's hot path and the engine's
per-input boundary (``streams.boundary``) use the same three names."""

from __future__ import annotations

import traceback

from deliverytrack.models.codec import DecodeError


class Refused(Exception):  # noqa: N818 - a refusal of one input, not an error of the worker
    """One input cannot be processed; ``reason`` is a short category (dead-letter reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def refusal(exc: BaseException) -> tuple[str, str]:
    """(reason, detail) of an exception raised by one input's work. Known refusals keep their
    reason; anything else is a bug or a poison input, parked with its traceback."""
    if isinstance(exc, Refused | DecodeError):
        return exc.reason, exc.detail
    return "processing-error", "".join(traceback.format_exception(exc))


def check_size(value: bytes | None, limit: int, reason: str, what: str) -> None:
    """Refuse ``value`` if it is longer than ``limit`` bytes."""
    if value is not None and len(value) > limit:
        raise Refused(reason, f"{what} is {len(value):,} bytes, more than the limit {limit:,}")

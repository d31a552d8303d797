"""Ask a provider what happened to one leased message; answer with a StatusObserved event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from deliverytrack.models.events import (
    ObservationOutcome,
    PollRequested,
    ProviderErrorInfo,
    ProviderStatus,
    StatusObserved,
)
from deliverytrack.streams.providers.base import ProviderError, StatusProvider, StatusQuery

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Poller:
    """Bounded-time provider lookups. Never raises for a provider's sake: every failure
    becomes an observation (k-msg discarded the whole batch on a thrown error)."""

    def __init__(
        self,
        providers: Mapping[str, StatusProvider],
        timeout_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.providers = providers
        self.timeout_s = timeout_s
        self.clock = clock
        self.calls = 0

    async def poll(self, request: PollRequested) -> StatusObserved:
        outcome: ObservationOutcome
        result: ProviderStatus | None = None
        error: ProviderErrorInfo | None = None
        provider = self.providers.get(request.provider_id)
        if provider is None:
            outcome = "provider_not_found"
        elif not provider.supports_status:
            outcome = "unsupported"
        else:
            self.calls += 1
            try:
                async with asyncio.timeout(self.timeout_s):
                    result = await provider.get_delivery_status(StatusQuery.from_request(request))
                outcome = "not_yet" if result is None else "result"
            except TimeoutError:
                outcome, error = (
                    "error",
                    ProviderErrorInfo(
                        code="NETWORK_TIMEOUT",
                        message=f"no answer within {self.timeout_s:g}s",
                        retryable=True,
                    ),
                )
            except ProviderError as exc:
                outcome, error = (
                    "error",
                    ProviderErrorInfo(
                        code=exc.code,
                        message=exc.message,
                        retryable=exc.retryable,
                        http_status=exc.http_status,
                    ),
                )
            except Exception as exc:  # an adapter bug must not stop polling for everyone
                log.exception("provider %s failed on %s", request.provider_id, request.message_id)
                outcome, error = (
                    "error",
                    ProviderErrorInfo(code="UNKNOWN_ERROR", message=repr(exc), retryable=True),
                )
        return StatusObserved(
            # Derived from the lease: a redelivered poll request answers with the same id.
            event_id=f"{request.message_id}:obs:{request.check_seq}",
            message_id=request.message_id,
            check_seq=request.check_seq,
            provider_id=request.provider_id,
            outcome=outcome,
            observed_at=self.clock(),
            result=result,
            error=error,
        )

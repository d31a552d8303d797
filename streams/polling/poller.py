"""Ask a provider what happened to one leased message; answer with a StatusObserved event."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime

from deliverytrack.models.events import (
    ObservationOutcome,
    PollRequested,
    ProviderErrorInfo,
    ProviderStatus,
    StatusObserved,
)
from deliverytrack.models.policy import PiiPolicy
from deliverytrack.streams.clock import utc_now
from deliverytrack.streams.metrics import Metrics
from deliverytrack.streams.providers.base import (
    MAX_ERROR_MESSAGE_CHARS,
    ProviderError,
    StatusProvider,
    StatusQuery,
)
from deliverytrack.tables.pii import (
    PiiError,
    decrypt_field,
    mask_phone_text,
    normalize_phone,
    redact_raw,
)

log = logging.getLogger(__name__)


class Poller:
    """Bounded-time provider lookups. Never raises for a provider's sake: every failure
    becomes an observation (k-msg discarded the whole batch on a thrown error)."""

    def __init__(
        self,
        providers: Mapping[str, StatusProvider],
        timeout_s: float,
        clock: Callable[[], datetime] = utc_now,
        pii: PiiPolicy | None = None,
    ) -> None:
        self.providers = providers
        self.timeout_s = timeout_s
        self.clock = clock
        self.pii = pii or PiiPolicy()
        self.calls = 0
        self.metrics: Metrics | None = None  # provider calls by outcome, and their latency

    def query(self, request: PollRequested) -> StatusQuery:
        """The provider query; the plain ``to`` decrypted from ``toEncrypted`` when the record
        keeps none (IWINV looks messages up by phone). Raises PiiError."""
        query = StatusQuery.from_request(request)
        if request.to_encrypted is not None and not request.to:
            to = decrypt_field(
                request.to_encrypted,
                field="to",
                message_id=request.message_id,
                provider_id=request.provider_id,
                policy=self.pii,
            )
            query = dataclasses.replace(query, to=to)
        return query

    def _redacted(self, result: ProviderStatus | None, to: str) -> ProviderStatus | None:
        """Phone numbers masked in the payload and the status text before they are published
        (observations topic)."""
        if result is None or not self.pii.protects_plain:
            return result
        number = normalize_phone(to)
        raw = redact_raw(
            result.raw, self.pii, lambda v: bool(number) and normalize_phone(v) == number
        )
        message = result.status_message
        masked = None if message is None else mask_phone_text(message)
        if raw is result.raw and masked is message:
            return result
        return result.model_copy(update={"raw": raw, "status_message": masked})

    def _log_failure(self, request: PollRequested, exc: Exception) -> None:
        if not self.pii.protects_plain:
            log.exception("provider %s failed on %s", request.provider_id, request.message_id)
            return
        trace = mask_phone_text("".join(traceback.format_exception(exc)))
        log.error("provider %s failed on %s: %s", request.provider_id, request.message_id, trace)

    def _bounded(self, error: ProviderErrorInfo) -> ProviderErrorInfo:
        """The error as it is published and kept: a provider's text may quote the number
        (masked while personal data is protected) and be long (cut)."""
        message = error.message
        if self.pii.protects_plain:
            message = mask_phone_text(message)
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
        return error if message == error.message else error.model_copy(update={"message": message})

    async def poll(self, request: PollRequested) -> StatusObserved:
        outcome: ObservationOutcome
        result: ProviderStatus | None = None
        error: ProviderErrorInfo | None = None
        provider = self.providers.get(request.provider_id)
        started = time.perf_counter()
        if provider is None:
            outcome = "provider_not_found"
        elif not provider.supports_status:
            outcome = "unsupported"
        else:
            self.calls += 1
            try:
                query = self.query(request)
                async with asyncio.timeout(self.timeout_s):
                    result = await provider.get_delivery_status(query)
                result = self._redacted(result, query.to)
                outcome = "not_yet" if result is None else "result"
            except PiiError as exc:
                # Retryable: a key restored to the settings makes the next poll work; the record
                # still ends at maxTrackingDurationMs.
                outcome, error = (
                    "error",
                    ProviderErrorInfo(
                        code="CRYPTO_DECRYPT_FAILED", message=str(exc), retryable=True
                    ),
                )
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
                self._log_failure(request, exc)
                outcome, error = (
                    "error",
                    ProviderErrorInfo(code="UNKNOWN_ERROR", message=repr(exc), retryable=True),
                )
        if self.metrics is not None and outcome not in ("provider_not_found", "unsupported"):
            elapsed = time.perf_counter() - started
            self.metrics.provider_call(request.provider_id, outcome, elapsed)
        if error is not None:
            error = self._bounded(error)
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

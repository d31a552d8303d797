"""The worker's own routes on the API listener: ``/health`` and ``/admin/due-scan``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faust.web import Request, Response, View

from deliverytrack.streams.clock import utc_now
from deliverytrack.streams.http.auth import caller_of
from deliverytrack.streams.http.errors import install_json_errors

if TYPE_CHECKING:
    from deliverytrack.streams.worker.app import DeliveryTrackApp


def register_worker_views(app: DeliveryTrackApp) -> None:
    """``GET /health`` (the state for probes; with a token, what the worker holds and has
    done) and ``POST /admin/due-scan``."""
    engine, poller, webhooks = app.engine, app.poller, app.webhooks
    install_json_errors(app)  # every route's errors as JSON, a bad request never a 500

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            stats = engine.stats
            failure = app.failure()
            watch = app.broker_watch
            healthy = engine.ready.is_set() and failure is None and not watch.unreachable
            if failure is not None:
                state = f"{failure.component} failed"
            elif watch.unreachable:
                state = "broker unreachable"
            else:
                state = "ok" if healthy else "starting"
            since = {"since": watch.since_text()} if state == "broker unreachable" else {}
            if not caller_of(request).authenticated:
                # A probe without a token learns the state only: no URLs, counters or errors.
                return self.json({"status": state, **since}, status=200 if healthy else 503)
            body = {
                "status": state,
                **since,
                "broker": watch.describe(),
                "memory": engine.memory(),
                "assignedPartitions": engine.assigned_partitions,
                "readyPartitions": sorted(engine.ready_partitions),
                "queryUrl": engine.membership.url,
                "owners": {str(p): url for p, url in sorted(engine.membership.owners.items())},
                "events": stats.events,
                "applied": stats.applied,
                "hotInputs": stats.hot,
                "statusChanges": stats.status_changes,
                "deadLetters": stats.dead_letters,
                "restored": stats.restored,
                "dueScans": stats.due_scans,
                "dueChecks": stats.due_checks,
                "pollRequests": stats.poll_requests,
                "providerCalls": poller.calls,
                "pollsInFlight": app.poll_loop.in_flight,
                "pollRequestsSkippedExpired": app.poll_loop.stats.skipped_expired,
                "webhooksAccepted": webhooks.accepted,
                "webhooksRejected": webhooks.rejected,
                "webhooksUnacknowledged": webhooks.unacknowledged,
                "reports": stats.reports,
                "reportsCorrelated": stats.reports_correlated,
                "holdExpiries": stats.hold_expiries,
                "expiries": stats.expiries,
                "recordsDeleted": stats.deletions,
                "webhooksDelivered": app.dispatcher.delivered,
                "webhookAttemptsFailed": app.dispatcher.failed_attempts,
                "webhooksExhausted": app.dispatcher.exhausted,
                "webhooksRefused": app.dispatcher.refused,
                "webhookDeadLetters": app.dispatcher.dead_letters,
                "webhookRetriesPending": app.dispatcher.pending_retries,
                "pollDeadLetters": app.poll_loop.stats.dead_letters,
                "pollRequestsGivenUp": app.poll_loop.stats.given_up,
                "heldCommands": engine.held_commands(),
                "apiRequestsRefused": app.api_tokens.refused,
            }
            if failure is not None:
                body["error"] = repr(failure.error)
            return self.json(body, status=200 if healthy else 503)

    @app.page("/admin/due-scan")
    class DueScan(View):
        async def post(self, request: Request) -> Response:
            """Scan this worker's due index now (k-msg ``runOnce``); polling follows as usual."""
            if not engine.ready.is_set():
                return self.json({"error": "the worker is starting"}, status=503)
            return self.json({"dueChecks": await engine.timers.emit_due_checks(utc_now())})

"""The Faust application: worker lifecycle, web server, and the fold engine as a service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import faust
from faust.assignor import LeaderAssignor
from mode import Service

from deliverytrack.models.settings import Settings
from deliverytrack.streams.clock import utc_now
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.http.auth import ApiTokens, api_auth, check_listeners
from deliverytrack.streams.http.dashboard import register_dashboard
from deliverytrack.streams.http.query_views import register_query_views
from deliverytrack.streams.http.server import JsonErrorAppRunner
from deliverytrack.streams.http.worker_views import register_worker_views
from deliverytrack.streams.kafka.clients import faust_credentials
from deliverytrack.streams.metrics import register_metrics
from deliverytrack.streams.polling.loop import PollLoop
from deliverytrack.streams.polling.poller import Poller
from deliverytrack.streams.providers.base import StatusProvider
from deliverytrack.streams.providers.registry import build_registry, close_registry
from deliverytrack.streams.query.service import QueryService
from deliverytrack.streams.supervision import TaskFailure
from deliverytrack.streams.topics import faust_leader_topic
from deliverytrack.streams.webhooks.dispatcher import WebhookDispatcher
from deliverytrack.streams.webhooks.ingress import (
    WebhookIngress,
    build_webhook_adapters,
)
from deliverytrack.streams.webhooks.listener import WebhookListener
from deliverytrack.streams.worker.broker_watch import BrokerWatch, stale_marker

log = logging.getLogger(__name__)


class _Components(Protocol):
    engine: FoldEngine
    poll_loop: PollLoop
    dispatcher: WebhookDispatcher


def component_failures(components: _Components) -> tuple[TaskFailure, ...]:
    """The components whose error stops the worker: the fold engine, the poll loop and the
    webhook dispatcher (the one list the supervisor and /health both read)."""
    return (components.engine.failure, components.poll_loop.failure, components.dispatcher.failure)


class FoldService(Service):
    """Runs the fold engine, the poll loop and the webhook dispatcher for as long as the Faust
    worker runs."""

    def __init__(
        self,
        engine: FoldEngine,
        poll_loop: PollLoop,
        providers: Mapping[str, StatusProvider],
        dispatcher: WebhookDispatcher,
        queries: QueryService,
        webhook_listener: WebhookListener,
        broker_watch: BrokerWatch | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.broker_watch = broker_watch
        self.engine = engine
        self.poll_loop = poll_loop
        self.providers = providers
        self.dispatcher = dispatcher
        self.queries = queries
        self.webhook_listener = webhook_listener

    async def on_start(self) -> None:
        await self.engine.start()
        await self.poll_loop.start(self.engine.producer)
        await self.dispatcher.start()
        # The public listener opens once the producer its reports go to is up.
        await self.webhook_listener.start()
        if self.broker_watch is not None:
            self.broker_watch.start(self.engine.producer.client.fetch_all_metadata)

    @Service.task
    async def _supervise(self) -> None:
        """A fold engine, poll loop or webhook dispatcher that stopped on an error crashes the
        worker: it exits non-zero, and a restart recovers from RocksDB, the changelog and the
        committed offsets (a worker that stayed up would answer /health doing nothing)."""
        failures = component_failures(self)
        waits = [asyncio.ensure_future(failure.event.wait()) for failure in failures]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        error = next((f.error for f in failures if f.error is not None), None)
        if error is not None:
            await self.crash(error)

    async def on_stop(self) -> None:
        if self.broker_watch is not None:
            await self.broker_watch.stop()
        await self.webhook_listener.stop()  # first: no report may arrive without a producer
        await self.dispatcher.stop()
        await self.queries.close()
        await self.poll_loop.stop()  # before the engine: its producer carries the observations
        await self.engine.stop()
        await close_registry(self.providers)


class DeliveryTrackApp(faust.App):
    """A Faust app that knows its settings and its fold engine."""

    settings: Settings
    engine: FoldEngine
    poller: Poller
    poll_loop: PollLoop
    webhooks: WebhookIngress
    dispatcher: WebhookDispatcher
    queries: QueryService
    api_tokens: ApiTokens
    webhook_listener: WebhookListener
    broker_watch: BrokerWatch

    def failure(self) -> TaskFailure | None:
        """The first component that stopped on an error, or None."""
        return next((f for f in component_failures(self) if f.error is not None), None)


def create_app(settings: Settings | None = None) -> DeliveryTrackApp:
    settings = settings or Settings()
    check_listeners(settings)  # no open API off loopback; two listeners, two addresses
    faust_dir = settings.data_dir / settings.app_id / "faust"
    faust_dir.parent.mkdir(parents=True, exist_ok=True)
    app = DeliveryTrackApp(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        datadir=str(faust_dir),
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        # No Faust tables here (the fold engine keeps its own stores): Faust's /router and
        # /table views would serve nothing, and answered 500 for a table name they do not know.
        web_router_enabled=False,
        web_tables_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_linger=settings.producer_linger_ms / 1000,
        broker_session_timeout=settings.consumer_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.consumer_heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        LeaderAssignor=_prefixed_leader_assignor(settings),
    )
    app.settings = settings
    # Requests aiohttp's HTTP parser refuses before any route (a URL over 8,190 bytes, ...) get
    # a JSON answer too, without a traceback in the log (Faust's runner, not yet set up).
    runner = JsonErrorAppRunner(
        app.web.web_app,  # type: ignore[attr-defined]
        access_log=None,
        max_connections=settings.http_max_connections,
    )
    app.web._runner = runner  # type: ignore[attr-defined]  # noqa: SLF001 - Faust has no setter
    app.engine = FoldEngine(settings)
    providers = build_registry(settings)
    app.poller = Poller(
        providers, timeout_s=settings.polling.provider_timeout_ms / 1000, pii=settings.pii
    )
    app.poll_loop = PollLoop(settings, app.poller, app.engine.topics)
    app.dispatcher = WebhookDispatcher(settings)
    app.queries = QueryService(app.engine)
    app.broker_watch = BrokerWatch(grace_s=settings.broker_unreachable_grace_ms / 1000)
    app.webhooks = _ingress(settings, app.engine)
    app.webhook_listener = WebhookListener(
        app.webhooks,
        lambda: app.failure() is None and not app.broker_watch.unreachable,
        settings.webhook_host,
        settings.webhook_port,
        shutdown_timeout_s=settings.webhook_ack_timeout_ms / 1000 + 1,
        metrics=app.engine.metrics,
        max_connections=settings.http_max_connections,
        body_timeout_s=settings.webhook_body_timeout_ms / 1000,
    )
    app.service(
        FoldService(  # type: ignore[arg-type]
            app.engine,
            app.poll_loop,
            providers,
            app.dispatcher,
            app.queries,
            app.webhook_listener,
            app.broker_watch,
        )
    )
    app.api_tokens = ApiTokens.from_settings(settings)
    # Outermost: a request without a valid token reaches no route (not even a 404).
    app.web.web_app.middlewares.insert(0, api_auth(app.api_tokens))  # type: ignore[attr-defined]
    # Answers from local state while the broker is away say so (X-DeliveryTrack-Stale).
    app.web.web_app.middlewares.insert(1, stale_marker(app.broker_watch))  # type: ignore[attr-defined]
    _warn_pii(settings)
    _register_polling(app)
    _register_retention(app)
    register_worker_views(app)
    register_query_views(app, app.queries)
    register_metrics(app)
    register_dashboard(app, app.engine)
    return app


def _prefixed_leader_assignor(settings: Settings) -> type[LeaderAssignor]:
    """Faust's leader assignor, its topic under the topic prefix (``faust_leader_topic``)."""
    name = faust_leader_topic(settings.topic_prefix, settings.app_id)

    class PrefixedLeaderAssignor(LeaderAssignor):
        @property
        def _leader_topic_name(self) -> str:
            return name

    return PrefixedLeaderAssignor


def _warn_pii(settings: Settings) -> None:
    pii = settings.pii
    kid = pii.active_kid or ""
    if (
        pii.enabled
        and (pii.encrypt_metadata or not pii.store_plain)
        and (pii.encryption_key(kid) is None)
    ):
        log.warning(
            "pii: activeKid %r has no encryption key: new records are written "
            "cryptoState=degraded (hash and mask only; to/from and metadata not kept)",
            kid,
        )


def _ingress(settings: Settings, engine: FoldEngine) -> WebhookIngress:
    return WebhookIngress(
        build_webhook_adapters(settings),
        _publisher(engine),
        engine.topics.provider_webhooks,
        pii=settings.pii,
        raw_mode=settings.webhook_raw,
        ack_timeout_s=settings.webhook_ack_timeout_ms / 1000,
        max_report_bytes=settings.max_input_bytes,
    )


def _publisher(engine: FoldEngine) -> Any:
    async def publish(topic: str, key: bytes, value: bytes) -> Any:
        return await engine.producer.send(topic, value=value, key=key)

    return publish


def _register_polling(app: DeliveryTrackApp) -> None:
    """The due-check timer; the poll requests it leads to are served by ``app.poll_loop``."""
    engine, policy = app.engine, app.settings.polling

    @app.timer(interval=policy.interval_ms / 1000)  # type: ignore[untyped-decorator]
    async def emit_due_checks() -> None:
        """Publish due checks for this worker's partitions. Never writes the table."""
        if engine.ready.is_set():
            await engine.timers.emit_due_checks(utc_now())


def _register_retention(app: DeliveryTrackApp) -> None:
    engine = app.engine

    @app.timer(interval=app.settings.retention.interval_ms / 1000)  # type: ignore[untyped-decorator]
    async def emit_expiries() -> None:
        """Publish expiries of records past their retention or expiresAt, and of deletion
        markers; the fold deletes them. Never writes the table."""
        if engine.ready.is_set():
            await engine.timers.emit_expiries(utc_now())

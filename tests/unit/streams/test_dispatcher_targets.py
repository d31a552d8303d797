"""Where the dispatcher may send a webhook (OWASP SSRF rules), with real local receivers and a
stand-in for the Kafka producer: loopback, private and metadata targets are refused (visible as
outcome ``refused``, the target gets nothing) unless allowed; the connection goes to the
address that was checked; no redirects; a few KiB of an answer read and only a short sanitised
reason published; secretRefs of per-message endpoints bound to hosts; header sets sent, ours
never replaced."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from deliverytrack.models.codec import encode
from deliverytrack.models.outbound import WebhookEndpoint
from deliverytrack.models.settings import Settings
from deliverytrack.streams.webhooks.dispatcher import WebhookDispatcher
from deliverytrack.streams.webhooks.egress import GuardedResolver, TargetRefused, sanitised
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from deliverytrack.tables.outbound import AllowList, deliveries_for
from tests.unit.streams.test_dispatcher import Producer, change, record

SECRET = "whsec-acme"
TOKEN = "Bearer sk_live_header_secret"


class Receiver:
    """Records every request by path; some paths redirect, answer big, or answer oddly."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.calls[path].append(dict(request.headers))
        self.bodies[path].append(await request.read())
        if path == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/elsewhere")
        if path == "big":
            response = web.StreamResponse(status=500, reason="Oops\t" + "x" * 300)
            await response.prepare(request)
            for _ in range(200):  # 10 MiB, if anyone read it
                await response.write(b"z" * 52_429)
            return response
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


@pytest.fixture
async def workers() -> AsyncIterator[list[WebhookDispatcher]]:
    made: list[WebhookDispatcher] = []
    yield made
    for worker in made:
        if worker._session is not None:
            await worker._session.close()


def dispatcher(
    made: list[WebhookDispatcher], producer: Producer, **settings: Any
) -> WebhookDispatcher:
    worker = WebhookDispatcher(Settings(**settings))
    worker._producer = producer  # type: ignore[assignment]
    worker._session = worker.new_session()
    made.append(worker)
    return worker


def ep(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": name, "url": url, "maxRetries": 0, **extra}


async def deliver(worker: WebhookDispatcher, *endpoints: dict[str, Any]) -> list[dict[str, Any]]:
    """One status change carrying ``endpoints`` as its own; the outcomes published."""
    producer: Producer = worker._producer  # type: ignore[assignment]
    before = len(producer.on(worker.topics.webhook_deliveries))
    value = orjson.dumps(change("m-1", list(endpoints)))
    await worker.handle_changes([record(worker.topics.status_changes, 0, value)])
    return producer.on(worker.topics.webhook_deliveries)[before:]


async def test_loopback_private_and_metadata_targets_are_refused_and_get_nothing(
    receiver: Receiver, workers: list[WebhookDispatcher]
) -> None:
    producer = Producer()
    worker = dispatcher(workers, producer)
    outcomes = await deliver(
        worker,
        ep("ip", receiver.url("ip")),
        ep("name", receiver.url("name", "localhost")),
        ep("mapped", receiver.url("mapped", "[::ffff:127.0.0.1]")),
        ep("metadata", "http://169.254.169.254/latest/meta-data/"),
        ep("private", "http://10.0.0.1/"),
        ep("zero", "http://0.0.0.0/"),
    )
    assert [o["outcome"] for o in outcomes] == ["refused"] * 6
    errors = {o["endpointId"]: o["error"] for o in outcomes}
    assert errors["ip"].startswith("127.0.0.1 is loopback")
    assert errors["name"].startswith("localhost resolves only to ")
    assert "loopback" in errors["name"] and "127.0.0.1" in errors["name"]
    assert "loopback (127.0.0.1 inside)" in errors["mapped"]
    assert errors["metadata"].startswith("169.254.169.254 is metadata")
    assert "private" in errors["private"] and "unspecified" in errors["zero"]
    assert all("DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS" in e for e in errors.values())
    assert receiver.calls == {}
    # A decision, not a failure: no retry, no dead letter.
    assert producer.on(worker.topics.webhook_retries) == []
    assert producer.on(worker.topics.dead_letters) == []
    assert worker.refused == 6 and worker.exhausted == 0


async def test_the_allow_list_lets_an_operator_call_internal_hosts(
    receiver: Receiver, workers: list[WebhookDispatcher]
) -> None:
    by_address = dispatcher(workers, Producer(), webhook_allowed_hosts=["127.0.0.0/8"])
    outcomes = await deliver(by_address, ep("ip", receiver.url("ip")))
    assert [o["outcome"] for o in outcomes] == ["delivered"]
    by_name = dispatcher(workers, Producer(), webhook_allowed_hosts=["localhost"])
    outcomes = await deliver(
        by_name, ep("name", receiver.url("name", "localhost")), ep("ip2", receiver.url("ip2"))
    )
    assert {o["endpointId"]: o["outcome"] for o in outcomes} == {
        "name": "delivered",
        "ip2": "refused",
    }
    assert len(receiver.calls["ip"]) == 1 and len(receiver.calls["name"]) == 1
    assert receiver.calls["ip2"] == []


class FixedResolver(AbstractResolver):
    """Answers from a table, counting lookups (a name may resolve differently every time)."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in addresses
        ]

    async def close(self) -> None:
        pass


async def test_the_connection_goes_to_the_address_that_was_checked(
    receiver: Receiver, workers: list[WebhookDispatcher]
) -> None:
    """One lookup per connection, checked, and the connector dials what it returned: a name
    that answers a permitted address first and a refused one next (DNS rebinding) reaches the
    permitted one, and refused addresses among the answers are never dialled."""
    producer = Producer()
    worker = dispatcher(workers, producer, webhook_allowed_hosts=["127.0.0.1"])
    assert worker._session is not None
    await worker._session.close()
    inner = FixedResolver([["127.0.0.1", "10.9.9.9", "169.254.169.254"], ["10.9.9.9"]])
    worker._session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            resolver=GuardedResolver(worker.allowed, inner), use_dns_cache=False, force_close=True
        )
    )
    outcomes = await deliver(worker, ep("rebind", receiver.url("rebind", "hooks.rebind.test")))
    assert [o["outcome"] for o in outcomes] == ["delivered"]
    assert inner.lookups == 1 and len(receiver.calls["rebind"]) == 1
    outcomes = await deliver(worker, ep("again", receiver.url("again", "hooks.rebind.test")))
    assert outcomes[0]["outcome"] == "refused" and "10.9.9.9 (private)" in outcomes[0]["error"]
    assert inner.lookups == 2 and receiver.calls["again"] == []


async def test_a_resolver_refusal_is_not_an_os_error_that_aiohttp_would_retry() -> None:
    resolver = GuardedResolver(AllowList(), FixedResolver([["127.0.0.1"]]))
    with pytest.raises(TargetRefused) as refused:
        await resolver.resolve("x.test", 80)
    assert not isinstance(refused.value, OSError)


async def test_redirects_are_not_followed_and_answers_are_read_only_a_little(
    receiver: Receiver, workers: list[WebhookDispatcher]
) -> None:
    producer = Producer()
    worker = dispatcher(workers, producer, webhook_allowed_hosts=["127.0.0.1"])
    started = asyncio.get_running_loop().time()
    outcomes = await deliver(
        worker, ep("redirect", receiver.url("redirect")), ep("big", receiver.url("big"))
    )
    assert asyncio.get_running_loop().time() - started < 5
    redirect, big = sorted(outcomes, key=lambda o: o["endpointId"], reverse=True)
    assert redirect["outcome"] == "exhausted" and redirect["httpStatus"] == 302
    assert redirect["error"] == "HTTP 302 Found (redirects are not followed)"
    assert receiver.calls["elsewhere"] == []
    assert big["outcome"] == "exhausted" and big["httpStatus"] == 500
    # The receiver's reason, printable and short; nothing of its body.
    assert big["error"] == "HTTP 500 " + "Oops " + "x" * 56 + "..."
    assert b"zzz" not in b"".join(value for _, _, value in producer.sent)
    assert sanitised("a\r\nb\x00c" + "d" * 500) == "a b c" + "d" * 192 + "..."


async def test_per_message_endpoints_use_a_secret_ref_only_on_the_hosts_it_is_bound_to(
    receiver: Receiver, workers: list[WebhookDispatcher]
) -> None:
    producer = Producer()
    worker = dispatcher(
        workers,
        producer,
        webhook_allowed_hosts=["127.0.0.1", "localhost"],
        webhook_secrets={"acme": SECRET, "ops": "whsec-ops"},
        webhook_headers={"acme": {"Authorization": TOKEN}},
        webhook_secret_hosts={"acme": ["localhost"]},
        webhooks=[ep("ops", receiver.url("ops"), secretRef="ops", events=["message.failed"])],
    )
    outcomes = await deliver(
        worker,
        ep("bound", receiver.url("bound", "localhost"), secretRef="acme"),
        ep("elsewhere", receiver.url("elsewhere"), secretRef="acme"),  # 127.0.0.1: not bound
        ep("ops-secret", receiver.url("ops-secret", "localhost"), secretRef="ops"),
        ep("unknown", receiver.url("unknown", "localhost"), secretRef="nope"),
        # Named like the operator's endpoint, but not it: a producer's, with its rules.
        ep("ops", receiver.url("ops-clone", "localhost"), secretRef="ops"),
    )
    by_id = {o["endpointId"]: o for o in outcomes}
    assert by_id["bound"]["outcome"] == "delivered"
    (headers,) = receiver.calls["bound"]
    body = receiver.bodies["bound"][0]
    assert headers[SIGNATURE_HEADER] == sign(SECRET, int(headers[TIMESTAMP_HEADER]), body)
    assert headers["Authorization"] == TOKEN
    assert by_id["elsewhere"]["outcome"] == "refused"
    assert (
        "secretRef 'acme' may not be used by a per-message endpoint on host '127.0.0.1'"
        in (by_id["elsewhere"]["error"])
    )
    assert by_id["ops-secret"]["outcome"] == "refused"
    assert by_id["unknown"]["error"] == "secretRef 'nope' is not configured"
    assert receiver.calls["elsewhere"] == receiver.calls["ops-secret"] == []
    # The operator's endpoint does not want message.sent: the clone got the delivery, under
    # the rules of a per-message endpoint.
    assert by_id["ops"]["outcome"] == "refused" and receiver.calls["ops-clone"] == []

    # A retry record claiming to be the operator's endpoint, at another URL: a producer's.
    clone = WebhookEndpoint.model_validate(ep("ops", receiver.url("ops-clone"), secretRef="ops"))
    (delivery,) = deliveries_for(change("m-2"), [clone], datetime.now(UTC))
    await worker._guarded(_source(encode(delivery)), delivery)
    assert producer.on(worker.topics.webhook_deliveries)[-1]["outcome"] == "refused"
    assert receiver.calls["ops-clone"] == []
    # The operator's own endpoint may use its secret anywhere (it is the operator's choice).
    operator = worker.settings.webhooks[0]
    failed = {**change("m-3"), "status": "FAILED"}
    (delivery,) = deliveries_for(failed, [operator], datetime.now(UTC))
    await worker._guarded(_source(encode(delivery)), delivery)
    assert producer.on(worker.topics.webhook_deliveries)[-1]["outcome"] == "delivered"
    assert receiver.calls["ops"][0][SIGNATURE_HEADER].startswith("v1=")
    # Secrets are sent, never published.
    published = b"".join(value for _, _, value in producer.sent)
    assert SECRET.encode() not in published and TOKEN.encode() not in published


def _source(value: bytes) -> Any:
    from deliverytrack.streams.boundary import Source

    return Source("retries", 0, 0, b"m", value)


async def test_our_headers_win_over_a_header_set_even_if_one_named_them(
    receiver: Receiver, workers: list[WebhookDispatcher]
) -> None:
    settings = Settings(
        webhook_allowed_hosts=["127.0.0.1"],
        webhook_secrets={"acme": SECRET},
        webhook_headers={"acme": {"X-Custom": "1"}},
        webhooks=[ep("ops", receiver.url("ops"), secretRef="acme")],
    )
    # Validation refuses such a header set; built around it, the dispatcher still wins.
    forged = {"X-Custom": "1", "x-deliverytrack-signature": "v1=forged", "content-type": "a/b"}
    settings.webhook_headers["acme"] = {
        name: type(settings.webhook_secrets["acme"])(value) for name, value in forged.items()
    }
    worker = WebhookDispatcher(settings)
    worker._producer = Producer()  # type: ignore[assignment]
    worker._session = worker.new_session()
    workers.append(worker)
    await deliver(worker)
    (headers,) = receiver.calls["ops"]
    assert headers["Content-Type"] == "application/json" and headers["X-Custom"] == "1"
    body = receiver.bodies["ops"][0]
    assert headers[SIGNATURE_HEADER] == sign(SECRET, int(headers[TIMESTAMP_HEADER]), body)

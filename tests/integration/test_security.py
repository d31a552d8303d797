"""Secure by default, against real workers (real broker, real listeners):

- every API route answers 401 (JSON) without a token or with a wrong one; /health tells a
  probe its status only;
- the webhook listener answers the ingress (and a bare /health) and nothing else, whatever
  token is sent; a signed report sent there is folded;
- token rotation: each of two tokens works, and two workers mid-rotation (one knows only the
  new token) still gather each other's partitions through /internal/query;
- number filters need a PII token while personal data protection is on;
- the CLI sends its token (DELIVERYTRACK_API_TOKEN); without one it exits 2 with the 401;
- a worker asked to serve an open API beyond loopback refuses to start, and says why;
- a query past its scan budget is refused (422); deep lists page on with ``after``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
import pytest

from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import DeliveryTrackClient, QueryFailed
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.integration.conftest import ROOT, WorkerProcess, free_port, settings_env
from tests.integration.support import send

pytestmark = pytest.mark.integration

OLD = "old-token-AAAAAAAAAAAAAAAAAAAAAAAA"
NEW = "new-token-BBBBBBBBBBBBBBBBBBBBBBBB"
PII = "pii-token-CCCCCCCCCCCCCCCCCCCCCCCC"
WRONG = "wrong-token-DDDDDDDDDDDDDDDDDDDDDD"
SECRET = "whsec-security"

API_ROUTES = [
    ("GET", "/records"),
    ("GET", "/records?status=DELIVERED&limit=5"),
    ("GET", "/records/count"),
    ("GET", "/records/count-by?groupBy=providerId,status"),
    ("GET", "/records/due?now=2030-01-01T00:00:00Z"),
    ("GET", "/records/sec-1"),
    ("GET", "/records/sec-1/history"),
    ("GET", "/stats"),
    ("GET", "/stats?from=2020-01-01T00:00:00Z&to=2040-01-01T00:00:00Z"),
    ("GET", "/stats/summary?from=2020-01-01T00:00:00Z&to=2040-01-01T00:00:00Z"),
    ("POST", "/internal/query"),
    ("POST", "/admin/due-scan"),
    ("GET", "/"),
    ("GET", "/router/"),
    ("GET", "/no/such/route"),
    ("DELETE", "/records/sec-1"),
]
INTERNAL = orjson.dumps({"partitions": [0, 1, 2, 3], "op": "rows", "filter": {}})


def secured_settings(settings_factory: Any, tokens: str = f"{OLD},{NEW}") -> Settings:
    settings: Settings = settings_factory(
        api_tokens=tokens,
        api_pii_tokens=PII,
        pii={"enabled": True, "storePlain": False, "activeKid": "k1", "hashKeys": {"k1": "hk"}},
        providers={"gen": {"kind": "none", "webhookSecret": SECRET}},
        polling={"initialDelayMs": 3_600_000, "intervalMs": 3_600_000},
    )
    return settings


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.request(method, url, data=body, headers=headers) as response:
        raw = await response.read()
        body_json = orjson.loads(raw) if response.content_type == "application/json" else raw
        return response.status, body_json, response.headers


async def count(session: aiohttp.ClientSession, worker: WorkerProcess, token: str) -> Any:
    status, body, _ = await request(session, "GET", f"{worker.base_url}/records/count", token)
    assert status == 200, body
    return body["count"]


async def test_api_needs_a_token_and_the_webhook_listener_serves_only_the_ingress(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = secured_settings(settings_factory)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    for i in range(5):
        await io.send(io.topics.send_results, f"sec-{i}", send(f"sec-{i}", f"pm-sec-{i}", "gen"))
    await worker.arecord("sec-4")
    api, hooks = worker.base_url, worker.webhook_url

    async with aiohttp.ClientSession() as session:
        # 401 on every API route, without a token or with a wrong one.
        for method, path in API_ROUTES:
            for token in (None, WRONG, OLD[:-1], f"{OLD},{NEW}"):
                body = INTERNAL if path == "/internal/query" else None
                status, answer, headers = await request(session, method, api + path, token, body)
                assert status == 401, (method, path, token, status, answer)
                assert isinstance(answer["error"], str) and answer["error"]
                assert headers["WWW-Authenticate"].startswith("Bearer")
            # ...and not 401 with either token of the rotation.
            for token in (OLD, NEW, PII):
                body = INTERNAL if path == "/internal/query" else None
                status, answer, _ = await request(session, method, api + path, token, body)
                assert status != 401, (method, path, token, answer)
        assert await count(session, worker, OLD) == await count(session, worker, NEW) == 5

        # /health: the status for a probe, the details for a token.
        status, answer, _ = await request(session, "GET", f"{api}/health")
        assert (status, answer) == (200, {"status": "ok"})
        status, answer, _ = await request(session, "GET", f"{api}/health", NEW)
        assert status == 200 and answer["apiRequestsRefused"] >= 4 * len(API_ROUTES)
        assert "owners" in answer and "events" in answer

        # The webhook listener: the ingress and a bare /health, nothing of the API.
        for method, path in API_ROUTES:
            for token in (None, OLD, PII):
                body = INTERNAL if path == "/internal/query" else None
                status, answer, _ = await request(session, method, hooks + path, token, body)
                assert status in (404, 405), (method, path, token, status, answer)
        status, answer, _ = await request(session, "GET", f"{hooks}/health", OLD)
        assert (status, answer) == (200, {"status": "ok"})
        report = orjson.dumps({"providerMessageId": "pm-sec-1", "status": "DELIVERED"})
        stamp = int(time.time())
        signed = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(SECRET, stamp, report)}
        status, answer, _ = await request(
            session, "POST", f"{api}/webhooks/gen", NEW, report, signed
        )
        assert status == 404  # not on the API listener
        status, answer, _ = await request(session, "POST", f"{hooks}/webhooks/gen", None, report)
        assert status == 401  # unsigned: the provider's own credentials, no API token
        status, answer, _ = await request(
            session, "POST", f"{hooks}/webhooks/gen", None, report, signed
        )
        assert status == 200 and answer["accepted"] == 1
        record = await worker.arecord("sec-1", lambda r: r["status"] == "DELIVERED", 30)
        assert record["messageId"] == "sec-1"

        # The phone-number oracle: number filters need a PII token.
        path = f"{api}/records/count?to=010-1234-5678"
        status, answer, _ = await request(session, "GET", path, OLD)
        assert status == 403 and "DELIVERYTRACK_API_PII_TOKENS" in answer["error"]
        status, answer, _ = await request(session, "GET", path, PII)
        assert (status, answer) == (200, {"count": 5})
    assert worker.stop() == 0


def run_cli(settings: Settings, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = settings_env(settings)
    env.pop("DELIVERYTRACK_API_TOKENS", None)  # the CLI's own token only
    env.pop("DELIVERYTRACK_API_PII_TOKENS", None)
    if token is not None:
        env["DELIVERYTRACK_API_TOKEN"] = token
    return subprocess.run(  # noqa: S603 - our interpreter and package
        [sys.executable, "-m", "deliverytrack", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_cli_sends_its_token(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = secured_settings(settings_factory)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    await io.send(io.topics.send_results, "cli-1", send("cli-1", "pm-cli-1", "gen"))
    await worker.arecord("cli-1")
    url = ["--url", worker.base_url]
    done = await asyncio.to_thread(run_cli, settings, "count", *url, token=NEW)
    assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr
    done = await asyncio.to_thread(run_cli, settings, "get", "cli-1", "--json", *url, token=OLD)
    assert done.returncode == 0 and orjson.loads(done.stdout)["messageId"] == "cli-1"
    done = await asyncio.to_thread(run_cli, settings, "count", *url, token=None)
    assert done.returncode == 2 and "HTTP 401" in done.stderr and "Bearer" in done.stderr
    done = await asyncio.to_thread(run_cli, settings, "count", *url, "--token", WRONG, token=None)
    assert done.returncode == 2 and "invalid token" in done.stderr
    assert WRONG not in done.stderr


async def test_two_workers_mid_rotation_still_gather_each_others_partitions(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, tmp_path: Any
) -> None:
    """Rotation's last step rolling out: worker A still sends OLD first, worker B accepts only
    NEW. A's calls to B are refused, retried with NEW and answered; counts stay whole."""
    first = secured_settings(settings_factory, tokens=f"{OLD},{NEW}")
    second = first.model_copy(
        update={
            "api_tokens": Settings(api_tokens=NEW).api_tokens,
            "web_port": free_port(),
            "webhook_port": free_port(),
            "data_dir": tmp_path / "data-b",
        }
    )
    a, b = worker_factory(first), worker_factory(second)
    await asyncio.gather(a.astart(), b.astart())
    io = await kafka_io_factory(first)
    for i in range(40):
        await io.send(io.topics.send_results, f"rot-{i}", send(f"rot-{i}", f"pm-rot-{i}", "gen"))
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as session:
        while True:
            _, ha = await a.aget("/health")
            _, hb = await b.aget("/health")
            shared = (ha or {}).get("readyPartitions") and (hb or {}).get("readyPartitions")
            if shared and len(set(ha["owners"].values())) == 2:
                try:
                    if await count(session, a, NEW) == 40 and await count(session, b, NEW) == 40:
                        break
                except AssertionError:
                    pass  # 503 while partitions move
            if time.monotonic() > deadline:
                pytest.fail(f"the two workers never answered 40: {ha} {hb}")
            await asyncio.sleep(0.3)
        # Both sides gathered from the other: A with its second token, B with its only one.
        assert await count(session, a, OLD) == 40
        _, hb = await b.aget("/health")
        assert hb["apiRequestsRefused"] >= 1  # A's first call, with OLD (nobody else sent it)
        status, answer, _ = await request(session, "GET", f"{b.base_url}/records/count", OLD)
        assert status == 401  # B no longer accepts OLD
    assert "accepts none of our" not in a.log_tail(400)


def test_a_worker_does_not_serve_an_open_api_beyond_loopback(settings_factory: Any) -> None:
    settings: Settings = settings_factory(api_tokens=())
    env = settings_env(settings)
    env["DELIVERYTRACK_WEB_HOST"] = "0.0.0.0"  # noqa: S104 - refused, never bound
    env.pop("DELIVERYTRACK_API_TOKENS", None)
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "deliverytrack", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "refusing to serve the API on '0.0.0.0'" in done.stderr
    assert "DELIVERYTRACK_API_TOKENS" in done.stderr


async def test_queries_are_bounded_and_page_on_with_after(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    """A scan past the worker's budget is refused (422, with how to narrow it) instead of
    running on; deep pages go by keyset (nextAfter), each as cheap as the first."""
    settings: Settings = settings_factory(
        query_scan_budget=1_000,
        polling={"initialDelayMs": 3_600_000, "intervalMs": 3_600_000},
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    total = 1_200
    for i in range(total):
        await io.send(io.topics.send_results, f"b-{i:04d}", send(f"b-{i:04d}", f"pm-b-{i}"))
    async with DeliveryTrackClient(worker.base_url, settings) as client:
        deadline = time.monotonic() + 60
        while await client.count_records() < total:
            assert time.monotonic() < deadline, "the records never arrived"
            await asyncio.sleep(0.2)
        # Counters answer this, whatever the budget; a filter no index answers is a scan.
        assert await client.count_records({"status": ["SENT", "PENDING", "QUEUED"]}) == total
        with pytest.raises(QueryFailed) as refused:
            await client.count_records({"toHash": ["0" * 64]})
        assert refused.value.status == 422
        assert "more than 1,000 records" in refused.value.message
        with pytest.raises(QueryFailed) as refused:
            await client.list_records(limit=100, offset=9_901)
        assert refused.value.status == 400 and "nextAfter" in refused.value.message
        # Paging with after: every record once, in order, 100 at a time.
        keys = [(r.requested_at, r.message_id) async for r in client.iter_records(page_size=100)]
        assert keys == sorted(keys) and len(keys) == total
        assert {mid for _, mid in keys} == {f"b-{i:04d}" for i in range(total)}
        with pytest.raises(QueryFailed) as refused:  # one page of them all reads past the budget
            await client.list_records(limit=total)
        assert refused.value.status == 422
        _, health = await worker.aget("/health")
        assert health["status"] == "ok"
    assert worker.stop() == 0

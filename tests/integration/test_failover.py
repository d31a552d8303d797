"""API failover on the real broker: once for an eligible AlimTalk failure, never for the
ineligible ones, also after a restart and after a replay."""

from __future__ import annotations

import asyncio
from typing import Any

from deliverytrack.models.enums import FallbackChannel, MessageType
from deliverytrack.models.enums import TrackingStatus as S
from deliverytrack.models.events import FailoverRequest, SendWarning
from tests.factories import send_recorded_factory, update_status_factory
from tests.integration.test_replay_cli import run_cli


def alimtalk(message_id: str, warning: str | None = "FAILOVER_PARTIAL_PROVIDER") -> Any:
    return send_recorded_factory(
        message_id,
        provider_id="solapi",
        type=MessageType.ALIMTALK,
        failover=FailoverRequest(
            enabled=True, fallback_channel=FallbackChannel.LMS, fallback_content="Your code: 1"
        ),
        warnings=(SendWarning(code=warning),) if warning else (),
    )


async def test_failover_fires_once_and_survives_restart_and_replay(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = settings_factory(api_failover={"enabled": True})
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    topics = io.topics
    cases = {
        "fo-eligible": (alimtalk("fo-eligible"), "3104"),
        "fo-no-warning": (alimtalk("fo-no-warning", warning=None), "3104"),
        "fo-other-failure": (alimtalk("fo-other-failure"), "3059"),
    }
    for mid, (send, _) in cases.items():
        await io.send(topics.send_results, mid, send)
    for mid, (_, code) in cases.items():
        failed = update_status_factory(S.FAILED, mid, provider_status_code=code)
        await io.send(topics.commands, mid, failed)
    for mid in cases:
        await worker.arecord(mid, lambda r: r["status"] == "FAILED")
    requests = await io.read_json(topics.failover_requests, lambda es: len(es) >= 1)
    (request,) = requests
    assert request["messageId"] == "fo-eligible"
    assert request["fallbackMessageId"] == "fo-eligible:api-fallback"
    assert request["fallbackType"] == "LMS" and request["text"] == "Your code: 1"

    # The sender sends the fallback and publishes its send result, linked to the original.
    fallback = send_recorded_factory(
        request["fallbackMessageId"],
        provider_id="sms-provider",
        type=MessageType.LMS,
        failover_of="fo-eligible",
    )
    await io.send(topics.send_results, fallback.message_id, fallback)
    done = await worker.arecord(
        "fo-eligible",
        lambda r: r["metadata"]["failover"]["apiAttempt"].get("outcome") == "sent",
    )
    assert done["metadata"]["failover"]["apiAttempt"]["fallbackProviderId"] == "sms-provider"
    linked = await worker.arecord(fallback.message_id)
    assert linked["metadata"]["failoverOf"] == "fo-eligible"
    assert worker.stop() == 0

    # Restart, and the provider reports the failure again: nothing new.
    worker = await worker_factory(settings).astart()
    again = update_status_factory(S.FAILED, "fo-eligible", provider_status_code="3104")
    await io.send(topics.commands, "fo-eligible", again)
    await io.send(
        topics.commands, "fo-no-warning", update_status_factory(S.CLICKED, "fo-no-warning")
    )
    await asyncio.sleep(2.0)
    assert worker.stop() == 0
    code, _, err = await run_cli(settings, "replay", "--verify", "--app-id", "fo-replay")
    assert code == 0, err[-3000:]
    await asyncio.sleep(0.5)
    requests = await io.read_json(topics.failover_requests, lambda es: True)
    assert [r["messageId"] for r in requests] == ["fo-eligible"]

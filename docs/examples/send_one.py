"""Send one message by hand and watch the worker track it to DELIVERED.

The README's "Running it yourself" starts a broker, the simulated provider and a worker that
knows the provider as ``sim``; then:

    .venv/bin/python docs/examples/send_one.py

sends an SMS through the simulated provider (``POST /v1/messages``: it answers with its own id
for the message and delivers it a second later), publishes the send result to Kafka with
``requestedAt`` now and the provider's id, and waits until the worker's query API shows the
record DELIVERED (its first status check comes ``DELIVERYTRACK_POLLING__INITIAL_DELAY_MS``
after the send). Configuration comes from the same ``DELIVERYTRACK_*`` variables as the worker
(broker, topic prefix, API token). tests/integration/test_docs_example.py runs this file.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import SendRecorded
from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import DeliveryTrackClient
from deliverytrack.streams.providers.simulated import SimulatedProvider


async def send_one(provider_url: str, api_url: str, timeout: float) -> None:
    to = "01012345678"
    provider = SimulatedProvider("sim", provider_url)
    try:  # the message, sent "through the provider", which answers with its id for it
        accepted = await provider.send(to, "SMS", outcome="DELIVERED", delay_ms=1_000)
    finally:
        await provider.close()
    message_id = f"order-{uuid.uuid4().hex[:8]}"
    async with DeliveryTrackClient(api_url, Settings()) as client:
        await client.record_send(
            SendRecorded(
                event_id=str(uuid.uuid4()),
                message_id=message_id,
                provider_id="sim",
                provider_message_id=accepted["providerMessageId"],
                type=MessageType.SMS,
                to=to,
                from_="0212345678",
                requested_at=datetime.now(UTC),
            )
        )
        print(f"sent {message_id} (provider id {accepted['providerMessageId']})", flush=True)
        record = await client.wait_for(
            message_id, lambda r: r.status is TrackingStatus.DELIVERED, timeout=timeout
        )
    print(message_id, record.status.value, [h.status.value for h in record.status_history])


def main() -> None:
    parser = argparse.ArgumentParser(description="Send one message and watch it tracked.")
    parser.add_argument("--provider", default="http://127.0.0.1:8089", help="simulated provider")
    parser.add_argument("--api", default="http://127.0.0.1:6066", help="the worker's API")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    args = parser.parse_args()
    asyncio.run(send_one(args.provider, args.api, args.timeout))


if __name__ == "__main__":
    main()

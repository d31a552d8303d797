"""Webhook secret rotation works for every adapter: ``webhookSecret`` may hold several
comma-separated secrets (the old and the new one while providers are switched over), for the
generic signed format as for SOLAPI's and IWINV's shared tokens."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deliverytrack.models.settings import Settings
from deliverytrack.streams.providers.base import WebhookRejected
from deliverytrack.streams.webhooks.ingress import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    build_webhook_adapters,
    sign,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
OLD, NEW = "whsec-old-0123456789", "whsec-new-9876543210"


def adapters() -> dict[str, object]:
    rotating = f"{OLD}, {NEW}"
    return build_webhook_adapters(  # type: ignore[return-value]
        Settings(
            providers={
                "solapi": {
                    "kind": "solapi",
                    "apiKey": "k",
                    "apiSecret": "s",
                    "webhookSecret": rotating,
                },
                "iwinv": {"kind": "iwinv", "apiKey": "k", "webhookSecret": rotating},
                "acme": {
                    "kind": "generic",
                    "baseUrl": "https://acme.example",
                    "webhookSecret": rotating,
                },
            }
        )
    )


@pytest.mark.parametrize("provider_id", ["solapi", "iwinv"])
@pytest.mark.parametrize("secret", [OLD, NEW])
def test_native_adapters_accept_each_secret_of_a_rotation(provider_id: str, secret: str) -> None:
    adapter = adapters()[provider_id]
    adapter.verify({"X-Webhook-Token": secret}, b"[]", NOW)  # type: ignore[attr-defined]
    adapter.verify({"Authorization": f"Bearer {secret}"}, b"[]", NOW)  # type: ignore[attr-defined]


@pytest.mark.parametrize("provider_id", ["solapi", "iwinv"])
@pytest.mark.parametrize(
    "token", [f"{OLD},{NEW}", f"{OLD}, {NEW}", "", ",", OLD + NEW, "whsec-old", NEW + " x"]
)
def test_native_adapters_refuse_anything_but_one_whole_secret(provider_id: str, token: str) -> None:
    adapter = adapters()[provider_id]
    with pytest.raises(WebhookRejected) as refused:
        adapter.verify({"X-Webhook-Token": token}, b"[]", NOW)  # type: ignore[attr-defined]
    assert refused.value.status == 401


@pytest.mark.parametrize("secret", [OLD, NEW])
def test_the_generic_adapter_accepts_each_secret_of_a_rotation(secret: str) -> None:
    stamp = int(NOW.timestamp())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(secret, stamp, b"[]")}
    adapters()["acme"].verify(headers, b"[]", NOW)  # type: ignore[attr-defined]


def test_a_blank_rotation_list_is_no_secret_and_refuses_everything() -> None:
    from deliverytrack.streams.providers.solapi import check_shared_secret

    for blank in ("", " , ", ","):
        with pytest.raises(WebhookRejected, match="no webhookSecret"):
            check_shared_secret("solapi", blank, {"X-Webhook-Token": ","})

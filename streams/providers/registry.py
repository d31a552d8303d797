"""Provider adapters by providerId, built from settings."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from deliverytrack.models.events import ProviderStatus
from deliverytrack.models.settings import ProviderConfig, Settings
from deliverytrack.streams.providers.base import StatusProvider, StatusQuery, WebhookAdapter


class NoStatusApi:
    """A provider that exists but has no status API (k-msg: no ``getDeliveryStatus``)."""

    supports_status = False

    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        raise NotImplementedError(f"{self.provider_id} has no status API")

    async def close(self) -> None:
        return None


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_provider(
    provider_id: str, config: ProviderConfig, default_timeout_s: float
) -> StatusProvider:
    timeout_s = config.timeout_ms / 1000 if config.timeout_ms else default_timeout_s
    match config.kind:
        case "none":
            return NoStatusApi(provider_id)
        case "simulated" | "generic":
            from deliverytrack.streams.providers.simulated import SimulatedProvider

            if not config.base_url:
                raise ValueError(f"provider {provider_id!r}: kind {config.kind!r} needs baseUrl")
            return SimulatedProvider(
                provider_id,
                config.base_url,
                timeout_s=timeout_s,
                bearer_token=_secret(config.api_key),
            )
        case "solapi":
            from deliverytrack.streams.providers.solapi import SOLAPI_BASE_URL, SolapiProvider

            api_key, api_secret = _secret(config.api_key), _secret(config.api_secret)
            if not api_key or not api_secret:
                raise ValueError(
                    f"provider {provider_id!r}: kind 'solapi' needs apiKey and apiSecret"
                )
            return SolapiProvider(
                provider_id,
                api_key=api_key,
                api_secret=api_secret,
                base_url=config.base_url or SOLAPI_BASE_URL,
                timeout_s=timeout_s,
            )
        case "iwinv":
            from deliverytrack.streams.providers.iwinv import (
                IWINV_ALIMTALK_BASE_URL,
                IWINV_SMS_BASE_URL,
                IwinvProvider,
            )

            if config.api_key is None and config.sms_api_key is None:
                raise ValueError(
                    f"provider {provider_id!r}: kind 'iwinv' needs apiKey (AlimTalk) "
                    "and/or smsApiKey + smsAuthKey + smsCompanyId (SMS)"
                )
            return IwinvProvider(
                provider_id,
                api_key=_secret(config.api_key),
                sms_api_key=_secret(config.sms_api_key),
                sms_auth_key=_secret(config.sms_auth_key),
                sms_company_id=config.sms_company_id,
                base_url=config.base_url or IWINV_ALIMTALK_BASE_URL,
                sms_base_url=config.sms_base_url or IWINV_SMS_BASE_URL,
                x_forwarded_for=config.x_forwarded_for,
                timeout_s=timeout_s,
            )


def build_registry(settings: Settings) -> dict[str, StatusProvider]:
    default_timeout_s = settings.polling.provider_timeout_ms / 1000
    return {
        provider_id: build_provider(provider_id, config, default_timeout_s)
        for provider_id, config in settings.providers.items()
    }


def build_webhook_adapter(provider_id: str, config: ProviderConfig) -> WebhookAdapter | None:
    """The inbound delivery-report adapter of one provider, ``None`` if its kind has none here.

    solapi/iwinv do not sign their reports: the adapter checks ``webhookSecret`` (and refuses
    every request with 401 while it is not configured).
    """
    match config.kind:
        case "solapi":
            from deliverytrack.streams.providers.solapi import SolapiWebhookAdapter

            return SolapiWebhookAdapter(provider_id, webhook_secret=_secret(config.webhook_secret))
        case "iwinv":
            from deliverytrack.streams.providers.iwinv import IwinvWebhookAdapter

            return IwinvWebhookAdapter(provider_id, webhook_secret=_secret(config.webhook_secret))
        case _:
            # Other kinds: the generic signed adapter (streams/webhooks/ingress.py) where a
            # webhookSecret is configured.
            return None


def build_webhook_adapters(settings: Settings) -> dict[str, WebhookAdapter]:
    """providerId -> native WebhookAdapter (solapi, iwinv); streams/webhooks/ingress.py adds the
    generic ones for the other kinds."""
    adapters: dict[str, WebhookAdapter] = {}
    for provider_id, config in settings.providers.items():
        adapter = build_webhook_adapter(provider_id, config)
        if adapter is not None:
            adapters[provider_id] = adapter
    return adapters


async def close_registry(registry: Mapping[str, StatusProvider]) -> None:
    for provider in registry.values():
        await provider.close()

"""Provider adapters by providerId, built from settings."""

from __future__ import annotations

from collections.abc import Mapping

from deliverytrack.models.events import ProviderStatus
from deliverytrack.models.settings import ProviderConfig, Settings
from deliverytrack.streams.providers.base import StatusProvider, StatusQuery


class NoStatusApi:
    """A provider that exists but has no status API (k-msg: no ``getDeliveryStatus``)."""

    supports_status = False

    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        raise NotImplementedError(f"{self.provider_id} has no status API")

    async def close(self) -> None:
        return None


def build_provider(
    provider_id: str, config: ProviderConfig, default_timeout_s: float
) -> StatusProvider:
    timeout_s = config.timeout_ms / 1000 if config.timeout_ms else default_timeout_s
    match config.kind:
        case "none":
            return NoStatusApi(provider_id)
        case "simulated":
            from deliverytrack.streams.providers.simulated import SimulatedProvider

            if not config.base_url:
                raise ValueError(f"provider {provider_id!r}: kind 'simulated' needs baseUrl")
            return SimulatedProvider(provider_id, config.base_url, timeout_s=timeout_s)


def build_registry(settings: Settings) -> dict[str, StatusProvider]:
    default_timeout_s = settings.polling.provider_timeout_ms / 1000
    return {
        provider_id: build_provider(provider_id, config, default_timeout_s)
        for provider_id, config in settings.providers.items()
    }


async def close_registry(registry: Mapping[str, StatusProvider]) -> None:
    for provider in registry.values():
        await provider.close()

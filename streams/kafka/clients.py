"""Every Kafka client the project creates connects through here.

:func:`kafka_client_kwargs` gives the keyword arguments an aiokafka producer, consumer or admin
client needs to reach the cluster (bootstrap servers, ``security_protocol``, the TLS context,
SASL mechanism and credentials); :func:`faust_credentials` gives the same to the Faust app.
A Kafka client built anywhere else would silently connect in plaintext:
``tests/unit/streams/test_kafka_config.py`` checks that every constructor call in the package
goes through this module.

Settings (``DELIVERYTRACK_KAFKA_*``): ``SECURITY_PROTOCOL`` (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL), ``SSL_CAFILE`` (the CA bundle that signed the brokers' certificates; default: the
system's), ``SSL_CERTFILE``/``SSL_KEYFILE``/``SSL_KEY_PASSWORD`` (a client certificate, for
brokers that require one), ``SSL_CHECK_HOSTNAME`` (default true), ``SASL_MECHANISM`` (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512), ``SASL_USERNAME`` and ``SASL_PASSWORD``.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from deliverytrack.models.settings import Settings


class KafkaConfigError(RuntimeError):
    """The Kafka TLS settings cannot be used (a file is missing or is not what it should be)."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL connections (None for the others): the broker's
    certificate is verified against ``kafka_ssl_cafile`` (or the system's CAs) and, unless
    turned off, its host name; TLS 1.2 at least."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise KafkaConfigError(f"kafka_ssl_cafile {cafile}: cannot be loaded ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                password.get_secret_value() if password is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaConfigError(
                f"kafka_ssl_certfile {settings.kafka_ssl_certfile} / kafka_ssl_keyfile "
                f"{settings.kafka_ssl_keyfile}: cannot be loaded ({type(exc).__name__}: "
                f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or 'invalid'})"
            ) from None
    return context


def kafka_security_kwargs(settings: Settings) -> dict[str, Any]:
    """``security_protocol`` and, as it needs them, ``ssl_context`` and the SASL arguments of
    aiokafka's clients."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password is not None else None,
        )
    return kwargs


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` plus :func:`kafka_security_kwargs`: spread into every
    ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``."""
    return {"bootstrap_servers": settings.bootstrap_servers, **kafka_security_kwargs(settings)}


def faust_credentials(settings: Settings) -> Any:
    """The Faust app's ``broker_credentials`` (None for PLAINTEXT): Faust passes them to every
    client it makes (its producer, consumer and topic creation)."""
    import faust

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password is not None else None,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    return None


# --- the one place Kafka clients are built ---------------------------------------------------


def new_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An aiokafka producer connected as the settings say (``options`` as aiokafka takes them)."""
    return AIOKafkaProducer(**kafka_client_kwargs(settings), **options)


def new_consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer connected as the settings say, subscribed to ``topics`` if any."""
    return AIOKafkaConsumer(*topics, **kafka_client_kwargs(settings), **options)


def new_admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An aiokafka admin client connected as the settings say."""
    return AIOKafkaAdminClient(**kafka_client_kwargs(settings), **options)


def fold_producer(settings: Settings, topic_limit: int | None) -> AIOKafkaProducer:
    """The fold engine's producer: idempotent, every write acked by all replicas, batches no
    larger than the smallest ``max.message.bytes`` of the topics it writes (``topic_limit``)."""
    compression = settings.producer_compression
    return new_producer(
        settings,
        client_id=f"{settings.app_id}-fold",
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.producer_linger_ms,
        compression_type=None if compression == "none" else compression,
        max_batch_size=min(1_048_576, (topic_limit or 1_048_576 + 1_024) - 1_024),
        max_request_size=max(4_194_304, settings.max_message_bytes + 65_536),
    )


def fold_consumer(settings: Settings, group_id: str, assignor: Any) -> AIOKafkaConsumer:
    """The fold engine's consumer: offsets committed by the engine, committed data only,
    partitions assigned by ``assignor`` (co-partitioned inputs on one worker), fetches large
    enough for a batch of the largest inputs."""
    return new_consumer(
        settings,
        client_id=f"{settings.app_id}-fold",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        partition_assignment_strategy=(assignor,),
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
        max_partition_fetch_bytes=max(4_194_304, 2 * settings.max_message_bytes),
        fetch_max_bytes=16_777_216,
        max_poll_interval_ms=600_000,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )


async def refresh_metadata(consumer: AIOKafkaConsumer, *topics: str) -> None:
    """Make a fresh consumer know ``topics`` (all topics if none): aiokafka has no public call
    for it, so this is the one place that uses its client's private API."""
    client = consumer._client  # noqa: SLF001 - no public equivalent in aiokafka 0.10-0.14
    if not topics:
        await client.force_metadata_update()
    for topic in topics:
        await client._wait_on_metadata(topic)  # noqa: SLF001 - as above

"""Configuration: environment variables ``DELIVERYTRACK_*`` (pydantic-settings)."""

from __future__ import annotations

import json
import re
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from deliverytrack.models.outbound import (
    WebhookEndpoint,
    allowed_host,
    check_header_set,
    host_pattern,
)
from deliverytrack.models.policy import (
    ApiFailoverPolicy,
    FoldPolicy,
    PiiPolicy,
    PollingPolicy,
    StatusChangeRecord,
    WebhookRawMode,
)
from deliverytrack.models.retention import RetentionPolicy


class ProviderConfig(BaseModel):
    """One provider's status API. ``kind`` selects the adapter; ``none`` has no status API
    (polling it is UNSUPPORTED_PROVIDER, handled by ``unsupportedProviderStrategy``).

    Fields by kind (JSON names are camelCase):

    * ``generic`` (and ``simulated``): ``baseUrl`` (required) of a status API that follows the
      generic contract in the README (``GET {baseUrl}/v1/messages/{providerMessageId}/status``);
      ``apiKey``, if set, is sent as ``Authorization: Bearer <apiKey>``.
    * ``solapi``: ``apiKey`` and ``apiSecret`` (HMAC-SHA256 request signing); ``baseUrl``
      defaults to ``https://api.solapi.com``.
    * ``iwinv``: ``apiKey`` (AlimTalk, sent as ``AUTH: base64(apiKey)``); ``smsApiKey``,
      ``smsAuthKey`` and ``smsCompanyId`` for SMS/LMS/MMS history (``secret:
      base64(smsApiKey&smsAuthKey)``); ``baseUrl`` (AlimTalk) and ``smsBaseUrl`` default to
      IWINV's hosts; ``xForwardedFor`` for accounts bound to a registered IP.
    * ``solapi``/``iwinv`` webhooks: ``webhookSecret``, a shared token the provider's delivery
      reports must carry (``X-Webhook-Token`` header or ``Authorization: Bearer``); without it
      every report to that provider is refused.
    """

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, alias_generator=to_camel, extra="forbid"
    )

    kind: Literal["generic", "simulated", "none", "solapi", "iwinv"]
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    timeout_ms: int | None = Field(default=None, ge=1)
    # IWINV SMS v2 history (k-msg ``smsApiKey``/``smsAuthKey``/``smsCompanyId``).
    sms_base_url: str | None = None
    sms_api_key: SecretStr | None = None
    sms_auth_key: SecretStr | None = None
    sms_company_id: str | None = None
    # IWINV: the registered source IP, when calls go through a proxy.
    x_forwarded_for: str | None = None
    # Inbound delivery reports (webhooks) of solapi/iwinv: the shared secret they must carry.
    webhook_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _one_authorization(self) -> ProviderConfig:
        """A ``user:password@`` in ``baseUrl`` is sent as an Authorization header, which the
        generic ``apiKey`` and SOLAPI's signature are too: the HTTP client refuses both at
        once, on every poll. Refused here, where it is set (the URL is not repeated)."""
        signs = self.kind == "solapi" or (self.kind in ("generic", "simulated") and self.api_key)
        if signs and self.base_url is not None and "@" in self.base_url:
            try:
                parts = urlsplit(self.base_url)
                credentials = parts.username is not None or parts.password is not None
            except ValueError:
                credentials = False
            if credentials:
                raise ValueError(
                    "baseUrl carries a user:password@ and the provider also signs its requests "
                    "(apiKey, or SOLAPI's signature): both are an Authorization header; "
                    "keep one"
                )
        return self


MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 ``b64token``: what may follow ``Bearer `` in an Authorization header."""


def _has_cramjam() -> bool:
    """aiokafka's lz4, zstd and snappy codecs come from cramjam (an optional extra)."""
    return find_spec("cramjam") is not None


class Settings(BaseSettings):
    """Worker settings. Every field can be set as ``DELIVERYTRACK_<FIELD>``.

    Nested polling fields use a double underscore, e.g. ``DELIVERYTRACK_POLLING__INTERVAL_MS``.
    """

    model_config = SettingsConfigDict(
        env_prefix="DELIVERYTRACK_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        # An invalid configuration must not print what was given: it may be a key or a secret.
        hide_input_in_errors=True,
    )

    broker: str = Field(
        default="kafka://127.0.0.1:9092",
        description="Kafka bootstrap servers, 'kafka://host:port[;host:port]'",
    )
    app_id: str = Field(default="deliverytrack", min_length=1)
    data_dir: Path = Path("./data")
    web_host: str = Field(
        default="127.0.0.1",
        description="The API listener (queries, /internal/query, admin): private. A worker "
        "with no API token refuses to bind it to anything but loopback",
    )
    web_port: int = Field(default=6066, ge=0, le=65535)
    webhook_host: str = Field(
        default="127.0.0.1",
        description="The webhook listener: POST /webhooks/{providerId} (and a bare GET "
        "/health), the only routes providers need; the one to expose publicly",
    )
    webhook_port: int = Field(default=6067, ge=0, le=65535)
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Bearer tokens the API listener accepts, comma-separated (several while "
        "one is rotated); workers send them to each other too",
    )
    api_pii_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Tokens that may also filter by phone number (to/from) while personal "
        "data protection is on; accepted everywhere an API token is",
    )
    query_scan_budget: int = Field(
        default=100_000,
        ge=1_000,
        le=100_000_000,
        description="Records one query may read on one worker (a filter the aggregates and "
        "indexes cannot answer reads records one by one); past it the query is refused (422)",
    )
    query_max_answer_bytes: int = Field(
        default=67_108_864,
        ge=1_048_576,
        le=2_147_483_648,
        description="Record bytes one list query may hold on one worker (its offset + limit "
        "records per partition, before the page is cut); past it the query is refused (422)",
    )
    query_concurrent_scans: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Queries reading records one by one at the same time on one worker; more "
        "wait their turn, so the fold on the same event loop keeps most of the CPU",
    )
    advertised_url: str | None = Field(
        default=None,
        description="URL other workers use to reach this worker's query API; default "
        "http://<web host or hostname>:<web port>",
    )
    topic_prefix: str = "deliverytrack."
    partitions: int = Field(default=4, ge=1, description="Partitions of the topics we create")
    replication_factor: int = Field(default=1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Fold engine batching
    fold_batch_max_records: int = Field(default=10_000, ge=1)
    fold_batch_timeout_ms: int = Field(default=50, ge=0)
    producer_linger_ms: int = Field(default=20, ge=0)
    producer_compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        default="none",
        description="Compression of the fold's output batches (status changes, changelog); "
        "lz4, zstd and snappy need the cramjam package",
    )
    record_cache_size: int = Field(
        default=10_000,
        ge=0,
        description="Records the fold keeps decoded in memory, per worker (split evenly over "
        "the partitions it owns; the most recently written are kept). A hit saves decoding "
        "the record from RocksDB (25-70 µs) once per record and batch; each costs ~7 KB of "
        "RSS (10,000: ~70 MB). 0 turns the cache off",
    )
    rocksdb_memory_mb: int = Field(
        default=256,
        ge=8,
        description="RocksDB memory of one worker, all its partitions together: memtables "
        "(up to half of it), data blocks, index and filter blocks share one bounded cache",
    )
    ordering_margin_ms: int = Field(
        default=200,
        ge=0,
        description="The fold waits this long past a topic's last fetch before it trusts that "
        "no older record of that topic is still to come (cross-topic ordering)",
    )
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=5_000)
    consumer_session_timeout_ms: int = Field(default=10_000, ge=1000)
    consumer_heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    broker_unreachable_grace_ms: int = Field(
        default=10_000,
        ge=0,
        description="How long the Kafka cluster may be unreachable before /health answers 503 "
        '"broker unreachable" (a broker restart or leader election shorter than this is not '
        "an outage)",
    )
    shutdown_timeout_ms: int = Field(
        default=5_000,
        ge=100,
        description="The longest a worker takes to stop on SIGTERM/SIGINT whatever the broker "
        "does; past it the process exits at once and the next start recovers as after a crash",
    )
    log_repeat_interval_ms: int = Field(
        default=10_000,
        ge=0,
        description="A repeated warning or error (any Kafka connection error counts as one) "
        "is logged once per this interval, with how many more it stands for; 0 logs each",
    )
    # Kafka connection security: every Kafka client the project creates applies these
    # (streams/kafka/clients.py).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client connects"
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA bundle that signed the brokers' certificates (SSL, SASL_SSL); "
        "default: the system's trusted CAs",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS)"
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="PEM private key of the client certificate"
    )
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Verify that a broker's certificate names the host dialled"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    polling: PollingPolicy = PollingPolicy()
    api_failover: ApiFailoverPolicy = Field(
        default_factory=ApiFailoverPolicy,
        description='k-msg apiFailover, e.g. {"enabled": true, "rulesByProviderId": '
        '{"aligo": {"statusCodes": ["K105"], "messageIncludes": ["not a kakao user"]}}}',
    )
    pii: PiiPolicy = Field(
        default_factory=PiiPolicy,
        description='Personal data, e.g. {"enabled": true, "storePlain": false, "activeKid": '
        '"k1", "hashKeys": {"k1": "<secret>"}, "encryptionKeys": {"k1": "<base64 32 bytes>"}, '
        '"encryptMetadata": true}',
    )
    retention: RetentionPolicy = Field(
        default_factory=RetentionPolicy,
        description='k-msg retention, e.g. {"enabled": true, "preset": "kr-b2b-baseline", '
        '"tenantOverrideDays": {"opsLogs": 30}, "defaultClass": "telecomMetadata"}',
    )
    webhooks: tuple[WebhookEndpoint, ...] = Field(
        default=(),
        description="Outbound webhooks for every message: "
        '[{"id": "ops", "url": "https://...", "events": ["message.failed"], "secretRef": "ops"}]',
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="secretRef -> signing secret of outbound webhooks"
    )
    webhook_headers: dict[str, dict[str, SecretStr]] = Field(
        default_factory=dict,
        description="secretRef -> request headers of outbound webhooks (secrets, e.g. "
        '{"acme": {"Authorization": "Bearer ..."}}); never kept on topics or in records',
    )
    webhook_secret_hosts: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="secretRef -> the hosts a per-message endpoint may use it for (names, "
        "addresses or *.example.com); a secretRef not listed is for operator endpoints only",
    )
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Outbound webhooks: CIDRs, addresses or host names (*.example.com) the "
        "dispatcher may call although they are loopback, private, link-local, ... "
        "(comma-separated)",
    )
    webhook_hold_ms: int = Field(
        default=3_600_000,
        ge=1,
        description="How long a provider report waits for its send result before it is "
        "dead-lettered as unmatched-report",
    )
    webhook_raw: WebhookRawMode = Field(
        default="masked",
        description="What provider reports keep of their raw payload: masked (phone numbers "
        "masked when personal data is protected), none (dropped), full (as received)",
    )
    webhook_ack_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        le=120_000,
        description="Webhook ingress: how long to wait for Kafka to acknowledge a request's "
        "reports before answering 503",
    )
    webhook_body_timeout_ms: int = Field(
        default=30_000,
        ge=100,
        le=600_000,
        description="Webhook ingress: how long a request's body may take to arrive once its "
        "headers have; a slower one is answered 408 and its connection closed",
    )
    http_max_connections: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Open connections each HTTP listener (the API, the webhook ingress) keeps "
        "at most; a connection beyond them is closed at once (slow clients hold theirs)",
    )
    command_hold_ms: int = Field(
        default=3_600_000,
        ge=0,
        le=30 * 86_400_000,
        description="How long a command for a messageId with no record yet waits for its send "
        "result (producers that pipeline sends and commands) before it is dead-lettered as "
        "unknown-message; 0 dead-letters it at once",
    )
    status_change_record: StatusChangeRecord = Field(
        default="full",
        description="What each status change carries: full (the whole record after the "
        "transition, as `record`) or changes (only the record's fields the transition changed, "
        "plus providerId, type and the message's own webhooks, as `changes`): smaller, for "
        "consumers that need only the transition",
    )
    max_input_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        le=8_388_608,
        description="An input value (any topic the worker reads) larger than this is "
        "dead-lettered as too-large without being decoded",
    )
    max_record_bytes: int = Field(
        default=1_048_576,
        ge=16_384,
        le=8_388_608,
        description="The largest record (or correlation state) the fold writes: an input whose "
        "result would be larger is dead-lettered as record-too-large and changes nothing. "
        "Topics the worker creates get max.message.bytes = 2 x this + 64 KiB",
    )
    dead_letter_value_bytes: int = Field(
        default=65_536,
        ge=0,
        le=1_048_576,
        description="How much of an input's value a dead letter keeps (the rest is cut; its "
        "size and SHA-256 are kept)",
    )
    webhook_replay_window_ms: int = Field(
        default=300_000,
        ge=1,
        description="Generic webhooks: how far a signed timestamp may be from the worker's clock",
    )
    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict,
        description="providerId -> status API, e.g. "
        '{"sim": {"kind": "simulated", "baseUrl": "http://127.0.0.1:8089"}}',
    )

    @field_validator("webhooks")
    @classmethod
    def _no_literal_headers(cls, value: tuple[WebhookEndpoint, ...]) -> tuple[WebhookEndpoint, ...]:
        for endpoint in value:
            if endpoint.headers_dropped:
                raise ValueError(
                    f"endpoint {endpoint.id!r}: headers are secrets: put them in "
                    "DELIVERYTRACK_WEBHOOK_HEADERS under the endpoint's secretRef"
                )
        return value

    @field_validator("webhook_headers")
    @classmethod
    def _check_webhook_headers(
        cls, value: dict[str, dict[str, SecretStr]]
    ) -> dict[str, dict[str, SecretStr]]:
        for ref, headers in value.items():
            try:
                check_header_set({name: v.get_secret_value() for name, v in headers.items()})
            except ValueError as exc:
                raise ValueError(f"secretRef {ref!r}: {exc}") from None
        return value

    @field_validator("webhook_secret_hosts")
    @classmethod
    def _check_secret_hosts(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {ref: tuple(host_pattern(entry) for entry in hosts) for ref, hosts in value.items()}

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_allowed_hosts(cls, value: Any) -> Any:
        """``DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS=10.0.0.0/8,hooks.internal``, or a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            allowed_host(entry)
        return value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"kafka_security_protocol {protocol} needs kafka_sasl_username and "
                "kafka_sasl_password"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not protocol.endswith("SSL") and any(path is not None for path in tls_files):
            raise ValueError(
                f"kafka_ssl_* files are set but kafka_security_protocol is {protocol}: use SSL "
                "or SASL_SSL (nothing would be encrypted)"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("kafka_ssl_keyfile needs kafka_ssl_certfile")
        return self

    @field_validator("api_tokens", "api_pii_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        """``DELIVERYTRACK_API_TOKENS=tok1,tok2``: comma-separated (blanks ignored)."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_tokens", "api_pii_tokens")
    @classmethod
    def _check_tokens(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        """Long enough to resist guessing, and sendable as ``Authorization: Bearer``. The
        message names the token by its position, never by its value."""
        for index, token in enumerate(value, start=1):
            text = token.get_secret_value()
            if len(text) < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"token {index} of {len(value)} is too short: at least {MIN_TOKEN_CHARS} "
                    "characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
            if len(text) > MAX_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(text):
                raise ValueError(
                    f"token {index} of {len(value)}: at most {MAX_TOKEN_CHARS} characters of "
                    "A-Z a-z 0-9 - . _ ~ + / (then = padding), as a Bearer token (RFC 6750)"
                )
        return value

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if not value.startswith("kafka://") or not _addresses_ok(value.removeprefix("kafka://")):
            raise ValueError("broker must look like kafka://host:port[;host:port] (port 1-65535)")
        return value

    @field_validator("producer_compression")
    @classmethod
    def _check_compression(cls, value: str) -> str:
        if value in ("lz4", "zstd", "snappy") and not _has_cramjam():
            raise ValueError(
                f"{value} compression needs the cramjam package: "
                "pip install 'deliverytrack[compression]'"
            )
        return value

    @property
    def fold_policy(self) -> FoldPolicy:
        """What the fold is configured with: polling rules, API failover, personal data,
        retention, the command hold and what a status change carries."""
        return FoldPolicy(
            polling=self.polling,
            api_failover=self.api_failover,
            pii=self.pii,
            retention=self.retention,
            command_hold_ms=self.command_hold_ms,
            status_change_record=self.status_change_record,
        )

    @property
    def max_message_bytes(self) -> int:
        """``max.message.bytes`` of the topics the worker creates: room for the largest output
        (a status change carries a whole record) in a producer batch."""
        return 2 * self.max_record_bytes + 65_536

    @property
    def bootstrap_servers(self) -> list[str]:
        return [part for part in self.broker.removeprefix("kafka://").split(";") if part]


def _addresses_ok(servers: str) -> bool:
    """``host[:port]`` or ``[ipv6][:port]``, ``;``-separated, at least one: what the Kafka
    client can connect to (it raised ValueError or OverflowError on the rest, from inside)."""
    parts = [part for part in servers.split(";") if part]
    for part in parts:
        host, port = part, None
        if part.startswith("["):
            host, bracket, rest = part[1:].partition("]")
            if not bracket or rest[:1] not in ("", ":"):
                return False
            port = rest[1:] if rest else None
        elif ":" in part:
            host, _, port = part.rpartition(":")
        if not host.strip():
            return False
        if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            return False
    return bool(parts)

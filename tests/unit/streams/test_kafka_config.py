"""Kafka TLS and SASL settings: checked when loaded, turned into the clients' arguments, and
applied by every Kafka client the package creates (an AST check over the source: a client
built without :func:`kafka_client_kwargs` would silently connect in plaintext)."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import faust
import pytest
from pydantic import ValidationError

from deliverytrack.models.settings import Settings
from deliverytrack.streams.kafka.clients import (
    KafkaConfigError,
    faust_credentials,
    kafka_client_kwargs,
    ssl_context,
)

PACKAGE = Path(__file__).parents[3]
SOURCES = sorted(
    path
    for folder in ("streams", "models", "tables")
    for path in (PACKAGE / folder).rglob("*.py")
    if "dev" not in path.relative_to(PACKAGE).parts  # dev tooling: the broker launcher probes raw
)
FACTORY = PACKAGE / "streams" / "kafka" / "clients.py"
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
PASSWORD = "scram-password-not-to-print"


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def test_every_kafka_client_in_the_package_is_built_by_the_factory() -> None:
    """aiokafka's constructors appear in streams/kafka/clients.py only, each with the
    connection and security settings; the Faust app gets the same as broker_credentials."""
    calls: list[str] = []
    unsafe: list[str] = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            spread = [
                _name(k.value.func)
                for k in node.keywords
                if k.arg is None and isinstance(k.value, ast.Call)
            ]
            if name in CLIENTS:
                calls.append(where)
                if path != FACTORY:
                    unsafe.append(f"{where}: {name}(...) outside streams/kafka/clients.py")
                elif "kafka_client_kwargs" not in spread:
                    unsafe.append(f"{where}: {name}(...) without **kafka_client_kwargs(settings)")
            elif name in ("App", "DeliveryTrackApp"):
                if not any(k.arg == "broker_credentials" for k in node.keywords):
                    unsafe.append(f"{where}: {name}(...) without broker_credentials")
    assert not unsafe, "\n".join(unsafe)
    assert len(calls) == 3, calls  # new_producer, new_consumer, new_admin


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol() -> None:
    settings = Settings(broker="kafka://a:9092;b:9093")
    assert kafka_client_kwargs(settings) == {
        "bootstrap_servers": ["a:9092", "b:9093"],
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(settings) is None


def test_sasl_ssl_gives_a_verifying_tls_context_and_the_credentials() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="worker",
        kafka_sasl_password=PASSWORD,
    )
    kwargs = kafka_client_kwargs(settings)
    context = kwargs.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert kwargs == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "worker",
        "sasl_plain_password": PASSWORD,
    }
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (
        credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-256"
    )
    assert PASSWORD not in repr(credentials) and PASSWORD not in repr(settings)


def test_sasl_plaintext_and_ssl_map_to_faust_credentials() -> None:
    plain = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password=PASSWORD,
    )
    assert "ssl_context" not in kafka_client_kwargs(plain)
    credentials = faust_credentials(plain)
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.ssl_context is None
    tls = Settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    assert kafka_client_kwargs(tls)["ssl_context"].check_hostname is False
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_username"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "kafka_sasl_password",
        ),
        ({"kafka_ssl_cafile": "/etc/ca.pem"}, "nothing would be encrypted"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.pem"},
            "needs kafka_ssl_certfile",
        ),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ],
)
def test_inconsistent_settings_are_refused_when_loaded(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_the_environment_configures_it_and_errors_never_print_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DELIVERYTRACK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DELIVERYTRACK_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("DELIVERYTRACK_KAFKA_SASL_PASSWORD", PASSWORD)
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD
    monkeypatch.setenv("DELIVERYTRACK_KAFKA_SASL_MECHANISM", "MD5")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert PASSWORD not in str(refused.value)


def test_unreadable_tls_files_are_a_clear_error(tmp_path: Path) -> None:
    missing = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "none.pem")
    with pytest.raises(KafkaConfigError, match="kafka_ssl_cafile"):
        ssl_context(missing)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    bad_cert = Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=junk)
    with pytest.raises(KafkaConfigError, match="kafka_ssl_certfile"):
        ssl_context(bad_cert)

"""A throwaway PKI and a Kafka broker with TLS and SASL listeners, for the Kafka security tests.

:func:`make_pki` writes a CA, a broker certificate (for 127.0.0.1 and localhost) and a client
certificate with an encrypted key, with the ``cryptography`` package. :func:`secure_broker`
configures a :class:`KafkaBroker` with, besides its PLAINTEXT listener, an ``SSL`` listener that
requires a client certificate, a ``SASL_SSL`` listener with SCRAM-SHA-256 and SCRAM-SHA-512 and a
``SASL_PLAINTEXT`` listener with PLAIN. SCRAM users are created by Kafka's own storage tool when
the log dir is formatted (``--add-scram``), PLAIN users in the listener's JAAS config.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deliverytrack.streams.dev.kafka_broker import KafkaBroker

USER = "deliverytrack"
PASSWORD = "scram-Secret-0f3c9a"
KEY_PASSWORD = "client-key-Secret-77e1"
LISTENERS = {"SSL": "SSL", "SASL_SSL": "SASL_SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT"}


@dataclass(frozen=True)
class Pki:
    ca: Path
    broker: Path  # private key (PKCS#8) and certificate chain, as Kafka's PEM keystore reads it
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD
    other_ca: Path  # a CA that signed nothing the broker uses


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("deliverytrack test CA", ca_key, None, ca=True)
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = _certificate("kafka broker", broker_key, (ca_cert.subject, ca_key), server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _certificate("deliverytrack worker", client_key, (ca_cert.subject, ca_key))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _certificate("some other CA", other_key, None, ca=True)
    pki = Pki(
        ca=directory / "ca.pem",
        broker=directory / "broker.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        other_ca=directory / "other-ca.pem",
    )
    pki.ca.write_bytes(_pem(ca_cert))
    pki.broker.write_bytes(_key_pem(broker_key) + _pem(broker_cert) + _pem(ca_cert))
    pki.client_cert.write_bytes(_pem(client_cert))
    pki.client_key.write_bytes(_key_pem(client_key, KEY_PASSWORD))
    pki.other_ca.write_bytes(_pem(other_ca))
    for path in (pki.broker, pki.client_key):
        path.chmod(0o600)
    return pki


def secure_broker(workdir: Path, pki: Pki) -> KafkaBroker:
    """A broker (not started) with SSL (client certificate required), SASL_SSL (SCRAM-SHA-256
    and -512) and SASL_PLAINTEXT (PLAIN) listeners besides PLAINTEXT."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{USER}="{PASSWORD}";'
    )
    return KafkaBroker(
        workdir,
        listeners=LISTENERS,
        scram_credentials=[
            f"SCRAM-SHA-256=[name={USER},password={PASSWORD}]",
            f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
        ],
        extra_config={
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(pki.broker),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca),
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain,
        },
    )

"""docker-compose.yml against what the worker, the images and Kafka expect.

CI has no Docker engine, so the file is never run there: this test reads it (and the
Dockerfile) and checks what a run would trip over: where each service keeps its data, which
listeners Kafka opens and advertises and who connects to which, that every DELIVERYTRACK_*
variable is a setting the worker reads and validates, the ports, health checks and start
order, and that the demo profile's commands parse as the CLI parses them.
"""

from __future__ import annotations

import re
import shlex
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from deliverytrack.models.settings import Settings
from deliverytrack.streams.cli.entry import parse_args
from deliverytrack.streams.http.auth import check_listeners

ROOT = Path(__file__).parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
TOKEN = "compose-test-token-0123456789"


def _dockerfile_env() -> dict[str, str]:
    """ENV of the runtime stage (the last FROM)."""
    stage = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for match in re.finditer(r"^ENV ((?:.*\\\n)*.*)$", stage, re.MULTILINE):
        for pair in shlex.split(match.group(1).replace("\\\n", " ")):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def _volumes(service: str) -> dict[str, str]:
    """volume name -> mount path inside the container."""
    out = {}
    for entry in SERVICES[service].get("volumes", []):
        name, path = entry.split(":")[:2]
        out[name] = path
    return out


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def _env(service: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def _resolved(value: str) -> str:
    """A ``${VAR:?message}`` reference as the user's exported variable (a test token)."""
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", TOKEN, value)


KAFKA = _env("kafka")


def test_every_volume_is_declared_and_kafka_keeps_its_topics_on_it() -> None:
    declared = set(COMPOSE["volumes"])
    for name in SERVICES:
        assert set(_volumes(name)) <= declared, name
    # Without KAFKA_LOG_DIRS the image keeps its topic data in the container, not the volume.
    assert KAFKA["KAFKA_LOG_DIRS"] == _volumes("kafka")["kafka-data"]


def test_kafka_listeners_are_consistent() -> None:
    listeners = _listeners(KAFKA["KAFKA_LISTENERS"])
    advertised = _listeners(KAFKA["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in KAFKA["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(protocols) == set(listeners)
    controller = KAFKA["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    assert set(advertised) == set(listeners) - {controller}
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, name  # advertised where it listens
    assert KAFKA["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    node, _, voter = KAFKA["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == KAFKA["KAFKA_NODE_ID"] and voter == f"kafka:{listeners[controller][1]}"
    # One node: internal topics cannot ask for more replicas than there are brokers.
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert KAFKA[key] == "1", key


def test_clients_on_the_host_use_localhost_29092_and_containers_kafka_9092() -> None:
    advertised = _listeners(KAFKA["KAFKA_ADVERTISED_LISTENERS"])
    host_side = [name for name, (host, _) in advertised.items() if host == "localhost"]
    assert len(host_side) == 1
    host, port = advertised[host_side[0]]
    assert f"{port}:{port}" in SERVICES["kafka"]["ports"]  # published where it is advertised
    assert (host, port) == ("localhost", 29092)
    readme = (ROOT / "README.md").read_text()
    assert "localhost:29092" in readme
    in_network = [(h, p) for h, p in advertised.values() if h == "kafka"]
    assert in_network == [("kafka", 9092)]
    for service in ("worker",):
        assert _env(service)["DELIVERYTRACK_BROKER"] == "kafka://kafka:9092"
    demo = parse_args(SERVICES["demo"]["command"])
    assert demo.broker == "kafka://kafka:9092"


def test_the_worker_environment_is_settings_the_worker_reads_and_accepts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    env = {**_dockerfile_env(), **{k: _resolved(v) for k, v in _env("worker").items()}}
    for name in env:
        assert name.startswith("DELIVERYTRACK_"), name
        assert name.removeprefix("DELIVERYTRACK_") in fields, f"{name} is not a setting"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    check_listeners(settings)  # 0.0.0.0 in the container: accepted because a token is set
    assert settings.web_host == settings.webhook_host == "0.0.0.0"  # noqa: S104
    # Without the token compose refuses to start (":?"), and the worker would too.
    assert re.search(r"\$\{DELIVERYTRACK_API_TOKENS:\?", _env("worker")["DELIVERYTRACK_API_TOKENS"])
    # The state is on the worker-data volume, which the image declares.
    assert _volumes("worker")["worker-data"] == str(settings.data_dir)
    assert f"VOLUME {settings.data_dir}" in DOCKERFILE
    # Ports: the API on this host's loopback only, the webhook listener published.
    ports = SERVICES["worker"]["ports"]
    assert f"127.0.0.1:{settings.web_port}:{settings.web_port}" in ports
    assert f"{settings.webhook_port}:{settings.webhook_port}" in ports
    assert f"EXPOSE {settings.web_port} {settings.webhook_port}" in DOCKERFILE
    health = " ".join(SERVICES["worker"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.web_port}/health" in health
    assert SERVICES["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert 'ENTRYPOINT ["deliverytrack"]' in DOCKERFILE and 'CMD ["worker"]' in DOCKERFILE


def test_the_demo_profile_runs_the_provider_and_the_demo() -> None:
    provider, demo = SERVICES["provider"], SERVICES["demo"]
    assert provider["profiles"] == ["demo"] and demo["profiles"] == ["demo"]
    assert (
        "demo" not in SERVICES["worker"].get("profiles", []) and "profiles" not in SERVICES["kafka"]
    )
    assert provider["entrypoint"][:3] == [
        "python",
        "-m",
        "deliverytrack.streams.providers.simulated",
    ]
    assert find_spec(provider["entrypoint"][2]) is not None
    from deliverytrack.streams.providers.simulated import _build_parser

    served = _build_parser().parse_args(provider["command"])
    assert served.host == "0.0.0.0"  # noqa: S104 - reachable from the other containers
    assert f"http://127.0.0.1:{served.port}/" in " ".join(provider["healthcheck"]["test"])
    args = parse_args(demo["command"])
    assert args.command == "demo"
    assert args.exit_after_summary  # its worker's dashboard is inside the container only
    target = urlparse(args.provider_url)
    assert (target.hostname, target.port) == ("provider", served.port)
    assert demo["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "provider": {"condition": "service_healthy"},
    }
    # The worker's commented provider line names the same service and port.
    compose_text = (ROOT / "docker-compose.yml").read_text()
    assert f'"baseUrl": "http://provider:{served.port}"' in compose_text
    # One image for the three services built from this checkout.
    images = {SERVICES[name]["image"] for name in ("worker", "provider", "demo")}
    assert images == {"deliverytrack:local"}

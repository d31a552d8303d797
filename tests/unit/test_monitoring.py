"""deploy/ (Prometheus and Grafana) against what the worker exposes: every metric the dashboard
queries exists, and the compose `monitoring` profile mounts the files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from deliverytrack.streams.metrics import Metrics

ROOT = Path(__file__).parents[2]
# Names the scrape-time collector adds (it is registered per worker, with its engine).
COLLECTED = {
    "deliverytrack_assigned_partitions",
    "deliverytrack_rocksdb_size_bytes",
    "deliverytrack_consumer_lag",
    "deliverytrack_ordering_watermark_delay_seconds",
    "deliverytrack_ordering_buffered_inputs",
    "deliverytrack_records",
    "deliverytrack_records_due",
    "deliverytrack_status_changes_total",
    "deliverytrack_outbound_webhook_attempts_total",
}


def exposed() -> set[str]:
    names = set(COLLECTED)
    for family in Metrics().registry.collect():
        names.update(sample.name for sample in family.samples)
        names.add(family.name + "_total" if family.type == "counter" else family.name)
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/deliverytrack.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"deliverytrack_[a-z_]+", target["expr"])
    }
    assert queried and queried <= exposed(), queried - exposed()


def test_the_monitoring_profile_mounts_existing_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    for config in compose["configs"].values():
        assert (ROOT / config["file"]).is_file(), config
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["targets"] == ["worker:6066"]

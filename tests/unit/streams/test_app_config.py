"""The Faust app's own configuration: the one topic Faust creates itself (its leader topic)
is under the configured topic prefix like every other, so deployments with different
prefixes on one cluster never share it."""

from __future__ import annotations

from pathlib import Path

from deliverytrack.models.settings import Settings
from deliverytrack.streams.topics import faust_leader_topic
from deliverytrack.streams.worker.app import create_app


def test_faust_leader_topic_is_under_the_topic_prefix(tmp_path: Path) -> None:
    app = create_app(Settings(topic_prefix="acme-prod.", app_id="dt", data_dir=tmp_path))
    assignor = app._leader_assignor
    name = assignor._leader_topic_name  # type: ignore[attr-defined]
    assert name == faust_leader_topic("acme-prod.", "dt") == "acme-prod.dt-__assignor-__leader"
    assert assignor._leader_tp.topic == name  # type: ignore[attr-defined]
    other = create_app(Settings(topic_prefix="acme-test.", app_id="dt", data_dir=tmp_path))
    assert other._leader_assignor._leader_topic_name != name  # type: ignore[attr-defined]

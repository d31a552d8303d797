"""Settings: the producer compression and the status-change record are checked when the settings
are loaded."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deliverytrack.models import settings as settings_module
from deliverytrack.models.settings import Settings


def test_compression_defaults_to_none_and_gzip_needs_nothing_extra() -> None:
    assert Settings().producer_compression == "none"
    assert Settings(producer_compression="gzip").producer_compression == "gzip"


def test_a_codec_without_its_library_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "_has_cramjam", lambda: False)
    with pytest.raises(ValidationError, match=r"needs the cramjam package.*\[compression\]"):
        Settings(producer_compression="lz4")


def test_an_unknown_codec_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERYTRACK_PRODUCER_COMPRESSION", "brotli")
    with pytest.raises(ValidationError, match="producer_compression"):
        Settings()


def test_status_changes_carry_the_full_record_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().status_change_record == "full"
    assert Settings().fold_policy.status_change_record == "full"
    monkeypatch.setenv("DELIVERYTRACK_STATUS_CHANGE_RECORD", "changes")
    assert Settings().status_change_record == "changes"
    assert Settings().fold_policy.status_change_record == "changes"


def test_an_unknown_status_change_record_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deliverytrack.streams.cli.config import settings_of

    monkeypatch.setenv("DELIVERYTRACK_STATUS_CHANGE_RECORD", "diff")
    with pytest.raises(ValidationError, match="status_change_record"):
        Settings()
    with pytest.raises(SystemExit) as exited:
        settings_of({})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "status_change_record (DELIVERYTRACK_STATUS_CHANGE_RECORD)" in err
    assert "'full' or 'changes'" in err


@pytest.mark.parametrize(
    "broker",
    ["kafka://h:abc", "kafka://127.0.0.1:99999", "kafka://h:0", "kafka://[::1", "kafka://;"],
)
def test_a_broker_address_the_kafka_client_cannot_take_is_refused_at_start(broker: str) -> None:
    """Not a ValueError or OverflowError traceback from inside the client later."""
    with pytest.raises(ValidationError, match="broker must look like"):
        Settings(broker=broker)


@pytest.mark.parametrize(
    "broker", ["kafka://a:9092;b:9093", "kafka://a", "kafka://[::1]:9092", "kafka://a:9092;"]
)
def test_broker_addresses_the_kafka_client_takes_are_accepted(broker: str) -> None:
    assert Settings(broker=broker).broker == broker


@pytest.mark.parametrize(
    "provider",
    [
        {"kind": "generic", "baseUrl": "https://u:p@status.example", "apiKey": "k"},
        {
            "kind": "solapi",
            "baseUrl": "https://u:p@api.solapi.example",
            "apiKey": "k",
            "apiSecret": "s",
        },
    ],
)
def test_a_base_url_with_credentials_and_a_signing_provider_is_refused(
    provider: dict[str, str],
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(providers={"p": provider})
    message = str(refused.value)
    assert "keep one" in message and "u:p@" not in message


def test_a_base_url_with_credentials_alone_is_kept() -> None:
    settings = Settings(providers={"p": {"kind": "generic", "baseUrl": "https://u:p@s.example"}})
    assert settings.providers["p"].base_url == "https://u:p@s.example"
    iwinv = {"kind": "iwinv", "baseUrl": "https://u:p@alimtalk.example", "apiKey": "k"}
    assert (
        Settings(providers={"p": iwinv}).providers["p"].kind == "iwinv"
    )  # AUTH, not Authorization

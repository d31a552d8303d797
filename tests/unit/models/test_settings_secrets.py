"""Secrets in the configuration: API tokens are comma-separated SecretStr, checked without
ever echoing them; an invalid configuration names what is wrong, never the values given (they
may be keys or secrets); a worker whose API would be open beyond loopback does not start."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from deliverytrack.models.settings import Settings
from deliverytrack.streams.cli.entry import main

SECRET = "s3cr3t-VALUE-0123456789"


def test_api_tokens_are_comma_separated_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERYTRACK_API_TOKENS", f" {SECRET}, other-0123456789abcdef ,")
    settings = Settings()
    assert [t.get_secret_value() for t in settings.api_tokens] == [
        SECRET,
        "other-0123456789abcdef",
    ]
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert Settings(api_tokens=[SECRET]).api_tokens == Settings(api_tokens=SECRET).api_tokens
    assert Settings().api_pii_tokens == ()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("short-1", "too short: at least 16"),
        ("has a space in it 0123", "Bearer token"),
        ("comma-is-a-separator-0123,tiny", "token 2 of 2 is too short"),
        ("x" * 600, "at most 512"),
        ("ünïcödé-0123456789abcdef", "Bearer token"),
    ],
)
def test_a_bad_token_is_refused_without_showing_it(value: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(api_tokens=value)
    assert words in str(refused.value)
    for part in value.split(","):
        assert part not in str(refused.value)


def test_a_validation_error_never_shows_the_values_given() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(
            providers={"x": {"kind": "bogus", "apiKey": SECRET, "apiSecrte": SECRET}},
            pii={"enabled": True, "activeKid": "k", "hashKeys": {"k": SECRET}, "oops": SECRET},
            webhook_secrets={"ops": 12},
            api_tokens=f"{SECRET},tiny",
        )
    text = str(refused.value)
    assert "providers.x.kind" in text and "api_tokens" in text
    assert SECRET not in text and "input_value" not in text


def test_the_cli_prints_what_is_wrong_and_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    providers = {"x": {"kind": "nope", "apiKey": SECRET, "x": SECRET}}
    pii = {"enabled": True, "activeKid": "k", "hashKeys": {"k": SECRET}}
    monkeypatch.setenv("DELIVERYTRACK_PROVIDERS", json.dumps(providers))
    monkeypatch.setenv("DELIVERYTRACK_API_TOKENS", f"{SECRET},tiny")
    monkeypatch.setenv("DELIVERYTRACK_PII", json.dumps({**pii, "encryptionKeys": {"k": SECRET}}))
    with pytest.raises(SystemExit) as exited:
        main(["count"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err
    assert "providers.x.kind (DELIVERYTRACK_PROVIDERS)" in err
    assert "api_tokens (DELIVERYTRACK_API_TOKENS): Value error, token 2 of 2 is too short" in err
    assert "pii.encryptionKeys" in err
    assert SECRET not in err and "input_value" not in err


def test_the_cli_reports_unparsable_json_without_its_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELIVERYTRACK_PROVIDERS", json.dumps({"x": {"apiKey": SECRET}})[:-2])
    with pytest.raises(SystemExit) as exited:
        main(["count"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert 'error parsing value for field "providers"' in err and SECRET not in err


def test_a_worker_with_an_open_api_beyond_loopback_does_not_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELIVERYTRACK_WEB_HOST", "0.0.0.0")  # noqa: S104 - refused, not bound
    monkeypatch.setenv("DELIVERYTRACK_BROKER", "kafka://127.0.0.1:1")  # never contacted
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve the API on '0.0.0.0':6066 without a token" in err
    assert "DELIVERYTRACK_API_TOKENS" in err and "DELIVERYTRACK_WEB_HOST" in err

"""Which token the client and the CLI send: the one given, else $DELIVERYTRACK_API_TOKEN, else
the settings' first API token (a tool run beside a worker), else none (an open loopback API)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import TOKEN_ENV, auth_headers, resolve_token

GIVEN = "given-token-0123456789"
FROM_ENV = "env-token-0123456789ab"
CONFIGURED = "configured-0123456789ab"
PII = "pii-only-0123456789abcd"


def test_the_token_given_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, FROM_ENV)
    settings = Settings(api_tokens=CONFIGURED)
    assert resolve_token(GIVEN, settings) == SecretStr(GIVEN)
    assert resolve_token(SecretStr(GIVEN), settings) == SecretStr(GIVEN)


def test_then_the_environment_then_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, f" {FROM_ENV} ")
    settings = Settings(api_tokens=f"{CONFIGURED},other-token-0123456789")
    assert resolve_token(None, settings) == SecretStr(FROM_ENV)
    monkeypatch.delenv(TOKEN_ENV)
    assert resolve_token(None, settings) == SecretStr(CONFIGURED)
    assert resolve_token("", Settings(api_pii_tokens=PII)) == SecretStr(PII)
    assert resolve_token(None, Settings()) is None


def test_the_header_carries_the_token_and_nothing_without_one() -> None:
    assert auth_headers(SecretStr(GIVEN)) == {"Authorization": f"Bearer {GIVEN}"}
    assert auth_headers(None) == {}

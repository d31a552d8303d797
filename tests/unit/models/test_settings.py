"""Settings: the producer compression setting is checked when the settings are loaded."""

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

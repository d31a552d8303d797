"""The dashboard's ring of recent outputs (streams/engine/recent.py) and its static files."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson
import pytest

from deliverytrack.streams.engine.recent import MAX_VALUE_BYTES, RecentOutputs
from deliverytrack.streams.http.auth import PUBLIC_PATHS
from deliverytrack.streams.http.dashboard import UI_FILES, ui_file

CHANGES, LETTERS = "p-status-changes", "p-dead-letters"


@dataclass
class Out:
    topic: str
    key: bytes | None
    value: bytes


def change(message_id: str, status: str, previous: str | None = None) -> Out:
    value = {
        "eventId": f"{message_id}:1",
        "messageId": message_id,
        "previousStatus": previous,
        "status": status,
        "source": "MANUAL",
        "changedAt": "2026-12-05T08:00:00Z",
        "record": {"messageId": message_id, "providerId": "solapi", "type": "SMS"},
    }
    return Out(CHANGES, message_id.encode(), orjson.dumps(value))


def letter(key: bytes, reason: str) -> Out:
    value = {
        "topic": "p-send-results",
        "partition": 1,
        "offset": 7,
        "keyBase64": base64.b64encode(key).decode(),
        "valueText": "010-1234-5678 must not be shown",
        "reason": reason,
        "error": "not JSON",
        "failedAt": "2026-12-05T08:00:01Z",
    }
    return Out(LETTERS, key, orjson.dumps(value))


def test_newest_first_and_bounded() -> None:
    recent = RecentOutputs(CHANGES, LETTERS, size=3)
    recent.note([change(f"m-{n}", "SENT") for n in range(5)])
    recent.note([Out("p-poll-requests", b"m-0", b"{}"), change("m-5", "DELIVERED", "SENT")])
    got = recent.status_changes()
    assert [c["messageId"] for c in got] == ["m-5", "m-4", "m-3"]
    assert got[0] == {
        "messageId": "m-5",
        "previousStatus": "SENT",
        "status": "DELIVERED",
        "providerId": "solapi",
        "type": "SMS",
        "source": "MANUAL",
        "at": "2026-12-05T08:00:00Z",
    }
    assert recent.dead_letters() == []


def test_dead_letters_summarised_without_their_value() -> None:
    recent = RecentOutputs(CHANGES, LETTERS)
    recent.note([letter(b"m-bad", "undecodable"), letter(b"m-worse", "wrong-key")])
    got = recent.dead_letters()
    assert [d["key"] for d in got] == ["m-worse", "m-bad"]
    assert got[1] == {
        "topic": "p-send-results",
        "partition": 1,
        "offset": 7,
        "key": "m-bad",
        "reason": "undecodable",
        "error": "not JSON",
        "failedAt": "2026-12-05T08:00:01Z",
    }
    assert "010-1234-5678" not in orjson.dumps(got).decode()


@pytest.mark.parametrize("value", [b"x" * (MAX_VALUE_BYTES + 1), b"{not json", b"[1, 2]"])
def test_a_huge_or_unreadable_value_keeps_its_key_only(value: bytes) -> None:
    recent = RecentOutputs(CHANGES, LETTERS)
    recent.note([Out(CHANGES, b"m-big", value), Out(LETTERS, None, value)])
    assert recent.status_changes()[0]["messageId"] == "m-big"
    assert recent.status_changes()[0]["status"] is None
    assert recent.dead_letters()[0]["key"] is None


def test_the_page_ships_in_the_package_and_is_public() -> None:
    for route, name in UI_FILES.items():
        assert route in PUBLIC_PATHS
        assert ui_file(name)
    html = ui_file("index.html").decode()
    # Offline: nothing from another origin, no inline script (the CSP forbids it).
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert "https://" not in html
    assert '<script src="/ui/dashboard.js"></script>' in html
    assert "<script>" not in html
    script = ui_file("dashboard.js").decode()
    assert "innerHTML" not in script  # API data is set as text only
    assert "sessionStorage" in script and "localStorage" not in script


def test_a_slim_status_change_is_summarised_from_its_changes() -> None:
    """DELIVERYTRACK_STATUS_CHANGE_RECORD=changes: providerId and type come from ``changes``."""
    value = orjson.loads(change("m-1", "DELIVERED", "SENT").value)
    del value["record"]
    value["changes"] = {"providerId": "iwinv", "type": "ALIMTALK", "status": "DELIVERED"}
    recent = RecentOutputs(CHANGES, LETTERS)
    recent.note([Out(CHANGES, b"m-1", orjson.dumps(value))])
    (got,) = recent.status_changes()
    assert (got["providerId"], got["type"], got["status"]) == ("iwinv", "ALIMTALK", "DELIVERED")

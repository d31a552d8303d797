"""The send-results contract for a providerMessageId that is not a string (issue 14, item 3):
refused at decode, so the worker dead-letters it as ``schema-invalid`` with a reason naming the
field; k-msg's recordSend would record it as missing (the Python facade still does)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from deliverytrack.models.codec import DecodeError, decode_send_result


def send_result(provider_message_id: Any) -> bytes:
    return orjson.dumps(
        {
            "eventId": "e-1",
            "schemaVersion": 1,
            "eventType": "SendRecorded",
            "messageId": "m-1",
            "providerId": "iwinv",
            "providerMessageId": provider_message_id,
            "type": "ALIMTALK",
            "to": "01012345678",
            "requestedAt": "2026-11-23T09:00:00Z",
        }
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [(12345, "got int 12345"), (1.5, "got float 1.5"), (True, "got bool True"), ([1], "got list")],
)
def test_a_provider_message_id_that_is_not_a_string_is_a_dead_letter(
    value: Any, shown: str
) -> None:
    with pytest.raises(DecodeError) as refused:
        decode_send_result(send_result(value))
    assert refused.value.reason == "schema-invalid"
    message = str(refused.value)
    assert "providerMessageId" in message and "must be a string or null" in message
    assert shown in message and 'as text ("12345")' in message


@pytest.mark.parametrize("value", [None, "", "12345"])
def test_a_string_or_null_provider_message_id_is_accepted(value: Any) -> None:
    assert decode_send_result(send_result(value)).provider_message_id == value

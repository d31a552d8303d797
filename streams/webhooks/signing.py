"""The generic webhook signature: what the ingress verifies on a report and the dispatcher
puts on an outbound delivery (same scheme, both directions)."""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-DeliveryTrack-Timestamp"
SIGNATURE_HEADER = "X-DeliveryTrack-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The generic signature header value: ``v1=`` + hex HMAC-SHA256 over
    ``"<timestamp>." + body`` with the provider's webhook secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()

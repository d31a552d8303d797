"""Outbound webhooks, the pure part: which endpoints get a status change, the payload they get,
whether a failed attempt is retried, and which targets the dispatcher may call (the SSRF rules:
:func:`refusal_of_address`, :class:`AllowList`). No I/O, no clock (``now`` is passed in).

A status change is read as a plain JSON object (its ``data`` goes to the receiver as published);
what the dispatcher relies on is checked here, so a malformed change raises ``ValueError`` (or
pydantic's ``ValidationError``, a ``ValueError`` too) and never a ``KeyError`` or ``TypeError``
further down.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.outbound import (
    IpNetwork,
    WebhookDelivery,
    WebhookEndpoint,
    allowed_host,
    host_pattern,
    normalise_host,
)

_STATUSES = frozenset(status.value for status in TrackingStatus)
_HEADER_SAFE = re.compile(r"[\x21-\x7e]*")

RETRYABLE_ERRORS = (
    "timeout",
    "network",
    "connection",
    "econnreset",
    "enotfound",
    "econnrefused",
    "socket hang up",
    "cannot connect",
    "disconnected",
)


def event_type_for(status: str) -> str:
    """``message.<status>``: k-msg's message.sent/delivered/failed/clicked, plus ours."""
    return f"message.{status.lower()}"


def _record_part(change: Mapping[str, Any]) -> Mapping[str, Any]:
    """What a status change carries of its record: the whole ``record``, or its ``changes``
    (``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes``), which always hold ``providerId`` and the
    message's own ``webhooks``."""
    part = change.get("record")
    if part is None:
        part = change.get("changes")
    return part or {}


def payload_for(change: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    """k-msg's webhook Event shape around a StatusChanged (``data``: as published, with the
    record or with its changes)."""
    record = _record_part(change)
    return {
        "id": change["eventId"],
        "type": event_type,
        "timestamp": change["changedAt"],
        "data": dict(change),
        "metadata": {
            "messageId": change["messageId"],
            "providerId": record.get("providerId"),
        },
        "version": "1",
    }


def check_change(change: Any) -> Mapping[str, Any]:
    """``change`` if it has what a delivery needs: ``eventId``, ``messageId`` and ``changedAt``
    strings, a known ``status`` and, if present, a ``record`` or ``changes`` object; else
    ``ValueError``."""
    if not isinstance(change, Mapping):
        raise ValueError(f"a status change must be a JSON object, not {type(change).__name__}")
    for name in ("eventId", "messageId", "changedAt"):
        value = change.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"a status change needs a non-empty string {name!r}")
    if change.get("status") not in _STATUSES:
        raise ValueError(f"unknown status {str(change.get('status'))[:80]!r}")
    for name in ("record", "changes"):
        if not isinstance(change.get(name) or {}, Mapping):
            raise ValueError(f"{name!r} must be a JSON object")
    return change


def own_endpoints(change: Mapping[str, Any]) -> tuple[list[WebhookEndpoint], list[str]]:
    """The message's own endpoints (its record's ``webhooks``, which a slim status change
    carries in ``changes``) that are valid, and why each of the others is not (a record written
    before an endpoint rule was tightened may hold one: the valid endpoints still get their
    deliveries)."""
    webhooks = _record_part(check_change(change)).get("webhooks") or []
    if not isinstance(webhooks, list):
        raise ValueError("'record.webhooks' must be a list")
    valid: list[WebhookEndpoint] = []
    errors: list[str] = []
    for index, webhook in enumerate(webhooks):
        try:
            valid.append(WebhookEndpoint.model_validate(webhook))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors.append(f"record.webhooks[{index}]: {exc}")
    return valid, errors


def deliveries_for(
    change: Mapping[str, Any], endpoints: Iterable[WebhookEndpoint], now: datetime
) -> list[WebhookDelivery]:
    """One delivery per endpoint that wants this change (global ones, then the message's)."""
    check_change(change)
    event_type = event_type_for(str(change["status"]))
    payload = payload_for(change, event_type)
    seen: set[str] = set()
    out = []
    for endpoint in endpoints:
        if endpoint.id in seen or not endpoint.wants(event_type):
            continue
        seen.add(endpoint.id)
        out.append(
            WebhookDelivery(
                delivery_id=f"{change['eventId']}:{endpoint.id}",
                endpoint=endpoint,
                event_id=change["eventId"],
                event_type=event_type,
                message_id=change["messageId"],
                payload=payload,
                attempt=1,
                not_before=now,
            )
        )
    return out


def should_retry(http_status: int | None, error: str | None) -> bool:
    """k-msg: 408, 429 and 5xx are retried; other answers are not; without an answer,
    transport errors are."""
    if http_status is not None:
        return http_status in (408, 429) or http_status >= 500
    text = (error or "").lower()
    return any(token in text for token in RETRYABLE_ERRORS)


def next_attempt(delivery: WebhookDelivery, now: datetime) -> WebhookDelivery | None:
    """The retry after a failed attempt, or None once ``maxRetries`` are used up."""
    retries_used = delivery.attempt - 1
    if retries_used >= delivery.endpoint.max_retries:
        return None
    delay = delivery.endpoint.delay_ms(retries_used + 1)  # capped: MAX_RETRY_DELAY_MS
    return delivery.model_copy(
        update={"attempt": delivery.attempt + 1, "not_before": now + timedelta(milliseconds=delay)}
    )


def header_value(text: str) -> str:
    """``text`` as an HTTP header value: unchanged when it is visible ASCII, else
    percent-encoded (UTF-8), so an id with a space, a control character or non-ASCII text can
    never break (or inject into) the request."""
    if _HEADER_SAFE.fullmatch(text):
        return text
    return quote(text, safe="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%"))


# --- where the dispatcher may connect (OWASP SSRF prevention) ---------------------------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ... instance metadata
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
        "192.0.0.192",  # Oracle Cloud
    )
)
"""Cloud metadata and platform endpoints: refused unless allowed by exactly that address."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), if any: the
    rules apply to it, so ``::ffff:127.0.0.1`` is loopback."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_of_address(address: IpAddress) -> str | None:
    """Why the dispatcher does not call ``address`` by default (``loopback``, ``private``,
    ``link-local``, ``multicast``, ``unspecified``, ``metadata``, ...), None for a public one."""
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = refusal_of_address(inner)
        return None if reason is None else f"{reason} ({inner} inside)"
    checks = (
        (address in METADATA_ADDRESSES, "metadata"),
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def host_matches(host: str, pattern: str) -> bool:
    """``host`` (normalised) matches a rule from :func:`host_pattern`."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True, slots=True)
class AllowList:
    """``DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS``: networks (CIDRs, addresses) and host rules the
    operator allows although the SSRF rules refuse them. A metadata address is allowed only by
    an entry that is exactly that address (a broad CIDR such as 169.254.0.0/16 does not)."""

    networks: tuple[IpNetwork, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        networks: list[IpNetwork] = []
        hosts: list[str] = []
        for entry in entries:
            parsed = allowed_host(entry)
            if isinstance(parsed, str):
                hosts.append(parsed)
            else:
                networks.append(parsed)
        return cls(tuple(networks), tuple(hosts))

    def allows_host(self, host: str) -> bool:
        """Whether a host name is allowed whatever it resolves to."""
        try:
            name = normalise_host(host)
        except ValueError:
            return False
        return any(host_matches(name, pattern) for pattern in self.hosts)

    def allows_address(self, address: IpAddress) -> bool:
        candidates = [address]
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
        for candidate in candidates:
            for network in self.networks:
                if candidate.version != network.version or candidate not in network:
                    continue
                if candidate not in METADATA_ADDRESSES or network.num_addresses == 1:
                    return True
        return False

    def refusal(self, address: IpAddress) -> str | None:
        """Why ``address`` may not be called (None: it may)."""
        reason = refusal_of_address(address)
        if reason is None or self.allows_address(address):
            return None
        return reason


def secret_allowed_for(host: str, patterns: Iterable[str]) -> bool:
    """Whether a per-message endpoint on ``host`` may use a secretRef bound to ``patterns``
    (``DELIVERYTRACK_WEBHOOK_SECRET_HOSTS``)."""
    try:
        name = normalise_host(host)
    except ValueError:
        return False
    return any(host_matches(name, host_pattern(pattern)) for pattern in patterns)

"""Outbound HTTP that cannot be aimed inside (OWASP's SSRF prevention rules), for webhooks.

A webhook URL comes from a producer (a send result's ``webhooks``; the retry topic carries it
too), so the dispatcher calls it only after checking where the call would go:

- The host is resolved once, by :class:`GuardedResolver`, and every address it resolves to is
  checked (:meth:`AllowList.refusal`): loopback, private, link-local, multicast, unspecified,
  reserved, shared (100.64/10), cloud metadata addresses, and IPv6 forms of them
  (``::ffff:127.0.0.1``, 6to4, NAT64) are refused unless ``DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS``
  allows them. The connection is then made to an address that passed, never to the result of a
  second lookup: a name that resolves to a public address for the check and to 127.0.0.1 for
  the connection (DNS rebinding) cannot get through. A URL with an IP address is checked by
  :func:`check_literal` (aiohttp does not resolve those).
- No redirects, no proxies from the environment, no cookies kept between calls, no automatic
  decompression, and at most ``MAX_RESPONSE_BYTES`` of an answer read: only its status code
  and a short, sanitised reason are published.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from deliverytrack.tables.outbound import AllowList

MAX_RESPONSE_BYTES = 4_096
MAX_REASON_CHARS = 200
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
ALLOW_HINT = "allow it with DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS"


class TargetRefused(Exception):  # noqa: N818 - a decision about one target, not an error
    """The URL's host is, or resolves only to, addresses the dispatcher does not call.

    Not an ``OSError``: aiohttp passes it through as it is instead of making it a connection
    error (which would be retried)."""


def sanitised(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` as printable ASCII on one line, at most ``limit`` characters: what a receiver
    (or a library quoting its answer) wrote never reaches a topic as it was."""
    cleaned = _UNPRINTABLE.sub(" ", text).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def check_literal(allowed: AllowList, host: str) -> None:
    """Raise :class:`TargetRefused` if ``host`` is an IP address that may not be called."""
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    reason = allowed.refusal(address)
    if reason is not None:
        raise TargetRefused(f"{address} is {reason}; {ALLOW_HINT}")


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (the system's resolver by default) and returns only the
    addresses that may be called; :class:`TargetRefused` if none may. A host name on the
    allow-list is returned as resolved."""

    def __init__(self, allowed: AllowList, inner: AbstractResolver | None = None) -> None:
        self.allowed = allowed
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.allowed.allows_host(host):
            return results
        kept: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            try:
                # A link-local IPv6 result carries its zone (fe80::1%eth0).
                address = ipaddress.ip_address(result["host"].partition("%")[0])
            except ValueError:
                refused.append(f"{result['host']} (not an IP address)")
                continue
            reason = self.allowed.refusal(address)
            if reason is None:
                kept.append(result)
            else:
                refused.append(f"{address} ({reason})")
        if not kept:
            shown = ", ".join(sorted(set(refused))[:4])
            raise TargetRefused(f"{host} resolves only to {shown}; {ALLOW_HINT}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(allowed: AllowList, user_agent: str, **connector: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose connections go only where :class:`GuardedResolver` allows:
    no proxies from the environment, no cookie jar, no automatic decompression. Requests must
    still pass ``allow_redirects=False`` and check IP-address hosts with
    :func:`check_literal`."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=GuardedResolver(allowed), **connector),
        headers={"User-Agent": user_agent},
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )

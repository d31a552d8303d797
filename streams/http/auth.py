"""Who may use the API listener: bearer tokens (README "Security").

- Every route of the API listener except ``GET /health`` and the dashboard's static page
  (``GET /ui``, its script and style) needs ``Authorization: Bearer <token>`` with one of
  ``DELIVERYTRACK_API_TOKENS`` (or ``_API_PII_TOKENS``). Missing or wrong: 401 with a JSON
  error and ``WWW-Authenticate: Bearer`` (RFC 6750), before any route runs, so an unknown
  path answers 401 too and reveals nothing.
- Compared in constant time: the SHA-256 of the offered token against the SHA-256 of every
  configured one, all of them compared (no early exit, no length to time).
- Several tokens at once, for rotation; workers send theirs to each other's
  ``/internal/query`` (``QueryService``), trying the next one on a 401.
- ``GET /health`` without a token answers only its status (for probes); with a valid token, or
  with no token configured, its counters and the workers' URLs too.
- No token configured: the API is open, which a worker allows only on a loopback address
  (:func:`check_listeners` refuses to start otherwise and says why), and only to requests
  whose ``Host`` and ``Origin`` name loopback (no web page of another site: DNS rebinding,
  cross-site POSTs).
- With personal data protection on, ``to``/``from`` filters are a phone-number oracle; only
  callers with a PII token may use them (:attr:`Caller.may_filter_numbers`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web as aiohttp_web
from pydantic import SecretStr

from deliverytrack.models.settings import Settings

PUBLIC_PATHS = frozenset({"/health", "/ui", "/ui/dashboard.js", "/ui/dashboard.css"})
"""Routes of the API listener that answer without a token: ``/health`` (with less) and the
dashboard's static files (``streams/http/dashboard.py``; the data they fetch needs a token)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request to the API listener."""

    authenticated: bool
    """A valid token, or no token is configured (the API is open, on loopback only)."""
    may_filter_numbers: bool
    """May filter by ``to``/``from`` (a PII token, or personal data protection is off)."""


ANONYMOUS = Caller(authenticated=False, may_filter_numbers=False)

CALLER: aiohttp_web.RequestKey[Caller] = aiohttp_web.RequestKey("deliverytrack.caller", Caller)
"""Where the middleware leaves the request's :class:`Caller` (``request[CALLER]``)."""


class ListenerConfigError(ValueError):
    """The listeners' configuration is unsafe or cannot work; the message says why and how to
    fix it. The worker refuses to start."""


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class ApiTokens:
    """The tokens the API listener accepts, kept only as SHA-256 digests."""

    def __init__(
        self,
        tokens: Sequence[SecretStr],
        pii_tokens: Sequence[SecretStr] = (),
        *,
        pii_enabled: bool = False,
    ) -> None:
        self._plain = [_digest(t.get_secret_value().encode()) for t in tokens]
        self._pii = [_digest(t.get_secret_value().encode()) for t in pii_tokens]
        self.pii_enabled = pii_enabled
        self.refused = 0
        """Requests answered 401 (missing or wrong token)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiTokens:
        return cls(settings.api_tokens, settings.api_pii_tokens, pii_enabled=settings.pii.enabled)

    @property
    def required(self) -> bool:
        return bool(self._plain or self._pii)

    def open_caller(self) -> Caller:
        """Every caller when no token is configured (loopback only)."""
        return Caller(authenticated=True, may_filter_numbers=True)

    def authenticate(self, authorization: str) -> Caller | None:
        """The caller an ``Authorization`` header value identifies, or None (not a bearer
        token this listener accepts)."""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        # Bytes: a header may hold any octets (aiohttp decodes them with surrogateescape).
        offered = _digest(token.encode("utf-8", "surrogateescape"))
        plain = [hmac.compare_digest(offered, known) for known in self._plain]
        pii = [hmac.compare_digest(offered, known) for known in self._pii]
        if any(pii):
            return Caller(authenticated=True, may_filter_numbers=True)
        if any(plain):
            return Caller(authenticated=True, may_filter_numbers=not self.pii_enabled)
        return None


_Handler = Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]]


def _unauthorized(message: str, *, invalid: bool) -> aiohttp_web.Response:
    challenge = 'Bearer realm="deliverytrack"'
    if invalid:
        challenge += ', error="invalid_token"'
    return aiohttp_web.Response(
        body=orjson.dumps({"error": message}),
        status=401,
        content_type="application/json",
        headers={"WWW-Authenticate": challenge},
    )


def _loopback_name(value: str, *, url: bool) -> bool:
    """``value`` (a Host header, or an Origin when ``url``) names a loopback host."""
    try:
        host = urlsplit(value if url else f"//{value}").hostname
    except ValueError:
        return False
    return host is not None and is_loopback(host)


def _from_another_site(request: aiohttp_web.Request) -> bool:
    """An open API (no token, loopback only) is still reachable by every web page the
    machine's browser opens: by its own name re-resolved to 127.0.0.1 (DNS rebinding: the
    page reads the API as its own origin), or by a cross-site POST. Those requests name a host
    other than loopback in ``Host`` or ``Origin``; a local client (curl, the CLI, another
    worker on loopback) names loopback or sends no Origin."""
    host = request.headers.get("Host")
    origin = request.headers.get("Origin")
    return (host is not None and not _loopback_name(host, url=False)) or (
        origin is not None and not _loopback_name(origin, url=True)
    )


def _from_elsewhere() -> aiohttp_web.Response:
    return aiohttp_web.Response(
        body=orjson.dumps(
            {
                "error": "this worker's API has no token, so it answers only requests to a "
                "loopback address (Host and Origin 127.0.0.1, ::1 or localhost), never a web "
                "page of another site; call it as http://127.0.0.1:<port>, or set "
                "DELIVERYTRACK_API_TOKENS"
            }
        ),
        status=403,
        content_type="application/json",
    )


def _is_public(request: aiohttp_web.Request) -> bool:
    """The route matched is a public one (by its registered path, not the raw request path)."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PUBLIC_PATHS


def api_auth(tokens: ApiTokens) -> Callable[..., Awaitable[aiohttp_web.StreamResponse]]:
    """The aiohttp middleware of the API listener (outermost: it runs before any route)."""

    @aiohttp_web.middleware
    async def require_token(
        request: aiohttp_web.Request, handler: _Handler
    ) -> aiohttp_web.StreamResponse:
        if not tokens.required:
            if _from_another_site(request):
                return _from_elsewhere()
            request[CALLER] = tokens.open_caller()
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None:
            if _is_public(request):
                request[CALLER] = ANONYMOUS
                return await handler(request)
            tokens.refused += 1
            return _unauthorized(
                "a token is required: send Authorization: Bearer <token> (one of the worker's "
                "DELIVERYTRACK_API_TOKENS)",
                invalid=False,
            )
        caller = tokens.authenticate(header)
        if caller is None:
            tokens.refused += 1
            return _unauthorized("invalid token", invalid=True)
        request[CALLER] = caller
        return await handler(request)

    return require_token


def caller_of(request: Any) -> Caller:
    """The request's caller (anonymous if the middleware did not run). ``request`` is
    aiohttp's (Faust's views are typed with Faust's own abstract Request)."""
    caller = request.get(CALLER)
    return caller if isinstance(caller, Caller) else ANONYMOUS


def outgoing_tokens(settings: Settings) -> list[str]:
    """Tokens a worker sends to the others' ``/internal/query``, in the order it tries them."""
    return [t.get_secret_value() for t in (*settings.api_tokens, *settings.api_pii_tokens)]


# --- where the listeners may bind ---------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; False for wildcards (``0.0.0.0``,
    ``::``, ``""``), other addresses and host names (they may resolve to anything)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _overlap(a: str, b: str) -> bool:
    wildcard = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - compared, not bound
    return a.strip().lower() == b.strip().lower() or a.strip() in wildcard or b.strip() in wildcard


def check_listeners(settings: Settings) -> None:
    """Refuse a configuration that would expose the API without a token, or put both
    listeners on one address. Raises :class:`ListenerConfigError`."""
    if not (settings.api_tokens or settings.api_pii_tokens) and not is_loopback(settings.web_host):
        raise ListenerConfigError(
            f"refusing to serve the API on {settings.web_host!r}:{settings.web_port} without "
            "a token: it is not a loopback address, and the API reads every tracking record "
            "(phone numbers, outcomes) and runs admin actions for whoever reaches it. Set "
            "DELIVERYTRACK_API_TOKENS (comma-separated; e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'), or bind "
            "DELIVERYTRACK_WEB_HOST to 127.0.0.1. Providers' webhooks have their own listener, "
            "DELIVERYTRACK_WEBHOOK_HOST/_PORT, which needs no API token"
        )
    if (
        settings.web_port != 0
        and settings.web_port == settings.webhook_port
        and _overlap(settings.web_host, settings.webhook_host)
    ):
        raise ListenerConfigError(
            f"DELIVERYTRACK_WEB_PORT and DELIVERYTRACK_WEBHOOK_PORT are both "
            f"{settings.web_port}: the API and the webhook ingress are separate listeners, "
            "give them different ports (or different addresses)"
        )

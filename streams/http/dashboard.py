"""The dashboard page (``GET /ui``) and the data only it needs (``GET /recent``).

The page is static HTML, JavaScript and CSS shipped in the package (``streams/http/ui/``, package
data): no build step, no CDN, no third-party code, so it works offline. It is served without a
token (it holds no data); every call it makes for data (``/health``, ``/stats``,
``/records/count-by``, ``/records/due``, ``/recent``, ``/records/{id}``,
``/records/{id}/history``) sends the API token as a bearer header, which the page asks for
when the worker answers 401 and keeps in ``sessionStorage`` (gone when the tab closes).

``GET /recent`` (token needed): this worker's latest status changes and dead letters (the
engine's bounded ring, ``streams/engine/recent.py``) and its consumer lag per input partition (the
broker's last known end offset minus the offset folded so far).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import faust
from faust.web import Request, Response, View

from deliverytrack.streams.engine.loop import FoldEngine

UI_FILES: dict[str, str] = {
    "/ui": "index.html",
    "/ui/dashboard.js": "dashboard.js",
    "/ui/dashboard.css": "dashboard.css",
}
"""Route -> file in ``streams/http/ui/``; these routes answer without a token
(``streams/http/auth.py``)."""

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

_HEADERS = {
    # Only this worker's own files and API: nothing loaded from elsewhere, no inline script.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def ui_file(name: str) -> bytes:
    """One file of the page, as shipped in the package."""
    return (resources.files("deliverytrack.streams.http") / "ui" / name).read_bytes()


def consumer_lag(engine: FoldEngine) -> dict[str, Any]:
    """Per input topic-partition of this worker: the broker's last known end offset minus the
    next offset to fold (0 when caught up); ``total`` over them."""
    partitions: list[dict[str, Any]] = []
    try:
        consumer = engine.consumer
    except RuntimeError:  # not started yet
        return {"total": 0, "partitions": partitions}
    for tp, applied in sorted(engine.applied_offsets().items()):
        end = consumer.highwater(tp)
        if end is None:
            continue
        partitions.append(
            {"topic": tp.topic, "partition": tp.partition, "lag": max(0, end - applied)}
        )
    return {"total": sum(p["lag"] for p in partitions), "partitions": partitions}


def register_dashboard(app: faust.App, engine: FoldEngine) -> None:
    """``GET /ui`` (and its script and style) and ``GET /recent``."""
    for route, name in UI_FILES.items():
        _register_file(app, route, name)

    @app.page("/recent")
    class Recent(View):
        async def get(self, request: Request) -> Response:
            return self.json(
                {
                    "statusChanges": engine.recent.status_changes(),
                    "deadLetters": engine.recent.dead_letters(),
                    "lag": consumer_lag(engine),
                }
            )


def _register_file(app: faust.App, route: str, name: str) -> None:
    body = ui_file(name)
    content_type = _CONTENT_TYPES[name[name.rindex(".") :]]

    class UiFile(View):
        async def get(self, request: Request) -> Response:
            # The charset goes in the header: aiohttp refuses it in ``content_type``.
            return self.bytes(body, headers={**_HEADERS, "Content-Type": content_type})

    app.page(route, name=f"ui-{name}")(UiFile)

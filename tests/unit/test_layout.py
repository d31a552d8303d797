"""The tree reads as the design and stays that way: which package may import which, and no
production function over ~60 lines or class over ~300 (the exceptions are listed, each with
why, and the list only shrinks). Private attributes of other modules: ruff's SLF001."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
STREAMS = ROOT / "streams"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 300

# package (or top-level module) under streams/ -> what of streams/ it may import
ALLOWED: dict[str, set[str]] = {
    "engine": {"boundary", "clock", "kafka", "metrics", "state", "supervision", "topics"},
    "state": set(),
    "kafka": {"topics"},
    "polling": {"boundary", "clock", "kafka", "metrics", "providers", "supervision", "topics"},
    "webhooks": {
        "boundary",
        "clock",
        "http",
        "kafka",
        "metrics",
        "providers",
        "supervision",
        "topics",
    },
    "query": {"engine", "http", "state"},
    "http": {"clock", "query", "engine", "worker"},  # worker: type hints of the app only
    "providers": {"clock"},
}
NOBODY_ELSE = {"cli": {"cli"}, "dev": {"cli", "dev"}, "api": {"api", "cli", "dev"}}
"""Imported only from these packages: the command line, dev tooling, the client library."""

# "path:name" -> why it may be longer (remove the entry when it is split)
LONG: dict[str, str] = {
    "models/settings.py:Settings": "one field declaration per DELIVERYTRACK_* variable",
    "streams/api/client.py:DeliveryTrackClient": "one method per query of the HTTP API",
    "streams/webhooks/dispatcher.py:WebhookDispatcher": "two consumers (deliveries, retries) "
    "and the attempt: to split into a delivery loop and a retry loop",
    "streams/dev/kafka_broker.py:KafkaBroker": "dev tooling: process, config, probes of a broker",
    "streams/dev/kafka_broker.py:_fetch_jars": "dev tooling: the Maven POM and its call",
    "streams/dev/kafka_broker.py:main": "dev tooling: its argparse options",
    "streams/dev/demo.py:Demo": "dev tooling: start, traffic, summary and shutdown of the demo",
    "streams/dev/demo.py:Demo._run": "dev tooling: the demo's steps in order",
    "streams/http/query_views.py:register_query_views": "one small view class per route",
    "streams/http/worker_views.py:register_worker_views": "the /health body, one line per field",
    "streams/metrics.py:Metrics.__init__": "one declaration per Prometheus metric",
    "streams/polling/poller.py:Poller.poll": "a provider call, every k-msg outcome",
    "streams/providers/iwinv.py:IwinvProvider._alimtalk_status": "IWINV answer shapes",
    "streams/providers/iwinv.py:IwinvProvider._sms_status": "IWINV's answer shapes, as documented",
    "streams/replay.py:run_replay": "replay, progress and verify: to split into the three",
    "streams/worker/app.py:create_app": "the worker's wiring, one component per block",
    "tables/fold.py:_record_send": "k-msg's record creation rules, one per field",
}


def _sources() -> list[Path]:
    return sorted(
        p for folder in ("streams", "models", "tables") for p in (ROOT / folder).rglob("*.py")
    )


def _area(path: Path) -> str:
    rel = path.relative_to(STREAMS).parts
    return rel[0] if len(rel) > 1 else Path(rel[0]).stem


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "deliverytrack.streams."
        ):
            found.add(node.module.split(".")[2])  # type: ignore[union-attr]
    return found


@pytest.mark.parametrize(
    "path", sorted(STREAMS.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_imports_follow_the_layers(path: Path) -> None:
    area = _area(path)
    imported = _imports(path) - {area}
    if area in ALLOWED:
        assert imported <= ALLOWED[area], f"{area} imports {sorted(imported - ALLOWED[area])}"
    for target, importers in NOBODY_ELSE.items():
        assert target not in imported or area in importers, f"{area} imports streams.{target}"


Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _definitions() -> dict[str, tuple[int, int]]:
    """``"path:Qualified.name"`` -> (lines, limit) of every class and function."""
    found: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, path: Path, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, Definition):
                name = f"{prefix}{child.name}"
                size = (child.end_lineno or child.lineno) - child.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(child, ast.ClassDef) else MAX_FUNCTION_LINES
                found[f"{path.relative_to(ROOT)}:{name}"] = (size, limit)
                visit(child, path, f"{name}.")
            else:
                visit(child, path, prefix)

    for path in _sources():
        visit(ast.parse(path.read_text()), path, "")
    return found


def test_functions_and_classes_stay_small() -> None:
    over = [
        f"{key} ({size} lines)"
        for key, (size, limit) in _definitions().items()
        if size > limit and key not in LONG
    ]
    assert not over, "\n".join(over)


def test_the_exceptions_are_still_needed() -> None:
    """An entry of LONG whose function or class got short (or went away) is removed."""
    sizes = _definitions()
    stale = [key for key in LONG if key not in sizes or sizes[key][0] <= sizes[key][1]]
    assert not stale, stale

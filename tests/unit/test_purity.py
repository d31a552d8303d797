"""Import contract: models and the fold logic stay free of I/O, Faust and the clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FORBIDDEN_IMPORTS = {"faust", "aiokafka", "aiohttp", "rocksdict", "mode", "random", "socket"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "uuid4", "perf_counter"}
PURE = [
    p
    for folder in ("models", "tables")
    for p in sorted((ROOT / folder).rglob("*.py"))
    if p.name != "definitions.py"
]


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_import_no_io_and_read_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_IMPORTS, f"{path.name} imports {name}"
            area = path.relative_to(ROOT).parts[0]
            if area == "models":
                assert not name.startswith(("deliverytrack.tables", "deliverytrack.streams"))
            if area == "tables":
                assert not name.startswith("deliverytrack.streams")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in FORBIDDEN_CALLS, f"{path.name} calls .{node.func.attr}()"

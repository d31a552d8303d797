"""The docs cannot rot: README.md and docs/*.md are checked against the code (as eventsourcing
executes its docs). Links and anchors resolve; every ``deliverytrack ...`` command line in a
shell block parses; every ``python -m`` module and ``deliverytrack.*`` name exists; every
setting has its ``DELIVERYTRACK_*`` variable in docs/configuration.md; Python blocks compile,
and the ones that need no worker run (the documented webhook receiver verifies what the
dispatcher signs). docs/examples/send_one.py runs against a real worker in
tests/integration/test_docs_example.py."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from deliverytrack.models.settings import Settings
from deliverytrack.streams.cli.entry import parse_args
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def slug(heading: str) -> str:
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.+)$", text)}


def blocks(path: Path, *langs: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in langs]


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_links_and_anchors_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text())
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_command_lines_parse(page: Path) -> None:
    for body in blocks(page, "bash", "sh", "shell", "console"):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\[[^\]]*\]", "", line.split(" # ", 1)[0])  # usage-style [--opt X]
            words = shlex.split(line) if "deliverytrack" in line else []
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                words.pop(0)  # VAR=value prefixes
            if not words or not words[0].endswith("deliverytrack") or "$(" in line:
                continue
            try:
                parse_args(words[1:])
            except SystemExit as exc:
                assert exc.code == 0, f"{page.name}: {line!r} does not parse"


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_modules_and_names_exist(page: Path) -> None:
    text = page.read_text()
    for module in re.findall(r"python -m ([\w.]+)", text):
        if module.startswith("deliverytrack"):
            assert importlib.util.find_spec(module), f"{page.name}: python -m {module}"
    for dotted in set(re.findall(r"\bdeliverytrack\.(?:streams|models|tables)(?:\.\w+)*", text)):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            module = ".".join(parts[:cut])
            try:
                obj = importlib.import_module(module)
            except ImportError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"{page.name}: {dotted} ({module} has no {attr})"
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(f"{page.name}: {dotted} is not importable")


def test_every_setting_is_documented() -> None:
    text = "".join(page.read_text() for page in PAGES)
    missing = [f for f in Settings.model_fields if f"DELIVERYTRACK_{f.upper()}" not in text]
    assert not missing, f"the docs never name: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_python_blocks_compile(page: Path) -> None:
    for body in blocks(page, "python", "py"):
        compile(body, str(page), "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT


def test_the_documented_webhook_receiver_verifies_what_the_dispatcher_signs() -> None:
    (code,) = [
        b for b in blocks(ROOT / "docs" / "outbound-webhooks.md", "python") if "def verify" in b
    ]
    scope: dict[str, object] = {}
    exec(code, scope)  # noqa: S102 - our own documentation
    body, timestamp = b'{"messageId": "m-1"}', int(__import__("time").time())
    headers = {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign("s3cret", timestamp, body)}
    verify = scope["verify"]
    assert verify(headers, body, "s3cret")  # type: ignore[operator]
    assert not verify(headers, body, "other")  # type: ignore[operator]

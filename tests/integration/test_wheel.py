"""The package as users install it: the wheel built from this checkout, installed into a fresh
venv outside the checkout, runs its CLI and folds a send result on the real broker.

Editable installs and the test suite import the checkout (``pythonpath = ["."]`` and the
``deliverytrack/models`` etc. symlinks), so they cannot see a wheel that lacks a subpackage; these
tests use only the installed copy, from a working directory outside the checkout.

The venv is built once per session: ``pip wheel`` on a copy of the checkout's files (so no
``build/`` leftovers in the checkout leak into the wheel), then the wheel and its dependencies are
installed into a new venv from a wheelhouse cached under ``~/.cache/deliverytrack/wheelhouse``
(filled from the package index only when a dependency is missing, so a warm run is offline and
takes ~15 s). Set ``DELIVERYTRACK_WHEEL_VENV`` to test an existing venv instead (it must hold
the wheel of this checkout; the file-list test fails on a stale one), or
``DELIVERYTRACK_WHEELHOUSE`` to move the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from deliverytrack.models.settings import Settings
from tests.factories import send_recorded_factory
from tests.integration.conftest import ROOT, KafkaIO, WorkerProcess, settings_env

pytestmark = pytest.mark.integration

VENV_ENV = "DELIVERYTRACK_WHEEL_VENV"
WHEELHOUSE_ENV = "DELIVERYTRACK_WHEELHOUSE"
STEP_TIMEOUT_S = 600.0  # a cold wheelhouse downloads ~15 MB of dependencies


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a build step; its output, or fail the test with it."""
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc.stdout


def _outside_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment that cannot reach the checkout or the test venv's packages."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"):
        env.pop(key, None)
    return env


def _copy_sources(dest: Path) -> None:
    """The checkout's files as a clean clone has them (tracked plus new, not ignored ones)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        names = ["pyproject.toml", "README.md", "deliverytrack", "models", "tables", "streams"]
        for name in names:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(
                    src, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif src.exists():
                shutil.copy2(src, dest / name)
        return
    for rel in filter(None, listed.decode().split("\0")):
        src = ROOT / rel
        if not src.is_symlink() and not src.exists():
            continue  # deleted in the working tree, not yet committed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)


def _wheelhouse() -> Path:
    env = os.environ.get(WHEELHOUSE_ENV)
    path = Path(env).expanduser() if env else Path.home() / ".cache/deliverytrack/wheelhouse"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise sessions (other checkouts, other engineers) that fill the same wheelhouse."""
    with open(directory / ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _offline_first(offline: list[str], fill: list[str], cwd: Path, house: Path) -> None:
    """Run ``offline`` (pip with ``--no-index --find-links house``); if something is missing
    from the wheelhouse, download it with ``fill`` (pip download) and run ``offline`` again."""
    proc = subprocess.run(
        offline, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        _run(fill, cwd=cwd)
        for own in house.glob("deliverytrack-*"):
            own.unlink()  # only dependencies are cached, never a build of ours
        _run(offline, cwd=cwd)


def build_wheel_venv(workdir: Path) -> Path:
    """Build this checkout's wheel and install it into a new venv under ``workdir``."""
    src, dist, venv = workdir / "src", workdir / "dist", workdir / "venv"
    src.mkdir(parents=True)
    _copy_sources(src)
    build_requires = tomllib.loads((src / "pyproject.toml").read_text())["build-system"]["requires"]
    # A venv of the base interpreter, without pip (this venv's pip installs into it: faster).
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=workdir)
    pip = [sys.executable, "-m", "pip"]
    house = _wheelhouse()
    local = ["--no-index", "--find-links", str(house)]
    with _locked(house):
        _offline_first(
            [*pip, "wheel", *local, "--no-deps", "--wheel-dir", str(dist), str(src)],
            [*pip, "download", "--dest", str(house), *build_requires],
            workdir,
            house,
        )
        (wheel,) = dist.glob("deliverytrack-*.whl")
        _offline_first(
            [*pip, "--python", str(venv / "bin" / "python"), "install", *local, str(wheel)],
            [*pip, "download", "--dest", str(house), str(wheel)],
            workdir,
            house,
        )
    return venv


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(VENV_ENV)
    if given:
        venv = Path(given)
        if not (venv / "bin" / "deliverytrack").is_file():
            pytest.fail(f"${VENV_ENV}={given} is not a venv with deliverytrack installed")
        return venv
    return build_wheel_venv(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the checkout."""
    path = tmp_path / "outside"
    path.mkdir()
    assert not path.resolve().is_relative_to(ROOT.resolve())
    return path


def _site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


def _expected_files() -> set[str]:
    """Every module as pyproject maps it (deliverytrack/models/x.py <- models/x.py), and the
    package data (py.typed, the dashboard's files)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    expected: set[str] = set()
    for package, patterns in config["package-data"].items():
        base = _package_dir(config["package-dir"], package)
        for pattern in patterns:
            for path in base.glob(pattern):
                rel = path.relative_to(base)
                expected.add("/".join([*package.split("."), *rel.parts]))
    for package, directory in config["package-dir"].items():
        base = ROOT / directory
        for path in base.rglob("*.py"):
            rel = path.relative_to(base)
            if "__pycache__" in rel.parts or any((base / p).is_symlink() for p in rel.parents):
                continue  # deliverytrack/models etc: their own mapping covers them
            expected.add("/".join([*package.split("."), *rel.parts]))
    return expected


def _package_dir(mapping: dict[str, str], package: str) -> Path:
    """Where setuptools finds ``package``: its own ``package-dir`` entry, else its nearest
    mapped parent's directory plus the rest of its dotted name (``deliverytrack.streams.http``
    -> ``streams/http``)."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        parent = ".".join(parts[:cut])
        if parent in mapping:
            return ROOT / mapping[parent] / Path(*parts[cut:])
    return ROOT / Path(*parts)


def test_wheel_holds_every_subpackage_and_nothing_top_level(wheel_venv: Path) -> None:
    site = _site_packages(wheel_venv)
    (dist_info,) = site.glob("deliverytrack-*.dist-info")
    installed = {
        line.split(",")[0] for line in (dist_info / "RECORD").read_text().splitlines() if line
    }
    package_files = {
        name
        for name in installed
        if name.startswith("deliverytrack/") and "__pycache__" not in name
    }
    assert package_files == _expected_files()
    top_level = {name.split("/")[0] for name in installed if not name.startswith("../")}
    assert top_level == {"deliverytrack", dist_info.name}
    assert (dist_info / "top_level.txt").read_text().split() == ["deliverytrack"]
    for name in ("models", "tables", "streams"):
        assert not (site / name).exists() and not (site / f"{name}.py").exists()
    assert not (site / "deliverytrack" / "models").is_symlink()


def test_installed_cli_runs_outside_the_checkout(wheel_venv: Path, outside: Path) -> None:
    python = str(wheel_venv / "bin" / "python")
    env = _outside_env()
    for argv in (
        [str(wheel_venv / "bin" / "deliverytrack"), "--help"],
        [python, "-m", "deliverytrack", "--help"],
        [python, "-m", "deliverytrack", "worker", "--help"],
        [python, "-m", "deliverytrack.streams.dev.kafka_broker", "--help"],
    ):
        proc = subprocess.run(
            argv, cwd=outside, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
        assert "usage:" in proc.stdout, argv
    # The modules come from the venv, never from the checkout; no top-level models/tables/streams.
    probe = (
        "import importlib.util, json, deliverytrack.models.events, deliverytrack.tables.fold,"
        " deliverytrack.streams.worker.app, deliverytrack.streams.providers.registry as r;"
        " print(json.dumps({'file': r.__file__,"
        " 'top': [n for n in ('models', 'tables', 'streams') if importlib.util.find_spec(n)]}))"
    )
    proc = subprocess.run(
        [python, "-c", probe], cwd=outside, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    found = orjson.loads(proc.stdout)
    assert Path(found["file"]).is_relative_to(_site_packages(wheel_venv)), found
    assert found["top"] == [], found


class InstalledWorker(WorkerProcess):
    """The installed ``deliverytrack worker``, started from a directory outside the checkout."""

    def __init__(self, settings: Settings, log_path: Path, venv: Path, cwd: Path) -> None:
        super().__init__(settings, log_path, [str(venv / "bin" / "deliverytrack"), "worker"])
        self.cwd = cwd

    def start(self, timeout: float = 90.0) -> InstalledWorker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=_outside_env(settings_env(self.settings)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self


async def test_installed_worker_folds_a_send_result(
    wheel_venv: Path,
    outside: Path,
    settings_factory: Callable[..., Settings],
    kafka_io_factory: Callable[[Settings], Any],
) -> None:
    settings = settings_factory()
    worker = InstalledWorker(settings, outside / "worker.log", wheel_venv, outside)
    try:
        await asyncio.to_thread(worker.start)
        io: KafkaIO = await kafka_io_factory(settings)
        event = send_recorded_factory("m-wheel")
        await io.send(io.topics.send_results, event.message_id, event)
        changes = await io.read_json(
            io.topics.status_changes,
            lambda es: any(e["messageId"] == "m-wheel" for e in es),
            timeout=60,
        )
        (change,) = [e for e in changes if e["messageId"] == "m-wheel"]
        assert change["previousStatus"] is None and change["status"] == "SENT", change
        body = await worker.arecord("m-wheel", until=lambda b: b["status"] == "SENT")
        assert body["providerMessageId"] == "pm-m-wheel"
        code = await asyncio.to_thread(worker.stop)
        assert code == 0, worker.log_tail()
    finally:
        worker.kill()

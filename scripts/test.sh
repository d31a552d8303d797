#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv, packages, Kafka jars (Maven), lint, types, tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -q`.
# The suite includes tests/integration/test_wheel.py: it builds the wheel, installs it into a
# fresh venv outside the checkout (dependencies cached in ~/.cache/deliverytrack/wheelhouse)
# and runs the installed CLI and worker against the test broker.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_log=.venv/pip-install.log
install() { .venv/bin/python -m pip install --quiet "$@" >"$pip_log" 2>&1 || { cat "$pip_log"; exit 1; }; }
install --upgrade pip
install --no-compile -e '.[dev]'  # bytecode as imported: ~8 s less

# The dashboard's browser test (tests/integration/test_dashboard.py) drives Debian's headless
# Chromium through Selenium: no browser download. About a minute of apt the first time.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "== Chromium and chromedriver (apt-get, once)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  apt_log=.venv/apt-install.log
  { $sudo apt-get install -y chromium chromium-driver >"$apt_log" 2>&1 \
    || { $sudo apt-get update >>"$apt_log" 2>&1 \
         && $sudo apt-get install -y chromium chromium-driver >>"$apt_log" 2>&1; }; } \
    || { cat "$apt_log"; exit 1; }
fi

echo "== Kafka broker jars (Maven Central, cached)"
.venv/bin/python -m deliverytrack.streams.dev.kafka_broker --fetch-only

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# In parallel processes (pytest-xdist), each with its own session broker; a test file stays
# on one process (--dist loadfile: module fixtures such as the TLS broker start once), the
# slowest files first (SLOW_FILES_FIRST in tests/conftest.py, --no-loadscope-reorder). The
# integration tests mostly wait on brokers and workers: 3 processes on 2 cores ran the suite in
# ~5.5-6 min against ~15 min in one. PYTEST_XDIST_AUTO_NUM_WORKERS sets how many; `-n 0` as
# an argument runs the tests in this process.
export PYTEST_XDIST_AUTO_NUM_WORKERS=${PYTEST_XDIST_AUTO_NUM_WORKERS:-3}
.venv/bin/python -m pytest -n auto --dist loadfile --no-loadscope-reorder "$@"

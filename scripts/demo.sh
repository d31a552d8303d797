#!/usr/bin/env bash
# The demo on a fresh machine: venv, packages, Kafka jars (Maven), then broker + worker +
# simulated provider + traffic, with progress and a summary, then the dashboard until Ctrl-C
# (--exit-after-summary: exit after the summary). Ctrl-C stops everything.
# Extra arguments go to `deliverytrack demo`, e.g. `scripts/demo.sh --messages 2000 --duration 20`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_log=.venv/pip-install.log
install() { .venv/bin/python -m pip install --quiet "$@" >"$pip_log" 2>&1 || { cat "$pip_log"; exit 1; }; }
install --upgrade pip
install -e .
exec .venv/bin/deliverytrack demo "$@"

#!/usr/bin/env bash
# The demo on a fresh machine: venv, packages, Kafka jars (Maven), then broker + worker +
# simulated provider + traffic, with progress and a summary. Ctrl-C stops everything.
# Extra arguments go to `deliverytrack demo`, e.g. `scripts/demo.sh --messages 2000 --duration 20`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/deliverytrack demo "$@"

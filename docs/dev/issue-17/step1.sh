#!/usr/bin/env bash
# Step 1 of /tmp/restructure-plan.md in one go: moves, path rewrite, pyproject packages, import order, format.
set -euo pipefail
PY=${PY:-.venv/bin/python}
bash /tmp/restructure/moves.sh >/dev/null
"$PY" /tmp/restructure/rewrite_paths.py >/dev/null
"$PY" /tmp/restructure/rewrite_paths.py --check
"$PY" - <<'PYEOF'
from pathlib import Path
p = Path("pyproject.toml")
s = p.read_text()
anchor = '    "deliverytrack.streams.providers",\n'
new = ["api", "cli", "dev", "engine", "http", "kafka", "polling", "query", "state", "webhooks", "worker"]
lines = "".join(f'    "deliverytrack.streams.{n}",\n' for n in new if f'"deliverytrack.streams.{n}"' not in s)
p.write_text(s.replace(anchor, lines + anchor))
PYEOF
RUFF=${RUFF:-.venv/bin/ruff}
"$RUFF" check --fix --select I -q . || true
"$RUFF" format -q .
"$RUFF" check . || echo "^ rewrap these lines by hand (paths grew longer)"

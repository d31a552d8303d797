#!/usr/bin/env bash
# Step 1 of /tmp/restructure-plan.md: streams/ into packages by concern (git mv only).
# Run from the repository root on a clean tree; then run rewrite_paths.py.
set -euo pipefail
test -z "$(git status --porcelain --untracked-files=no)" || { echo "commit or stash first"; exit 1; }

mvp() {  # git mv SRC DST, creating DST's package with an empty __init__.py first
  local src=$1 dst=$2 pkg
  pkg=$(dirname "$dst")
  mkdir -p "$pkg"
  [ -e "$pkg/__init__.py" ] || { : > "$pkg/__init__.py"; git add "$pkg/__init__.py"; }
  git mv "$src" "$dst"
}
# A module whose new package takes its name moves through a temporary name.
for m in engine:engine/loop query:query/service webhooks:webhooks/ingress worker:worker/process cli:cli/entry; do
  old=${m%%:*}; new=${m#*:}
  git mv "streams/$old.py" "streams/_${old}_moving.py"
  mvp "streams/_${old}_moving.py" "streams/$new.py"
done
mvp streams/state/store.py            streams/state/store.py
mvp streams/polling/poller.py           streams/polling/poller.py
mvp streams/polling/loop.py        streams/polling/loop.py
mvp streams/webhooks/listener.py streams/webhooks/listener.py
mvp streams/webhooks/dispatcher.py       streams/webhooks/dispatcher.py
mvp streams/webhooks/egress.py           streams/webhooks/egress.py
mvp streams/query/limits.py     streams/query/limits.py
mvp streams/http/views.py              streams/http/views.py
mvp streams/http/auth.py             streams/http/auth.py
mvp streams/worker/app.py              streams/worker/app.py
mvp streams/worker/logs.py             streams/worker/logs.py
mvp streams/worker/broker_watch.py     streams/worker/broker_watch.py
mvp streams/kafka/clients.py     streams/kafka/clients.py
mvp streams/kafka/topic_admin.py            streams/kafka/topic_admin.py
mvp streams/kafka/membership.py       streams/kafka/membership.py
mvp streams/api/client.py           streams/api/client.py
mvp streams/api/facades.py          streams/api/facades.py
mvp streams/cli/query.py        streams/cli/query.py
mvp streams/dev/kafka_broker.py     streams/dev/kafka_broker.py
mvp streams/dev/demo.py             streams/dev/demo.py
git mv models/outbound.py models/outbound.py
# in flight when the plan was written: move them too if they exist by then
[ ! -e streams/state/memory.py ] || mvp streams/state/memory.py streams/state/memory.py
[ ! -e streams/http/server.py ] || mvp streams/http/server.py streams/http/server.py
# Anything else still flat in streams/ besides these is new: place it by the concern table.
ls streams/*.py | grep -vE "streams/(__init__|topics|boundary|supervision|clock|contract|replay)\.py$" || true
git status --short | head -60

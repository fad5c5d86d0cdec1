#!/usr/bin/env bash
# Quick start, step 1: set the machine up, then run the fabric's main job.
# Until the multi-node lab exists, the main job is the registry demo: start a registry on the
# embedded SQLite store, register a sample network service and endpoint with nsmctl, list and
# describe them, and stop the registry cleanly. Idempotent: run it as often as you like.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }
workdir=$(mktemp -d /tmp/vwire-demo.XXXXXX)
socket="$workdir/registry.sock"
export NSMCTL_REGISTRY="unix://$socket"
registry_pid=""
cleanup() {
  if [ -n "$registry_pid" ] && kill -0 "$registry_pid" 2>/dev/null; then
    kill -TERM "$registry_pid"; wait "$registry_pid" || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

step "starting a registry on $NSMCTL_REGISTRY (store: sqlite in $workdir)"
.venv/bin/python -m registry --listen "unix://$socket" --state-dir "$workdir" --log-level warning &
registry_pid=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.05; done
[ -S "$socket" ] || { echo "error: the registry did not start" >&2; exit 1; }

step "nsmctl apply -f docs/examples/secure-db.yaml"
.venv/bin/nsmctl apply -f docs/examples/secure-db.yaml
step "nsmctl get ns"
.venv/bin/nsmctl get ns
step "nsmctl get nse"
.venv/bin/nsmctl get nse
step "nsmctl describe nse $(.venv/bin/nsmctl get nse -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["name"])')"
.venv/bin/nsmctl describe nse "$(.venv/bin/nsmctl get nse -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["name"])')"

step "stopping the registry (SIGTERM)"
kill -TERM "$registry_pid"; wait "$registry_pid"; registry_pid=""
[ ! -e "$socket" ] || { echo "error: the registry left its socket behind" >&2; exit 1; }
step "done: the registry stopped cleanly and removed its socket"

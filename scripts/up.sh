#!/usr/bin/env bash
# Quick start, step 1: set the machine up, then run the fabric's main job, the local multi-node
# lab: two simulated nodes (network namespaces joined by an underlay), each with its own nsmgr
# and forwarder, one registry, an endpoint on the last node and a client on the first. It waits
# until the client's encrypted vWire passes traffic, shows it, and proves it with a ping.
# Idempotent: running it again reports the lab that is already up. Remove it with
# `.venv/bin/nsmctl lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

printf '\n==> nsmctl lab up\n'
.venv/bin/nsmctl lab up
target=$(.venv/bin/nsmctl lab status -o json | .venv/bin/python -c \
  'import json,sys; from lab.run import endpoint_address; print(endpoint_address(json.load(sys.stdin)["client"][0]))')
printf '\n==> ip netns exec vwl-n1-nsc ping -c3 %s   (client on n1 -> endpoint on n2, over WireGuard)\n' "$target"
ip netns exec vwl-n1-nsc ping -c3 -i 0.2 "$target"
printf '\n==> the lab stays up: try `.venv/bin/nsmctl lab status`; remove it with `.venv/bin/nsmctl lab down`\n'

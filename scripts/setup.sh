#!/usr/bin/env bash
# Installs what the fabric needs on a Debian machine (as root), idempotently:
# apt packages (WireGuard userspace and tools, iperf3, iproute2, nftables, tcpdump, etcd-server
# for the registry's etcd store in the lab; its own service is not started or enabled),
# a Python virtual environment at .venv holding the project and its entry points.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(wireguard-go wireguard-tools iperf3 iproute2 iputils-ping nftables tcpdump procps python3-venv python3-dev etcd-server)
# With --test (scripts/test.sh): what only the tests need — promtool, from Debian's prometheus
# package (its server is not started or enabled: the tests use the rule checker alone);
# headless Chromium and its WebDriver for the dashboard's browser test; graphviz's dot to check
# nsmctl graph -o dot.
TEST_PACKAGES=(prometheus chromium chromium-driver graphviz)
[ "${1:-}" = "--test" ] && APT_PACKAGES+=("${TEST_PACKAGES[@]}")

step() { printf '\n==> %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "error: installing ${missing[*]} needs root (run as root or with sudo)" >&2; exit 1; }
  step "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No service a package brings is started on this machine by installing it.
  policy=/usr/sbin/policy-rc.d
  made_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=true
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if $made_policy; then rm -f "$policy"; fi
  for service in prometheus etcd; do
    if [[ " ${missing[*]} " == *" ${service}"* ]] && command -v systemctl >/dev/null; then
      systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
  done
else
  step "apt packages present: ${APT_PACKAGES[*]}"
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: Python >= 3.11 is needed (found $("$PYTHON" --version)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then
  step "virtual environment .venv is up to date"
else
  step "creating the virtual environment .venv and installing the project"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
step "ready: $(.venv/bin/python --version), wireguard-go $(wireguard-go --version 2>/dev/null | head -1 | awk '{print $2}')"

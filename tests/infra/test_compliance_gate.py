"""The compliance gate fails synthesis on any unacknowledged finding and accepts only scoped, reasoned exceptions."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_logs as logs

from stacks.assembly import SynthResult
from stacks.compliance import LEDGER_FILE, ComplianceGate, read_findings
from stacks.platform import Platform

REASON = "Test fixture: retention is enforced by the organisation's log archive account, which keeps every group."


def _app(tmp_path: Path) -> tuple[cdk.App, ComplianceGate, logs.LogGroup]:
    app = cdk.App(outdir=str(tmp_path), analytics_reporting=False, builtin_cloud_formation_validation=False)
    gate = ComplianceGate(app)
    stack = cdk.Stack(app, "Gate", env=cdk.Environment(account="111122223333", region="us-east-1"))
    # A log group with no customer-managed key: NIST.800.53.R5-CloudWatchLogGroupEncrypted must fire.
    group = logs.LogGroup(stack, "Plain", retention=logs.RetentionDays.ONE_YEAR)
    return app, gate, group


def test_unacknowledged_finding_fails_synthesis(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    rules = {finding.rule for finding in read_findings(tmp_path)}
    assert "NIST.800.53.R5-CloudWatchLogGroupEncrypted" in rules


def test_acknowledged_finding_passes_and_is_recorded(tmp_path: Path) -> None:
    app, gate, group = _app(tmp_path)
    gate.acknowledge(group, "NIST.800.53.R5-CloudWatchLogGroupEncrypted", REASON)
    app.synth()
    assert read_findings(tmp_path) == []
    ledger = json.loads(gate.write_ledger(tmp_path).read_text(encoding="utf-8"))
    assert ledger == [{"path": "Gate/Plain", "rule": "NIST.800.53.R5-CloudWatchLogGroupEncrypted", "reason": REASON}]
    assert (tmp_path / LEDGER_FILE).exists()


@pytest.mark.parametrize(
    ("rule", "reason", "on_stack", "message"),
    [
        ("AwsSolutions", REASON, False, "full id"),
        ("NIST.800.53.R5-*", REASON, False, "full id"),
        ("AwsSolutions-IAM5", "because", False, "compensating control"),
        ("AwsSolutions-IAM5[Resource::*]", REASON, True, "scope it to a resource"),
        ("CloudFormation-Validate::E3031", REASON, False, "full id"),  # a template error is fixed, never waived
    ],
)
def test_blanket_acknowledgements_are_refused(
    tmp_path: Path, rule: str, reason: str, on_stack: bool, message: str
) -> None:
    _, gate, group = _app(tmp_path)
    scope = cdk.Stack.of(group) if on_stack else group
    with pytest.raises(ValueError, match=message):
        gate.acknowledge(scope, rule, reason)
    assert gate.acknowledgements == []


def test_example_platform_passes_the_gate(synth: SynthResult, platform: Platform) -> None:
    assert synth.passed, synth.summary()
    for region in platform.region_names:  # every configured region gets its whole cell
        for kind in ("network", "links", "models", "router"):
            assert f"{platform.name}-{kind}-{region}" in synth.stack_names

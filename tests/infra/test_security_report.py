"""The security review report (review/): generated from the session's one synthesis, it shows every stack, network,
principal, key, log group, acknowledgement and control; the diagram comes out of Graphviz; the HTML opens with no
network in headless Chromium. Small hand-written templates prove the checks fail when they should, that unknown
resource types still show, and that code and environment values never reach the report."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from review import checkov_gate, nist
from review.cfn import load
from review.report import SECTIONS, generate

if TYPE_CHECKING:
    from stacks.assembly import SynthResult

ROOT = Path(__file__).resolve().parents[2]
CANARY = "CANARY-7f3a-prompt-text-never-in-a-report"


@pytest.fixture(scope="module")
def report(synth: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's dot is missing: `make test` installs it ($(STAMPS)/graphviz)")
    return generate(synth.outdir, tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def page(report: dict[str, Path]) -> str:
    # <wbr> marks where a long ARN may wrap; the text a reader sees has none.
    return report["html"].read_text(encoding="utf-8").replace("<wbr>", "")


@pytest.fixture(scope="module")
def markdown(report: dict[str, Path]) -> str:
    return report["md"].read_text(encoding="utf-8")


def _section(markdown: str, anchor: str) -> str:
    start = markdown.index(f'<a id="{anchor}"></a>')
    end = markdown.find('<a id="', start + 10)
    return markdown[start : end if end > 0 else None]


def _templates(synth: SynthResult) -> dict[str, Mapping[str, Any]]:
    return {
        name: json.loads((synth.outdir / f"{name}.template.json").read_text(encoding="utf-8"))
        for name in synth.stack_names
    }


def _of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, Mapping[str, Any]]:
    return {k: v for k, v in template.get("Resources", {}).items() if v["Type"] == resource_type}


# --- the report of the example platform ---------------------------------------------------------------------------


def test_every_section_and_a_table_of_contents(page: str, markdown: str, synth: SynthResult) -> None:
    regions = {load(synth.outdir).stack(n).region for n in synth.stack_names}
    anchors = [anchor for anchor, _ in SECTIONS] + [f"network-{region}" for region in regions]
    for anchor in anchors:
        assert f'<section id="{anchor}">' in page
        assert f'href="#{anchor}"' in page, f"{anchor} is missing from the table of contents"
        assert f'<a id="{anchor}"></a>' in markdown
        assert f"](#{anchor})" in markdown
    for _, title in SECTIONS:
        assert html.escape(title) in page
        assert title in markdown


def test_every_stack_and_every_resource_type_is_in_the_report(markdown: str, synth: SynthResult) -> None:
    inventory = _section(markdown, "inventory")
    for name, template in _templates(synth).items():
        assert name in inventory
        for resource in template["Resources"].values():
            assert resource["Type"] in inventory


def test_network_shows_cidrs_endpoints_and_security_group_rules(markdown: str, synth: SynthResult) -> None:
    network = markdown[markdown.index('<a id="network"></a>') : markdown.index('<a id="iam"></a>')]
    templates = _templates(synth)
    vpcs = [v for t in templates.values() for v in _of_type(t, "AWS::EC2::VPC").values()]
    assert vpcs
    for vpc in vpcs:
        assert vpc["Properties"]["CidrBlock"] in network
    for template in templates.values():
        for subnet in _of_type(template, "AWS::EC2::Subnet").values():
            assert subnet["Properties"]["CidrBlock"] in network
        for endpoint in _of_type(template, "AWS::EC2::VPCEndpoint").values():
            for statement in endpoint["Properties"].get("PolicyDocument", {}).get("Statement", []):
                for resource in [statement.get("Resource")] if isinstance(statement.get("Resource"), str) else []:
                    assert resource in network
        for group in _of_type(template, "AWS::EC2::SecurityGroup").values():
            for rule in group["Properties"].get("SecurityGroupIngress", []):
                assert rule.get("Description", "") in network
    assert "Found: none." in network, "the example platform has no internet path"


def test_iam_matrix_names_every_role_and_exact_resources(markdown: str, synth: SynthResult) -> None:
    iam = _section(markdown, "iam")
    a = load(synth.outdir)
    roles = list(a.resources("AWS::IAM::Role"))
    assert roles
    for role in roles:
        assert f"role {role.label}" in iam
    for policy in a.resources("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        for statement in policy.properties["PolicyDocument"]["Statement"]:
            for resource in statement.get("Resource", []) if isinstance(statement.get("Resource"), list) else []:
                if isinstance(resource, str):
                    assert resource in iam
    flagged = iam.count("| WILDCARD INVOKE |")
    sentence = re.search(r"on a pattern not held by a resource tag: (\d+)\.", iam)
    assert sentence is not None
    assert int(sentence.group(1)) == flagged
    invoke = ("bedrock:InvokeModel", "sagemaker:InvokeEndpoint", "lambda:InvokeFunction", "execute-api:Invoke")
    on_star = [
        statement
        for r in a.resources()
        for document in (r.properties.get("PolicyDocument"), r.properties.get("Policy"), r.properties.get("KeyPolicy"))
        if isinstance(document, dict)
        for statement in document.get("Statement", [])
        if statement.get("Effect") == "Allow"
        and any(
            x in invoke
            for x in (
                [statement.get("Action")] if isinstance(statement.get("Action"), str) else statement.get("Action", [])
            )
        )
        and (statement.get("Resource") == "*" or str(statement.get("Resource", "")).endswith(":*/*"))
    ]
    assert flagged >= len(on_star)


def test_encryption_inventory_lists_every_log_group_and_key_with_rotation(markdown: str, synth: SynthResult) -> None:
    encryption = _section(markdown, "encryption")
    logging = _section(markdown, "logging")
    a = load(synth.outdir)
    log_groups = list(a.resources("AWS::Logs::LogGroup"))
    assert log_groups
    for group in log_groups:
        assert f"{group.stack}/{group.label}" in encryption
        name = group.properties.get("LogGroupName")
        if isinstance(name, str):
            assert name in logging
        assert f"{group.properties['RetentionInDays']} days" in logging
    for key in a.resources("AWS::KMS::Key"):
        assert key.label in encryption
    assert "| OFF |" not in encryption, "every key of the example platform rotates"


def test_every_acknowledgement_is_listed_with_its_reason(page: str, markdown: str, synth: SynthResult) -> None:
    ledger = json.loads((synth.outdir / "compliance-acknowledgements.json").read_text(encoding="utf-8"))
    section = _section(markdown, "cdk-nag")
    for entry in ledger:
        assert entry["rule"] in section
        assert entry["path"] in section
        assert html.escape(entry["reason"]) in page
    errors = [f for f in load(synth.outdir).findings if f.severity == "error"]
    assert f"{len(errors)} open errors" in section


def test_nist_matrix_has_every_control_with_a_status_and_the_outside_list(markdown: str, synth: SynthResult) -> None:
    load_assembly = load(synth.outdir)
    matrix = _section(markdown, "nist")
    controls = nist.load_controls()
    for control in controls["controls"]:
        row = next(line for line in matrix.splitlines() if line.startswith(f"| {control['id']} "))
        assert re.search(r"\| (MET|NOT MET|OUTSIDE THESE STACKS) \|", row), row
        result = next(r for r in nist.evaluate(load_assembly) if r.id == control["id"])
        assert f"| {result.status.upper()} |" in row
        for gap in result.gaps[:3]:
            assert gap.split(":", 1)[0] in matrix.replace("\\|", "|")
    outside = _section(markdown, "nist-outside")
    for service in ("CloudTrail", "GuardDuty", "AWS Config", "MFA", "IAM Identity Center", "Security Hub"):
        assert service in outside


def test_diagram_is_drawn_from_the_templates(report: dict[str, Path], page: str, synth: SynthResult) -> None:
    svg = html.unescape(report["svg"].read_text(encoding="utf-8"))  # Graphviz writes "-" as &#45;
    a = load(synth.outdir)
    for region in a.regions:
        assert f"cell {region}" in svg
    for name in synth.stack_names:
        assert name in svg
    assert report["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["png"].stat().st_size > 10_000
    assert "<svg" in page
    assert 'href="architecture.png"' in page


def _dot_labels(dot: str) -> str:
    """The diagram's text as a reader sees it: labels with their line breaks as spaces."""
    return " ".join(re.findall(r'label="((?:[^"\\]|\\.)*)"', dot)).replace("\\n", " ")


def test_data_flow_diagram_is_drawn_from_the_templates(report: dict[str, Path], page: str, synth: SynthResult) -> None:
    dot = report["dataflow_dot"].read_text(encoding="utf-8")
    text = _dot_labels(dot)
    a = load(synth.outdir)
    for vpc in a.resources("AWS::EC2::VPC"):
        assert f"cell {vpc.region}" in text
        assert f"escrow VPC {vpc.properties['CidrBlock']}" in text
    callers = {
        principal
        for api in a.resources("AWS::ApiGateway::RestApi")
        for statement in api.properties["Policy"]["Statement"]
        if statement["Effect"] == "Allow"
        for principal in (
            [statement["Principal"]["AWS"]]
            if isinstance(statement["Principal"]["AWS"], str)
            else statement["Principal"]["AWS"]
        )
    }
    assert callers
    for caller in callers:
        assert caller.split(":")[-1] in text, caller
    # Prompts cross regions wherever a private hosted zone answers another region's VPC with a runtime endpoint.
    crossings = sum(
        1
        for record in a.resources("AWS::Route53::RecordSet")
        for zone in [a.find(record.stack, record.properties["HostedZoneId"]["Ref"])]
        if zone is not None
        for vpc in zone.properties.get("VPCs", [])
        if vpc["VPCRegion"] != record.region
    )
    assert crossings > 0
    assert dot.count('label="failover"') == crossings
    assert dot.count("penwidth=2.4") >= 5 * len(a.regions), "every hop of a prompt, caller to model, in every cell"
    nodes = dict(re.findall(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"', dot, flags=re.MULTILINE))
    prompt = [tuple(line.split(" [")[0].split(" -> ")) for line in dot.splitlines() if "penwidth=2.4" in line]
    entries = {n for n, label in nodes.items() if "(private API entry)" in label}
    assert len(entries) == len(a.regions), "one execute-api entry per cell"
    for caller in callers:
        node = next(n for n, label in nodes.items() if caller.split(":")[-1] in label.replace("\\n", " "))
        reached = {target.strip() for source, target in prompt if source.strip() == node}
        assert reached == entries, f"{caller} reaches every cell's private API entry"
    assert not any("execute-api endpoint\\n(model runtime)" in label for label in nodes.values())
    assert report["dataflow_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'id="dataflow-diagram"' in page
    assert page.index('id="dataflow-diagram"') < page.index('id="architecture-diagram"'), "the data flow comes first"


def test_html_is_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, flags=re.IGNORECASE)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "@import" not in page
    assert "url(" not in page
    assert "Content-Security-Policy" in page


# --- rendered in a browser ------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_in_headless_chromium(report: dict[str, Path], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed and could not be (make's $(STAMPS)/chromium: apt-get install chromium)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
    ]
    url = report["html"].resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [browser, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    for anchor, _ in SECTIONS:
        assert f'id="{anchor}"' in dom
    assert 'id="dataflow-diagram"' in dom
    assert "<svg" in dom
    assert "cell " in dom
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, *flags, f"--user-data-dir={profile}", "--window-size=1400,2400", f"--screenshot={shot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000, "a blank page compresses to a few kilobytes"


# --- hand-written templates: generic, configuration only, and checks that fail -----------------------------------


def _write(outdir: Path, stacks: dict[str, dict[str, Any]]) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    for name, resources in stacks.items():
        (outdir / f"{name}.template.json").write_text(json.dumps({"Resources": resources}), encoding="utf-8")
    return outdir


KEY = {"Type": "AWS::KMS::Key", "Properties": {"EnableKeyRotation": True}, "DeletionPolicy": "Retain"}


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    """One cell with every mistake the checks exist for."""
    return _write(
        tmp_path / "bad.out",
        {
            "demo-cell-eu-west-1": {
                "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}},
                "Igw": {"Type": "AWS::EC2::InternetGateway", "Properties": {}},
                "Open": {
                    "Type": "AWS::EC2::SecurityGroup",
                    "Properties": {
                        "GroupDescription": "open",
                        "VpcId": {"Ref": "Vpc"},
                        "SecurityGroupIngress": [
                            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "0.0.0.0/0"}
                        ],
                    },
                },
                "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "/demo/plain"}},
                "Role": {
                    "Type": "AWS::IAM::Role",
                    "Properties": {
                        "AssumeRolePolicyDocument": {
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Principal": {"Service": "lambda.amazonaws.com"},
                                    "Action": "sts:AssumeRole",
                                }
                            ]
                        }
                    },
                },
                "Invoke": {
                    "Type": "AWS::IAM::Policy",
                    "Properties": {
                        "PolicyName": "invoke",
                        "Roles": [{"Ref": "Role"}],
                        "PolicyDocument": {
                            "Statement": [{"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": "*"}]
                        },
                    },
                },
                "Key": {"Type": "AWS::KMS::Key", "Properties": {}},
            }
        },
    )


def test_checks_fail_on_the_mistakes_they_exist_for(bad: Path) -> None:
    a = load(bad)
    checks = {c.name: c for result in nist.evaluate(a) for c in result.checks}
    assert checks["no_internet_path"].passed is False
    assert checks["sg_no_open_ingress"].passed is False
    assert any("0.0.0.0/0" in gap for gap in checks["sg_no_open_ingress"].gaps)
    assert checks["iam_no_wildcard_invoke"].passed is False
    assert checks["logs_cmk"].passed is False
    assert checks["log_retention_min"].passed is False
    assert checks["kms_rotation"].passed is False
    assert checks["flow_logs_all_vpcs"].passed is False
    assert checks["default_sg_restricted"].passed is False
    status = {r.id: r.status for r in nist.evaluate(a)}
    assert status["SC-28"] == nist.NOT_MET
    assert status["AU-11"] == nist.NOT_MET
    assert status["SC-7"] == nist.NOT_MET, "one check of it fails: the control is not met"


def test_report_flags_the_mistakes(bad: Path, tmp_path: Path) -> None:
    paths = generate(bad, tmp_path / "reports", diagram_required=False)
    text = paths["md"].read_text(encoding="utf-8")
    assert "WILDCARD INVOKE" in text
    assert "demo-cell-eu-west-1/Igw (AWS::EC2::InternetGateway)" in text
    assert "NEVER EXPIRES" in text
    assert "eu-west-1" in text, "the region comes from the stack name when there is no manifest"


def test_an_unknown_resource_type_still_shows(tmp_path: Path) -> None:
    outdir = _write(
        tmp_path / "new.out",
        {
            "demo-future-ap-south-1": {
                "Key": KEY,
                "Thing": {
                    "Type": "AWS::Brandnew::Widget",
                    "Properties": {"WidgetKmsKeyArn": {"Fn::GetAtt": ["Key", "Arn"]}, "Size": 3},
                },
            }
        },
    )
    paths = generate(outdir, tmp_path / "reports", diagram_required=False)
    text = paths["md"].read_text(encoding="utf-8")
    assert "AWS::Brandnew::Widget" in _section(text, "inventory")
    encryption = _section(text, "encryption")
    assert "demo-future-ap-south-1/Thing" in encryption
    assert "CMK Key" in encryption
    if "svg" in paths:
        assert "Brandnew Widget" in paths["svg"].read_text(encoding="utf-8")


def test_code_and_environment_values_never_reach_the_report(tmp_path: Path) -> None:
    outdir = _write(
        tmp_path / "zk.out",
        {
            "demo-router-us-east-1": {
                "Key": KEY,
                "Fn": {
                    "Type": "AWS::Lambda::Function",
                    "Properties": {
                        "Code": {"ZipFile": f"print('{CANARY}')"},
                        "Environment": {"Variables": {"GREETING": CANARY}},
                        "KmsKeyArn": {"Fn::GetAtt": ["Key", "Arn"]},
                        "Runtime": "python3.13",
                        "Handler": "index.handler",
                        "Role": "arn:aws:iam::111122223333:role/demo",
                    },
                },
                "Param": {"Type": "AWS::SSM::Parameter", "Properties": {"Type": "String", "Value": CANARY}},
            }
        },
    )
    paths = generate(outdir, tmp_path / "reports", diagram_required=False)
    for path in paths.values():
        assert CANARY.encode() not in path.read_bytes(), path.name
    assert "Lambda environment" in paths["md"].read_text(encoding="utf-8")


def test_cli_says_what_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "review", str(tmp_path / "nothing"), str(tmp_path / "reports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert "make synth" in result.stderr
    assert "Traceback" not in result.stderr


# --- the checkov baseline -----------------------------------------------------------------------------------------


def test_checkov_baseline_entries_have_reasons_and_cover_only_what_they_name() -> None:
    baseline = checkov_gate.load_baseline(ROOT / "review" / "checkov-baseline.yaml")
    assert baseline
    failed = [
        checkov_gate.Failed("CKV_AWS_116", "DLQ", "/x-network-us-east-1.template.json", "AWS::Lambda::Function.Fn1"),
        checkov_gate.Failed("CKV_AWS_999", "made up", "/x-router-us-east-1.template.json", "AWS::S3::Bucket.B"),
    ]
    entry = checkov_gate.Entry("CKV_AWS_116", "*-network-*:AWS::Lambda::Function.*", "x" * 50)
    open_, accepted, stale = checkov_gate.judge(failed, [entry])
    assert [f.check_id for f in open_] == ["CKV_AWS_999"]
    assert accepted == [(failed[0], entry)]
    assert stale == []
    _, _, stale = checkov_gate.judge([], [entry])
    assert stale == [entry]


def test_checkov_baseline_refuses_an_entry_without_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "baseline.yaml"
    path.write_text("accepted:\n  - check: CKV_AWS_1\n    resources: '*'\n    reason: because\n", encoding="utf-8")
    with pytest.raises(ValueError, match="reason"):
        checkov_gate.load_baseline(path)


def test_account_level_services_are_counted_not_assumed(tmp_path: Path) -> None:
    outdir = _write(
        tmp_path / "trail.out",
        {
            "demo-audit-eu-west-1": {
                "Key": KEY,
                "Trail": {"Type": "AWS::CloudTrail::Trail", "Properties": {"IsLogging": True}},
            }
        },
    )
    text = generate(outdir, tmp_path / "reports", diagram_required=False)["md"].read_text(encoding="utf-8")
    assert "These stacks declare 1 CloudTrail trail." in text
    assert "No GuardDuty detector, AWS Config recorder or Security Hub in these stacks" in text
    assert "No CloudTrail trail" not in text

"""The report's paths to other clouds (review/checks_cross_cloud.py): per cell it lists exactly the templates' VPN
connections and Resolver rules, says what crosses and what the reviewer must confirm, and a planted weakness (a
tunnel route to a public range, HTTPS egress to anywhere) makes the check fail and the section say so."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from review import checks_cross_cloud
from review.cfn import load
from review.report import generate

if TYPE_CHECKING:
    from stacks.assembly import SynthResult


def _section(markdown: str, anchor: str) -> str:
    start = markdown.index(f'<a id="{anchor}"></a>')
    end = markdown.find('<a id="', start + 10)
    return markdown[start : end if end > 0 else None]


def _resources(outdir: Path, resource_type: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Resources of one type by cell (the region ends the stack name), read from the raw templates."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path in sorted(outdir.glob("*.template.json")):
        region = path.name.removesuffix(".template.json").split("-", 2)[-1]
        template = json.loads(path.read_text(encoding="utf-8"))
        for logical_id, resource in template.get("Resources", {}).items():
            if resource["Type"] == resource_type:
                found.setdefault(region, []).append((logical_id, resource.get("Properties", {})))
    return found


@pytest.fixture(scope="module")
def markdown(synth: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> str:
    paths = generate(synth.outdir, tmp_path_factory.mktemp("reports"), diagram_required=False)
    return paths["md"].read_text(encoding="utf-8")


def test_section_lists_exactly_the_templates_vpn_connections_and_resolver_rules(
    markdown: str, synth: SynthResult
) -> None:
    connections = _resources(synth.outdir, "AWS::EC2::VPNConnection")
    rules = _resources(synth.outdir, "AWS::Route53Resolver::ResolverRule")
    assert connections, "the example platform has paths to other clouds"
    listed_connections = {
        region: sorted(
            c.logical_id
            for p in checks_cross_cloud.paths(load(synth.outdir))
            if p.region == region
            for c in p.connections
        )
        for region in connections
    }
    for region, found in connections.items():
        cell = _section(markdown, f"cross-cloud-{region}")
        assert listed_connections[region] == sorted(logical_id for logical_id, _ in found)
        for logical_id, _ in found:
            assert cell.count(f"{logical_id} (") == 1, f"{logical_id} listed once in {region}"
        domains = [str(properties["DomainName"]) for _, properties in rules[region]]
        for domain in domains:
            assert cell.count(f"{domain} -> ") == 1, f"{domain} listed once in {region}"
        # The header names the column "name -> resolvers"; every other arrow is one of the template's rules.
        assert cell.count(" -> ") == len(domains) + 1, f"{region}: a rule the templates do not have"
    section = _section(markdown, "cross-cloud")
    assert "Holds for all" in section
    assert "(cross_cloud_paths_private)" in section
    assert "data-use and retention terms" in section
    assert "for the reviewer to confirm" in section


def test_section_says_what_crosses_and_what_does_not(markdown: str, synth: SynthResult) -> None:
    for region in _resources(synth.outdir, "AWS::EC2::VPNConnection"):
        cell = _section(markdown, f"cross-cloud-{region}")
        assert "prompts and completions over TLS (HTTPS, tcp 443)" in cell
        assert "sts:GetWebIdentityToken, granted by" in cell
        assert "NO policy" not in cell
        assert "from Secrets Manager" in cell
        assert "under its CMK" in cell
        assert "no route to the internet, no other destination" in cell
        assert "FALLS SHORT" not in cell


def _public_route(resources: dict[str, Any]) -> str:
    route = next(r for r in resources.values() if r["Type"] == "AWS::EC2::VPNConnectionRoute")
    resources["PlantedPublicRoute"] = {
        "Type": "AWS::EC2::VPNConnectionRoute",
        "Properties": {**route["Properties"], "DestinationCidrBlock": "8.8.8.0/24"},
    }
    return "static route 8.8.8.0/24 is not a private range"


def _open_https(resources: dict[str, Any]) -> str:
    egress = next(
        r
        for r in resources.values()
        if r["Type"] == "AWS::EC2::SecurityGroupEgress" and "private endpoint" in r["Properties"].get("Description", "")
    )
    resources["PlantedOpenHttps"] = {
        "Type": "AWS::EC2::SecurityGroupEgress",
        "Properties": {**egress["Properties"], "CidrIp": "0.0.0.0/0", "Description": "planted"},
    }
    return "may also send to 0.0.0.0/0"


@pytest.mark.parametrize("plant", [_public_route, _open_https])
def test_a_planted_weakness_fails_the_check_and_shows_in_the_section(
    plant: Callable[[dict[str, Any]], str], synth: SynthResult, tmp_path: Path
) -> None:
    outdir = tmp_path / "cdk.out"
    shutil.copytree(synth.outdir, outdir, ignore=shutil.ignore_patterns("asset.*"))
    network = next(outdir.glob("*network-us-east-1.template.json"))
    template = json.loads(network.read_text(encoding="utf-8"))
    expected = plant(template["Resources"])
    network.write_text(json.dumps(template), encoding="utf-8")

    check = checks_cross_cloud.cross_cloud_paths_private(load(outdir), {})
    assert check.passed is False
    assert any(expected in gap and gap.startswith("us-east-1 ") for gap in check.gaps)
    assert not any(gap.startswith("us-west-2 ") for gap in check.gaps), "only the planted cell falls short"

    text = generate(outdir, tmp_path / "reports", diagram_required=False)["md"].read_text(encoding="utf-8")
    assert "NOT MET (cross_cloud_paths_private)" in _section(text, "cross-cloud")
    cell = _section(text, "cross-cloud-us-east-1")
    assert "FALLS SHORT" in cell
    assert expected in cell
    assert "FALLS SHORT" not in _section(text, "cross-cloud-us-west-2")

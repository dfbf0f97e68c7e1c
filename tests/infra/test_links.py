"""Private cross-region reachability: peering mesh, routes both ways, peer ingress on runtime endpoints, private
DNS for the remote runtime hostnames. On the shared synthesis, plus one separate 3-region synthesis proving that a
region added to the config gets its cell and links with no code change.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.links import runtime_dns_name
from stacks.network import BEDROCK_INVOKE_ACTIONS, RUNTIME_SERVICES, isolated_subnet_cidrs
from stacks.platform import Platform, parse_platform
from stacks.targets import endpoint_grants
from tests.infra.config_documents import example, region_document
from tests.infra.conftest import Template, resources_of
from tests.infra.test_network import (
    deploy_time_arns,
    endpoint_by_service,
    endpoint_ingress_problems,
    internet_exposure,
    invoke_policy_problems,
    open_ingress,
    service_name,
)


def links_name(platform: Platform, region: str) -> str:
    return f"{platform.name}-links-{region}"


def network_name(platform: Platform, region: str) -> str:
    return f"{platform.name}-network-{region}"


def imported_logical_id(value: Any) -> str:
    """The producer's logical id inside a same-region import (`Fn::ImportValue` of CDK's export name)."""
    name = value["Fn::ImportValue"]
    return name.split(":", 1)[1].removeprefix("ExportsOutputRef").removeprefix("ExportsOutputFnGetAtt")


def cross_region_import(template: Template, value: Any) -> str:
    """The SSM parameter a cross-region value is read from (CDK's ExportsReader custom resource)."""
    reader, parameter = value["Fn::GetAtt"]
    assert template["Resources"][reader]["Type"] == "Custom::CrossRegionExportReader"
    return parameter


# --- checks: each returns the problems it finds ---------------------------------------------------------------


def mesh_problems(platform: Platform, templates: Mapping[str, Template]) -> list[str]:  # noqa: PLR0912
    problems: list[str] = []
    regions = platform.region_names
    for region in regions:
        if links_name(platform, region) not in templates:
            problems.append(f"{region}: no links stack")
    if problems:
        return problems
    for a, b in itertools.combinations(regions, 2):  # a < b
        owned = [
            p["Properties"]
            for p in resources_of(templates[links_name(platform, a)], "AWS::EC2::VPCPeeringConnection").values()
            if p["Properties"].get("PeerRegion") == b
        ]
        if len(owned) != 1:
            problems.append(f"{a}-{b}: {len(owned)} peering connections owned by {a}")
            continue
        (peering,) = owned
        if peering.get("PeerOwnerId") != platform.account or "PeerRoleArn" in peering:
            problems.append(f"{a}-{b}: not a same-account peering")
        reverse = [
            p
            for p in resources_of(templates[links_name(platform, b)], "AWS::EC2::VPCPeeringConnection").values()
            if p["Properties"].get("PeerRegion") == a
        ]
        if reverse:
            problems.append(f"{a}-{b}: {b} also owns a peering to {a}")
    for region in regions:
        template = templates[links_name(platform, region)]
        network = templates[network_name(platform, region)]
        tables = {k for k, r in network["Resources"].items() if r["Type"] == "AWS::EC2::RouteTable"}
        routes = [r["Properties"] for r in resources_of(template, "AWS::EC2::Route").values()]
        for peer in regions:
            if peer == region:
                continue
            cidr = platform.regions[peer].vpc_cidr
            to_peer = [r for r in routes if r["DestinationCidrBlock"] == cidr]
            # CDK's export names end with an 8-character hash after the producer's logical id.
            covered = {imported_logical_id(r["RouteTableId"])[:-8] for r in to_peer}
            if covered != tables or len(to_peer) != len(tables):
                problems.append(f"{region} -> {peer}: not every isolated route table routes to {cidr}")
            if any("VpcPeeringConnectionId" not in r for r in to_peer):
                problems.append(f"{region} -> {peer}: a route not through the peering")
        for route in routes:
            if route["DestinationCidrBlock"] not in {platform.regions[p].vpc_cidr for p in regions if p != region}:
                problems.append(f"{region}: a route to {route['DestinationCidrBlock']}, not a peer")
    return problems


def ingress_problems(platform: Platform, templates: Mapping[str, Template]) -> list[str]:
    """Every runtime endpoint admits 443 from every peer's isolated subnets, and from nothing broader."""
    problems: list[str] = []
    for region in platform.region_names:
        template = templates[links_name(platform, region)]
        network = templates[network_name(platform, region)]
        rules = [r["Properties"] for r in resources_of(template, "AWS::EC2::SecurityGroupIngress").values()]
        for service in RUNTIME_SERVICES:
            group = endpoint_by_service(network, service)["SecurityGroupIds"][0]["Fn::GetAtt"][0]
            mine = [r for r in rules if imported_logical_id(r["GroupId"]).startswith(group)]
            expected = {
                cidr
                for peer in platform.region_names
                if peer != region
                for cidr in isolated_subnet_cidrs(platform, peer)
            }
            if {r["CidrIp"] for r in mine} != expected:
                problems.append(
                    f"{region} {service}: admits {sorted(r['CidrIp'] for r in mine)}, not {sorted(expected)}"
                )
            for rule in mine:
                if (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) != ("tcp", 443, 443):
                    problems.append(f"{region} {service}: ingress other than tcp/443")
        other = [
            r
            for r in rules
            if not any(imported_logical_id(r["GroupId"]).startswith(p) for p in ("BedrockRuntime", "SagemakerRuntime"))
        ]
        if other:
            problems.append(f"{region}: ingress on groups other than the runtime endpoints': {other}")
    return problems


def dns_problems(platform: Platform, templates: Mapping[str, Template]) -> list[str]:
    """Every region resolves every other region's runtime hostnames through a private zone aliasing the endpoint."""
    problems: list[str] = []
    for owner in platform.region_names:
        template = templates[links_name(platform, owner)]
        zones = {
            z["Properties"]["Name"]: (k, z["Properties"])
            for k, z in resources_of(template, "AWS::Route53::HostedZone").items()
        }
        records = [r["Properties"] for r in resources_of(template, "AWS::Route53::RecordSet").values()]
        peers = [p for p in platform.region_names if p != owner]
        for service in RUNTIME_SERVICES:
            name = runtime_dns_name(service, owner)
            if not peers:
                continue
            if name not in zones:
                problems.append(f"{owner}: no private zone {name}")
                continue
            logical_id, zone = zones[name]
            associated = {v["VPCRegion"] for v in zone.get("VPCs", [])}
            if associated != set(peers):
                problems.append(f"{name}: associated with {sorted(associated)}, not {peers}")
            for vpc in zone.get("VPCs", []):
                cross_region_import(template, vpc["VPCId"])
            aliases = [r for r in records if r["HostedZoneId"] == {"Ref": logical_id}]
            if len(aliases) != 1 or aliases[0]["Name"] != f"{name}." or aliases[0]["Type"] != "A":
                problems.append(f"{name}: no apex A alias")
                continue
            target = json.dumps(aliases[0]["AliasTarget"])
            network = templates[network_name(platform, owner)]
            endpoint = next(
                k
                for k, e in resources_of(network, "AWS::EC2::VPCEndpoint").items()
                if e["Properties"]["ServiceName"] == f"com.amazonaws.{owner}.{service}"
            )
            if f"ExportsOutputFnGetAtt{endpoint}DnsEntries" not in target:
                problems.append(f"{name}: alias not to the {owner} {service} endpoint")
    return problems


# --- the checks can fail ----------------------------------------------------------------------------------------


def test_checks_catch_a_broken_mesh(platform: Platform, templates: Mapping[str, Template]) -> None:
    broken = {name: json.loads(json.dumps(t)) for name, t in templates.items()}
    first, second = platform.region_names[:2]
    for logical_id in list(resources_of(broken[links_name(platform, first)], "AWS::EC2::VPCPeeringConnection")):
        del broken[links_name(platform, first)]["Resources"][logical_id]
    for logical_id in list(resources_of(broken[links_name(platform, second)], "AWS::EC2::Route"))[:1]:
        del broken[links_name(platform, second)]["Resources"][logical_id]
    for logical_id in list(resources_of(broken[links_name(platform, second)], "AWS::Route53::HostedZone"))[:1]:
        del broken[links_name(platform, second)]["Resources"][logical_id]
    rule = next(iter(resources_of(broken[links_name(platform, first)], "AWS::EC2::SecurityGroupIngress").values()))
    rule["Properties"]["CidrIp"] = platform.regions[second].vpc_cidr
    problems = mesh_problems(platform, broken)
    assert any("peering connections owned" in p for p in problems)
    assert any("not every isolated route table" in p for p in problems)
    assert any("no private zone" in p for p in dns_problems(platform, broken))
    assert any("admits" in p for p in ingress_problems(platform, broken))


# --- the example platform ---------------------------------------------------------------------------------------


def test_full_mesh_of_peerings_and_routes_both_ways(platform: Platform, templates: Mapping[str, Template]) -> None:
    assert mesh_problems(platform, templates) == []


def test_non_owner_routes_use_the_owners_peering(platform: Platform, templates: Mapping[str, Template]) -> None:
    for a, b in itertools.combinations(platform.region_names, 2):
        for route in resources_of(templates[links_name(platform, b)], "AWS::EC2::Route").values():
            if route["Properties"]["DestinationCidrBlock"] == platform.regions[a].vpc_cidr:
                parameter = cross_region_import(
                    templates[links_name(platform, b)], route["Properties"]["VpcPeeringConnectionId"]
                )
                assert f"links{a.replace('-', '')}RefPeeringTo" in parameter


def test_runtime_endpoints_admit_peer_isolated_subnets_only(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    assert ingress_problems(platform, templates) == []


def test_private_zones_resolve_remote_runtime_hostnames(platform: Platform, templates: Mapping[str, Template]) -> None:
    assert dns_problems(platform, templates) == []


def test_runtime_hostnames() -> None:
    assert runtime_dns_name("bedrock-runtime", "us-west-2") == "bedrock-runtime.us-west-2.amazonaws.com"
    assert runtime_dns_name("sagemaker.runtime", "us-west-2") == "runtime.sagemaker.us-west-2.amazonaws.com"
    with pytest.raises(ValueError, match="runtime service"):
        runtime_dns_name("sts", "us-west-2")


def test_links_stacks_open_nothing_to_the_internet(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region in platform.region_names:
        template = templates[links_name(platform, region)]
        assert internet_exposure(template) == []
        assert open_ingress(template) == []


# --- a third region, added by config only -----------------------------------------------------------------------

THIRD = "us-east-2"


@pytest.fixture(scope="module")
def three_regions() -> Platform:
    document = example()
    document["regions"][THIRD] = region_document(THIRD, "10.42.0.0/20", ["us-east-2a", "us-east-2b", "us-east-2c"])
    # The new cell serves one on-demand model as a failover region, and hosts no SageMaker endpoint.
    document["models"]["nova-lite"]["regions"][THIRD] = {"on_demand": True}
    document["features"]["nightly-recap"]["failover_regions"].append(THIRD)
    layers = document.get("router", {}).get("appconfig_extension_layer_arns")
    if layers:  # every cell names the AppConfig extension layer of its region (config only, no code)
        layers[THIRD] = "arn:aws:lambda:us-east-2:728743619870:layer:AWS-AppConfig-Extension-Arm64:200"
    return parse_platform(yaml.safe_dump(document), "three-regions.yaml")


@pytest.fixture(scope="module")
def three_region_templates(three_regions: Platform, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    from stacks.assembly import build, synthesize  # noqa: PLC0415 - CDK only for the tests that synthesize

    assembly = build(three_regions, outdir=tmp_path_factory.mktemp("three"), cloudformation_validation=False)
    result = synthesize(assembly)
    assert result.passed, result.summary()
    return {
        stack.stack_name: json.loads((Path(result.outdir) / stack.template_file).read_text(encoding="utf-8"))
        for stack in assembly.stacks
    }


def test_a_third_region_gets_its_cell_and_a_full_mesh(
    three_regions: Platform, three_region_templates: Mapping[str, Template]
) -> None:
    expected = {f"{three_regions.name}-{kind}-{r}" for kind in ("network", "links") for r in three_regions.region_names}
    assert expected <= set(three_region_templates)
    assert mesh_problems(three_regions, three_region_templates) == []
    assert ingress_problems(three_regions, three_region_templates) == []
    assert dns_problems(three_regions, three_region_templates) == []
    peerings = [
        p
        for r in three_regions.region_names
        for p in resources_of(
            three_region_templates[links_name(three_regions, r)], "AWS::EC2::VPCPeeringConnection"
        ).values()
    ]
    assert len(peerings) == 3
    cell = three_region_templates[network_name(three_regions, THIRD)]
    assert endpoint_ingress_problems(cell) == []
    assert len(resources_of(cell, "AWS::EC2::Subnet")) == 3


def test_a_region_without_sagemaker_targets_has_a_sagemaker_endpoint_that_serves_no_one(
    three_regions: Platform, three_region_templates: Mapping[str, Template]
) -> None:
    grants = endpoint_grants(three_regions, THIRD)
    assert grants.bedrock
    assert not grants.sagemaker
    cell = three_region_templates[network_name(three_regions, THIRD)]
    statements = endpoint_by_service(cell, "sagemaker.runtime")["PolicyDocument"]["Statement"]
    assert [s["Effect"] for s in statements] == ["Deny"]
    bedrock = endpoint_by_service(cell, "bedrock-runtime")
    tagged = deploy_time_arns(three_regions, THIRD)
    assert tagged  # on-demand Bedrock there: its application inference profiles are allowed by tag
    problems = invoke_policy_problems(
        bedrock, BEDROCK_INVOKE_ACTIONS, grants.bedrock, three_regions.account, tagged=tagged
    )
    assert problems == []
    services = {service_name(e["Properties"]) for e in resources_of(cell, "AWS::EC2::VPCEndpoint").values()}
    assert f"com.amazonaws.{THIRD}.ecr.dkr" not in services  # no escrow endpoint here, no image pulls

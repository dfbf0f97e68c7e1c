"""The example's private paths to other clouds, read from the synthesized templates: the tunnels and what they carry,
the resolver rules, the router's egress, the provider secret and the grants. Each check reads every resource of its
kind, so a planted weakness (a wider route, a second rule, a looser grant) fails it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import assertions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms

from spillway.backends.workload_identity import jwt_audience
from stacks.assembly import SynthResult
from stacks.constructs.cross_cloud import CrossCloudPaths
from stacks.platform import Platform
from stacks.providers import ApiKey, Provider
from stacks.targets import providers_reached_from
from tests.infra.conftest import Template, resources_of

REGIONS = ("us-east-1", "us-west-2")


def _network(templates: Mapping[str, Template], region: str) -> Template:
    return templates[f"spillway-network-{region}"]


def _models(templates: Mapping[str, Template], region: str) -> Template:
    return templates[f"spillway-models-{region}"]


def _routes(platform: Platform, region: str) -> set[str]:
    return {r for p in providers_reached_from(platform, region) if p.path for r in p.path.routes}


@pytest.mark.parametrize("region", REGIONS)
def test_the_tunnels_are_strong_logged_and_carry_the_providers_ranges_only(
    templates: Mapping[str, Template], platform: Platform, region: str
) -> None:
    template = _network(templates, region)
    reached = providers_reached_from(platform, region)
    peers = sorted(peer for p in reached if p.path for peer in p.path.vpn.peer_ips)
    gateways = resources_of(template, "AWS::EC2::CustomerGateway")
    assert sorted(g["Properties"]["IpAddress"] for g in gateways.values()) == peers
    connections = resources_of(template, "AWS::EC2::VPNConnection")
    assert len(connections) == len(peers)
    for connection in connections.values():
        props = connection["Properties"]
        assert props["StaticRoutesOnly"] is True
        assert "PreSharedKey" not in str(props)  # AWS generates the keys; none is in the template
        tunnels = props["VpnTunnelOptionsSpecifications"]
        assert len(tunnels) == 2
        for tunnel in tunnels:
            assert tunnel["IKEVersions"] == [{"Value": "ikev2"}]
            assert (
                tunnel["Phase1EncryptionAlgorithms"]
                == tunnel["Phase2EncryptionAlgorithms"]
                == [{"Value": "AES256-GCM-16"}]
            )
            assert tunnel["Phase1DHGroupNumbers"] == [{"Value": 20}]
            logs = tunnel["LogOptions"]["CloudwatchLogOptions"]
            assert logs["LogEnabled"] is True
            assert "Fn::GetAtt" in logs["LogGroupArn"]  # the cell's CMK-encrypted group
    vpn_routes = {
        r["Properties"]["DestinationCidrBlock"] for r in resources_of(template, "AWS::EC2::VPNConnectionRoute").values()
    }
    assert vpn_routes == _routes(platform, region)
    # The isolated route tables send only those ranges to the gateway; nothing reaches the internet.
    to_gateway = [
        r["Properties"] for r in resources_of(template, "AWS::EC2::Route").values() if "GatewayId" in r["Properties"]
    ]
    assert {r["DestinationCidrBlock"] for r in to_gateway} == _routes(platform, region)
    for route in to_gateway:
        network = ipaddress.IPv4Network(route["DestinationCidrBlock"])
        assert network.is_private
        assert network.prefixlen >= 16
    for kind in (
        "AWS::EC2::InternetGateway",
        "AWS::EC2::NatGateway",
        "AWS::EC2::EgressOnlyInternetGateway",
        "AWS::EC2::EIP",
    ):
        assert not resources_of(template, kind)


@pytest.mark.parametrize("region", REGIONS)
def test_the_resolver_forwards_exactly_the_providers_names_to_their_resolvers(
    templates: Mapping[str, Template], platform: Platform, region: str
) -> None:
    template = _network(templates, region)
    expected = {
        name: sorted(p.path.dns_resolvers)
        for p in providers_reached_from(platform, region)
        if p.path
        for name in p.dns_names
    }
    assert set(expected) == {
        "us-central1-aiplatform.googleapis.com",
        "sts.googleapis.com",
        "spillway-eastus2.openai.azure.com",
    }
    rules = resources_of(template, "AWS::Route53Resolver::ResolverRule")
    found = {
        r["Properties"]["DomainName"]: sorted(t["Ip"] for t in r["Properties"]["TargetIps"]) for r in rules.values()
    }
    assert found == expected
    assert all(r["Properties"]["RuleType"] == "FORWARD" for r in rules.values())
    associations = resources_of(template, "AWS::Route53Resolver::ResolverRuleAssociation")
    assert len(associations) == len(rules)
    (endpoint,) = resources_of(template, "AWS::Route53Resolver::ResolverEndpoint").values()
    assert endpoint["Properties"]["Direction"] == "OUTBOUND"
    # Its security group sends DNS to the providers' resolvers only.
    (group_ref,) = endpoint["Properties"]["SecurityGroupIds"]
    group = template["Resources"][group_ref["Fn::GetAtt"][0]]["Properties"]
    resolvers = {f"{ip}/32" for ips in expected.values() for ip in ips}
    assert {(e["CidrIp"], e["FromPort"], e["IpProtocol"]) for e in group["SecurityGroupEgress"]} == {
        (cidr, 53, proto) for cidr in resolvers for proto in ("udp", "tcp")
    }


@pytest.mark.parametrize("region", REGIONS)
def test_the_router_reaches_other_clouds_only_at_their_private_endpoints(
    templates: Mapping[str, Template], platform: Platform, region: str
) -> None:
    template = _network(templates, region)
    endpoints = {f"{ip}/32" for p in providers_reached_from(platform, region) if p.path for ip in p.path.endpoint_ips}
    egress = [e["Properties"] for e in resources_of(template, "AWS::EC2::SecurityGroupEgress").values()]
    to_cidrs = {(e["CidrIp"], e["FromPort"], e["ToPort"]) for e in egress if "CidrIp" in e}
    outside_vpcs = {
        c
        for c in to_cidrs
        if not any(
            ipaddress.IPv4Network(c[0]).subnet_of(ipaddress.IPv4Network(r.vpc_cidr)) for r in platform.regions.values()
        )
    }
    assert outside_vpcs == {(cidr, 443, 443) for cidr in endpoints}
    assert not any(c[0] == "0.0.0.0/0" for c in to_cidrs)


@pytest.mark.parametrize("region", REGIONS)
def test_the_provider_key_is_a_rotated_secret_under_its_own_key_read_by_exact_arn(
    templates: Mapping[str, Template], platform: Platform, region: str
) -> None:
    template = _models(templates, region)
    (secret_id, secret) = next(iter(resources_of(template, "AWS::SecretsManager::Secret").items()))
    assert secret["Properties"]["Name"] == "spillway/providers/azure/api-key"
    key_id = secret["Properties"]["KmsKeyId"]["Fn::GetAtt"][0]
    key = template["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    uses = [s for s in key["KeyPolicy"]["Statement"] if s["Sid"].startswith("UseThrough")]
    assert [s["Condition"]["StringEquals"]["kms:ViaService"] for s in uses] == [
        f"secretsmanager.{region}.amazonaws.com"
    ]
    (schedule,) = resources_of(template, "AWS::SecretsManager::RotationSchedule").values()
    api_key = platform.providers["azure"].api_key
    assert api_key is not None
    assert schedule["Properties"]["RotationLambdaARN"] == api_key.rotation_functions[region]
    assert schedule["Properties"]["RotationRules"]["ScheduleExpression"] == f"rate({api_key.rotate_after_days} days)"
    statements = _router_statements(template)
    assert statements["ReadProviderKeys"]["Resource"] == {"Ref": secret_id}
    assert statements["DecryptProviderKeys"]["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}


@pytest.mark.parametrize("region", REGIONS)
def test_web_identity_tokens_are_bound_to_the_providers_audiences(
    templates: Mapping[str, Template], platform: Platform, region: str
) -> None:
    audience = jwt_audience(str(platform.providers["vertex"].audience))
    token = _router_statements(_models(templates, region))["WebIdentityTokensForProviders"]
    assert token["Action"] == "sts:GetWebIdentityToken"
    assert _listed(token["Condition"]["ForAllValues:StringEquals"]["sts:IdentityTokenAudience"]) == [audience]
    assert token["Condition"]["NumericLessThanEquals"] == {"sts:DurationSeconds": 300}
    # The cell's STS endpoint admits the router for the same audiences only.
    endpoints = resources_of(_network(templates, region), "AWS::EC2::VPCEndpoint")
    sts = next(e for e in endpoints.values() if "sts" in str(e["Properties"]["ServiceName"]))
    statement = next(
        s for s in sts["Properties"]["PolicyDocument"]["Statement"] if s["Sid"] == "WebIdentityTokensForProviders"
    )
    assert _listed(statement["Condition"]["ForAllValues:StringEquals"]["sts:IdentityTokenAudience"]) == [audience]
    secrets = next(e for e in endpoints.values() if "secretsmanager" in str(e["Properties"]["ServiceName"]))
    (grant,) = secrets["Properties"]["PolicyDocument"]["Statement"]
    assert grant["Action"] == "secretsmanager:GetSecretValue"


def _listed(value: Any) -> list[Any]:
    """A policy value as a list (CDK writes a one-item list as the item in some policies)."""
    return value if isinstance(value, list) else [value]


def _router_statements(template: Template) -> dict[str, Any]:
    policies = resources_of(template, "AWS::IAM::ManagedPolicy")
    (policy,) = [
        p for p in policies.values() if "may invoke exactly its targets in every" in p["Properties"]["Description"]
    ]
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


def test_the_data_flow_diagram_draws_the_path_to_each_other_cloud(synth: SynthResult, platform: Platform) -> None:
    from review.cfn import load  # noqa: PLC0415 (the report's reader)
    from review.dataflow import to_dot  # noqa: PLC0415

    dot = to_dot(load(synth.outdir))
    for region in REGIONS:
        for provider in providers_reached_from(platform, region):
            assert provider.path is not None
            for peer in provider.path.vpn.peer_ips:
                assert f"gateway {peer}" in dot, (provider.name, peer)
    edges = [line for line in dot.splitlines() if "to another cloud: TLS inside IPsec" in line]
    peers = {p for r in REGIONS for v in providers_reached_from(platform, r) if v.path for p in v.path.vpn.peer_ips}
    assert len(edges) == len(REGIONS) * len(peers)  # every cell's router to every gateway it tunnels to


def test_a_self_hosted_server_gets_egress_on_its_port_and_no_tunnel() -> None:
    """One small stack, not the example's synthesis: the construct alone with a server in the VPC."""
    stack = cdk.Stack(cdk.App(), "SelfHosted", env=cdk.Environment(account="111122223333", region="us-east-1"))
    vpc = ec2.Vpc(stack, "Vpc", ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"), nat_gateways=0,
                  subnet_configuration=[ec2.SubnetConfiguration(name="i", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)],
                  availability_zones=["us-east-1a", "us-east-1b"])  # fmt: skip
    group = ec2.SecurityGroup(stack, "Router", vpc=vpc, allow_all_outbound=False)
    key = ApiKey({"us-east-1": "arn:aws:lambda:us-east-1:111122223333:function:rotate"}, 30)
    vllm = Provider("vllm", "self_hosted", url="https://vllm.escrow.internal:8443/v1",
                    addresses={"us-east-1": ("10.40.160.0/24",)}, api_key=key)  # fmt: skip
    CrossCloudPaths(
        stack,
        "OtherClouds",
        platform_name="spillway",
        providers=[vllm],
        vpc=vpc,
        subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        route_table_ids=[],
        router_group=group,
        log_key=kms.Key(stack, "Logs"),
        retention_days=30,
    )
    template = assertions.Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::VPNConnection", 0)
    template.resource_count_is("AWS::Route53Resolver::ResolverRule", 0)
    egress = template.find_resources("AWS::EC2::SecurityGroupEgress")
    assert [(e["Properties"]["CidrIp"], e["Properties"]["FromPort"]) for e in egress.values()] == [
        ("10.40.160.0/24", 8443)
    ]

"""The escrow network cells, checked on the templates of the shared synthesis (tests/infra/conftest.py).

Each check is a small function that returns what it found wrong; the first tests feed those functions deliberately
bad templates, so a check that could never fail would fail here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from stacks.constructs.private_endpoint import ec2_description
from stacks.network import (
    BEDROCK_INVOKE_ACTIONS,
    PLATFORM_TAG,
    SAGEMAKER_INVOKE_ACTIONS,
    deploy_time_resource_types,
    escrow_artifacts,
    isolated_subnet_cidrs,
)
from stacks.platform import Platform, parse_platform
from stacks.targets import endpoint_grants
from tests.infra.conftest import Template, resources_of

INTERNET_TYPES = frozenset(
    {
        "AWS::EC2::InternetGateway",
        "AWS::EC2::VPCGatewayAttachment",
        "AWS::EC2::NatGateway",
        "AWS::EC2::EIP",
        "AWS::EC2::EIPAssociation",
        "AWS::EC2::EgressOnlyInternetGateway",
        "AWS::EC2::CarrierGateway",
    }
)
REQUIRED_INTERFACE_SERVICES = (
    "bedrock-runtime",
    "sagemaker.runtime",
    "sts",
    "logs",
    "monitoring",
    "kms",
    "xray",
    "appconfigdata",
)
ANYWHERE = ("0.0.0.0/0", "::/0")


def network_name(platform: Platform, region: str) -> str:
    return f"{platform.name}-network-{region}"


def network_templates(platform: Platform, templates: Mapping[str, Template]) -> Iterator[tuple[str, Template]]:
    for region in platform.region_names:
        yield region, templates[network_name(platform, region)]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- checks: each returns the problems it finds ---------------------------------------------------------------


def internet_exposure(template: Template) -> list[str]:
    problems = []
    for logical_id, resource in template.get("Resources", {}).items():
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind in INTERNET_TYPES and not (
            kind == "AWS::EC2::VPCGatewayAttachment" and _to_vpn_gateway(template, props.get("VpnGatewayId"))
        ):
            problems.append(f"{logical_id}: {kind}")
        if kind == "AWS::EC2::Subnet" and props.get("MapPublicIpOnLaunch", False) is not False:
            problems.append(f"{logical_id}: MapPublicIpOnLaunch")
        if kind == "AWS::EC2::Subnet" and props.get("AssignIpv6AddressOnCreation", False) is not False:
            problems.append(f"{logical_id}: AssignIpv6AddressOnCreation")
        if kind == "AWS::EC2::Route":
            if props.get("DestinationCidrBlock") in ANYWHERE or props.get("DestinationIpv6CidrBlock") in ANYWHERE:
                problems.append(f"{logical_id}: default route")
            if any(key in props for key in ("GatewayId", "NatGatewayId", "EgressOnlyInternetGatewayId")) and not (
                _to_vpn_gateway(template, props.get("GatewayId")) and _private(props.get("DestinationCidrBlock"))
            ):
                problems.append(f"{logical_id}: route to a gateway")
        if kind == "AWS::EC2::Instance" and any(
            ni.get("AssociatePublicIpAddress") for ni in props.get("NetworkInterfaces", [])
        ):
            problems.append(f"{logical_id}: public IP")
    return problems


def _to_vpn_gateway(template: Template, reference: Any) -> bool:
    """Whether `reference` is a Ref to this template's virtual private gateway (the VPN to another cloud)."""
    target = reference.get("Ref") if isinstance(reference, dict) else None
    return template.get("Resources", {}).get(target, {}).get("Type") == "AWS::EC2::VPNGateway"


def _private(cidr: Any) -> bool:
    if not isinstance(cidr, str):
        return False
    network = ipaddress.IPv4Network(cidr)
    return any(network.subnet_of(ipaddress.IPv4Network(p)) for p in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def ingress_rules(template: Template) -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """(where, security group reference, rule) for inline and separate ingress rules."""
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            for rule in props.get("SecurityGroupIngress", []):
                yield logical_id, {"Fn::GetAtt": [logical_id, "GroupId"]}, rule
        elif resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            yield logical_id, props.get("GroupId"), props


def open_ingress(template: Template) -> list[str]:
    return [
        f"{where}: ingress from anywhere"
        for where, _, rule in ingress_rules(template)
        if rule.get("CidrIp") in ANYWHERE or rule.get("CidrIpv6") in ANYWHERE
    ]


def endpoint_ingress_problems(template: Template) -> list[str]:
    """Every interface endpoint: private DNS on, one security group of its own, 443 only from security groups."""
    problems = []
    resources = template["Resources"]
    for logical_id, endpoint in resources_of(template, "AWS::EC2::VPCEndpoint").items():
        props = endpoint["Properties"]
        if props.get("VpcEndpointType") != "Interface":
            continue
        if props.get("PrivateDnsEnabled") is not True:
            problems.append(f"{logical_id}: private DNS off")
        groups = props.get("SecurityGroupIds", [])
        if len(groups) != 1 or "Fn::GetAtt" not in groups[0]:
            problems.append(f"{logical_id}: not exactly one security group of its own")
            continue
        group_id = groups[0]["Fn::GetAtt"][0]
        rules = [rule for _, ref, rule in ingress_rules(template) if ref == {"Fn::GetAtt": [group_id, "GroupId"]}]
        if not rules:
            problems.append(f"{logical_id}: its security group admits no one")
        for rule in rules:
            if (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")) != ("tcp", 443, 443):
                problems.append(f"{logical_id}: ingress other than tcp/443")
            if "SourceSecurityGroupId" not in rule or any(
                k in rule for k in ("CidrIp", "CidrIpv6", "SourcePrefixListId")
            ):
                problems.append(f"{logical_id}: ingress not from a security group")
        other_users = [
            other
            for other, resource in resources.items()
            if other != logical_id
            and resource["Type"] == "AWS::EC2::VPCEndpoint"
            and {"Fn::GetAtt": [group_id, "GroupId"]} in resource["Properties"].get("SecurityGroupIds", [])
        ]
        if other_users:
            problems.append(f"{logical_id}: shares its security group with {other_users}")
    return problems


def endpoint_by_service(template: Template, suffix: str) -> Mapping[str, Any]:
    found = [
        resource["Properties"]
        for resource in resources_of(template, "AWS::EC2::VPCEndpoint").values()
        if service_name(resource["Properties"]).endswith(f".{suffix}")
    ]
    assert len(found) == 1, f"expected one {suffix} endpoint, found {len(found)}"
    return found[0]


def service_name(props: Mapping[str, Any]) -> str:
    name = props["ServiceName"]
    if isinstance(name, dict):  # gateway endpoints: {"Fn::Join": ["", ["com.amazonaws.", {"Ref": ...}, ".s3"]]}
        return "".join(part if isinstance(part, str) else "<region>" for part in name["Fn::Join"][1])
    return name


TAG_KEY = f"aws:ResourceTag/{PLATFORM_TAG}"


def tag_scoped(statement: Mapping[str, Any]) -> bool:
    """A statement scoped by the platform's resource tag (deploy-time profiles and PT) rather than exact ARNs."""
    return TAG_KEY in statement.get("Condition", {}).get("StringEquals", {})


def deploy_time_arns(platform: Platform, region: str) -> tuple[str, ...]:
    """What the bedrock-runtime endpoint of `region` allows by tag: the deploy-time resource types there."""
    return tuple(
        f"arn:aws:bedrock:{region}:{platform.account}:{kind}/*" for kind in deploy_time_resource_types(platform, region)
    )


def invoke_policy_problems(
    props: Mapping[str, Any],
    actions: tuple[str, ...],
    arns: tuple[str, ...],
    account: str,
    *,
    tagged: tuple[str, ...] = (),
    platform_name: str = "spillway",
) -> list[str]:
    """The endpoint policy allows exactly `actions` on exactly `arns`, to this account's principals, plus (when
    `tagged` is given) the same actions on exactly the `tagged` resource-type ARNs, only for resources carrying the
    platform's tag, to this account's principals; and no more."""
    statements = props.get("PolicyDocument", {}).get("Statement", [])
    allows = [s for s in statements if s["Effect"] == "Allow"]
    problems = []
    if not arns:
        if allows:
            problems.append("allows something although no target is configured here")
        if not any(s["Effect"] == "Deny" for s in statements):
            problems.append("no explicit deny for a region without targets")
        return problems
    exact = [s for s in allows if not tag_scoped(s)]
    scoped = [s for s in allows if tag_scoped(s)]
    if len(exact) != 1:
        return [f"expected one Allow statement on exact ARNs, found {len(exact)}"]
    (allow,) = exact
    if sorted(as_list(allow["Action"])) != sorted(actions):
        problems.append(f"actions {allow['Action']} != {list(actions)}")
    resources = as_list(allow["Resource"])
    if any("*" in r for r in resources if isinstance(r, str)):
        problems.append("a wildcard resource")
    if sorted(resources) != sorted(arns):
        problems.append(f"resources {resources} != endpoint_grants {list(arns)}")
    if allow.get("Condition", {}).get("StringEquals", {}).get("aws:PrincipalAccount") != account:
        problems.append("principals not restricted to the account")
    problems.extend(_tag_scoped_problems(scoped, actions, account, tagged, platform_name))
    return problems


def _tag_scoped_problems(
    scoped: list[Mapping[str, Any]], actions: tuple[str, ...], account: str, tagged: tuple[str, ...], platform_name: str
) -> list[str]:
    problems = []
    if len(scoped) != (1 if tagged else 0):
        problems.append(f"expected {1 if tagged else 0} tag-scoped Allow statement(s), found {len(scoped)}")
    for statement in scoped:
        if sorted(as_list(statement["Action"])) != sorted(actions):
            problems.append(f"tag-scoped actions {statement['Action']} != {list(actions)}")
        if sorted(as_list(statement["Resource"])) != sorted(tagged):
            problems.append(f"tag-scoped resources {statement['Resource']} != {list(tagged)}")
        expected = {"StringEquals": {"aws:PrincipalAccount": account, TAG_KEY: platform_name}}
        if statement.get("Condition") != expected:
            problems.append(f"tag-scoped condition {statement.get('Condition')} != {expected}")
    return problems


# --- the checks can fail ----------------------------------------------------------------------------------------


def test_checks_catch_bad_templates() -> None:
    bad: Template = {
        "Resources": {
            "Igw": {"Type": "AWS::EC2::InternetGateway", "Properties": {}},
            "Public": {"Type": "AWS::EC2::Subnet", "Properties": {"MapPublicIpOnLaunch": True}},
            "Default": {
                "Type": "AWS::EC2::Route",
                "Properties": {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "x"},
            },
            "Sg": {
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {
                    "SecurityGroupIngress": [
                        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"}
                    ]
                },
            },
            "Endpoint": {
                "Type": "AWS::EC2::VPCEndpoint",
                "Properties": {
                    "VpcEndpointType": "Interface",
                    "ServiceName": "com.amazonaws.us-east-1.bedrock-runtime",
                    "PrivateDnsEnabled": False,
                    "SecurityGroupIds": [{"Fn::GetAtt": ["Sg", "GroupId"]}],
                    "PolicyDocument": {
                        "Statement": [{"Effect": "Allow", "Action": "bedrock:*", "Resource": "*", "Principal": "*"}]
                    },
                },
            },
        }
    }
    assert len(internet_exposure(bad)) == 4
    assert open_ingress(bad) == ["Sg: ingress from anywhere"]
    problems = endpoint_ingress_problems(bad)
    assert "Endpoint: private DNS off" in problems
    assert "Endpoint: ingress not from a security group" in problems
    policy = invoke_policy_problems(
        endpoint_by_service(bad, "bedrock-runtime"), BEDROCK_INVOKE_ACTIONS, ("arn:aws:bedrock:x",), "111122223333"
    )
    assert {p.split(" ")[0] for p in policy} >= {"actions", "a", "resources", "principals"}
    good = {"Effect": "Allow", "Action": list(BEDROCK_INVOKE_ACTIONS), "Resource": ["arn:aws:bedrock:x"],
            "Condition": {"StringEquals": {"aws:PrincipalAccount": "111122223333"}}}  # fmt: skip
    loose = {**good, "Resource": "arn:aws:bedrock:*", "Condition": {"StringEquals": {TAG_KEY: "other"}}}
    doc = {"PolicyDocument": {"Statement": [good, loose]}}
    wanted = ("arn:aws:bedrock:r:a:application-inference-profile/*",)
    policy = invoke_policy_problems(doc, BEDROCK_INVOKE_ACTIONS, ("arn:aws:bedrock:x",), "111122223333", tagged=wanted)
    assert {p.split(" ")[1] for p in policy} == {"resources", "condition"}
    unexpected = invoke_policy_problems(doc, BEDROCK_INVOKE_ACTIONS, ("arn:aws:bedrock:x",), "111122223333")
    assert "expected 0 tag-scoped Allow statement(s), found 1" in unexpected


# --- the cells --------------------------------------------------------------------------------------------------


def test_every_region_has_a_network_cell(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region, template in network_templates(platform, templates):
        assert len(resources_of(template, "AWS::EC2::VPC")) == 1, region


def test_no_internet_path_anywhere(platform: Platform, templates: Mapping[str, Template]) -> None:
    for name, template in templates.items():
        if name.startswith((f"{platform.name}-network-", f"{platform.name}-links-")):
            assert internet_exposure(template) == [], name
            assert open_ingress(template) == [], name


def test_vpc_cidr_and_isolated_subnets_in_the_configured_zones(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region, template in network_templates(platform, templates):
        config = platform.regions[region]
        (vpc,) = resources_of(template, "AWS::EC2::VPC").values()
        assert vpc["Properties"]["CidrBlock"] == config.vpc_cidr
        assert vpc["Properties"]["EnableDnsSupport"] is True
        assert vpc["Properties"]["EnableDnsHostnames"] is True
        subnets = [s["Properties"] for s in resources_of(template, "AWS::EC2::Subnet").values()]
        assert len(config.availability_zones) >= 2
        assert sorted(s["AvailabilityZone"] for s in subnets) == sorted(config.availability_zones)
        assert sorted(s["CidrBlock"] for s in subnets) == sorted(isolated_subnet_cidrs(platform, region))
        for subnet in subnets:
            tags = {t["Key"]: t["Value"] for t in subnet.get("Tags", [])}
            assert tags.get("aws-cdk:subnet-type") == "Isolated"
            assert ipaddress.IPv4Network(subnet["CidrBlock"]).subnet_of(ipaddress.IPv4Network(config.vpc_cidr))
        # Isolated route tables hold no route of their own here but the other clouds' private ranges, to the VPN
        # gateway (links add only peer CIDRs; tests/infra/test_other_clouds.py checks those ranges).
        routes = resources_of(template, "AWS::EC2::Route").values()
        assert all(_to_vpn_gateway(template, r["Properties"].get("GatewayId")) for r in routes)


def test_default_security_group_is_restricted(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region, template in network_templates(platform, templates):
        assert len(resources_of(template, "Custom::VpcRestrictDefaultSG")) == 1, region


def test_interface_endpoints_private_dns_and_closed_to_security_groups(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region, template in network_templates(platform, templates):
        assert endpoint_ingress_problems(template) == [], region
        services = {
            service_name(e["Properties"]).removeprefix(f"com.amazonaws.{region}.")
            for e in resources_of(template, "AWS::EC2::VPCEndpoint").values()
            if e["Properties"]["VpcEndpointType"] == "Interface"
        }
        assert set(REQUIRED_INTERFACE_SERVICES) <= services, region
        if escrow_artifacts(platform, region):
            assert {"ecr.api", "ecr.dkr"} <= services, region


def _group_id_of(template: Template, construct_prefix: str) -> str:
    (logical_id,) = [k for k in resources_of(template, "AWS::EC2::SecurityGroup") if k.startswith(construct_prefix)]
    return logical_id


def test_runtime_endpoints_admit_only_the_router(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region, template in network_templates(platform, templates):
        router = _group_id_of(template, "RouterSecurityGroup")
        for service in ("bedrock-runtime", "sagemaker.runtime"):
            endpoint = endpoint_by_service(template, service)
            group = endpoint["SecurityGroupIds"][0]["Fn::GetAtt"][0]
            sources = [
                rule["SourceSecurityGroupId"]
                for _, ref, rule in ingress_rules(template)
                if ref == {"Fn::GetAtt": [group, "GroupId"]}
            ]
            assert sources == [{"Fn::GetAtt": [router, "GroupId"]}], (region, service)


def test_model_security_group_reaches_what_sagemaker_needs(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region, template in network_templates(platform, templates):
        model = {"Fn::GetAtt": [_group_id_of(template, "ModelSecurityGroup"), "GroupId"]}
        admitted = set()
        for suffix in ("sts", "logs", "kms", "ecr.api", "ecr.dkr"):
            if suffix.startswith("ecr") and not escrow_artifacts(platform, region):
                continue
            group = endpoint_by_service(template, suffix)["SecurityGroupIds"][0]["Fn::GetAtt"][0]
            if any(
                rule.get("SourceSecurityGroupId") == model
                for _, ref, rule in ingress_rules(template)
                if ref == {"Fn::GetAtt": [group, "GroupId"]}
            ):
                admitted.add(suffix)
        assert {"sts", "logs", "kms"} <= admitted, region
        group = endpoint_by_service(template, "bedrock-runtime")["SecurityGroupIds"][0]["Fn::GetAtt"][0]
        assert all(
            rule.get("SourceSecurityGroupId") != model
            for _, ref, rule in ingress_rules(template)
            if ref == {"Fn::GetAtt": [group, "GroupId"]}
        ), "SageMaker containers have no business calling Bedrock"


def test_client_security_groups_only_send_https(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region, template in network_templates(platform, templates):
        for prefix in ("RouterSecurityGroup", "ModelSecurityGroup"):
            group = template["Resources"][_group_id_of(template, prefix)]["Properties"]
            assert group.get("SecurityGroupIngress", []) == [], (region, prefix)
            for rule in group.get("SecurityGroupEgress", []):  # separate rules: tests/infra/test_perimeter.py
                assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443), (region, prefix)


@pytest.mark.parametrize(
    ("service", "actions", "kind"),
    [
        ("bedrock-runtime", BEDROCK_INVOKE_ACTIONS, "bedrock"),
        ("sagemaker.runtime", SAGEMAKER_INVOKE_ACTIONS, "sagemaker"),
    ],
)
def test_runtime_endpoint_policies_name_exactly_the_grants(
    platform: Platform, templates: Mapping[str, Template], service: str, actions: tuple[str, ...], kind: str
) -> None:
    for region, template in network_templates(platform, templates):
        arns = getattr(endpoint_grants(platform, region), kind)
        assert arns, f"the example platform has {kind} targets in {region}"
        props = endpoint_by_service(template, service)
        tagged = deploy_time_arns(platform, region) if service == "bedrock-runtime" else ()
        problems = invoke_policy_problems(props, actions, arns, platform.account, tagged=tagged)
        assert problems == [], (region, service)


def test_bedrock_endpoint_allows_own_profiles_by_tag_and_pt_only_where_bought(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    # The example buys no PT: every cell allows its application inference profiles by tag, and no provisioned-model/*.
    for region, template in network_templates(platform, templates):
        assert deploy_time_arns(platform, region) == (
            f"arn:aws:bedrock:{region}:{platform.account}:application-inference-profile/*",
        )
        scoped = [s for s in endpoint_by_service(template, "bedrock-runtime")["PolicyDocument"]["Statement"]
                  if tag_scoped(s)]  # fmt: skip
        assert len(scoped) == 1
        assert scoped[0]["Condition"]["StringEquals"] == {
            "aws:PrincipalAccount": platform.account,
            TAG_KEY: platform.name,
        }
        assert "provisioned-model/*" not in json.dumps(scoped)
    # The sagemaker.runtime endpoint never gets a tag-scoped statement.
    for _, template in network_templates(platform, templates):
        assert not [s for s in endpoint_by_service(template, "sagemaker.runtime")["PolicyDocument"]["Statement"]
                    if tag_scoped(s)]  # fmt: skip


def test_bedrock_actions_are_the_real_iam_names() -> None:
    # Converse and ConverseStream are authorized as InvokeModel and InvokeModelWithResponseStream.
    assert set(BEDROCK_INVOKE_ACTIONS) == {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
    assert set(SAGEMAKER_INVOKE_ACTIONS) == {"sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"}


def test_other_interface_endpoints_are_limited_to_the_account(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region, template in network_templates(platform, templates):
        for resource in resources_of(template, "AWS::EC2::VPCEndpoint").values():
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Effect"] == "Allow" and "starport-layer-bucket" not in str(statement["Resource"]):
                    assert statement["Condition"]["StringEquals"]["aws:PrincipalAccount"] == platform.account, region


def test_gateway_endpoints_are_scoped_to_project_resources(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region, template in network_templates(platform, templates):
        gateways = {
            service_name(e["Properties"]).rsplit(".", 1)[-1]: e["Properties"]
            for e in resources_of(template, "AWS::EC2::VPCEndpoint").values()
            if e["Properties"]["VpcEndpointType"] == "Gateway"
        }
        assert set(gateways) == {"s3"}, region  # no DynamoDB gateway: nothing in the VPC uses DynamoDB
        for gateway in gateways.values():
            assert len(gateway["RouteTableIds"]) == len(platform.regions[region].availability_zones)
            for statement in gateway["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow"
                assert "*" not in as_list(statement["Resource"])
                assert not {"*", "s3:*"} & set(as_list(statement["Action"]))
        s3 = [r for s in gateways["s3"]["PolicyDocument"]["Statement"] for r in as_list(s["Resource"])]
        assert f"arn:aws:s3:::{platform.name}-*-{platform.account}-{region}/*" in s3
        for url in escrow_artifacts(platform, region):
            assert "arn:aws:s3:::" + url.removeprefix("s3://") in s3, url
        # Bucket names are global: every statement on this account's buckets also requires this account's bucket.
        for statement in gateways["s3"]["PolicyDocument"]["Statement"]:
            if statement.get("Sid") in ("ProjectBuckets", "EscrowModelArtifacts"):
                assert statement["Condition"]["StringEquals"]["aws:ResourceAccount"] == platform.account


def test_flow_logs_capture_all_traffic_of_every_vpc(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region, template in network_templates(platform, templates):
        (vpc_id,) = resources_of(template, "AWS::EC2::VPC")
        logs = [
            f["Properties"]
            for f in resources_of(template, "AWS::EC2::FlowLog").values()
            if f["Properties"]["ResourceId"] == {"Ref": vpc_id}
        ]
        assert len(logs) == 1, region
        (flow,) = logs
        assert flow["TrafficType"] == "ALL"
        assert flow["LogDestinationType"] == "cloud-watch-logs"
        group = flow["LogDestination"]["Fn::GetAtt"][0]
        assert template["Resources"][group]["Type"] == "AWS::Logs::LogGroup"


def test_every_log_group_has_a_rotating_cmk_and_retention(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region, template in network_templates(platform, templates):
        groups = resources_of(template, "AWS::Logs::LogGroup")
        assert groups, region
        for logical_id, group in groups.items():
            props = group["Properties"]
            assert props["RetentionInDays"] == platform.log_retention_days, logical_id
            key = template["Resources"][props["KmsKeyId"]["Fn::GetAtt"][0]]
            assert key["Type"] == "AWS::KMS::Key"
            assert key["Properties"]["EnableKeyRotation"] is True
        # Every Lambda of the cell (CDK's providers) logs into one of these groups, not an implicit one.
        for logical_id, function in resources_of(template, "AWS::Lambda::Function").items():
            if "CrossRegionExport" in logical_id:
                continue  # created by CDK at synthesis time, after any construct could configure it
            target = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            assert target in groups, logical_id


def test_logs_key_policy_admits_only_this_regions_logs_for_this_account(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region, template in network_templates(platform, templates):
        for key in resources_of(template, "AWS::KMS::Key").values():
            statements = key["Properties"]["KeyPolicy"]["Statement"]
            (logs,) = [s for s in statements if s.get("Principal", {}).get("Service", "").startswith("logs.")]
            assert logs["Principal"]["Service"] == f"logs.{region}.amazonaws.com"
            context = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
            assert context == f"arn:aws:logs:{region}:{platform.account}:log-group:*"


def test_subnet_plan_leaves_room_and_fits_small_vpcs() -> None:
    text = """
platform: {name: tiny, account: "111122223333"}
regions:
  eu-west-1: {vpc_cidr: 10.9.0.0/24, availability_zones: [eu-west-1a, eu-west-1b, eu-west-1c],
              gateway_prefix_lists: {s3: pl-6da54004}}
models:
  nova: {kind: bedrock, model_id: amazon.nova-lite-v1:0, regions: {eu-west-1: {on_demand: true}}}
features:
  feat: {first_capacity: on_demand, models: [nova], home_region: eu-west-1}
"""
    tiny = parse_platform(text)
    cidrs = isolated_subnet_cidrs(tiny, "eu-west-1")
    assert cidrs == ("10.9.0.0/27", "10.9.0.32/27", "10.9.0.64/27")


def test_the_only_lambdas_are_cdks_providers(platform: Platform, templates: Mapping[str, Template]) -> None:
    """cdk-nag does not inspect CDK's provider-framework Lambdas (generic CfnResources): pin which ones exist, so a
    new function in these stacks is a deliberate change reviewed with stacks/compliance.py."""
    allowed = ("CustomVpcRestrictDefaultSGCustomResourceProvider", "CustomCrossRegionExport")
    for region in platform.region_names:
        for stack in (network_name(platform, region), f"{platform.name}-links-{region}"):
            for logical_id in resources_of(templates[stack], "AWS::Lambda::Function"):
                assert logical_id.startswith(allowed), (stack, logical_id)


EC2_DESCRIPTION = re.compile(r"^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]*$")


def security_group_descriptions(template: Template) -> Iterator[tuple[str, str]]:
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            yield logical_id, props.get("GroupDescription", "")
            for rule in [*props.get("SecurityGroupIngress", []), *props.get("SecurityGroupEgress", [])]:
                yield logical_id, rule.get("Description", "")
        elif resource["Type"] in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
            yield logical_id, props.get("Description", "")


def test_security_group_descriptions_are_deployable(platform: Platform, templates: Mapping[str, Template]) -> None:
    """EC2 rejects an apostrophe and most punctuation in security group and rule descriptions at deployment."""
    bad = {"Resources": {"Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "the cell's"}}}}
    assert [d for _, d in security_group_descriptions(bad) if not EC2_DESCRIPTION.match(d)] == ["the cell's"]
    assert ec2_description("HTTPS from this cell's VPC") == "HTTPS from this cells VPC"
    for region in platform.region_names:
        for stack in (network_name(platform, region), f"{platform.name}-links-{region}"):
            for logical_id, description in security_group_descriptions(templates[stack]):
                assert EC2_DESCRIPTION.match(description), (stack, logical_id, description)

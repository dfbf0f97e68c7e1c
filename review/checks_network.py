"""Checks of the network boundary: internet paths, subnets, security groups, VPC endpoints and their policies."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from review import inventory as inv
from review import policy as pol
from review.cfn import CloudAssembly, Resource, as_list, references
from review.check import Check, judge, predicate, simple, where

OPEN_PEERS = ("0.0.0.0/0", "::/0")

# Actions the Service Authorization Reference lists with no resource type: `*` is the only resource they take.
NO_RESOURCE_ACTIONS = frozenset(
    {
        "sts:getcalleridentity",
        "sts:getwebidentitytoken",  # bound by sts:IdentityTokenAudience instead (stacks/network.py)
        "ecr:getauthorizationtoken",
        "xray:puttracesegments",
        "xray:puttelemetryrecords",
        "xray:getsamplingrules",
        "xray:getsamplingtargets",
        "xray:getsamplingstatisticsummaries",
        "cloudwatch:putmetricdata",
        "logs:describeloggroups",
        "kms:listkeys",
        "kms:listaliases",
    }
)


@predicate
def no_internet_path(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No internet gateway, NAT gateway, Elastic IP, public subnet or route to the internet in any VPC."""
    vpcs = list(a.resources("AWS::EC2::VPC"))
    if not vpcs:
        return Check("no_internet_path", None)
    exposed = inv.internet_paths(a)
    return Check(
        "no_internet_path",
        not exposed,
        [f"{where(v)}: no internet gateway, NAT gateway, Elastic IP or public subnet in {v.stack}" for v in vpcs]
        if not exposed
        else [],
        [f"{where(r)}: {r.type}" for r in exposed],
    )


@predicate
def subnets_private(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No subnet gives its instances a public IP."""
    return simple(
        "subnets_private",
        list(a.resources("AWS::EC2::Subnet")),
        lambda r: not r.properties.get("MapPublicIpOnLaunch"),
        lambda r: f"{where(r)}: MapPublicIpOnLaunch={bool(r.properties.get('MapPublicIpOnLaunch'))}",
    )


# AWS-owned buckets that a service reads through presigned URLs signed by an AWS account: ECR's image layers. The
# ECR documentation's minimum S3 gateway endpoint policy names them with Principal `*`; a principal perimeter of
# this account would break every image pull.
AWS_PRESIGNED_BUCKETS = re.compile(r"^arn:aws[a-z-]*:s3:::prod-[a-z0-9-]+-starport-layer-bucket/\*$")


def _aws_presigned_bucket(resource: str) -> bool:
    return AWS_PRESIGNED_BUCKETS.match(resource) is not None


def endpoint_policy_shortfalls(endpoint: Resource) -> list[str]:
    """Why an endpoint's policy is wider than its clients need (empty: it is not)."""
    document = endpoint.properties.get("PolicyDocument")
    if not isinstance(document, Mapping):
        return ["no endpoint policy: every action on every resource, for any principal"]
    reasons: list[str] = []
    for statement in as_list(document.get("Statement")):
        if not isinstance(statement, Mapping) or not pol.is_allow(statement):
            continue
        sid = f"statement {statement.get('Sid') or '#'}"
        if "NotAction" in statement or "NotResource" in statement:
            reasons.append(f"{sid} allows by NotAction/NotResource")
            continue
        actions = pol.actions(statement)
        resources = pol.resources(statement)
        if any(pol.every_action(x) for x in actions):
            reasons.append(f"{sid} allows every action ({', '.join(x for x in actions if pol.every_action(x))})")
        needs_resources = [x for x in actions if x.lower() not in NO_RESOURCE_ACTIONS]
        unpinned = [x for x in resources if not pol.account_pinned(x)]
        if unpinned and needs_resources and not pol.has_condition(statement, pol.RESOURCE_PERIMETER):
            reasons.append(
                f"{sid} allows {', '.join(unpinned)} with no resource perimeter "
                "(aws:ResourceAccount or aws:ResourceOrgID): other accounts' resources too"
            )
        anyone = any(kind == "*" for kind, _ in pol.principals(statement))
        presigned = bool(resources) and all(_aws_presigned_bucket(x) for x in resources)
        if anyone and not presigned and not pol.has_condition(statement, pol.PRINCIPAL_PERIMETER):
            reasons.append(f"{sid} admits any principal (no aws:PrincipalAccount or aws:PrincipalOrgID)")
    return reasons


@predicate
def endpoint_policies_least(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every VPC endpoint has a policy that names its actions (no `*`, no `service:*`), keeps every resource inside
    a resource perimeter (the account in the ARN, or aws:ResourceAccount / aws:ResourceOrgID; `*` only for actions
    that take no resource) and admits principals only inside a principal perimeter (aws:PrincipalAccount / OrgID)."""
    return judge(
        "endpoint_policies_least",
        list(a.resources("AWS::EC2::VPCEndpoint")),
        endpoint_policy_shortfalls,
        lambda r: f"{where(r)} {inv.service_name(r, a)}",
    )


def _rules_of(a: CloudAssembly, group: Resource, direction: str) -> list[inv.SgRule]:
    out = []
    for rule in inv.sg_rules(a):
        if rule.direction != direction:
            continue
        if rule.resource.key == group.key:
            out.append(rule)
        elif rule.resource.type != "AWS::EC2::SecurityGroup":
            target = a.resolve(rule.resource.stack, rule.resource.properties.get("GroupId"))
            if target is not None and target.key == group.key:
                out.append(rule)
    return out


def _vpc_cidrs(a: CloudAssembly, group: Resource) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    vpc = a.resolve(group.stack, group.properties.get("VpcId"))
    cidr = vpc.properties.get("CidrBlock") if vpc is not None else None
    try:
        return [ipaddress.ip_network(cidr)] if isinstance(cidr, str) else []
    except ValueError:
        return []


def _covers_vpc(peer: str, vpc_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        network = ipaddress.ip_network(peer)
    except ValueError:
        return False
    return any(
        network.version == own.version and own.subnet_of(network)  # type: ignore[arg-type]
        for own in vpc_cidrs
    )


@predicate
def interface_endpoints_closed(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every interface endpoint has its own security group admitting its clients only: security groups or other
    cells' subnets, never 0.0.0.0/0, ::/0 or its whole VPC."""
    subjects = [r for r in a.resources("AWS::EC2::VPCEndpoint") if r.properties.get("VpcEndpointType") == "Interface"]

    def ingress(endpoint: Resource) -> list[inv.SgRule]:
        groups = inv.security_groups_of(a, endpoint, endpoint.properties.get("SecurityGroupIds"))
        return [rule for group in groups for rule in _rules_of(a, group, "ingress")]

    def shortfalls(endpoint: Resource) -> list[str]:
        groups = inv.security_groups_of(a, endpoint, endpoint.properties.get("SecurityGroupIds"))
        if not groups:
            return ["no security group of its own (the VPC's default group)"]
        reasons = []
        for group in groups:
            own = _vpc_cidrs(a, group)
            for rule in _rules_of(a, group, "ingress"):
                if rule.peer in OPEN_PEERS:
                    reasons.append(f"ingress from {rule.peer} ({where(rule.resource)})")
                elif _covers_vpc(rule.peer, own):
                    reasons.append(f"ingress from {rule.peer}, its whole VPC ({where(rule.resource)})")
        return reasons

    def describe(endpoint: Resource) -> str:
        peers = sorted({f"{x.peer}:{x.ports}" for x in ingress(endpoint)})
        return f"{where(endpoint)} {inv.service_name(endpoint, a)}: ingress from {', '.join(peers) or 'nobody'}"

    return judge("interface_endpoints_closed", subjects, shortfalls, describe)


@predicate
def sg_no_open_ingress(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No security group admits ingress from 0.0.0.0/0 or ::/0."""
    return _no_open("sg_no_open_ingress", a, "ingress")


@predicate
def sg_no_open_egress(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No security group allows egress to 0.0.0.0/0 or ::/0: egress only to endpoint security groups, prefix lists
    and the peer cells' endpoint addresses (route tables are not the control)."""
    return _no_open("sg_no_open_egress", a, "egress")


def _no_open(name: str, a: CloudAssembly, direction: str) -> Check:
    groups = list(a.resources("AWS::EC2::SecurityGroup"))

    def shortfalls(group: Resource) -> list[str]:
        return [
            f"{direction} {x.protocol}/{x.ports} {'from' if direction == 'ingress' else 'to'} {x.peer}"
            + ("" if x.resource.key == group.key else f" ({where(x.resource)})")
            for x in _rules_of(a, group, direction)
            if x.peer in OPEN_PEERS
        ]

    def describe(group: Resource) -> str:
        return f"{where(group)}: {len(_rules_of(a, group, direction))} {direction} rules"

    return judge(name, groups, shortfalls, describe)


# Stores whose transport is TLS by construction: ElastiCache Serverless always encrypts in transit. Which of their
# ports a rule may open is the control's `tls_cache_ports` (the ports the platform uses), 6379 and 6380 by default.
TLS_ONLY_STORES = ("AWS::ElastiCache::ServerlessCache",)


def _tls_store_groups(a: CloudAssembly) -> set[tuple[str, str]]:
    """Security groups attached to a TLS-only store."""
    return {
        group.key
        for store in a.resources(*TLS_ONLY_STORES)
        for group in inv.security_groups_of(a, store, store.properties.get("SecurityGroupIds"))
    }


def _rule_groups(a: CloudAssembly, rule: inv.SgRule) -> list[Resource]:
    """The groups a rule joins: its own group and its peer group."""
    r = rule.resource
    own = r if r.type == "AWS::EC2::SecurityGroup" else a.resolve(r.stack, r.properties.get("GroupId"))
    peer_keys = ("SourceSecurityGroupId", "DestinationSecurityGroupId")
    peers = [a.resolve(r.stack, r.properties.get(k)) for k in peer_keys] if r.type != "AWS::EC2::SecurityGroup" else []
    return [g for g in (own, *peers) if g is not None]


def _resolver_groups(a: CloudAssembly) -> set[tuple[str, str]]:
    """Security groups of Route 53 Resolver outbound endpoints (forwarding another cloud's API names)."""
    return {
        group.key
        for endpoint in a.resources("AWS::Route53Resolver::ResolverEndpoint")
        if endpoint.properties.get("Direction") == "OUTBOUND"
        for group in inv.security_groups_of(a, endpoint, endpoint.properties.get("SecurityGroupIds"))
    }


def _resolver_dns(x: inv.SgRule, resolvers: set[tuple[str, str]], a: CloudAssembly) -> bool:
    """DNS out of an outbound resolver endpoint's own group: what forwarding is (the peer is a /32, the provider's
    resolver; sg_no_open_egress judges the peer)."""
    own = _rule_groups(a, x)[:1]
    return (
        x.direction == "egress"
        and x.ports == "53"
        and x.protocol in ("udp", "tcp", "17", "6")
        and bool(own)
        and own[0].key in resolvers
    )


@predicate
def sg_ports_limited(a: CloudAssembly, params: Mapping[str, Any]) -> Check:
    """Every security-group rule is TCP on the allowed ports only (HTTPS), or on a TLS-only store's port the platform
    uses, between the store's security group and its clients (ElastiCache Serverless always encrypts in transit), or
    DNS out of a Route 53 Resolver outbound endpoint's own group (forwarding to another cloud's resolvers)."""
    allowed = {str(p) for p in params.get("ports", ["443"])}
    store_ports = {str(p) for p in params.get("tls_cache_ports", ["6379", "6380"])}
    stores = _tls_store_groups(a)
    resolvers = _resolver_groups(a)

    def good(x: inv.SgRule) -> bool:
        if _resolver_dns(x, resolvers, a):
            return True
        if x.protocol not in ("tcp", "6"):
            return False
        return x.ports in allowed or (x.ports in store_ports and any(g.key in stores for g in _rule_groups(a, x)))

    return simple(
        "sg_ports_limited",
        inv.sg_rules(a),
        good,
        lambda x: f"{where(x.resource)}: {x.direction} {x.protocol}/{x.ports} {x.peer}",
    )


@predicate
def default_sg_restricted(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every VPC's default security group is emptied of rules."""
    restrictors = list(a.resources("Custom::VpcRestrictDefaultSG"))

    def good(vpc: Resource) -> bool:
        return any(r.stack == vpc.stack and vpc.logical_id in references(r.properties) for r in restrictors)

    return simple(
        "default_sg_restricted",
        list(a.resources("AWS::EC2::VPC")),
        good,
        lambda v: f"{where(v)}: default security group {'emptied of rules' if good(v) else 'NOT restricted'}",
    )


def _private_dns(r: Resource) -> bool:
    return bool(r.properties.get("PrivateDnsEnabled"))


@predicate
def private_dns_endpoints(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every interface endpoint has private DNS, so AWS SDKs reach it over TLS inside the VPC."""
    subjects = [r for r in a.resources("AWS::EC2::VPCEndpoint") if r.properties.get("VpcEndpointType") == "Interface"]
    return simple(
        "private_dns_endpoints",
        subjects,
        _private_dns,
        lambda r: f"{where(r)} {inv.service_name(r, a)}: private DNS {'on' if _private_dns(r) else 'OFF'}",
    )


@predicate
def sagemaker_isolated(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every SageMaker model runs with network isolation, in the VPC."""

    def good(r: Resource) -> bool:
        return bool(r.properties.get("EnableNetworkIsolation")) and bool(r.properties.get("VpcConfig"))

    return simple(
        "sagemaker_isolated",
        list(a.resources("AWS::SageMaker::Model")),
        good,
        lambda r: (
            f"{where(r)}: network isolation {bool(r.properties.get('EnableNetworkIsolation'))}, "
            f"VPC {'yes' if r.properties.get('VpcConfig') else 'NO'}"
        ),
    )


def is_cdk_provider(r: Resource) -> bool:
    text = f"{r.logical_id} {r.path}"
    return "CustomResourceProvider" in text or "Provider/framework" in text or "LogRetention" in text


@predicate
def lambdas_in_vpc(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every workload Lambda function runs in the VPC. CDK's deploy-time helpers (custom-resource providers) run
    outside it and are listed as such: they see no request data."""
    functions = list(a.resources("AWS::Lambda::Function"))
    workload = [f for f in functions if not is_cdk_provider(f)]
    check = simple(
        "lambdas_in_vpc",
        workload,
        lambda r: bool(r.properties.get("VpcConfig")),
        lambda r: f"{where(r)}: {'in the VPC' if r.properties.get('VpcConfig') else 'NOT in a VPC'}",
    )
    check.evidence += [
        f"{where(f)}: CDK deploy-time helper, outside the VPC (no request data)"
        for f in functions
        if is_cdk_provider(f)
    ]
    return check


@predicate
def lambda_code_signed(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every workload Lambda function enforces code signing: a CodeSigningConfig whose policy for untrusted
    artifacts is Enforce, so only signed code deploys (Warn deploys unsigned code with a log line)."""

    def policy(f: Resource) -> str:
        config = a.resolve(f.stack, f.properties.get("CodeSigningConfigArn"))
        if config is None:
            return "NONE" if not f.properties.get("CodeSigningConfigArn") else "unresolved"
        policies = config.properties.get("CodeSigningPolicies") or {}
        return str(policies.get("UntrustedArtifactOnDeployment", "Warn"))  # CloudFormation's default is Warn

    return simple(
        "lambda_code_signed",
        [f for f in a.resources("AWS::Lambda::Function") if not is_cdk_provider(f)],
        lambda f: policy(f) == "Enforce",
        lambda f: f"{where(f)}: code signing {policy(f)}",
    )

"""What the templates configure, as rows a reviewer reads: network, IAM, encryption, logging.

Every function takes the whole cloud assembly and is generic over resource types: a resource type it does not know
still lands in an "other" table, a policy document anywhere in any resource lands in the IAM matrix, and a property
that names a KMS key anywhere lands in the encryption inventory. Configuration only: code (`Code`, `ZipFile`,
`InlineCode`) and environment variable values are never read into a row.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from review.cfn import CloudAssembly, Resource, as_list, references, render

# Properties never shown: code and secrets-by-shape. The report is configuration only.
HIDDEN_PROPERTIES = frozenset({"Code", "ZipFile", "InlineCode", "Environment", "Content", "UserData", "SecretString"})


def names(assembly: CloudAssembly, stack: str) -> dict[str, str]:
    cache = assembly._cache.setdefault("names", {})
    if stack not in cache:
        cache[stack] = {r.logical_id: r.label for r in assembly.stack(stack).resources.values()}
    return cache[stack]  # type: ignore[no-any-return]


def show(resource: Resource, value: Any, assembly: CloudAssembly) -> str:
    return render(_imports_resolved(value, assembly), names(assembly, resource.stack))


def _imports_resolved(value: Any, assembly: CloudAssembly) -> Any:
    """Fn::ImportValue of another stack's export, as that stack's resource (`stack/label`)."""
    if isinstance(value, Mapping):
        name = value.get("Fn::ImportValue")
        if len(value) == 1 and isinstance(name, str):
            target = assembly.exports().get(name)
            return f"{target.stack}/{target.label}" if target else f"import({name})"
        return {k: _imports_resolved(v, assembly) for k, v in value.items()}
    if isinstance(value, list):
        return [_imports_resolved(v, assembly) for v in value]
    return value


def dig(value: Any, *path: str | int) -> Any:
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and len(value) > step else None
        else:
            value = value.get(step) if isinstance(value, Mapping) else None
        if value is None:
            return None
    return value


# --- network ------------------------------------------------------------------------------------------------------

INTERNET_TYPES = (
    "AWS::EC2::InternetGateway",
    "AWS::EC2::EgressOnlyInternetGateway",
    "AWS::EC2::NatGateway",
    "AWS::EC2::EIP",
    "AWS::EC2::VPCGatewayAttachment",
)
NETWORK_HANDLED = {
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::RouteTable",
    "AWS::EC2::Route",
    "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::EC2::VPCEndpoint",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::SecurityGroupIngress",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::EC2::VPCPeeringConnection",
    "AWS::EC2::FlowLog",
    "AWS::Route53::HostedZone",
    "AWS::Route53::RecordSet",
    *INTERNET_TYPES,
}


def is_network(resource_type: str) -> bool:
    return resource_type.startswith(("AWS::EC2::", "AWS::Route53", "AWS::NetworkFirewall::", "AWS::NetworkManager::"))


def vpcs(a: CloudAssembly) -> list[list[str]]:
    rows = []
    for r in a.resources("AWS::EC2::VPC"):
        p = r.properties
        rows.append(
            [
                r.region,
                r.stack,
                r.label,
                show(r, p.get("CidrBlock", p.get("Ipv4IpamPoolId", "")), a),
                f"support={render(p.get('EnableDnsSupport', True))}, "
                f"hostnames={render(p.get('EnableDnsHostnames', False))}",
                ", ".join(f.label for f in flow_logs_of(a, r)) or "NONE",
            ]
        )
    return rows


def flow_logs_of(a: CloudAssembly, vpc: Resource) -> list[Resource]:
    return [
        f
        for f in a.resources("AWS::EC2::FlowLog")
        if f.stack == vpc.stack and vpc.logical_id in references(f.properties.get("ResourceId"))
    ]


def subnets(a: CloudAssembly) -> list[list[str]]:
    associations = {
        (r.stack, ref): r.properties.get("RouteTableId")
        for r in a.resources("AWS::EC2::SubnetRouteTableAssociation")
        for ref in references(r.properties.get("SubnetId"))
    }
    rows = []
    for r in a.resources("AWS::EC2::Subnet"):
        p = r.properties
        tags = {t.get("Key"): t.get("Value") for t in as_list(p.get("Tags")) if isinstance(t, Mapping)}
        rows.append(
            [
                r.region,
                r.label,
                show(r, p.get("AvailabilityZone", ""), a),
                show(r, p.get("CidrBlock", ""), a),
                str(tags.get("aws-cdk:subnet-type", "")),
                "yes" if p.get("MapPublicIpOnLaunch") else "no",
                show(r, associations.get(r.key, ""), a),
            ]
        )
    return rows


def routes(a: CloudAssembly) -> list[list[str]]:
    rows = []
    for r in a.resources("AWS::EC2::Route"):
        p = r.properties
        destination = (
            p.get("DestinationCidrBlock") or p.get("DestinationIpv6CidrBlock") or p.get("DestinationPrefixListId", "")
        )
        target_keys = [k for k in p if k.endswith("Id") and k not in ("RouteTableId", "DestinationPrefixListId")]
        target = "; ".join(f"{k.removesuffix('Id')}: {show(r, p[k], a)}" for k in target_keys)
        rows.append([r.region, show(r, p.get("RouteTableId"), a), show(r, destination, a), target, r.label])
    for e in a.resources("AWS::EC2::VPCEndpoint"):
        for table in as_list(e.properties.get("RouteTableIds")):
            rows.append(
                [e.region, show(e, table, a), "prefix list of " + service_name(e, a), f"gateway endpoint {e.label}", ""]
            )
    return rows


def service_name(r: Resource, a: CloudAssembly) -> str:
    name = show(r, r.properties.get("ServiceName", ""), a)
    return name.replace("${AWS::Region}", r.region).replace("com.amazonaws.", "", 1)


def endpoints(a: CloudAssembly, verdict: Callable[[Resource], list[str]] | None = None) -> list[list[str]]:
    """One row per VPC endpoint; the policy column gives the statement count and, when `verdict` is given (the
    endpoint-policy check's reasons), why the policy falls short, or that it does not."""
    rows = []
    for r in a.resources("AWS::EC2::VPCEndpoint"):
        p = r.properties
        kind = p.get("VpcEndpointType", "Gateway")
        policy = p.get("PolicyDocument")
        summary = _policy_summary(policy)
        if verdict is not None and isinstance(policy, Mapping):
            reasons = verdict(r)
            summary += ": " + ("; ".join(reasons) if reasons else "named actions, resource and principal perimeter")
        rows.append(
            [
                r.region,
                service_name(r, a),
                str(kind),
                "yes" if p.get("PrivateDnsEnabled") else ("n/a" if kind == "Gateway" else "no"),
                show(r, p.get("SecurityGroupIds", []), a) or "-",
                summary,
                r.label,
            ]
        )
    return rows


def _policy_summary(policy: Any) -> str:
    if not isinstance(policy, Mapping):
        return "NONE: full access for any principal"
    statements = [x for x in as_list(policy.get("Statement")) if isinstance(x, Mapping)]
    return f"{len(statements)} statement{'' if len(statements) == 1 else 's'}"


def endpoint_service(resource: Resource) -> str:
    """The IAM service prefix an endpoint serves: bedrock-runtime -> bedrock, sagemaker.runtime -> sagemaker."""
    name = render(resource.properties.get("ServiceName", "")).split(".")
    tail = [
        part for part in name if part and part not in ("com", "amazonaws", "aws", "${AWS::Region}", resource.region)
    ]
    return tail[0].split("-")[0] if tail else ""


def endpoint_policies(a: CloudAssembly) -> list[list[str]]:
    rows = []
    for r in a.resources("AWS::EC2::VPCEndpoint"):
        for statement in as_list(dig(r.properties, "PolicyDocument", "Statement")):
            rows.append([r.region, service_name(r, a), *statement_cells(r, statement, a)])
    return rows


@dataclass(frozen=True)
class SgRule:
    resource: Resource
    group: str
    direction: str
    protocol: str
    ports: str
    peer: str
    description: str


def is_placeholder(rule: Mapping[str, Any]) -> bool:
    """CDK's "no egress" rule: ICMP type 252 code 86 to 255.255.255.255/32, which matches no traffic."""
    return rule.get("CidrIp") == "255.255.255.255/32" and rule.get("FromPort") == 252 and rule.get("ToPort") == 86


def _ports(rule: Mapping[str, Any]) -> str:
    low, high = rule.get("FromPort"), rule.get("ToPort")
    if str(rule.get("IpProtocol")) == "-1":
        return "all"
    if low is None:
        return "all"
    return str(low) if low == high else f"{low}-{high}"


def sg_rules(a: CloudAssembly) -> list[SgRule]:
    rules: list[SgRule] = []

    def peer_of(r: Resource, rule: Mapping[str, Any]) -> str:
        for key in (
            "CidrIp",
            "CidrIpv6",
            "SourceSecurityGroupId",
            "DestinationSecurityGroupId",
            "SourcePrefixListId",
            "DestinationPrefixListId",
        ):
            if key in rule:
                return show(r, rule[key], a)
        return "?"

    for r in a.resources("AWS::EC2::SecurityGroup"):
        for direction, key in (("ingress", "SecurityGroupIngress"), ("egress", "SecurityGroupEgress")):
            for rule in as_list(r.properties.get(key)):
                if is_placeholder(rule):
                    continue
                rules.append(
                    SgRule(
                        r,
                        r.label,
                        direction,
                        str(rule.get("IpProtocol", "")),
                        _ports(rule),
                        peer_of(r, rule),
                        str(rule.get("Description", "")),
                    )
                )
    for r in a.resources("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
        direction = "ingress" if r.type.endswith("Ingress") else "egress"
        rules.append(
            SgRule(
                r,
                show(r, r.properties.get("GroupId"), a),
                direction,
                str(r.properties.get("IpProtocol", "")),
                _ports(r.properties),
                peer_of(r, r.properties),
                str(r.properties.get("Description", "")),
            )
        )
    return rules


def security_groups_of(a: CloudAssembly, r: Resource, value: Any) -> list[Resource]:
    """The security groups a property names (SecurityGroupIds and the like), through references and imports."""
    found = []
    for item in as_list(value):
        group = a.resolve(r.stack, item)
        if group is not None and group.type == "AWS::EC2::SecurityGroup":
            found.append(group)
    return found


def security_groups(a: CloudAssembly) -> list[list[str]]:
    rows = []
    ruled = {rule.resource.key for rule in sg_rules(a)}
    for rule in sg_rules(a):
        rows.append(
            [rule.resource.region, rule.group, rule.direction, rule.protocol, rule.ports, rule.peer, rule.description]
        )
    for r in a.resources("AWS::EC2::SecurityGroup"):
        if not any(is_placeholder(x) for x in as_list(r.properties.get("SecurityGroupEgress"))):
            if r.key not in ruled:
                rows.append(
                    [r.region, r.label, "-", "-", "-", "no rules", str(r.properties.get("GroupDescription", ""))]
                )
            continue
        rows.append(
            [
                r.region,
                r.label,
                "egress",
                "-",
                "-",
                "none: all outbound traffic denied",
                "CDK placeholder rule (ICMP 252/86 to 255.255.255.255/32) that matches no traffic",
            ]
        )
    return rows


def interconnects(a: CloudAssembly) -> list[list[str]]:
    """Peering, transit gateways and their attachments and routes, and any other inter-VPC resource."""
    rows = []
    for r in a.resources():
        if r.type == "AWS::EC2::VPCPeeringConnection" or r.type.startswith("AWS::EC2::TransitGateway"):
            p = r.properties
            detail = "; ".join(
                f"{k}={show(r, v, a)}" for k, v in p.items() if k not in ("Tags",) and k not in HIDDEN_PROPERTIES
            )
            rows.append([r.region, r.stack, r.type.removeprefix("AWS::EC2::"), r.label, detail])
    return rows


def private_dns(a: CloudAssembly) -> list[list[str]]:
    rows = []
    for r in a.resources():
        if not r.type.startswith(("AWS::Route53::", "AWS::Route53Resolver::", "AWS::ServiceDiscovery::")):
            continue
        p = r.properties
        if r.type == "AWS::Route53::HostedZone":
            vpcs_ = "; ".join(
                f"{show(r, v.get('VPCId'), a)} ({show(r, v.get('VPCRegion'), a)})" for v in as_list(p.get("VPCs"))
            )
            detail = f"zone {show(r, p.get('Name'), a)}; " + (f"private, VPCs: {vpcs_}" if vpcs_ else "PUBLIC")
        elif r.type == "AWS::Route53::RecordSet":
            target = p.get("AliasTarget") or p.get("ResourceRecords")
            detail = f"{show(r, p.get('Name'), a)} {p.get('Type', '')} -> {show(r, target, a)}"
        else:
            detail = "; ".join(f"{k}={show(r, v, a)}" for k, v in p.items() if k != "Tags")
        rows.append([r.region, r.type.removeprefix("AWS::"), r.label, detail])
    for r in a.resources("AWS::EC2::VPCEndpoint"):
        if r.properties.get("PrivateDnsEnabled"):
            rows.append(
                [r.region, "PrivateLink private DNS", r.label, f"{service_name(r, a)} resolves to the endpoint"]
            )
    return rows


def internet_paths(a: CloudAssembly) -> list[Resource]:
    """Whatever gives a VPC a way to or from the internet. A virtual private gateway (a Site-to-Site VPN to another
    cloud) is not one when only private ranges are routed to it (`private_vpn_path`)."""
    found = [r for r in a.resources(*INTERNET_TYPES) if not private_vpn_path(a, r)]
    found += [r for r in a.resources("AWS::EC2::Subnet") if r.properties.get("MapPublicIpOnLaunch")]
    found += [
        r
        for r in a.resources("AWS::EC2::Route")
        if any(k in r.properties for k in ("GatewayId", "NatGatewayId", "EgressOnlyInternetGatewayId"))
        and not private_vpn_path(a, r)
    ]
    return found


def private_vpn_path(a: CloudAssembly, r: Resource) -> bool:
    """A VPN gateway's attachment, or a route to a VPN gateway whose destination is a private range (RFC 1918):
    the tunnels to another cloud's private endpoints, not a path to the internet."""
    if r.type == "AWS::EC2::VPCGatewayAttachment":
        gateway = a.resolve(r.stack, r.properties.get("VpnGatewayId"))
        vpn = gateway is not None and gateway.type == "AWS::EC2::VPNGateway"
        return vpn and "InternetGatewayId" not in r.properties
    if r.type == "AWS::EC2::Route":
        gateway = a.resolve(r.stack, r.properties.get("GatewayId"))
        destination = r.properties.get("DestinationCidrBlock")
        if gateway is None or gateway.type != "AWS::EC2::VPNGateway" or not isinstance(destination, str):
            return False
        try:
            network = ipaddress.IPv4Network(destination)
        except ValueError:
            return False
        return any(
            network.subnet_of(ipaddress.IPv4Network(private))
            for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
        )
    return False


def other_network(a: CloudAssembly) -> list[list[str]]:
    rows = []
    for r in a.resources():
        if is_network(r.type) and r.type not in NETWORK_HANDLED and not r.type.startswith("AWS::EC2::TransitGateway"):
            detail = "; ".join(
                f"{k}={show(r, v, a)}" for k, v in r.properties.items() if k != "Tags" and k not in HIDDEN_PROPERTIES
            )
            rows.append([r.region, r.type, r.label, detail[:300]])
    return rows


# --- IAM ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    resource: Resource  # where the statement is defined
    kind: str  # identity | resource | trust | permission
    principal: str
    effect: str
    actions: list[str]
    resources: list[str]
    conditions: str
    where: str  # property path or policy name
    raw: Mapping[str, Any] = field(default_factory=dict)


def principal_text(resource: Resource, principal: Any, a: CloudAssembly) -> str:
    if principal in ("*", {"AWS": "*"}):
        return "* (any principal; see conditions)"
    if isinstance(principal, Mapping):
        return "; ".join(f"{k}: {show(resource, v, a)}" for k, v in principal.items())
    return show(resource, principal, a)


def statement_cells(resource: Resource, statement: Mapping[str, Any], a: CloudAssembly) -> list[str]:
    """Sid, effect, principal, actions, resources, conditions."""
    actions = statement.get("Action", statement.get("NotAction"))
    resources = statement.get("Resource", statement.get("NotResource", "-"))
    return [
        str(statement.get("Sid", "")),
        str(statement.get("Effect", "")),
        principal_text(resource, statement.get("Principal", "-"), a),
        ("NOT " if "NotAction" in statement else "") + ", ".join(show(resource, x, a) for x in as_list(actions)),
        ("NOT " if "NotResource" in statement else "") + "\n".join(show(resource, x, a) for x in as_list(resources)),
        conditions_text(resource, statement.get("Condition"), a),
    ]


def conditions_text(resource: Resource, condition: Any, a: CloudAssembly) -> str:
    if not isinstance(condition, Mapping):
        return ""
    parts = []
    for operator, tests in condition.items():
        for key, value in (tests or {}).items():
            parts.append(f"{operator} {key} = {show(resource, value, a)}")
    return "; ".join(parts)


def _policy_documents(value: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every policy document (a mapping with a Statement list) anywhere in a property tree."""
    if isinstance(value, Mapping):
        statements = as_list(value.get("Statement"))
        if statements and all(isinstance(x, Mapping) and "Effect" in x for x in statements):
            yield path, value  # an IAM policy document (a WAF rule also has a `Statement`, without `Effect`)
            return
        for key, child in value.items():
            if key in HIDDEN_PROPERTIES:
                continue
            yield from _policy_documents(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _policy_documents(child, f"{path}[{index}]")


def _attached_principals(r: Resource, a: CloudAssembly) -> list[str]:
    n = names(a, r.stack)
    attached = []
    for key, kind in (("Roles", "role"), ("Users", "user"), ("Groups", "group")):
        for item in as_list(r.properties.get(key)):
            attached.append(f"{kind} {render(item, n)}")
    return attached or [f"policy {r.label} (attached to roles of other stacks)"]


def iam_statements(a: CloudAssembly) -> list[Statement]:  # noqa: PLR0912 - one branch per policy kind
    out: list[Statement] = []
    for r in a.resources():
        if r.type == "AWS::Lambda::Permission":
            p = r.properties
            conditions = "; ".join(
                f"{k} = {show(r, p[k], a)}" for k in ("SourceArn", "SourceAccount", "PrincipalOrgID") if k in p
            )
            out.append(
                Statement(
                    r,
                    "resource",
                    show(r, p.get("Principal"), a),
                    "Allow",
                    [show(r, p.get("Action"), a)],
                    [show(r, p.get("FunctionName"), a)],
                    conditions,
                    "Lambda permission",
                )
            )
            continue
        for path, document in _policy_documents(r.properties):
            if r.type in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
                kind = "trust" if path == "AssumeRolePolicyDocument" else "identity"
                principals = [f"{r.type.rsplit('::', 1)[-1].lower()} {r.label}"]
            elif r.type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                kind = "identity"
                principals = _attached_principals(r, a)
            else:
                kind = "resource"
                principals = []
            for statement in as_list(document.get("Statement")):
                if not isinstance(statement, Mapping):
                    continue
                actions = [show(r, x, a) for x in as_list(statement.get("Action", statement.get("NotAction")))]
                resources = [show(r, x, a) for x in as_list(statement.get("Resource", statement.get("NotResource")))]
                if kind == "trust":
                    resources = [f"assume role {r.label}"]
                statement_principals = principals or [principal_text(r, statement.get("Principal", "-"), a)]
                if kind == "trust":
                    statement_principals = [principal_text(r, statement.get("Principal", "-"), a)]
                for principal in statement_principals:
                    out.append(
                        Statement(
                            r,
                            kind,
                            principal,
                            str(statement.get("Effect", "")),
                            actions,
                            resources if kind != "resource" else [f"{r.label} ({r.type})", *resources],
                            conditions_text(r, statement.get("Condition"), a),
                            path,
                            statement,
                        )
                    )
        if r.type == "AWS::IAM::Role":
            for arn in as_list(r.properties.get("ManagedPolicyArns")):
                out.append(
                    Statement(
                        r,
                        "identity",
                        f"role {r.label}",
                        "Allow",
                        ["(managed policy)"],
                        [show(r, arn, a)],
                        "",
                        "ManagedPolicyArns",
                    )
                )
    return out


INVOKE_ACTIONS = (
    "bedrock:invokemodel",
    "bedrock:invokemodelwithresponsestream",
    "bedrock:converse",
    "bedrock:conversestream",
    "bedrock:invoke*",
    "bedrock:*",
    "sagemaker:invokeendpoint",
    "sagemaker:invokeendpointwithresponsestream",
    "sagemaker:invokeendpoint*",
    "sagemaker:*",
    "lambda:invokefunction",
    "lambda:*",
    "execute-api:invoke",
    "execute-api:*",
    "*",
)


def is_invoke(action: str, service: str = "") -> bool:
    """Whether an action can invoke a model, endpoint, function or API. `service` narrows `*` to one service's
    actions, for a policy that can only ever apply to that service (a VPC endpoint's)."""
    action = action.lower()
    if service and action == "*":
        action = f"{service.lower()}:*"
    return action in INVOKE_ACTIONS or (action.endswith("*") and any(x.startswith(action[:-1]) for x in INVOKE_ACTIONS))


# --- encryption ---------------------------------------------------------------------------------------------------

# resource type -> (what it stores, the property paths that name its key, paths whose truth means "encrypted")
DATA_STORES: dict[str, tuple[str, list[tuple[str | int, ...]], list[tuple[str | int, ...]]]] = {
    "AWS::Logs::LogGroup": ("log group", [("KmsKeyId",)], []),
    "AWS::DynamoDB::Table": (
        "DynamoDB table",
        [("SSESpecification", "KMSMasterKeyId")],
        [("SSESpecification", "SSEEnabled")],
    ),
    "AWS::DynamoDB::GlobalTable": (
        "DynamoDB global table",
        [("SSESpecification", "KMSMasterKeyId")],
        [("SSESpecification", "SSEEnabled")],
    ),
    "AWS::S3::Bucket": (
        "S3 bucket",
        [
            (
                "BucketEncryption",
                "ServerSideEncryptionConfiguration",
                0,
                "ServerSideEncryptionByDefault",
                "KMSMasterKeyID",
            )
        ],
        [("BucketEncryption",)],
    ),
    "AWS::SQS::Queue": ("SQS queue", [("KmsMasterKeyId",)], [("SqsManagedSseEnabled",)]),
    "AWS::SNS::Topic": ("SNS topic", [("KmsMasterKeyId",)], []),
    "AWS::Lambda::Function": ("Lambda environment", [("KmsKeyArn",)], []),
    "AWS::SageMaker::EndpointConfig": ("SageMaker endpoint storage", [("KmsKeyId",)], []),
    "AWS::SageMaker::Model": ("SageMaker model", [], []),
    "AWS::SecretsManager::Secret": ("secret", [("KmsKeyId",)], []),
    "AWS::AppConfig::ConfigurationProfile": ("AppConfig profile", [("KmsKeyIdentifier",)], []),
    "AWS::Kinesis::Stream": ("Kinesis stream", [("StreamEncryption", "KeyId")], []),
    "AWS::ECR::Repository": ("ECR repository", [("EncryptionConfiguration", "KmsKey")], []),
    "AWS::EFS::FileSystem": ("EFS file system", [("KmsKeyId",)], [("Encrypted",)]),
    "AWS::RDS::DBInstance": ("RDS instance", [("KmsKeyId",)], [("StorageEncrypted",)]),
    "AWS::RDS::DBCluster": ("RDS cluster", [("KmsKeyId",)], [("StorageEncrypted",)]),
    "AWS::Bedrock::Guardrail": ("Bedrock guardrail", [("KmsKeyArn",)], []),
    "AWS::StepFunctions::StateMachine": ("state machine", [("EncryptionConfiguration", "KmsKeyId")], []),
    "AWS::Events::EventBus": ("event bus", [("KmsKeyIdentifier",)], []),
    "AWS::Backup::BackupVault": ("backup vault", [("EncryptionKeyArn",)], []),
    "AWS::SSM::Parameter": ("SSM parameter (plain configuration)", [], []),
}
_KEY_WORDS = ("kms", "encrypt", "sse")


@dataclass(frozen=True)
class Encrypted:
    resource: Resource
    what: str
    key: str  # a readable description of the key
    key_resource: Resource | None
    customer_managed: bool
    rotation: str


def _key_properties(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Properties that name a key (KmsKeyId, KMSMasterKeyID, EncryptionKeyArn...), outside policy documents."""
    if isinstance(value, Mapping):
        if "Statement" in value:
            return
        for k, v in value.items():
            if k in HIDDEN_PROPERTIES or ":" in k or k.endswith("PolicyDocument"):
                continue
            if any(w in k.lower() for w in _KEY_WORDS) and ("key" in k.lower() or "kms" in k.lower()):
                yield (*path, k), v
            else:
                yield from _key_properties(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _key_properties(v, (*path, i))


def _alias_key(a: CloudAssembly, text: str) -> Resource | None:
    """A key named by a literal alias (`alias/x` or an alias ARN), when some stack of the assembly defines it."""
    if "alias/" not in text:
        return None
    name = "alias/" + text.split("alias/", 1)[1]
    for alias in a.resources("AWS::KMS::Alias"):
        if alias.properties.get("AliasName") == name:
            target = next(iter(references(alias.properties.get("TargetKeyId"))), None)
            return a.find(alias.stack, target) if target else None
    return None


def _subjects(r: Resource) -> list[tuple[str, Any, bool]]:
    """(what, key value, encrypted by default) for each thing this resource keeps at rest."""
    known = DATA_STORES.get(r.type)
    if r.type == "AWS::DynamoDB::GlobalTable":
        return [
            (
                f"DynamoDB global table replica {replica.get('Region', '?')}",
                dig(replica, "SSESpecification", "KMSMasterKeyId"),
                bool(dig(r.properties, "SSESpecification", "SSEEnabled")),
            )
            for replica in as_list(r.properties.get("Replicas"))
        ] or [("DynamoDB global table", None, False)]
    if known:
        values = [v for v in (dig(r.properties, *p) for p in known[1]) if v is not None]
        default = any(dig(r.properties, *p) for p in known[2])
        return [(known[0], values[0] if values else None, default)]
    values = [v for _, v in _key_properties(r.properties)]
    return [(r.type, values[0], False)] if values else []


def _default_key(r: Resource) -> str:
    if r.type == "AWS::S3::Bucket":
        algorithm = dig(
            r.properties,
            "BucketEncryption",
            "ServerSideEncryptionConfiguration",
            0,
            "ServerSideEncryptionByDefault",
            "SSEAlgorithm",
        )
        if algorithm == "AES256":
            return "SSE-S3 (AES256, S3-managed key)"
    if r.type in ("AWS::SageMaker::Model", "AWS::SSM::Parameter"):
        return "not applicable (no data at rest of its own)"
    return "AWS managed/owned key (service default)"


def encryption(a: CloudAssembly) -> list[Encrypted]:
    out: list[Encrypted] = []
    for r in a.resources():
        if r.type == "AWS::Lambda::Function" and not dig(r.properties, "Environment", "Variables"):
            continue  # no environment variables: nothing of its own at rest
        if r.type == "AWS::KMS::Key" or r.type.startswith("AWS::IAM::"):
            continue
        for what, key_value, _default in _subjects(r):
            out.append(_encrypted(a, r, what, key_value))
    return out


def _encrypted(a: CloudAssembly, r: Resource, what: str, key_value: Any) -> Encrypted:
    key_resource = a.resolve(r.stack, key_value)
    if key_resource is not None and key_resource.type == "AWS::KMS::Alias":
        key_resource = a.resolve(key_resource.stack, key_resource.properties.get("TargetKeyId"))
    if key_resource is None and isinstance(key_value, str):
        key_resource = _alias_key(a, key_value)
    if key_resource is not None and key_resource.type == "AWS::KMS::Key":
        rotation = "on" if key_resource.properties.get("EnableKeyRotation") else "OFF"
        period = key_resource.properties.get("RotationPeriodInDays")
        if period and rotation == "on":
            rotation += f" ({period} days)"
        where = "" if key_resource.stack == r.stack else f" ({key_resource.stack})"
        return Encrypted(r, what, f"CMK {key_resource.label}{where}", key_resource, True, rotation)
    if key_value is not None:
        text = show(r, key_value, a)
        managed = "alias/aws/" not in text and text.lower() not in ("aws_owned_key", "true", "false")
        return Encrypted(r, what, text, None, managed, "outside these stacks" if managed else "AWS managed")
    return Encrypted(r, what, _default_key(r), None, False, "-")


def kms_keys(a: CloudAssembly) -> list[list[str]]:
    users: dict[tuple[str, str], int] = {}
    for e in encryption(a):
        if e.key_resource is not None:
            users[e.key_resource.key] = users.get(e.key_resource.key, 0) + 1
    rows = []
    for r in a.resources("AWS::KMS::Key"):
        p = r.properties
        rows.append(
            [
                r.region,
                r.label,
                str(p.get("Description", "")),
                str(p.get("KeySpec", "SYMMETRIC_DEFAULT")),
                "on" if p.get("EnableKeyRotation") else "OFF",
                str(p.get("PendingWindowInDays", 30)),
                str(r.raw.get("DeletionPolicy", "Delete")),
                str(users.get(r.key, 0)),
            ]
        )
    return rows


# --- logging ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogDestination:
    """A log group something writes to: declared in a template, or created implicitly by the service on first write
    (a Lambda function's /aws/lambda/<name>, a SageMaker endpoint's, API Gateway's execution logs) with no CMK and
    no retention."""

    name: str
    group: Resource | None  # the declared group; None for an implicit one
    writers: tuple[Resource, ...]

    @property
    def declared(self) -> bool:
        return self.group is not None

    @property
    def subject(self) -> Resource:
        """The resource to name: the group, or for an implicit group the resource that writes to it."""
        return self.group if self.group is not None else self.writers[0]

    @property
    def retention(self) -> int | None:
        value = self.group.properties.get("RetentionInDays") if self.group is not None else None
        return value if isinstance(value, int) else None


def _log_group_name(r: Resource) -> str:
    return render(r.properties.get("LogGroupName", ""))


def _implicit_names(a: CloudAssembly, r: Resource) -> list[str]:
    """The log groups a resource writes to without naming one, rendered as `render` renders a declared group's name
    (`Ref`s become logical ids), so that a declared group of that name is found."""
    p = r.properties
    if r.type == "AWS::Lambda::Function":
        target = a.resolve(r.stack, dig(p, "LoggingConfig", "LogGroup"))
        if target is not None and target.type == "AWS::Logs::LogGroup":
            return []
        named = dig(p, "LoggingConfig", "LogGroup")
        if named is not None:
            return [render(named)]
        generated = f"<name generated for {r.stack}/{r.logical_id}>"
        return [f"/aws/lambda/{render(p['FunctionName']) if 'FunctionName' in p else generated}"]
    if r.type == "AWS::SageMaker::Endpoint":
        generated = f"<name generated for {r.stack}/{r.logical_id}>"
        return [f"/aws/sagemaker/Endpoints/{render(p['EndpointName']) if 'EndpointName' in p else generated}"]
    if r.type == "AWS::ApiGateway::Stage":
        levels = {str(m.get("LoggingLevel", "OFF")) for m in as_list(p.get("MethodSettings"))}
        if levels - {"OFF"}:
            return [f"API-Gateway-Execution-Logs_{render(p.get('RestApiId'))}/{render(p.get('StageName'))}"]
    return []


def log_destinations(a: CloudAssembly) -> list[LogDestination]:
    """Every log group of the platform: the declared ones, then the implicit ones no template declares."""
    cache = a._cache.get("log_destinations")
    if cache is not None:
        return cache  # type: ignore[no-any-return]
    declared = {
        (r.region, _log_group_name(r) or f"<generated {r.stack}/{r.logical_id}>"): r
        for r in a.resources("AWS::Logs::LogGroup")
    }
    writers: dict[tuple[str, str], list[Resource]] = {}
    for r in a.resources("AWS::Lambda::Function", "AWS::SageMaker::Endpoint", "AWS::ApiGateway::Stage"):
        for name in _implicit_names(a, r):
            writers.setdefault((r.region, name), []).append(r)
    out = [LogDestination(name, group, ()) for (_, name), group in declared.items()]
    out += [
        LogDestination(name, None, tuple(found))
        for (region, name), found in writers.items()
        if (region, name) not in declared
    ]
    a._cache["log_destinations"] = out
    return out


def log_groups(a: CloudAssembly) -> list[list[str]]:
    writers: dict[tuple[str, str], list[str]] = {}
    for r in a.resources():
        if r.type == "AWS::Logs::LogGroup":
            continue
        for ref in references({k: v for k, v in r.properties.items() if k not in HIDDEN_PROPERTIES}):
            target = a.find(r.stack, ref)
            if target is not None and target.type == "AWS::Logs::LogGroup" and not r.type.startswith("AWS::IAM::"):
                writers.setdefault(target.key, []).append(f"{r.label} ({r.type.removeprefix('AWS::')})")
    keys = {e.resource.key: e.key for e in encryption(a)}
    rows = []
    for d in log_destinations(a):
        r = d.subject
        if d.group is None:
            rows.append(
                [
                    r.region,
                    f"{d.name} (IMPLICIT: created by the service, declared in no template)",
                    "NEVER EXPIRES",
                    "AWS managed/owned key (service default)",
                    "STANDARD",
                    "not managed by CloudFormation",
                    "; ".join(f"{w.stack}/{w.logical_id} ({w.type.removeprefix('AWS::')})" for w in d.writers),
                ]
            )
            continue
        p = r.properties
        retention = p.get("RetentionInDays")
        rows.append(
            [
                r.region,
                show(r, p.get("LogGroupName", r.label), a),
                f"{retention} days" if retention else "NEVER EXPIRES",
                keys.get(r.key, "-"),
                str(p.get("LogGroupClass", "STANDARD")),
                str(r.raw.get("DeletionPolicy", "Delete")),
                "; ".join(writers.get(r.key, [])) or "-",
            ]
        )
    return rows


def logging_settings(a: CloudAssembly) -> list[list[str]]:
    """Flow logs, access logs, function logging and tracing, trails: everything that decides what gets recorded."""
    rows = []
    for r in a.resources():
        p = r.properties
        if r.type == "AWS::EC2::FlowLog":
            rows.append(
                [
                    r.region,
                    "VPC flow log",
                    r.label,
                    f"{p.get('ResourceType', '')} {show(r, p.get('ResourceId'), a)}, "
                    f"traffic {p.get('TrafficType', 'ALL')}, to {p.get('LogDestinationType', 'cloud-watch-logs')} "
                    f"{show(r, p.get('LogDestination', p.get('LogGroupName')), a)}"
                    + (f", every {p['MaxAggregationInterval']} s" if "MaxAggregationInterval" in p else ""),
                ]
            )
        elif r.type == "AWS::ApiGateway::Stage":
            access = p.get("AccessLogSetting")
            methods = "; ".join(
                f"{m.get('HttpMethod', '*')} {m.get('ResourcePath', '')}: logging {m.get('LoggingLevel', 'OFF')}, "
                f"data trace {render(m.get('DataTraceEnabled', False))}, "
                f"metrics {render(m.get('MetricsEnabled', False))}"
                for m in as_list(p.get("MethodSettings"))
            )
            rows.append(
                [
                    r.region,
                    "API stage",
                    r.label,
                    f"access log: {show(r, dig(access, 'DestinationArn'), a) if access else 'NONE'}; "
                    f"X-Ray {render(p.get('TracingEnabled', False))}; {methods or 'no method settings'}",
                ]
            )
        elif r.type == "AWS::ApiGatewayV2::Stage":
            access = p.get("AccessLogSettings")
            rows.append(
                [
                    r.region,
                    "HTTP API stage",
                    r.label,
                    f"access log: {show(r, dig(access, 'DestinationArn'), a) if access else 'NONE'}",
                ]
            )
        elif r.type == "AWS::Lambda::Function":
            logging = p.get("LoggingConfig") or {}
            rows.append(
                [
                    r.region,
                    "Lambda function",
                    r.label,
                    f"log group: {show(r, logging.get('LogGroup'), a) or 'default /aws/lambda/<name>'}; "
                    f"format {logging.get('LogFormat', 'Text')}; app level {logging.get('ApplicationLogLevel', '-')}; "
                    f"tracing {dig(p, 'TracingConfig', 'Mode') or 'PassThrough'}",
                ]
            )
        elif r.type == "AWS::CloudTrail::Trail":
            rows.append(
                [
                    r.region,
                    "CloudTrail trail",
                    r.label,
                    f"multi-region {render(p.get('IsMultiRegionTrail', False))}, validation "
                    f"{render(p.get('EnableLogFileValidation', False))}, key {show(r, p.get('KMSKeyId', '-'), a)}",
                ]
            )
        elif r.type == "AWS::CloudWatch::Alarm":
            rows.append(
                [
                    r.region,
                    "alarm",
                    r.label,
                    f"{p.get('Namespace', 'metric math')} {p.get('MetricName', '')} "
                    f"{p.get('ComparisonOperator', '')} {p.get('Threshold', '')}; actions: "
                    f"{show(r, p.get('AlarmActions', []), a) or 'none'}",
                ]
            )
    return rows


def other_resources(a: CloudAssembly) -> list[list[str]]:
    """Every resource type per stack with its count: nothing in a template escapes the report."""
    rows = []
    for stack in a.stacks:
        counts: dict[str, int] = {}
        for r in stack.resources.values():
            counts[r.type] = counts.get(r.type, 0) + 1
        for resource_type, count in sorted(counts.items()):
            rows.append([stack.region, stack.name, resource_type, str(count)])
    return rows

"""The NIST 800-53 rev 5 control matrix: each control of review/controls.yaml, evaluated over the templates.

A predicate returns a `Check`: `passed` is None when no resource of its kind exists (it does not apply), else whether
every subject passes; `evidence` names the resources and settings that show it, `gaps` the ones that fail it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from review import inventory as inv
from review.cfn import CloudAssembly, Resource, as_list, references

CONTROLS_FILE = Path(__file__).with_name("controls.yaml")

MET, PARTIAL, NOT_MET, OUTSIDE = "met", "partially", "not met", "outside these stacks"


@dataclass
class Check:
    name: str
    passed: bool | None
    evidence: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def summary(self) -> str:
        """One line: the result, what is checked, and how many subjects pass."""
        if self.passed is None:
            return f"N/A {self.name}: no resource of this kind"
        total = len(self.evidence) + len(self.gaps)
        counts = f" ({len(self.evidence)} of {total} pass)" if self.gaps else (f" ({total})" if total > 1 else "")
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}{counts}: {self.description}"


def _check(name: str, subjects: list[Any], good: Callable[[Any], bool], describe: Callable[[Any], str]) -> Check:
    if not subjects:
        return Check(name, None, [], [])
    evidence = [describe(s) for s in subjects if good(s)]
    gaps = [describe(s) for s in subjects if not good(s)]
    return Check(name, not gaps, evidence, gaps)


def where(r: Resource) -> str:
    return f"{r.stack}/{r.label}"


Predicate = Callable[[CloudAssembly, Mapping[str, Any]], Check]
PREDICATES: dict[str, Predicate] = {}


def predicate(fn: Predicate) -> Predicate:
    PREDICATES[fn.__name__] = fn
    return fn


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
        [f"{where(r)} ({r.type})" for r in exposed],
    )


@predicate
def subnets_private(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No subnet gives its instances a public IP."""
    return _check(
        "subnets_private",
        list(a.resources("AWS::EC2::Subnet")),
        lambda r: not r.properties.get("MapPublicIpOnLaunch"),
        lambda r: f"{where(r)}: MapPublicIpOnLaunch={bool(r.properties.get('MapPublicIpOnLaunch'))}",
    )


@predicate
def endpoint_policies_present(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every VPC endpoint has an endpoint policy (none is left at full access)."""
    return _check(
        "endpoint_policies_present",
        list(a.resources("AWS::EC2::VPCEndpoint")),
        lambda r: isinstance(r.properties.get("PolicyDocument"), Mapping),
        lambda r: (
            f"{where(r)} ({inv.service_name(r, a)}): "
            + (
                "endpoint policy"
                if isinstance(r.properties.get("PolicyDocument"), Mapping)
                else "no policy: full access"
            )
        ),
    )


def _sg_by_ref(a: CloudAssembly, r: Resource, value: Any) -> list[Resource]:
    return [x for ref in references(value) if (x := a.find(r.stack, ref)) and x.type == "AWS::EC2::SecurityGroup"]


def _open(peer: str) -> bool:
    return peer in ("0.0.0.0/0", "::/0")


@predicate
def interface_endpoints_closed(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every interface endpoint has its own security group, admitting no ingress from 0.0.0.0/0 or ::/0."""
    rules = inv.sg_rules(a)
    subjects = [r for r in a.resources("AWS::EC2::VPCEndpoint") if r.properties.get("VpcEndpointType") == "Interface"]

    def ingress(endpoint: Resource) -> list[inv.SgRule]:
        groups = {g.key for g in _sg_by_ref(a, endpoint, endpoint.properties.get("SecurityGroupIds"))}
        return [
            x
            for x in rules
            if x.direction == "ingress"
            and (
                x.resource.key in groups
                or any((x.resource.stack, ref) in groups for ref in references(x.resource.properties.get("GroupId")))
            )
        ]

    def good(endpoint: Resource) -> bool:
        return bool(endpoint.properties.get("SecurityGroupIds")) and not any(_open(x.peer) for x in ingress(endpoint))

    def describe(endpoint: Resource) -> str:
        peers = sorted({f"{x.peer}:{x.ports}" for x in ingress(endpoint)})
        return f"{where(endpoint)} ({inv.service_name(endpoint, a)}): ingress from {', '.join(peers) or 'nobody'}"

    return _check("interface_endpoints_closed", subjects, good, describe)


@predicate
def sg_no_open_ingress(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No security group admits ingress from 0.0.0.0/0 or ::/0."""
    rules = [x for x in inv.sg_rules(a) if x.direction == "ingress"]
    groups = list(a.resources("AWS::EC2::SecurityGroup"))
    if not groups:
        return Check("sg_no_open_ingress", None)
    gaps = [f"{where(x.resource)}: ingress {x.protocol}/{x.ports} from {x.peer}" for x in rules if _open(x.peer)]
    return Check(
        "sg_no_open_ingress",
        not gaps,
        [f"{len(groups)} security groups, {len(rules)} ingress rules, none from 0.0.0.0/0 or ::/0"] if not gaps else [],
        gaps,
    )


@predicate
def sg_ports_limited(a: CloudAssembly, params: Mapping[str, Any]) -> Check:
    """Every security-group rule is TCP on the allowed ports only (HTTPS)."""
    allowed = {str(p) for p in params.get("ports", ["443"])}
    return _check(
        "sg_ports_limited",
        inv.sg_rules(a),
        lambda x: x.protocol in ("tcp", "6") and x.ports in allowed,
        lambda x: f"{x.group}: {x.direction} {x.protocol}/{x.ports} {x.peer}",
    )


@predicate
def default_sg_restricted(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every VPC's default security group is emptied of rules."""
    restrictors = list(a.resources("Custom::VpcRestrictDefaultSG"))

    def good(vpc: Resource) -> bool:
        return any(r.stack == vpc.stack and vpc.logical_id in references(r.properties) for r in restrictors)

    return _check(
        "default_sg_restricted",
        list(a.resources("AWS::EC2::VPC")),
        good,
        lambda v: f"{where(v)}: default security group {'emptied of rules' if good(v) else 'NOT restricted'}",
    )


def _statements_allow(a: CloudAssembly) -> list[inv.Statement]:
    return [s for s in inv.iam_statements(a) if s.effect == "Allow" and s.kind != "trust"]


def _star(resources: list[str]) -> bool:
    return any(r.strip() == "*" for r in resources)


def _service_of(s: inv.Statement) -> str:
    return inv.endpoint_service(s.resource) if s.resource.type == "AWS::EC2::VPCEndpoint" else ""


def wildcard_invoke(s: inv.Statement) -> bool:
    """An Allow of an action that can invoke a model, endpoint, function or API, on `*` or on all but a few."""
    if s.effect != "Allow" or s.kind == "trust":
        return False
    if not any(inv.is_invoke(x, _service_of(s)) for x in s.actions):
        return False
    if s.raw and "NotResource" in s.raw:
        return True
    raw = [str(x) for x in as_list(s.raw.get("Resource"))] if s.raw else s.resources
    return _star(raw)


@predicate
def iam_no_wildcard_invoke(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No Allow of an invoke action (Bedrock, SageMaker, Lambda, API) on a `*` resource, in any policy."""
    subjects = [s for s in _statements_allow(a) if any(inv.is_invoke(x, _service_of(s)) for x in s.actions)]
    return _check(
        "iam_no_wildcard_invoke",
        subjects,
        lambda s: not wildcard_invoke(s),
        lambda s: f"{s.principal}: {', '.join(s.actions)} on {'; '.join(s.resources)[:200]}",
    )


@predicate
def iam_no_full_admin(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No identity policy allows `*` actions on `*` resources."""
    subjects = [s for s in _statements_allow(a) if s.resource.type.startswith("AWS::IAM::")]
    return _check(
        "iam_no_full_admin",
        subjects,
        lambda s: not ("*" in s.actions and _star([str(x) for x in as_list(s.raw.get("Resource"))])),
        lambda s: f"{s.principal}: {len(s.actions)} actions",
    )


@predicate
def trust_policies_scoped(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No role may be assumed by any principal (`*`)."""
    subjects = [s for s in inv.iam_statements(a) if s.kind == "trust"]
    return _check(
        "trust_policies_scoped",
        subjects,
        lambda s: not s.principal.startswith("* (any principal"),
        lambda s: f"{s.resource.label} assumable by {s.principal}",
    )


@predicate
def iam_no_users_or_keys(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No IAM users and no access keys: people and CI use federated, short-lived credentials."""
    if not a.stacks:
        return Check("iam_no_users_or_keys", None)
    found = list(a.resources("AWS::IAM::User", "AWS::IAM::AccessKey", "AWS::IAM::UserToGroupAddition"))
    return Check(
        "iam_no_users_or_keys",
        not found,
        ["no IAM users and no access keys in any stack"] if not found else [],
        [f"{where(r)} ({r.type})" for r in found],
    )


def _stores(a: CloudAssembly, logs: bool) -> list[inv.Encrypted]:
    skip = {"AWS::SageMaker::Model", "AWS::SSM::Parameter"}
    return [
        e
        for e in inv.encryption(a)
        if (e.resource.type == "AWS::Logs::LogGroup") == logs and e.resource.type not in skip
    ]


@predicate
def logs_cmk(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every log group is encrypted with a customer-managed KMS key."""
    return _check(
        "logs_cmk", _stores(a, logs=True), lambda e: e.customer_managed, lambda e: f"{where(e.resource)}: {e.key}"
    )


@predicate
def data_at_rest_cmk(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every data store (tables, buckets, topics, queues, function environments, endpoint volumes, config) is
    encrypted with a customer-managed KMS key."""
    return _check(
        "data_at_rest_cmk",
        _stores(a, logs=False),
        lambda e: e.customer_managed,
        lambda e: f"{where(e.resource)} ({e.what}): {e.key}",
    )


@predicate
def kms_rotation(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every symmetric customer-managed key rotates automatically."""
    symmetric = [
        r
        for r in a.resources("AWS::KMS::Key")
        if r.properties.get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    ]
    return _check(
        "kms_rotation",
        symmetric,
        lambda r: bool(r.properties.get("EnableKeyRotation")),
        lambda r: f"{where(r)}: rotation {'on' if r.properties.get('EnableKeyRotation') else 'OFF'}",
    )


@predicate
def kms_retained(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every key is retained when its stack is deleted."""
    return _check(
        "kms_retained",
        list(a.resources("AWS::KMS::Key")),
        lambda r: r.raw.get("DeletionPolicy") == "Retain",
        lambda r: f"{where(r)}: DeletionPolicy {r.raw.get('DeletionPolicy', 'Delete')}",
    )


@predicate
def kms_in_use(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Customer-managed KMS keys (FIPS 140-3 validated HSMs) protect the data at rest."""
    keys = list(a.resources("AWS::KMS::Key"))
    stores = [e for e in inv.encryption(a) if e.key_resource is not None]
    if not keys and not stores:
        return Check("kms_in_use", None)
    return Check(
        "kms_in_use",
        bool(keys),
        [
            f"{len(keys)} customer-managed KMS keys "
            f"({', '.join(sorted({k.properties.get('KeySpec', 'SYMMETRIC_DEFAULT') for k in keys}))}) "
            f"protect {len(stores)} resources"
        ]
        if keys
        else [],
        [] if keys else ["no customer-managed key"],
    )


def _min_days(params: Mapping[str, Any]) -> int:
    return int(params.get("min_days", 365))


@predicate
def log_retention_min(a: CloudAssembly, params: Mapping[str, Any]) -> Check:
    """Every log group keeps its records at least the minimum retention."""
    days = _min_days(params)
    return _check(
        "log_retention_min",
        list(a.resources("AWS::Logs::LogGroup")),
        lambda r: isinstance(r.properties.get("RetentionInDays"), int) and r.properties["RetentionInDays"] >= days,
        lambda r: f"{where(r)}: {r.properties.get('RetentionInDays', 'never expires')} days (floor {days})",
    )


@predicate
def logs_retained_on_delete(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every log group is retained when its stack is deleted."""
    return _check(
        "logs_retained_on_delete",
        list(a.resources("AWS::Logs::LogGroup")),
        lambda r: r.raw.get("DeletionPolicy") == "Retain",
        lambda r: f"{where(r)}: DeletionPolicy {r.raw.get('DeletionPolicy', 'Delete')}",
    )


@predicate
def flow_logs_all_vpcs(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every VPC has a flow log of ALL traffic."""

    def good(v: Resource) -> bool:
        return any(f.properties.get("TrafficType", "ALL") == "ALL" for f in inv.flow_logs_of(a, v))

    return _check(
        "flow_logs_all_vpcs",
        list(a.resources("AWS::EC2::VPC")),
        good,
        lambda v: (
            f"{where(v)}: flow log {', '.join(f.label for f in inv.flow_logs_of(a, v)) or 'NONE'} "
            f"(traffic {', '.join(str(f.properties.get('TrafficType', 'ALL')) for f in inv.flow_logs_of(a, v)) or '-'})"
        ),
    )


@predicate
def api_access_logs(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every API stage writes access logs."""
    stages = list(a.resources("AWS::ApiGateway::Stage", "AWS::ApiGatewayV2::Stage"))
    return _check(
        "api_access_logs",
        stages,
        lambda r: bool(r.properties.get("AccessLogSetting") or r.properties.get("AccessLogSettings")),
        lambda r: (
            f"{where(r)}: access logging "
            f"{'on' if r.properties.get('AccessLogSetting') or r.properties.get('AccessLogSettings') else 'OFF'}"
        ),
    )


@predicate
def api_iam_auth(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every API method (but CORS preflight) requires SigV4 (AWS_IAM) authorization."""
    methods = [m for m in a.resources("AWS::ApiGateway::Method") if m.properties.get("HttpMethod") != "OPTIONS"]
    return _check(
        "api_iam_auth",
        methods,
        lambda m: m.properties.get("AuthorizationType") == "AWS_IAM",
        lambda m: f"{where(m)}: {m.properties.get('HttpMethod')} auth {m.properties.get('AuthorizationType', 'NONE')}",
    )


@predicate
def no_data_trace(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """No API stage logs full requests and responses (data trace off)."""
    stages = list(a.resources("AWS::ApiGateway::Stage"))

    def good(r: Resource) -> bool:
        return not any(m.get("DataTraceEnabled") for m in as_list(r.properties.get("MethodSettings")))

    return _check(
        "no_data_trace",
        stages,
        good,
        lambda r: f"{where(r)}: API Gateway data trace (full request/response logging) {'off' if good(r) else 'ON'}",
    )


@predicate
def backups_enabled(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every table has point-in-time recovery, every bucket versioning."""
    subjects = list(a.resources("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable", "AWS::S3::Bucket"))

    def good(r: Resource) -> bool:
        if r.type == "AWS::S3::Bucket":
            return r.properties.get("VersioningConfiguration", {}).get("Status") == "Enabled"
        specs = [r.properties.get("PointInTimeRecoverySpecification") or {}]
        if r.type == "AWS::DynamoDB::GlobalTable":
            specs = [x.get("PointInTimeRecoverySpecification") or {} for x in as_list(r.properties.get("Replicas"))]
        return bool(specs) and all(spec.get("PointInTimeRecoveryEnabled") for spec in specs)

    return _check(
        "backups_enabled",
        subjects,
        good,
        lambda r: f"{where(r)}: {'point-in-time recovery / versioning on' if good(r) else 'NO backup setting'}",
    )


@predicate
def buckets_tls_only(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every bucket denies requests without TLS."""
    policies = list(a.resources("AWS::S3::BucketPolicy"))

    def good(bucket: Resource) -> bool:
        for p in policies:
            if p.stack == bucket.stack and bucket.logical_id in references(p.properties.get("Bucket")):
                for s in as_list(p.properties.get("PolicyDocument", {}).get("Statement")):
                    if s.get("Effect") == "Deny" and "aws:SecureTransport" in str(s.get("Condition")):
                        return True
        return False

    return _check(
        "buckets_tls_only",
        list(a.resources("AWS::S3::Bucket")),
        good,
        lambda b: f"{where(b)}: {'denies' if good(b) else 'does NOT deny'} requests without TLS",
    )


@predicate
def private_dns_endpoints(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every interface endpoint has private DNS, so AWS SDKs reach it over TLS inside the VPC."""
    subjects = [r for r in a.resources("AWS::EC2::VPCEndpoint") if r.properties.get("VpcEndpointType") == "Interface"]
    return _check(
        "private_dns_endpoints",
        subjects,
        lambda r: bool(r.properties.get("PrivateDnsEnabled")),
        lambda r: (
            f"{where(r)}: {inv.service_name(r, a)} over TLS to the in-VPC endpoint "
            f"(private DNS {'on' if r.properties.get('PrivateDnsEnabled') else 'OFF'})"
        ),
    )


@predicate
def sagemaker_isolated(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every SageMaker model runs with network isolation, in the VPC."""

    def good(r: Resource) -> bool:
        return bool(r.properties.get("EnableNetworkIsolation")) and bool(r.properties.get("VpcConfig"))

    return _check(
        "sagemaker_isolated",
        list(a.resources("AWS::SageMaker::Model")),
        good,
        lambda r: (
            f"{where(r)}: network isolation {bool(r.properties.get('EnableNetworkIsolation'))}, "
            f"VPC {'yes' if r.properties.get('VpcConfig') else 'NO'}"
        ),
    )


def _is_cdk_provider(r: Resource) -> bool:
    text = f"{r.logical_id} {r.path}"
    return "CustomResourceProvider" in text or "Provider/framework" in text or "LogRetention" in text


@predicate
def lambdas_in_vpc(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every workload Lambda function runs in the VPC (CDK deploy-time helpers listed apart)."""
    functions = list(a.resources("AWS::Lambda::Function"))
    workload = [f for f in functions if not _is_cdk_provider(f)]
    check = _check(
        "lambdas_in_vpc",
        workload,
        lambda r: bool(r.properties.get("VpcConfig")),
        lambda r: f"{where(r)}: {'in the VPC' if r.properties.get('VpcConfig') else 'NOT in a VPC'}",
    )
    check.evidence += [
        f"{where(f)}: CDK deployment helper, runs at deploy time only, outside the VPC"
        for f in functions
        if _is_cdk_provider(f)
    ]
    return check


@predicate
def alarms_present(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """CloudWatch alarms watch the workload."""
    alarms = list(a.resources("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"))
    if not alarms:
        return Check("alarms_present", None)
    return Check(
        "alarms_present", True, [f"{where(r)}: {r.properties.get('MetricName', 'composite/math')}" for r in alarms]
    )


@predicate
def compliance_gate_clean(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """cdk-nag (AwsSolutions + NIST 800-53 rev 5) has no open error; every acknowledgement has a reason."""
    if not a.report_found and not a.acknowledgements:
        return Check("compliance_gate_clean", None)
    errors = [f for f in a.findings if f.severity == "error"]
    return Check(
        "compliance_gate_clean",
        not errors,
        [
            f"cdk-nag AwsSolutions + NIST 800-53 rev 5 on every stack: {len(errors)} open errors, "
            f"{len(a.acknowledgements)} acknowledgements each with its reason"
        ],
        [f"open {f.rule} on {f.path}" for f in errors],
    )


# --- the matrix ---------------------------------------------------------------------------------------------------


@dataclass
class ControlResult:
    id: str
    title: str
    status: str
    checks: list[Check]
    outside: str


def load_controls(path: Path = CONTROLS_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for control in data["controls"]:
        unknown = [name for name in control.get("evidence", []) if name not in PREDICATES]
        if unknown:
            raise ValueError(f"{path}: {control['id']} names unknown predicates {unknown}")
    return data


def status_of(checks: list[Check]) -> str:
    applicable = [c for c in checks if c.passed is not None]
    if not applicable:
        return OUTSIDE
    if all(c.passed for c in applicable):
        return MET
    if any(c.passed for c in applicable):
        return PARTIAL
    return NOT_MET


def evaluate(a: CloudAssembly, controls: Mapping[str, Any] | None = None) -> list[ControlResult]:
    controls = controls or load_controls()
    results = []
    for control in controls["controls"]:
        params = control.get("params") or {}
        checks = []
        for name in control.get("evidence", []):
            check = PREDICATES[name](a, params)
            check.description = " ".join((PREDICATES[name].__doc__ or "").split())
            checks.append(check)
        results.append(
            ControlResult(control["id"], control["title"], status_of(checks), checks, str(control.get("outside", "")))
        )
    return results

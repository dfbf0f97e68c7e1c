"""The architecture diagram, drawn from the templates with Graphviz: one cluster per cell (region), one per stack.

Generic: every resource type appears, except plumbing that the tables show better (policies, rules, associations);
several resources of one type in one stack fold into one node; edges are the templates' own references (Ref,
Fn::GetAtt, Fn::Sub, exports), plus peering and transit links between cells. `dot` renders SVG and PNG.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from review.cfn import CloudAssembly, Resource, import_names, references
from review.cfn import render as render_value

# Plumbing: shown in the report's tables, left out of the picture.
OMIT = frozenset(
    {
        "AWS::CDK::Metadata",
        "AWS::CloudFormation::WaitConditionHandle",
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::SecurityGroupEgress",
        "AWS::EC2::SubnetRouteTableAssociation",
        "AWS::EC2::RouteTable",
        "AWS::EC2::Route",
        "AWS::EC2::SecurityGroup",
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::Lambda::Permission",
        "AWS::KMS::Alias",
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::Resource",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Account",
        "AWS::ApiGateway::UsagePlanKey",
        "AWS::ApiGateway::RequestValidator",
        "AWS::ApiGateway::Model",
        "AWS::S3::BucketPolicy",
        "AWS::SNS::TopicPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::WAFv2::WebACLAssociation",
        "AWS::WAFv2::LoggingConfiguration",
        "AWS::Backup::BackupSelection",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        "AWS::AppConfig::DeploymentStrategy",
    }
)
FOLD_AT = 3
LISTED = 14
COLORS = {
    "EC2": "#dbeafe",
    "IAM": "#fee2e2",
    "KMS": "#fef3c7",
    "Logs": "#e0e7ff",
    "Lambda": "#ffedd5",
    "ApiGateway": "#fce7f3",
    "DynamoDB": "#dcfce7",
    "SageMaker": "#ccfbf1",
    "Bedrock": "#ede9fe",
    "CloudWatch": "#f1f5f9",
    "AppConfig": "#ecfccb",
    "Route53": "#cffafe",
}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _short(resource_type: str) -> str:
    return resource_type.removeprefix("AWS::").replace("::", " ")


def _service(resource_type: str) -> str:
    parts = resource_type.split("::")
    return parts[1] if len(parts) > 1 else parts[0]


HELPERS = "~CDK deployment helpers"


def is_cdk_helper(r: Resource) -> bool:
    """CDK's own custom-resource providers (and their roles): they run at deploy time, not in the data path."""
    text = f"{r.logical_id} {r.path}"
    return "CustomResourceProvider" in text or "Provider/framework" in text


_GENERIC = frozenset({"Resource", "Default", "Endpoint", "Subnet", "LogGroup", "Key", "Role", "Function"})


def _display(r: Resource) -> str:
    """A short name for a folded node's listing: an endpoint's service, else the most telling path segment."""
    if r.type == "AWS::EC2::VPCEndpoint":
        return service_name(r)
    parts = [p for p in r.label.split("/") if p]
    while len(parts) > 1 and parts[-1] in _GENERIC:
        parts.pop()
    return parts[-1] if parts else r.logical_id


def service_name(r: Resource) -> str:
    name = render_value(r.properties.get("ServiceName", ""))
    for prefix in ("com.amazonaws.", "${AWS::Region}.", f"{r.region}."):
        name = name.replace(prefix, "", 1)
    return name or r.logical_id


def included(r: Resource) -> bool:
    return r.type not in OMIT and not r.type.startswith("Custom::")


def to_dot(a: CloudAssembly) -> str:  # noqa: PLR0912, PLR0915 - one pass, cluster by cluster
    node_of: dict[tuple[str, str], str] = {}
    lines = [
        "digraph spillway {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=12, compound=true, newrank=true, '
        'label="Spillway: generated from the synthesized CloudFormation templates", labelloc=t];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [color="#64748b", arrowsize=0.6];',
    ]
    for region_index, region in enumerate(a.regions):
        lines.append(f"  subgraph cluster_r{region_index} {{")
        lines.append(f'    label={_q("cell " + region)}; style="rounded"; color="#0f172a"; penwidth=2;')
        for stack_index, stack in enumerate(s for s in a.stacks if s.region == region):
            lines.append(f"    subgraph cluster_r{region_index}_s{stack_index} {{")
            lines.append(f'      label={_q(stack.name)}; style="rounded,dashed"; color="#475569";')
            groups: dict[str, list[Resource]] = {}
            for r in stack.resources.values():
                if included(r):
                    groups.setdefault(HELPERS if is_cdk_helper(r) else r.type, []).append(r)
            if not groups:
                node = f"r{region_index}s{stack_index}_empty"
                lines.append(f"      {node} [label={_q('(no resources yet)')}, style=dashed];")
            for type_index, (resource_type, members) in enumerate(sorted(groups.items())):
                color = COLORS.get(_service(resource_type), "#f8fafc")
                if resource_type == HELPERS:
                    node = f"r{region_index}s{stack_index}t{type_index}"
                    kinds = sorted({_short(m.type) for m in members})
                    label = f"CDK deployment helpers x{len(members)}\\n(deploy-time only: {', '.join(kinds)})"
                    lines.append(
                        f'      {node} [label="{_escape_keep_newlines(label)}", fillcolor="#f8fafc", '
                        'style="rounded,filled,dashed"];'
                    )
                    for m in members:
                        node_of[m.key] = node
                elif len(members) >= FOLD_AT:
                    node = f"r{region_index}s{stack_index}t{type_index}"
                    shown = [_display(m) for m in members]
                    listing = "\\n".join(sorted(set(shown))[:LISTED]) + ("\\n..." if len(set(shown)) > LISTED else "")
                    label = f"{_short(resource_type)} x{len(members)}\\n{listing}"
                    lines.append(f'      {node} [label="{_escape_keep_newlines(label)}", fillcolor="{color}"];')
                    for m in members:
                        node_of[m.key] = node
                else:
                    for member_index, m in enumerate(members):
                        node = f"r{region_index}s{stack_index}t{type_index}m{member_index}"
                        label = f"{_short(resource_type)}\\n{m.label}"
                        lines.append(f'      {node} [label="{_escape_keep_newlines(label)}", fillcolor="{color}"];')
                        node_of[m.key] = node
            lines.append("    }")
        lines.append("  }")
    edges: set[tuple[str, str, str]] = set()
    exports = {name: target.key for name, target in a.exports().items()}
    for r in a.resources():
        source = node_of.get(r.key)
        if source is None:
            # An association left out of the picture still joins what it associates (a WAF ACL and its stage).
            if r.type.endswith("Association") and r.type != "AWS::EC2::SubnetRouteTableAssociation":
                sides = [
                    sorted({n for ref in references(value) if (n := node_of.get((r.stack, ref)))})
                    for value in r.properties.values()
                ]
                sides = [side for side in sides if side]
                for other in sides[1:]:
                    for node in other:
                        if node not in sides[0]:
                            edges.add((sides[0][0], node, "association"))
            continue
        visible = {k: v for k, v in r.properties.items() if k not in ("Code", "Environment", "Tags")}
        for ref in references(visible):
            target = node_of.get((r.stack, ref))
            if target and target != source:
                edges.add((source, target, ""))
        for name in import_names(visible):
            if name in exports and (target := node_of.get(exports[name])) and target != source:
                edges.add((source, target, "import"))
        peer_region = r.properties.get("PeerRegion")
        if r.type in ("AWS::EC2::VPCPeeringConnection", "AWS::EC2::TransitGatewayPeeringAttachment") or peer_region:
            for vpc in a.resources("AWS::EC2::VPC"):
                if isinstance(peer_region, str) and vpc.region == peer_region and (target := node_of.get(vpc.key)):
                    edges.add((source, target, "peer"))
    for source, target, kind in sorted(edges):
        style = (
            ' [style=dashed, color="#b91c1c", label="peering"]'
            if kind == "peer"
            else {"import": " [style=dotted]", "association": " [dir=none, style=dashed]"}.get(kind, "")
        )
        lines.append(f"  {source} -> {target}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape_keep_newlines(text: str) -> str:
    return text.replace('"', '\\"')


class GraphvizMissing(RuntimeError):
    pass


def render(dot_text: str, outdir: Path, stem: str = "architecture") -> dict[str, Path]:
    """Write <stem>.dot, .svg and .png into outdir with Graphviz's `dot`."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing("Graphviz's `dot` is not installed: `make synth` installs it (apt-get install graphviz)")
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"dot": outdir / f"{stem}.dot", "svg": outdir / f"{stem}.svg", "png": outdir / f"{stem}.png"}
    paths["dot"].write_text(dot_text, encoding="utf-8")
    for fmt in ("svg", "png"):
        subprocess.run(  # noqa: S603 - a fixed binary and arguments, no shell
            [dot, f"-T{fmt}", "-Gdpi=110" if fmt == "png" else "-Gdpi=72", "-o", str(paths[fmt]), str(paths["dot"])],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return paths

"""The data-flow diagram a reviewer reads at a glance, drawn from the templates: trust boundaries (callers, API
Gateway, the escrow VPC of each cell, the AWS services, the other region), the path of a prompt from caller to model
and back, what crosses regions (peering to the other cell's runtime endpoints) and the key that protects each store.

Everything is found through resource types and references: the API's routes and the function they invoke, the
caller principals of the API's resource policy, the endpoints whose security groups admit the function's security
group, the endpoints whose policies allow invoke actions (they carry prompts), the private hosted zones that send
another cell's runtime names over peering, and the encryption inventory's keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from review import checks_api
from review import inventory as inv
from review import policy as pol
from review.cfn import CloudAssembly, Resource, as_list, import_names, references

CAPTION = (
    "Data flow, drawn from the templates. Boxes are trust boundaries: the callers (their own accounts, outside these "
    "stacks), and per cell API Gateway, the escrow VPC and the AWS services of that region. Thick red arrows are the "
    "path of a prompt; the completion returns the same way. Its hops: 1 the caller's SigV4-signed request over TLS to "
    "the execute-api endpoint, 2 the private API (behind the WAF), 3 the Lambda proxy integration to the router, "
    "4 the router's call through a model runtime endpoint (an endpoint whose policy allows invoke actions), 5 the "
    "model. Red dashed arrows are prompts crossing to another cell's runtime endpoints over VPC peering (a private "
    "hosted zone answers that cell's VPC with this cell's endpoint); grey arrows carry no prompt: the other "
    "endpoints the router's security group may reach, the stores its role's policies name, and its logs. Each store "
    "names the KMS key that protects it. Where the platform uses a model in another cloud, red dashed arrows also "
    "leave a cell's router for that cloud's VPN gateway: TLS to the provider's private endpoint inside the IPsec "
    "tunnels, to the private ranges the connection routes."
)
PROMPT = 'color="#b91c1c", penwidth=2.4, fontcolor="#b91c1c", dir=both, arrowtail=odot'
CROSS = 'color="#b91c1c", penwidth=1.8, style=dashed, fontcolor="#b91c1c", dir=both, arrowtail=odot'
QUIET = 'color="#94a3b8", fontcolor="#64748b"'
# Stores sit in the models' column: one column fewer, so the picture stays readable at a page's width.
TO_STORE = f"{QUIET}, minlen=2"
FILL = {
    "caller": "#f1f5f9",
    "api": "#fce7f3",
    "waf": "#fee2e2",
    "function": "#ffedd5",
    "endpoint": "#dbeafe",
    "model": "#ede9fe",
    "store": "#dcfce7",
    "logs": "#e0e7ff",
}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass
class Graph:
    lines: list[str] = field(default_factory=list)
    ids: dict[object, str] = field(default_factory=dict)
    edges: list[str] = field(default_factory=list)

    def node(self, key: object, label: str, kind: str, indent: str = "    ", shape: str = "box") -> str:
        if key in self.ids:
            return self.ids[key]
        node = f"n{len(self.ids)}"
        self.ids[key] = node
        self.lines.append(f"{indent}{node} [label={_q(label)}, fillcolor={_q(FILL[kind])}, shape={shape}];")
        return node

    def edge(self, source: str, target: str, attributes: str, label: str = "") -> None:
        text = f", label={_q(label)}" if label else ""
        line = f"  {source} -> {target} [{attributes}{text}];"
        if line not in self.edges:
            self.edges.append(line)

    def open(self, name: str, label: str, style: str, indent: str = "  ") -> None:
        self.lines.append(f"{indent}subgraph cluster_{name} {{")
        self.lines.append(f"{indent}  label={_q(label)}; {style}")

    def close(self, indent: str = "  ") -> None:
        self.lines.append(f"{indent}}}")


def _ingress_sources(a: CloudAssembly, group: Resource) -> set[tuple[str, str]]:
    """The security groups (by key) an endpoint's group admits, from inline rules and separate ingress resources."""
    found = set()
    for rule in as_list(group.properties.get("SecurityGroupIngress")):
        source = a.resolve(group.stack, rule.get("SourceSecurityGroupId")) if isinstance(rule, Mapping) else None
        if source is not None:
            found.add(source.key)
    for rule in a.resources("AWS::EC2::SecurityGroupIngress"):
        target = a.resolve(rule.stack, rule.properties.get("GroupId"))
        source = a.resolve(rule.stack, rule.properties.get("SourceSecurityGroupId"))
        if target is not None and target.key == group.key and source is not None:
            found.add(source.key)
    return found


def carries_prompts(endpoint: Resource) -> bool:
    """An endpoint whose policy allows an invoke action (a model runtime): prompts cross it."""
    service = inv.endpoint_service(endpoint)
    document = endpoint.properties.get("PolicyDocument")
    statements = as_list(document.get("Statement")) if isinstance(document, Mapping) else []
    return any(
        inv.is_invoke(action, service)
        for s in statements
        if isinstance(s, Mapping) and pol.is_allow(s)
        for action in pol.actions(s)
    )


def _caller_label(value: str) -> str:
    if pol.is_account_root(value):
        account = value.split(":")[4] if value.startswith("arn:") else value
        return f"account {account} root\n(every principal of the account)"
    parts = value.split(":", 5)
    return f"{parts[5]}\n(account {parts[4]})" if len(parts) == 6 else value


def _callers(api: Resource) -> list[str]:
    document = api.properties.get("Policy")
    statements = as_list(document.get("Statement")) if isinstance(document, Mapping) else []
    found = []
    for s in statements:
        if isinstance(s, Mapping) and pol.is_allow(s):
            found += [value for kind, value in pol.principals(s) if kind in ("AWS", "*")]
    return found or ["*"]


def _short_model(arn: str) -> str:
    """`anthropic.claude-...` for a model ARN; the whole resource part where the name is a pattern."""
    tail = arn.split(":", 5)[-1]
    name = tail.split("/", 1)[-1]
    return tail if pol.wildcard(name) else name


def _key_name(e: inv.Encrypted) -> str:
    """A declared key by its construct name (a CMK of these stacks); any other key as the inventory describes it."""
    if e.key_resource is not None:
        return e.key_resource.label.removesuffix("/Key")
    return e.key.replace(" (AES256, S3-managed key)", " (S3-managed)").replace("AWS managed/owned key", "AWS key")


def _wrap(items: list[str], width: int = 34) -> str:
    """A comma-separated list broken into lines of about `width` characters."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(item) + 2 <= width:
            lines[-1] += f", {item}"
        else:
            lines.append(item)
    return "\n".join(lines)


def _store_region(e: inv.Encrypted) -> str:
    match = re.search(r"replica ([a-z]{2}(?:-gov)?-[a-z]+-\d)$", e.what)
    return match.group(1) if match else e.resource.region


# The hops of a prompt, in order: each prompt edge is numbered by its hop.
PROMPT_STEPS = (
    "SigV4 request over TLS",
    "private API",
    "Lambda proxy integration",
    "model runtime call",
    "to the model",
)
SKIPPED_STORES = ("AWS::SageMaker::Model", "AWS::SSM::Parameter", "AWS::Logs::LogGroup", "AWS::Lambda::Function")


def to_dot(a: CloudAssembly) -> str:  # noqa: PLR0912, PLR0915 - one pass, boundary by boundary
    g = Graph()
    routes = checks_api.api_routes(a)
    functions = {r.integration.key: r.integration for r in routes if r.integration is not None}
    apis = {r.api.key: r.api for r in routes}
    endpoints = list(a.resources("AWS::EC2::VPCEndpoint"))
    encryption = inv.encryption(a)
    env_keys = {e.resource.key: _key_name(e) for e in encryption if e.resource.type == "AWS::Lambda::Function"}

    g.lines += [
        "digraph dataflow {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=13, newrank=true, nodesep=0.25, ranksep=0.35, '
        'label="Spillway data flow (generated from the synthesized templates)", labelloc=t];',
        '  node [style="rounded,filled", fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=10, arrowsize=0.7];',
    ]

    # Callers: outside these stacks, admitted by the API's resource policy.
    g.open("callers", "Callers: their own accounts and VPCs (outside these stacks)", 'style="rounded,dashed";')
    caller_nodes: dict[tuple[str, str], list[str]] = {}
    caller_endpoints: dict[tuple[str, str], list[str]] = {}
    for api in apis.values():
        for value in _callers(api):
            caller_nodes.setdefault(api.key, []).append(
                g.node(("caller", value), _caller_label(value) if value != "*" else "any principal", "caller")
            )
        for endpoint_id in _foreign_endpoints(a, api):
            caller_endpoints.setdefault(api.key, []).append(
                g.node(("caller-endpoint", endpoint_id), f"callers' execute-api endpoint\n{endpoint_id}", "endpoint")
            )
    g.close()

    def numbered(what: str) -> str:
        return f" {PROMPT_STEPS.index(what) + 1} "

    runtime_nodes: dict[tuple[str, str], str] = {}  # endpoint key -> node
    router_nodes: dict[str, list[str]] = {}  # region -> router function nodes
    for index, region in enumerate(a.regions):
        g.open(f"cell{index}", f"cell {region}", 'style="rounded"; color="#0f172a"; penwidth=2;')
        cell_apis = [x for x in apis.values() if x.region == region]

        g.open(f"apigw{index}", "API Gateway (AWS-managed)", 'style="rounded,filled"; fillcolor="#fdf2f8";', "    ")
        api_nodes = {}
        for api in cell_apis:
            prompt_routes = [r for r in routes if r.api.key == api.key and r.carries_prompt]
            auth = sorted({str(r.method.properties.get("AuthorizationType", "NONE")) for r in routes if r.api == api})
            kinds = ", ".join(str(t) for t in as_list(api.properties.get("EndpointConfiguration", {}).get("Types")))
            name = pol.text(api.properties.get("Name", api.logical_id))
            api_nodes[api.key] = g.node(
                api.key,
                f"REST API {name}\n{kinds or 'EDGE'}, auth {', '.join(auth)}\n"
                + "\n".join(f"{r.verb} {r.path}" for r in prompt_routes),
                "api",
                "      ",
            )
            for acl in checks_api.web_acls_of(a, api):
                edge = next((e for e in checks_api.prompt_edges(a) if e.api.key == api.key), None)
                inspects = bool(edge and checks_api.prompt_inspection_reasons(a, edge))
                waf = g.node(
                    acl.key,
                    f"WAF web ACL\n{len(as_list(acl.properties.get('Rules')))} rules; prompt bodies "
                    f"{'INSPECTED' if inspects else 'not inspected'}",
                    "waf",
                    "      ",
                )
                g.edge(waf, api_nodes[api.key], f"{QUIET}, dir=none, style=dashed, constraint=false")
        g.close("    ")

        vpcs = [v for v in a.resources("AWS::EC2::VPC") if v.region == region]
        cidr = ", ".join(pol.text(v.properties.get("CidrBlock", "")) for v in vpcs)
        exposed = [r for r in inv.internet_paths(a) if r.region == region]
        g.open(
            f"vpc{index}",
            f"escrow VPC {cidr}: {len(exposed)} internet paths",
            'style="rounded,filled"; fillcolor="#eff6ff"; color="#1d4ed8";',
            "    ",
        )
        cell_functions = [f for f in functions.values() if f.region == region]
        function_groups: dict[tuple[str, str], str] = {}
        for fn in cell_functions:
            name = pol.text(fn.properties.get("FunctionName", fn.logical_id))
            node = g.node(
                fn.key,
                f"router Lambda\n{name}\nin the VPC: {'yes' if fn.properties.get('VpcConfig') else 'NO'}\n"
                f"environment key: {env_keys.get(fn.key, 'none')}",
                "function",
                "      ",
            )
            router_nodes.setdefault(region, []).append(node)
            for group in inv.security_groups_of(a, fn, (fn.properties.get("VpcConfig") or {}).get("SecurityGroupIds")):
                function_groups[group.key] = node
        quiet_services: dict[str, list[str]] = {}
        for endpoint in (e for e in endpoints if e.region == region):
            service = inv.service_name(endpoint, a).removeprefix(f"{region}.")
            if endpoint.properties.get("VpcEndpointType") != "Interface":
                quiet_services.setdefault("gateway", []).append(service)
                continue
            admitted = {
                function_groups[k]
                for group in inv.security_groups_of(a, endpoint, endpoint.properties.get("SecurityGroupIds"))
                for k in _ingress_sources(a, group)
                if k in function_groups
            }
            api_of = next((x for x in cell_apis if endpoint.key in _endpoint_keys(a, x)), None)
            if api_of is not None:
                node = g.node(endpoint.key, f"{service} endpoint\n(private API entry)", "endpoint", "      ")
                for caller in caller_nodes.get(api_of.key, []):
                    g.edge(caller, node, PROMPT, numbered("SigV4 request over TLS"))
                g.edge(node, api_nodes[api_of.key], PROMPT, numbered("private API"))
            elif carries_prompts(endpoint) and admitted:
                node = g.node(endpoint.key, f"{service} endpoint\n(model runtime)", "endpoint", "      ")
                runtime_nodes[endpoint.key] = node
                for fn_node in admitted:
                    g.edge(fn_node, node, PROMPT, numbered("model runtime call"))
            elif admitted:
                quiet_services.setdefault("interface", []).append(service)
        if quiet_services:
            other = g.node(
                ("other", region),
                "other endpoints (no prompt)\n"
                + "\n".join(f"{k}: {_wrap(sorted(v))}" for k, v in sorted(quiet_services.items())),
                "endpoint",
                "      ",
            )
            for fn_node in router_nodes.get(region, []):
                g.edge(fn_node, other, QUIET)
        g.close("    ")

        g.open(f"aws{index}", f"AWS services in {region}", 'style="rounded,filled"; fillcolor="#f8fafc";', "    ")
        for endpoint in (e for e in endpoints if e.region == region and e.key in runtime_nodes):
            target = _model_node(g, a, endpoint, region)
            g.edge(runtime_nodes[endpoint.key], target, PROMPT, numbered("to the model"))
        for api in cell_apis:
            for endpoint_node in caller_endpoints.get(api.key, []):
                for caller in caller_nodes.get(api.key, []):
                    g.edge(caller, endpoint_node, PROMPT, numbered("SigV4 request over TLS"))
                g.edge(endpoint_node, api_nodes[api.key], PROMPT, numbered("private API"))
            for fn in {r.integration.key: r.integration for r in routes if r.api == api and r.integration}.values():
                g.edge(api_nodes[api.key], g.ids[fn.key], PROMPT, numbered("Lambda proxy integration"))
        _stores(g, a, encryption, region, cell_functions)
        g.close("    ")
        g.close()

    _cross_region(g, a, runtime_nodes, router_nodes)
    _other_clouds(g, a, router_nodes)
    g.lines += g.edges
    g.lines.append("}")
    return "\n".join(g.lines) + "\n"


def _source_conditions(api: Resource, key: str) -> list[Any]:
    """The values of one condition key (aws:SourceVpc, aws:SourceVpce) anywhere in the API's resource policy."""
    document = api.properties.get("Policy")
    found: list[Any] = []
    for statement in as_list(document.get("Statement")) if isinstance(document, Mapping) else []:
        for tests in (statement.get("Condition") or {}).values() if isinstance(statement, Mapping) else []:
            for name, value in (tests or {}).items():
                if str(name).lower() == key:
                    found += as_list(value)
    return found


def _endpoint_keys(a: CloudAssembly, api: Resource) -> set[tuple[str, str]]:
    """The execute-api endpoints that lead to a private API: named in its endpoint configuration or its policy
    (aws:SourceVpce), scoped to it by their own policy, or in a VPC its policy admits (aws:SourceVpc)."""
    ids = [*as_list((api.properties.get("EndpointConfiguration") or {}).get("VpcEndpointIds"))]
    ids += _source_conditions(api, "aws:sourcevpce")
    keys = {found.key for item in ids if (found := a.resolve(api.stack, item)) is not None}
    vpcs = {found.key for v in _source_conditions(api, "aws:sourcevpc") if (found := a.resolve(api.stack, v))}
    for endpoint in a.resources("AWS::EC2::VPCEndpoint"):
        if endpoint.region != api.region or inv.endpoint_service(endpoint) != "execute":
            continue
        scoped = endpoint.stack == api.stack and api.logical_id in references(endpoint.properties.get("PolicyDocument"))
        vpc = a.resolve(endpoint.stack, endpoint.properties.get("VpcId"))
        if scoped or (vpc is not None and vpc.key in vpcs):
            keys.add(endpoint.key)
    return keys


def _foreign_endpoints(a: CloudAssembly, api: Resource) -> list[str]:
    """Interface endpoints the private API admits that no template declares: the callers' own, in their VPCs."""
    ids = [*as_list((api.properties.get("EndpointConfiguration") or {}).get("VpcEndpointIds"))]
    ids += _source_conditions(api, "aws:sourcevpce")
    return sorted({pol.text(item) for item in ids if a.resolve(api.stack, item) is None})


def _model_node(g: Graph, a: CloudAssembly, endpoint: Resource, region: str) -> str:
    service = inv.endpoint_service(endpoint)
    if service == "sagemaker":
        names = []
        keys = {e.resource.key: _key_name(e) for e in inv.encryption(a)}
        for sm in a.resources("AWS::SageMaker::Endpoint"):
            if sm.region == region:
                config = a.resolve(sm.stack, sm.properties.get("EndpointConfigName"))
                key = keys.get(config.key, "?") if config is not None else "?"
                names.append(f"{pol.text(sm.properties.get('EndpointName', sm.logical_id))}\nvolumes key: {key}")
        return g.node(
            ("sagemaker", region), "SageMaker escrow endpoints\n" + "\n".join(names or ["none in this cell"]), "model"
        )
    document = endpoint.properties.get("PolicyDocument") or {}
    models = sorted(
        {
            _short_model(x)
            for s in as_list(document.get("Statement"))
            if isinstance(s, Mapping) and pol.is_allow(s)
            for x in pol.resources(s)
        }
    )
    shown = models[:6] + ([f"... {len(models) - 6} more"] if len(models) > 6 else [])
    return g.node(("bedrock", region), "Amazon Bedrock\n" + "\n".join(shown), "model")


def _role_text(a: CloudAssembly, fn: Resource) -> str:
    """Every policy document attached to a function's role, rendered (`Ref`s as logical ids), as one text."""
    role = a.resolve(fn.stack, fn.properties.get("Role"))
    if role is None:
        return ""
    documents: list[Any] = [role.properties.get("Policies")]
    for arn in as_list(role.properties.get("ManagedPolicyArns")):
        managed = a.resolve(role.stack, arn)
        if managed is not None:
            documents.append(managed.properties.get("PolicyDocument"))
    for policy in a.resources("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        if policy.stack == role.stack and role.logical_id in {
            pol.text(x) for x in as_list(policy.properties.get("Roles"))
        }:
            documents.append(policy.properties.get("PolicyDocument"))
    return repr([pol.text(d) for d in documents]) + repr([inv.show(role, d, a) for d in documents])


def _granted(resource: Resource, role_text: str) -> bool:
    names = [v for k, v in resource.properties.items() if k.endswith("Name") and isinstance(v, str)]
    return resource.logical_id in role_text or any(f"/{name}" in role_text or f":{name}" in role_text for name in names)


def _stores(g: Graph, a: CloudAssembly, encryption: list[inv.Encrypted], region: str, routers: list[Resource]) -> None:
    """Per cell: the stores folded into one node, the log groups in another; the router points at a store its
    role's policies name."""
    role_texts = [(g.ids[fn.key], _role_text(a, fn)) for fn in routers]
    folded: dict[tuple[str, str], int] = {}
    granted_folded: set[str] = set()
    for e in encryption:
        if e.resource.type in SKIPPED_STORES or _store_region(e) != region:
            continue
        grantees = [node for node, text in role_texts if _granted(e.resource, text)]
        folded[(e.what, _key_name(e))] = folded.get((e.what, _key_name(e)), 0) + 1
        granted_folded.update(grantees)
    if folded:
        node = g.node(
            ("stores", region),
            "data at rest\n"
            + "\n".join(
                f"{what.removeprefix('AWS::')}{f' x{n}' if n > 1 else ''}: {key}"
                for (what, key), n in sorted(folded.items())
            ),
            "store",
        )
        for router in sorted(granted_folded):
            g.edge(router, node, TO_STORE)
    logs: dict[str, int] = {}
    keys = {e.resource.key: _key_name(e) for e in encryption if e.resource.type == "AWS::Logs::LogGroup"}
    for d in inv.log_destinations(a):
        if d.subject.region == region:
            key = keys.get(d.group.key, "AWS owned key") if d.group is not None else "AWS owned key (IMPLICIT group)"
            logs[key] = logs.get(key, 0) + 1
    if logs:
        node = g.node(
            ("logs", region),
            "CloudWatch Logs\n" + "\n".join(f"{n} groups, key: {k}" for k, n in sorted(logs.items())),
            "logs",
        )
        for router, _ in role_texts:
            g.edge(router, node, TO_STORE)


def _cross_region(
    g: Graph, a: CloudAssembly, runtime_nodes: dict[tuple[str, str], str], router_nodes: dict[str, list[str]]
) -> None:
    """A private hosted zone that answers another cell's VPC with this cell's runtime endpoint: that cell's router
    sends prompts here over peering."""
    exports = a.exports()
    for record in a.resources("AWS::Route53::RecordSet"):
        targets = [exports[name] for name in import_names(record.properties) if name in exports]
        zone = a.resolve(record.stack, record.properties.get("HostedZoneId"))
        if zone is None:
            continue
        peers = {pol.text(v.get("VPCRegion")) for v in as_list(zone.properties.get("VPCs")) if isinstance(v, Mapping)}
        for endpoint in targets:
            node = runtime_nodes.get(endpoint.key)
            if node is None:
                continue
            for region in sorted(peers - {endpoint.region}):
                for router in router_nodes.get(region, []):
                    g.edge(router, node, CROSS, "failover")


def _other_clouds(g: Graph, a: CloudAssembly, router_nodes: dict[str, list[str]]) -> None:
    """Site-to-Site VPN connections to another cloud's gateway: the router's prompts cross there (TLS to the provider's
    private endpoint, inside the IPsec tunnels), to the ranges the connection's static routes name."""
    connections = list(a.resources("AWS::EC2::VPNConnection"))
    if not connections:
        return
    g.open(
        "otherclouds",
        "Other clouds (outside these stacks; their data-use terms are the reviewer's)",
        'style="rounded,dashed";',
    )
    for connection in connections:
        gateway = a.resolve(connection.stack, connection.properties.get("CustomerGatewayId"))
        if gateway is None:
            continue
        name = next(
            (pol.text(t.get("Value")) for t in as_list(gateway.properties.get("Tags")) if t.get("Key") == "Name"),
            gateway.label,
        )
        routes = sorted(
            pol.text(r.properties.get("DestinationCidrBlock"))
            for r in a.resources("AWS::EC2::VPNConnectionRoute")
            if r.stack == connection.stack and connection.logical_id in references(r.properties)
        )
        node = g.node(("other-cloud", pol.text(gateway.properties.get("IpAddress"))), name, "model", "    ")
        for router in router_nodes.get(connection.region, []):
            g.edge(router, node, CROSS, f"to another cloud: TLS inside IPsec\n{', '.join(routes)}")
    g.close()

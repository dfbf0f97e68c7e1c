"""The private paths to other clouds, read back from the templates (stacks/constructs/cross_cloud.py builds them).

A path is one provider in one cell: its Site-to-Site VPN connections (named "<provider> (<type>) via <peer>"), the
ranges their static routes carry, the Resolver FORWARD rules whose targets lie in those ranges, and the security
group egress rules to addresses in them. What crosses is derived from the same templates: HTTPS only, and the
credential the provider's type implies (a web-identity token for Vertex AI, a Secrets Manager key for Azure).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from review.cfn import CloudAssembly, Resource, as_list
from review.check import Check, predicate, where

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class CrossCloudPath:
    region: str
    provider: str
    kind: str
    connections: list[Resource] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    rules: list[tuple[str, list[str]]] = field(default_factory=list)  # (domain, resolver target addresses)
    egress: list[Resource] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)


def name_tag(r: Resource) -> str:
    for tag in as_list(r.properties.get("Tags")):
        if isinstance(tag, Mapping) and tag.get("Key") == "Name" and isinstance(tag.get("Value"), str):
            return str(tag["Value"])
    return r.logical_id


def _network(cidr: Any) -> Network | None:
    try:
        return ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        return None


def _inside(cidr: Any, ranges: list[str]) -> bool:
    net = _network(cidr)
    return net is not None and any(
        net.version == r.version and net.subnet_of(r)  # type: ignore[arg-type]
        for r in (_network(x) for x in ranges)
        if r is not None
    )


def _route_shortfall(cidr: str) -> str | None:
    net = _network(cidr)
    if net is None:
        return f"static route {cidr} is not an address range"
    if net.prefixlen == 0 or not net.is_private:
        return f"static route {cidr} is not a private range: it would send traffic for public addresses into the tunnel"
    return None


def paths(a: CloudAssembly) -> list[CrossCloudPath]:
    """Every provider path of every cell, with what falls short on it."""
    found = _connections(a)
    for path in found:
        _names_and_egress(a, path)
    for path in found:
        cell_ranges = [c for p in found if p.region == path.region for c in p.routes if _route_shortfall(c) is None]
        path.shortfalls += [f"{where(e)}: {reason}" for e, reason in _other_egress(a, path, cell_ranges)]
    return sorted(found, key=lambda p: (p.region, p.provider))


def _connections(a: CloudAssembly) -> list[CrossCloudPath]:
    """The VPN connections grouped by cell and provider, with the ranges their static routes carry."""
    found: dict[tuple[str, str], CrossCloudPath] = {}
    routes_of: dict[tuple[str, str], list[str]] = {}
    for route in a.resources("AWS::EC2::VPNConnectionRoute"):
        connection = a.resolve(route.stack, route.properties.get("VpnConnectionId"))
        if connection is not None:
            routes_of.setdefault(connection.key, []).append(str(route.properties.get("DestinationCidrBlock")))
    for connection in a.resources("AWS::EC2::VPNConnection"):
        provider, _, rest = name_tag(connection).partition(" (")
        kind = rest.split(")", 1)[0] if rest else "unknown"
        path = found.setdefault((connection.region, provider), CrossCloudPath(connection.region, provider, kind))
        path.connections.append(connection)
        if connection.properties.get("StaticRoutesOnly") is not True:
            path.shortfalls.append(f"{where(connection)}: routes learned over BGP, not only the declared ranges")
        for cidr in routes_of.get(connection.key, []):
            if (reason := _route_shortfall(cidr)) is not None:
                path.shortfalls.append(f"{where(connection)}: {reason}")
            if cidr not in path.routes:
                path.routes.append(cidr)
    return list(found.values())


def _names_and_egress(a: CloudAssembly, path: CrossCloudPath) -> None:
    """The Resolver rules whose resolvers, and the egress rules whose addresses, lie in the path's private ranges."""
    ranges = [cidr for cidr in path.routes if _route_shortfall(cidr) is None]
    for rule in a.resources("AWS::Route53Resolver::ResolverRule"):
        targets = [str(t.get("Ip")) for t in as_list(rule.properties.get("TargetIps")) if isinstance(t, Mapping)]
        if rule.region == path.region and targets and all(_inside(t, ranges) for t in targets):
            path.rules.append((str(rule.properties.get("DomainName")), targets))
    for egress in a.resources("AWS::EC2::SecurityGroupEgress"):
        if egress.region == path.region and _inside(egress.properties.get("CidrIp"), ranges):
            path.egress.append(egress)
            ports = (
                egress.properties.get("IpProtocol"),
                egress.properties.get("FromPort"),
                egress.properties.get("ToPort"),
            )
            if ports != ("tcp", 443, 443):
                path.shortfalls.append(f"{where(egress)}: egress to the provider not limited to HTTPS (tcp 443)")
    if not path.rules:
        path.shortfalls.append("no Resolver rule sends the provider's API names to its private resolvers")


def _other_egress(a: CloudAssembly, path: CrossCloudPath, cell_ranges: list[str]) -> list[tuple[Resource, str]]:
    """Egress by address from the groups that reach the provider, to anywhere outside the cell's private ranges."""
    groups = {str(e.properties.get("GroupId")) for e in path.egress}
    out = []
    for egress in a.resources("AWS::EC2::SecurityGroupEgress"):
        cidr = egress.properties.get("CidrIp") or egress.properties.get("CidrIpv6")
        mine = egress.region == path.region and str(egress.properties.get("GroupId")) in groups
        if mine and cidr is not None and not _inside(cidr, cell_ranges):
            out.append((egress, f"the router's group may also send to {cidr}, outside the private ranges"))
    return out


def credential(a: CloudAssembly, path: CrossCloudPath) -> str:
    """The credential that crosses the path, as the cell's templates grant it."""
    if path.kind == "azure_openai":
        secrets = [
            s
            for s in a.resources("AWS::SecretsManager::Secret")
            if s.region == path.region and f"/{path.provider}/" in str(s.properties.get("Name"))
        ]
        if not secrets:
            return "the Azure key: NO Secrets Manager secret for it in this cell"
        named = []
        for secret in secrets:
            key = a.resolve(secret.stack, secret.properties.get("KmsKeyId"))
            under = f"its CMK {where(key)}" if key is not None and key.type == "AWS::KMS::Key" else "NO customer key"
            named.append(f"`{secret.properties.get('Name')}` under {under}")
        return "the Azure API key, read from Secrets Manager over its PrivateLink endpoint: " + ", ".join(named)
    grants = [
        where(p)
        for p in a.resources("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        if p.region == path.region and "sts:getwebidentitytoken" in str(p.properties.get("PolicyDocument")).lower()
    ]
    return (
        "a short-lived AWS web-identity token (sts:GetWebIdentityToken, granted by "
        + (", ".join(grants) or "NO policy")
        + ") exchanged at the provider's STS for a short-lived Google access token; no stored secret"
    )


@predicate
def cross_cloud_paths_private(a: CloudAssembly, _: Mapping[str, Any]) -> Check:
    """Every path to another cloud carries only private ranges on static routes, names its API through Resolver rules
    to those ranges, and its groups send only HTTPS there and nothing to any other address."""
    found = paths(a)
    if not found:
        return Check("cross_cloud_paths_private", None)
    evidence = [
        f"{p.region} {p.provider}: {len(p.connections)} VPN connections, routes {', '.join(p.routes)}"
        for p in found
        if not p.shortfalls
    ]
    gaps = [f"{p.region} {p.provider}: {'; '.join(p.shortfalls)}" for p in found if p.shortfalls]
    return Check("cross_cloud_paths_private", not gaps, evidence, gaps)

"""The platform file's OpenAI-compatible providers (`providers:`) and the models that name them (`kind: openai`).

A provider is where an ``openai`` model is served and how the router gets there. Each type knows its endpoint, its
auth and its private path, so a model names only the provider and its own model name:

- ``vertex``: Google Cloud Vertex AI's OpenAI-compatible endpoint. Auth: workload identity federation from the
  function's role (no stored secret): ``workload_identity.audience`` names the pool provider. Private path: a VPN to
  the Google VPC, whose Private Service Connect endpoint answers ``<location>-aiplatform.googleapis.com`` and
  ``sts.googleapis.com``.
- ``azure_openai``: an Azure OpenAI / AI Foundry resource (``https://<resource>.openai.azure.com/openai/v1``). Auth:
  its key in a Secrets Manager secret per cell (the cell's CMK, rotated by the operator's rotation function).
  Private path: a VPN to the Azure VNet whose Private Endpoint serves the resource.
- ``bedrock``: Bedrock's OpenAI-compatible Chat Completions on bedrock-runtime (``/openai/v1``) in the cell's own
  region, signed with the function's role, through the cell's bedrock-runtime endpoint; its grants name the exact
  foundation-model ARNs.
- ``self_hosted``: a server in the cell's VPC (vLLM and the like): a base URL, its addresses (inside the cell's VPC,
  outside the subnets the network builds), a key in Secrets Manager; provisioned capacity, sized by max_in_flight.

`PROVIDER_KINDS` is the registry of provider types: auth mode, parser, endpoint, API names, token exchange. The
stacks (paths, secrets, grants) and the routing table read only that and the parsed `Provider`, so a third cloud is
one entry and its parser, plus the platform file's `providers:` entry. Every error is a PlatformConfigError naming
the file and the key, as in stacks/platform.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from spillway.backends.kinds import WORKLOAD_AUDIENCE
from stacks.naming import provider_secret_name

if TYPE_CHECKING:
    from stacks.platform import Region, _Reader

GOOGLE_TOKEN_URL = "https://sts.googleapis.com/v1/token"  # noqa: S105 (Google's token exchange, not a secret)
VPN_TUNNELS_PER_CONNECTION = 2

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
_GCP_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCP_LOCATION = re.compile(r"^(global|[a-z]+-[a-z]+[0-9])$")
_AZURE_RESOURCE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")
_WIRE_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
_LAMBDA_ARN = re.compile(
    r"^arn:aws(-us-gov)?:lambda:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):function:[A-Za-z0-9_-]{1,64}$"
)
_NOT_A_PEER = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
    )
)
_HOST_URL = re.compile(r"^https://(?P<host>[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)(:[0-9]{2,5})?(/[A-Za-z0-9._~/-]*)?$")


@dataclass(frozen=True, slots=True)
class Vpn:
    """A Site-to-Site VPN from each cell that reaches the provider to the provider's VPN gateway."""

    peer_ips: tuple[str, ...]  # the provider gateway's public interface addresses (one customer gateway each)
    peer_asn: int  # the provider side's BGP ASN (the customer gateways' ASN; routes are static)


@dataclass(frozen=True, slots=True)
class PrivatePath:
    """How a cell reaches another cloud: the tunnels, the only ranges they carry, and the names' resolvers."""

    vpn: Vpn
    routes: tuple[str, ...]  # provider-side CIDRs routed into the tunnels: the private endpoint's and DNS's only
    endpoint_ips: tuple[str, ...]  # the private endpoint(s) the API names resolve to: the router's egress on 443
    dns_resolvers: tuple[str, ...]  # the provider's inbound DNS (Cloud DNS inbound policy, Azure DNS Private Resolver)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A provider key kept in Secrets Manager, one secret per cell, rotated by the operator's function there."""

    rotation_functions: Mapping[str, str]  # region -> the rotation Lambda's ARN (it holds the provider's admin right)
    rotate_after_days: int


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    type: str  # a key of PROVIDER_KINDS
    # vertex
    project: str | None = None
    location: str | None = None
    audience: str | None = None  # the workload identity pool provider
    # azure_openai
    resource: str | None = None
    # self_hosted
    url: str | None = None
    addresses: Mapping[str, tuple[str, ...]] | None = None  # region -> CIDRs of the servers in that cell's VPC
    api_key: ApiKey | None = None
    path: PrivatePath | None = None

    @property
    def kind(self) -> ProviderKind:
        return PROVIDER_KINDS[self.type]

    @property
    def auth(self) -> str:
        """The routing table's auth mode for this provider's targets (spillway/backends/kinds.py)."""
        return self.kind.auth

    def base_url(self, region: str) -> str:
        """The endpoint up to (not including) /chat/completions, as reached from `region`'s cell."""
        return self.kind.base_url(self, region)

    def host(self, region: str) -> str:
        """The API's host name (what TLS verifies)."""
        return urlsplit(self.base_url(region)).hostname or ""

    @property
    def dns_names(self) -> tuple[str, ...]:
        """The names the cell's Route 53 Resolver forwards to the provider's DNS (over the private path)."""
        return self.kind.dns_names(self)

    def backend_fields(self, region: str, platform: str) -> dict[str, Any]:
        """The routing table's backend keys beyond kind and model (spillway/backends/kinds.py `parse_openai_ref`)."""
        fields: dict[str, Any] = {"base_url": self.base_url(region), "auth": self.auth}
        if self.auth == "workload_identity":
            fields.update(audience=self.audience, token_url=self.kind.token_url)
        if self.api_key is not None:
            fields["secret_id"] = provider_secret_name(platform, self.name)
        return fields


@dataclass(frozen=True, slots=True)
class OpenAIModel:
    """What a `kind: openai` model adds to Model: its provider, the endpoint's own model name, what it takes."""

    provider: str
    wire_model: str
    images: bool = False
    max_in_flight: int | None = None  # self_hosted: its capacity (provisioned); else an optional cap


def parse_providers(read: _Reader, value: object, regions: Mapping[str, Region], account: str) -> dict[str, Provider]:
    raw = read.mapping(value, "providers")
    providers: dict[str, Provider] = {}
    for name, body in raw.items():
        key = f"providers.{name}"
        read.string(name, key, _NAME, "provider name (lowercase letters, digits, dashes)")
        kind = read.mapping(body, key).get("type")
        if kind not in PROVIDER_KINDS:
            raise read.fail(f"{key}.type", f"expected one of {', '.join(PROVIDER_KINDS)}, got {kind!r}")
        providers[name] = PROVIDER_KINDS[kind].parse(read, key, name, body, regions=regions, account=account)
    _check_ranges(read, providers, regions)
    return providers


def _vertex(read: _Reader, key: str, name: str, body: object, **_: object) -> Provider:
    data = read.fields(body, key, ("type", "project", "location", "workload_identity", "private_path"))
    project = read.string(data["project"], f"{key}.project", _GCP_PROJECT, "Google Cloud project id")
    location = read.string(data["location"], f"{key}.location", _GCP_LOCATION, "Vertex AI location (or global)")
    identity = read.fields(data["workload_identity"], f"{key}.workload_identity", ("audience",))
    audience = read.string(
        identity["audience"],
        f"{key}.workload_identity.audience",
        WORKLOAD_AUDIENCE,
        "workload identity pool provider (//iam.googleapis.com/projects/<number>/locations/global/"
        "workloadIdentityPools/<pool>/providers/<provider>)",
    )
    path = _private_path(read, f"{key}.private_path", data["private_path"])
    return Provider(name, "vertex", project=project, location=location, audience=audience, path=path)


def _azure(
    read: _Reader, key: str, name: str, body: object, *, regions: Mapping[str, Region], account: str
) -> Provider:
    data = read.fields(body, key, ("type", "resource", "api_key", "private_path"))
    resource = read.string(data["resource"], f"{key}.resource", _AZURE_RESOURCE, "Azure OpenAI resource name")
    api_key = _api_key(read, f"{key}.api_key", data["api_key"], regions, account)
    path = _private_path(read, f"{key}.private_path", data["private_path"])
    return Provider(name, "azure_openai", resource=resource, api_key=api_key, path=path)


def _bedrock(read: _Reader, key: str, name: str, body: object, **_: object) -> Provider:
    read.fields(body, key, ("type",))
    return Provider(name, "bedrock")


def _self_hosted(
    read: _Reader, key: str, name: str, body: object, *, regions: Mapping[str, Region], account: str
) -> Provider:
    data = read.fields(body, key, ("type", "base_url", "addresses", "api_key"))
    url = read.string(data["base_url"], f"{key}.base_url", _HOST_URL, "https:// URL (host, optional port and path)")
    raw = read.mapping(data["addresses"], f"{key}.addresses")
    if not raw:
        raise read.fail(f"{key}.addresses", "needs the server's addresses in at least one cell")
    addresses: dict[str, tuple[str, ...]] = {}
    for region, cidrs in raw.items():
        rkey = f"{key}.addresses.{region}"
        if region not in regions:
            raise read.fail(rkey, f"region {region!r} has no cell (add it under regions)")
        vpc = ipaddress.IPv4Network(regions[region].vpc_cidr)
        isolated = next(iter(vpc.subnets(prefixlen_diff=1)))  # the network's subnets: router, endpoints, models

        def inside(item: object, item_key: str, vpc: ipaddress.IPv4Network = vpc, low: Any = isolated) -> str:
            network = _cidr(read, item, item_key)
            if not network.subnet_of(vpc) or network.overlaps(low):
                raise read.fail(
                    item_key, f"{network} must lie in the cell's VPC {vpc} outside the network's subnets ({low})"
                )
            return str(network)

        addresses[region] = read.strings(cidrs, rkey, inside, min_items=1)
    api_key = _api_key(read, f"{key}.api_key", data["api_key"], regions, account)
    return Provider(name, "self_hosted", url=url, addresses=addresses, api_key=api_key)


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """One type of provider: how the platform file declares it and what the stacks and the router need of it. A new
    cloud (or service) is one entry here and its parser; the stacks and the router read nothing else of it."""

    auth: str  # the routing table's auth mode (sigv4, secret, workload_identity)
    parse: Callable[..., Provider]  # (read, key, name, body, *, regions, account) -> Provider
    base_url: Callable[[Provider, str], str]  # (provider, the cell's region) -> the endpoint's base URL
    dns_names: Callable[[Provider], tuple[str, ...]] = lambda _: ()  # names the resolver forwards over the path
    token_url: str | None = None  # workload_identity: the provider's token exchange


def _vertex_host(p: Provider) -> str:
    return "aiplatform.googleapis.com" if p.location == "global" else f"{p.location}-aiplatform.googleapis.com"


PROVIDER_KINDS: Mapping[str, ProviderKind] = {
    "vertex": ProviderKind(
        "workload_identity",
        _vertex,
        lambda p, _: f"https://{_vertex_host(p)}/v1/projects/{p.project}/locations/{p.location}/endpoints/openapi",
        lambda p: (_vertex_host(p), "sts.googleapis.com"),
        GOOGLE_TOKEN_URL,
    ),
    "azure_openai": ProviderKind(
        "secret",
        _azure,
        lambda p, _: f"https://{p.resource}.openai.azure.com/openai/v1",
        lambda p: (f"{p.resource}.openai.azure.com",),
    ),
    "bedrock": ProviderKind(
        "sigv4", _bedrock, lambda _, region: f"https://bedrock-runtime.{region}.amazonaws.com/openai/v1"
    ),
    "self_hosted": ProviderKind("secret", _self_hosted, lambda p, _: (p.url or "").rstrip("/")),
}


def _cidr(read: _Reader, value: object, key: str) -> ipaddress.IPv4Network:
    text = read.string(value, key)
    try:
        network = ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        raise read.fail(key, f"{text!r} is not an IPv4 CIDR block") from None
    if not network.is_private:
        raise read.fail(
            key, f"{text} is not a private range: the private path carries only the provider's private ranges"
        )
    return network


def _address(read: _Reader, value: object, key: str) -> ipaddress.IPv4Address:
    text = read.string(value, key)
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise read.fail(key, f"{text!r} is not an IPv4 address") from None


def _private_path(read: _Reader, key: str, value: object) -> PrivatePath:
    data = read.fields(value, key, ("vpn", "routes", "endpoint_ips", "dns_resolvers"))
    vpn_data = read.fields(data["vpn"], f"{key}.vpn", ("peer_ips", "peer_asn"))

    def public_ip(item: object, item_key: str) -> str:
        address = _address(read, item, item_key)
        # The provider gateway's public interface (documentation ranges pass: the example's placeholders).
        if any(address in network for network in _NOT_A_PEER) or address.is_multicast:
            raise read.fail(item_key, f"{address} is not a public address: a VPN peer is the gateway's public IP")
        return str(address)

    peers = read.strings(vpn_data["peer_ips"], f"{key}.vpn.peer_ips", public_ip, min_items=1)
    asn = read.integer(vpn_data["peer_asn"], f"{key}.vpn.peer_asn", 1, 4_294_967_294)
    routes = read.strings(data["routes"], f"{key}.routes", lambda v, k: str(_cidr(read, v, k)), min_items=1)
    networks = [ipaddress.IPv4Network(r) for r in routes]
    for i, network in enumerate(networks):
        if network.prefixlen < 16:
            raise read.fail(f"{key}.routes[{i}]", f"{network} is wider than /16: route only the provider's endpoints")

    def routed(item: object, item_key: str) -> str:
        address = _address(read, item, item_key)
        if not any(address in network for network in networks):
            raise read.fail(item_key, f"{address} is not in the path's routes ({', '.join(routes)}): unreachable")
        return str(address)

    endpoints = read.strings(data["endpoint_ips"], f"{key}.endpoint_ips", routed, min_items=1)
    resolvers = read.strings(data["dns_resolvers"], f"{key}.dns_resolvers", routed, min_items=1)
    return PrivatePath(Vpn(peers, asn), routes, endpoints, resolvers)


def _api_key(read: _Reader, key: str, value: object, regions: Mapping[str, Region], account: str) -> ApiKey:
    data = read.fields(value, key, ("rotation_functions",), ("rotate_after_days",))
    functions = read.mapping(data["rotation_functions"], f"{key}.rotation_functions")
    checked: dict[str, str] = {}
    for region, arn in functions.items():
        fkey = f"{key}.rotation_functions.{region}"
        if region not in regions:
            raise read.fail(fkey, f"region {region!r} has no cell (add it under regions)")
        text = read.string(arn, fkey, _LAMBDA_ARN, "Lambda function ARN")
        match = _LAMBDA_ARN.match(text)
        assert match is not None
        if match["region"] != region or match["account"] != account:
            raise read.fail(fkey, f"must be a function in {region} and account {account} (the secret's own cell)")
        checked[region] = text
    days = read.integer(data.get("rotate_after_days", 30), f"{key}.rotate_after_days", 1, 365)
    return ApiKey(checked, days)


def _check_ranges(read: _Reader, providers: Mapping[str, Provider], regions: Mapping[str, Region]) -> None:
    """A provider's routed ranges may overlap no cell's VPC and no other provider's ranges: a route would shadow."""
    seen: list[tuple[str, ipaddress.IPv4Network]] = [
        (f"regions.{name}.vpc_cidr", ipaddress.IPv4Network(region.vpc_cidr)) for name, region in regions.items()
    ]
    for name, provider in providers.items():
        if provider.path is None:
            continue
        for i, route in enumerate(provider.path.routes):
            network = ipaddress.IPv4Network(route)
            for where, other in seen:
                if network.overlaps(other):
                    raise read.fail(f"providers.{name}.private_path.routes[{i}]", f"{route} overlaps {where} ({other})")
            seen.append((f"providers.{name}.private_path.routes[{i}]", network))


def parse_openai_model(
    read: _Reader, key: str, data: Mapping[str, Any], providers: Mapping[str, Provider], regions: Mapping[str, Region]
) -> tuple[OpenAIModel, tuple[str, ...]]:
    """A `kind: openai` model's own keys (already checked against the allowed set): the model and its regions."""
    name = read.string(data["provider"], f"{key}.provider")
    if name not in providers:
        known = ", ".join(sorted(providers)) or "none declared under providers"
        raise read.fail(f"{key}.provider", f"unknown provider {name!r} ({known})")
    provider = providers[name]
    wire = read.string(data["model"], f"{key}.model", _WIRE_MODEL, "model name as the provider's endpoint takes it")
    images = read.boolean(data.get("images", False), f"{key}.images")

    def cell(item: object, item_key: str) -> str:
        region = read.region(item, item_key)
        if region not in regions:
            raise read.fail(item_key, f"region {region!r} has no cell (add it under regions)")
        if provider.api_key is not None and region not in provider.api_key.rotation_functions:
            raise read.fail(
                item_key,
                f"provider {name!r} keeps its key in a secret per cell: add {region} to "
                f"providers.{name}.api_key.rotation_functions",
            )
        if provider.addresses is not None and region not in provider.addresses:
            raise read.fail(item_key, f"provider {name!r} has no server addresses in {region}")
        return region

    cells = read.strings(data["regions"], f"{key}.regions", cell, min_items=1)
    in_flight = None
    if provider.type == "self_hosted" or "max_in_flight" in data:
        if "max_in_flight" not in data:
            raise read.fail(
                f"{key}.max_in_flight", "a self-hosted model's capacity: how many requests it takes at once"
            )
        in_flight = read.integer(data["max_in_flight"], f"{key}.max_in_flight", 1, 10_000)
    return OpenAIModel(name, wire, images, in_flight), cells

"""Private cross-region reachability between the cells: every region's router reaches every other region's
bedrock-runtime and sagemaker.runtime endpoints without the internet.

Design
------
- **Inter-region VPC peering, full mesh.** For a handful of regions peering is simpler and cheaper than Transit
  Gateway (no attachment-hours, no per-GB processing fee, no TGW route tables to keep in step) and the traffic is a
  few HTTPS calls per failover. The connection of a pair is owned by the links stack of the lexicographically smaller
  region; it is accepted automatically since both VPCs are in the platform account (no PeerRoleArn). At about ten
  regions (45 peerings) Transit Gateway becomes the better shape; the stack interface would stay the same.
- **Routes** to each peer's literal VPC CIDR (from the config) in every isolated route table, on both sides.
- **Security groups** do not reference across regions, so each runtime endpoint's group admits 443 from the peers'
  isolated subnet CIDRs (literal, from the config; never the whole VPC nor a token).
- **DNS.** For each runtime service of this region, a Route 53 private hosted zone named like the service's own
  hostname (``bedrock-runtime.<region>.amazonaws.com``, ``runtime.sagemaker.<region>.amazonaws.com``) is associated
  with every *peer* VPC, with an apex alias to this region's interface endpoint. A peer router's SDK client for this
  region then resolves the ordinary hostname to the endpoint's private addresses, reached over the peering. The
  zone lives in the stack of the endpoint's own region so the alias target (the endpoint's DNS entries, a list
  attribute) never crosses a region: only plain strings do (peer VPC ids, peering connection ids).
- **Cross-region values** (peer VPC ids, the owner's peering connection id) go through CDK's cross-region references
  (`cross_region_references=True`): SSM parameters written by a custom resource in the producing region and read by
  one in the consuming region. They are synthesized offline; CDK's providers are generic CfnResources.
  Deployment order: every network stack, then the links stacks in region order (a links stack reads only network
  stacks and links stacks of smaller regions, so there is no cycle).

A region added to config/platform.yaml gets its cell and its links with no code change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_route53 as route53
from constructs import Construct

from stacks.cell import CellStack
from stacks.cross_region import contain_cross_region_providers
from stacks.network import BEDROCK_RUNTIME, RUNTIME_SERVICES, SAGEMAKER_RUNTIME, NetworkStack
from stacks.platform import Platform


def runtime_dns_name(service: str, region: str) -> str:
    """The hostname SDKs use for a runtime service in a region, i.e. the endpoint's private DNS name."""
    if service == BEDROCK_RUNTIME:
        return f"bedrock-runtime.{region}.amazonaws.com"
    if service == SAGEMAKER_RUNTIME:
        return f"runtime.sagemaker.{region}.amazonaws.com"
    raise ValueError(f"not a runtime service: {service!r}")


def _id(text: str) -> str:
    return "".join(part.capitalize() for part in text.replace(".", "-").split("-"))


class LinksStack(CellStack):
    """One region's half of the mesh: its peerings (to larger regions), routes, endpoint ingress and DNS zones."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: Platform,
        region: str,
        networks: Mapping[str, NetworkStack],
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("cross_region_references", True)
        super().__init__(
            scope,
            construct_id,
            platform=platform,
            region=region,
            kind="links",
            description=f"{platform.name} private links from the {region} cell to the other cells",
            **kwargs,
        )
        self.peers: tuple[str, ...] = tuple(r for r in platform.region_names if r != region)
        local = networks[region]
        # It reads peer VPC ids (and the owners' peering ids); it writes the ids of the peerings it owns.
        contain_cross_region_providers(
            self, local.log_key, writer=any(region < peer for peer in self.peers), reader=bool(self.peers)
        )

        # 1. Peering connections owned here (to every larger region), published on both networks for the peer.
        self.owned_peerings: dict[str, ec2.CfnVPCPeeringConnection] = {}
        for peer in self.peers:
            if region < peer:
                connection = ec2.CfnVPCPeeringConnection(
                    self,
                    f"PeeringTo{_id(peer)}",
                    vpc_id=local.vpc.vpc_id,
                    peer_vpc_id=networks[peer].vpc.vpc_id,
                    peer_region=peer,
                    peer_owner_id=platform.account,
                    tags=[cdk.CfnTag(key="Name", value=f"{platform.name}-{region}-{peer}")],
                )
                self.owned_peerings[peer] = connection
                local.peering_connections[peer] = connection.ref
                networks[peer].peering_connections[region] = connection.ref

        # 2. Routes to every peer's VPC CIDR in every isolated route table of this cell.
        self.peering_connections: dict[str, str] = {}
        self.routes: dict[str, list[ec2.CfnRoute]] = {}
        for peer in self.peers:
            if peer not in local.peering_connections:
                raise ValueError(
                    f"links of {region}: no peering connection to {peer} yet; build the links stacks in region order"
                )
            self.peering_connections[peer] = local.peering_connections[peer]
            self.routes[peer] = [
                ec2.CfnRoute(
                    self,
                    f"To{_id(peer)}Route{index + 1}",
                    route_table_id=table,
                    destination_cidr_block=platform.regions[peer].vpc_cidr,
                    vpc_peering_connection_id=self.peering_connections[peer],
                )
                for index, table in enumerate(local.isolated_route_table_ids)
            ]

        # 3. HTTPS from the peers' isolated subnets into this cell's runtime endpoints.
        self.endpoint_ingress: dict[str, list[ec2.CfnSecurityGroupIngress]] = {}
        for service in RUNTIME_SERVICES:
            rules: list[ec2.CfnSecurityGroupIngress] = []
            for peer in self.peers:
                rules += local.endpoints[service].allow_from_cidrs(
                    self, networks[peer].isolated_subnet_cidrs, f"HTTPS from the isolated subnets of the {peer} cell"
                )
            self.endpoint_ingress[service] = rules

        # 4. The peers resolve this region's runtime hostnames to this region's endpoints.
        self.private_zones: dict[str, route53.CfnHostedZone] = {}
        if self.peers:
            for service in RUNTIME_SERVICES:
                name = runtime_dns_name(service, region)
                zone = route53.CfnHostedZone(
                    self,
                    f"{_id(service)}Zone",
                    name=name,
                    hosted_zone_config=route53.CfnHostedZone.HostedZoneConfigProperty(
                        comment=f"{service} of {region} for the peered cells, through their VPC peering"
                    ),
                    vpcs=[
                        route53.CfnHostedZone.VPCProperty(vpc_id=networks[peer].vpc.vpc_id, vpc_region=peer)
                        for peer in self.peers
                    ],
                )
                entry = cdk.Fn.select(0, local.runtime_endpoints[service].vpc_endpoint_dns_entries)
                route53.CfnRecordSet(
                    self,
                    f"{_id(service)}Alias",
                    hosted_zone_id=zone.ref,
                    name=f"{name}.",
                    type="A",
                    alias_target=route53.CfnRecordSet.AliasTargetProperty(
                        dns_name=cdk.Fn.select(1, cdk.Fn.split(":", entry)),
                        hosted_zone_id=cdk.Fn.select(0, cdk.Fn.split(":", entry)),
                        evaluate_target_health=False,
                    ),
                )
                self.private_zones[name] = zone

"""A PrivateLink interface endpoint closed to all but named clients, with its own security group.

The endpoint is created with `open=False` (no rule from the VPC CIDR) and private DNS on. Its dedicated security group
admits TCP 443 only from the client security groups given (`allow_from`), or, for clients in a peered VPC that
security-group references cannot reach across regions, from literal CIDRs (`allow_from_cidrs`, used by links).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

HTTPS = 443
# EC2 accepts only these characters in security group and rule descriptions (an apostrophe fails the deployment).
_EC2_DESCRIPTION = re.compile(r"[^a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]")


def ec2_description(text: str) -> str:
    """`text` with the characters EC2 rejects in security group descriptions removed (at most 255 characters)."""
    return _EC2_DESCRIPTION.sub("", text)[:255]


class PrivateInterfaceEndpoint(Construct):
    """An interface VPC endpoint with a dedicated security group and an optional endpoint policy."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        service: ec2.IInterfaceVpcEndpointService,
        subnets: ec2.SubnetSelection,
        clients: Sequence[ec2.ISecurityGroup] = (),
        policy: Iterable[iam.PolicyStatement] = (),
        description: str = "",
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description=ec2_description(
                description or f"{construct_id} interface endpoint: HTTPS from its clients only"
            ),
            allow_all_outbound=False,  # an endpoint never initiates connections
        )
        self.endpoint = ec2.InterfaceVpcEndpoint(
            self,
            "Endpoint",
            vpc=vpc,
            service=service,
            subnets=subnets,
            security_groups=[self.security_group],
            private_dns_enabled=True,
            open=False,
        )
        for statement in policy:
            self.endpoint.add_to_policy(statement)
        for client in clients:
            self.allow_from(client)

    def allow_from(self, client: ec2.ISecurityGroup) -> None:
        """HTTPS from one client security group (and, if it restricts egress, HTTPS out of it to this endpoint)."""
        self.endpoint.connections.allow_from(client, ec2.Port.tcp(HTTPS), "HTTPS from a client security group")

    def allow_from_cidrs(
        self, scope: Construct, cidrs: Iterable[str], description: str
    ) -> list[ec2.CfnSecurityGroupIngress]:
        """HTTPS from literal CIDRs (peered VPCs in other regions, where security-group references do not reach).

        The rules are separate resources created in `scope` (e.g. a links stack of the same region), so the stack
        that owns the endpoint does not change when a peer is added.
        """
        rules = []
        for cidr in cidrs:
            network = ipaddress.IPv4Network(cidr, strict=True)  # literal only: cdk-nag cannot evaluate tokens
            if network.prefixlen == 0:
                raise ValueError("an endpoint never admits 0.0.0.0/0")
            rules.append(
                ec2.CfnSecurityGroupIngress(
                    scope,
                    f"{self.node.id}Https{str(network).replace('.', '-').replace('/', '-')}",
                    group_id=self.security_group.security_group_id,
                    ip_protocol="tcp",
                    from_port=HTTPS,
                    to_port=HTTPS,
                    cidr_ip=str(network),
                    description=ec2_description(description),
                )
            )
        return rules

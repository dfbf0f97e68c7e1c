"""The escrow network of one cell (one region): a VPC with isolated subnets only, PrivateLink endpoints closed to
all but the security groups that need them, endpoint policies naming exact ARNs, and encrypted flow logs.

Nothing here can reach or be reached from the internet: there is no internet gateway, NAT, egress-only gateway,
elastic IP or public IP. The route tables hold the VPC's local route, the S3 gateway endpoint's prefix list and
(added by stacks/links.py) the peered cells' CIDRs, so traffic can go nowhere else.

Naming convention (the gateway endpoint policy allows only these names; later stacks MUST follow it)
--------------------------------------------------------------------------------------------------
- S3 buckets:       ``<platform>-<purpose>-<account>-<region>``, e.g. ``spillway-artifacts-111122223333-us-east-1``;
  the S3 gateway allows ``arn:<partition>:s3:::<platform>-*-<account>-<region>`` and its objects.
  ``bucket_name(platform, region, purpose)`` (stacks/naming.py) builds them.
- SageMaker model artifacts: each escrow model's ``model_data_url`` in the region is allowed read-only by its exact
  object ARN, wherever the bucket is (configs may point to a bucket outside the convention).
- Every statement that covers project resources requires ``aws:PrincipalAccount`` = the platform account.

Endpoints and why
-----------------
Interface endpoints (private DNS on, one dedicated security group each, 443 only from the named client groups):
``bedrock-runtime`` and ``sagemaker.runtime`` (the router's model calls; policies from ``targets.endpoint_grants``;
bedrock-runtime also allows the application inference profiles and purchased PT the models stack creates later, by
resource type in this account and region and only with the ``spillway:platform`` tag), ``xray`` (the router's
traces) and ``appconfigdata`` (the AppConfig agent reads the routing table; the control-plane ``appconfig`` endpoint
is not used and not created); and, in regions that host an escrow SageMaker endpoint, for the model security group:
``sts``, ``logs``, ``monitoring``, ``kms``, ``ecr.api`` and ``ecr.dkr`` (AWS lists them for SageMaker in VPCs without
internet access). Every other endpoint's policy names its service's actions (`SERVICE_GRANTS`) on this account's
resources, with the resource perimeter ``aws:ResourceAccount`` and ``aws:PrincipalAccount`` = the platform account;
ECR names the configured images' repositories in their registries' accounts. The ECR layers themselves are served
from the regional ``prod-<region>-starport-layer-bucket`` bucket through the S3 gateway.
Security groups send HTTPS only to their endpoints' security groups, the models' also to the S3 gateway's prefix list
(its id from ``regions.<r>.gateway_prefix_lists``, no lookup), and the router's also to the peer cells' isolated
subnets (their runtime endpoints, through the peering); the fleet store adds the router's one non-HTTPS rule, to its
own security group (stacks/constructs/fleet_store.py). No rule reaches 0.0.0.0/0.
Gateway endpoint (free): S3 (model artifacts, ECR layers, project buckets). There is no DynamoDB gateway endpoint:
nothing in the VPC uses DynamoDB (the router's shared state is the fleet store, in the VPC).
The SageMaker control-plane API (``api.sagemaker``) is not needed at run time: deployment goes through
CloudFormation outside the VPC.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from spillway.backends.workload_identity import jwt_audience
from stacks.cell import CellStack
from stacks.constructs import EncryptedLogGroup, LogsKey, PrivateInterfaceEndpoint
from stacks.constructs.cross_cloud import CrossCloudPaths
from stacks.cross_region import confine_provider, contain_cross_region_providers
from stacks.naming import bucket_name, partition_of
from stacks.platform import Platform
from stacks.targets import KINDS, endpoint_grants, providers_reached_from, used_targets

# Each backend kind's runtime endpoint service and invoke actions, from the registry (spillway/backends/kinds.py).
BEDROCK_RUNTIME = KINDS["bedrock"].endpoint_service
SAGEMAKER_RUNTIME = KINDS["sagemaker"].endpoint_service
# The runtime endpoints of the kinds that have one (an openai target is reached on its provider's path).
RUNTIME_SERVICES = tuple(k.endpoint_service for k in KINDS.values() if k.in_platform_file and k.endpoint_service)
BEDROCK_INVOKE_ACTIONS = KINDS["bedrock"].invoke_actions
APPLY_GUARDRAIL = "bedrock:ApplyGuardrail"  # Converse with a guardrailConfig (stacks/constructs/guardrail.py)
PLATFORM_TAG = "spillway:platform"  # on every application inference profile and purchased PT (stacks/models.py)
SAGEMAKER_INVOKE_ACTIONS = KINDS["sagemaker"].invoke_actions
S3_PROJECT_ACTIONS = (
    "s3:AbortMultipartUpload",
    "s3:GetBucketLocation",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:ListBucket",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
)

ROUTER = "router"
MODEL = "model"


@dataclass(frozen=True, slots=True)
class _Interface:
    name: str  # short name, also the suffix of com.amazonaws.<region>.<name>
    clients: tuple[str, ...]  # which of the cell's security groups may use it
    escrow_only: bool = False  # only in regions that host a SageMaker escrow endpoint


INTERFACE_ENDPOINTS: tuple[_Interface, ...] = (
    _Interface(BEDROCK_RUNTIME, (ROUTER,)),
    _Interface(SAGEMAKER_RUNTIME, (ROUTER,)),
    # The router's other calls from the VPC: traces (the X-Ray daemon in its execution environment) and its routing
    # configuration (the AppConfig agent calls appconfigdata only). Logs, metrics (EMF on stdout), the environment's
    # key and credentials are handled by Lambda outside the VPC, so the router uses no other endpoint.
    _Interface("xray", (ROUTER,)),
    _Interface("appconfigdata", (ROUTER,)),
    # What SageMaker uses from the model subnets of a cell that hosts an escrow endpoint.
    _Interface("sts", (MODEL,), escrow_only=True),
    _Interface("logs", (MODEL,), escrow_only=True),
    _Interface("monitoring", (MODEL,), escrow_only=True),
    _Interface("kms", (MODEL,), escrow_only=True),
    _Interface("ecr.api", (MODEL,), escrow_only=True),
    _Interface("ecr.dkr", (MODEL,), escrow_only=True),
    # The router's keys for providers in other clouds (Azure OpenAI, self-hosted): only in cells that use one.
    _Interface("secretsmanager", ()),
)


@dataclass(frozen=True, slots=True)
class _Grant:
    """One Allow of an interface endpoint policy: actions on resources of this account (`{p}` partition, `{r}`
    region, `{a}` account), with the resource perimeter aws:ResourceAccount = the platform account."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]


# Interface endpoints other than the model runtimes: the actions their clients call, on this account's resources.
# Actions without resource-level permissions name "*", still bound by aws:ResourceAccount.
SERVICE_GRANTS: Mapping[str, tuple[_Grant, ...]] = {
    "xray": (
        _Grant(
            "OwnTraces",
            ("xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:PutTelemetryRecords", "xray:PutTraceSegments"),
            ("*",),
        ),
    ),
    "appconfigdata": (
        _Grant(
            "OwnConfiguration",
            ("appconfig:GetLatestConfiguration", "appconfig:StartConfigurationSession"),
            ("arn:{p}:appconfig:{r}:{a}:application/*",),
        ),
    ),
    "sts": (_Grant("OwnRoles", ("sts:AssumeRole",), ("arn:{p}:iam::{a}:role/*",)),),
    "logs": (
        _Grant(
            "OwnLogGroups",
            ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"),
            ("arn:{p}:logs:{r}:{a}:log-group:*",),
        ),
    ),
    "monitoring": (_Grant("OwnMetrics", ("cloudwatch:PutMetricData",), ("*",)),),
    # The providers' keys (stacks/constructs/provider_secret.py): read only, this platform's provider secrets only.
    "secretsmanager": (
        _Grant(
            "ProviderKeys",
            ("secretsmanager:GetSecretValue",),
            ("arn:{p}:secretsmanager:{r}:{a}:secret:{n}/providers/*",),
        ),
    ),
    "kms": (
        _Grant(
            "OwnKeys",
            ("kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"),
            ("arn:{p}:kms:{r}:{a}:key/*",),
        ),
    ),
}
ECR_IMAGE_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")


GET_WEB_IDENTITY_TOKEN = "sts:GetWebIdentityToken"  # noqa: S105 (an IAM action)


def router_endpoint_needs(platform: Platform, region: str) -> frozenset[str]:
    """The interface endpoints `region`'s router needs for the other clouds it reaches: STS for workload identity
    federation (GetWebIdentityToken), Secrets Manager for provider keys."""
    reached = providers_reached_from(platform, region)
    needs = set()
    if any(p.type == "vertex" for p in reached):
        needs.add("sts")
    if any(p.api_key is not None for p in reached):
        needs.add("secretsmanager")
    return frozenset(needs)


def web_identity_audiences(platform: Platform, region: str) -> list[str]:
    """The JWT audiences `region`'s router may ask AWS STS for: its workload identity providers', exactly."""
    return sorted(jwt_audience(p.audience) for p in providers_reached_from(platform, region) if p.audience is not None)


def deploy_time_resource_types(platform: Platform, region: str) -> tuple[str, ...]:
    """Bedrock resource types whose ARNs the models stack of `region` creates and the router invokes there:
    application inference profiles where a used target is on-demand Bedrock, provisioned models where the config
    buys PT."""
    used = [t for t in used_targets(platform) if t.region == region and t.kind == "bedrock"]
    kinds = []
    if any(t.capacity == "on_demand" for t in used):
        kinds.append("application-inference-profile")
    if any(
        (offer := m.regions.get(region)) is not None and offer.purchase is not None for m in platform.models.values()
    ):
        kinds.append("provisioned-model")
    return tuple(kinds)


def isolated_subnet_cidrs(platform: Platform, region: str) -> tuple[str, ...]:
    """The literal CIDRs of a cell's isolated subnets, one per availability zone, in zone order.

    Each subnet gets 1/2^(k+1) of the VPC, where 2^k >= number of zones: half the VPC stays free for later subnets.
    Literal values (not tokens) let other stacks and cdk-nag reason about them.
    """
    config = platform.regions[region]
    network = ipaddress.IPv4Network(config.vpc_cidr)
    bits = math.ceil(math.log2(len(config.availability_zones))) + 1
    prefix = min(network.prefixlen + bits, 28)
    subnets = list(network.subnets(new_prefix=prefix))
    return tuple(str(s) for s in subnets[: len(config.availability_zones)])


def escrow_images(platform: Platform, region: str) -> tuple[str, ...]:
    """The ECR image URI of every escrow model hosted in `region`, sorted."""
    return tuple(
        sorted(
            offer.endpoint.image_uri
            for model in platform.models.values()
            for name, offer in model.regions.items()
            if name == region and offer.endpoint is not None
        )
    )


def escrow_artifacts(platform: Platform, region: str) -> tuple[str, ...]:
    """The s3:// model_data_url of every escrow model hosted in `region`, sorted."""
    return tuple(
        sorted(
            offer.endpoint.model_data_url
            for model in platform.models.values()
            for name, offer in model.regions.items()
            if name == region and offer.endpoint is not None
        )
    )


class NetworkStack(CellStack):
    """One cell's escrow network. See the module docstring for what it holds and why."""

    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform, region: str, **kwargs: Any) -> None:
        config = platform.regions[region]
        kwargs.setdefault("cross_region_references", True)  # links read the VPC id from other regions
        super().__init__(
            scope,
            construct_id,
            platform=platform,
            region=region,
            kind="network",
            description=f"{platform.name} escrow network cell in {region} (isolated, PrivateLink only)",
            **kwargs,
        )
        self.vpc_cidr = config.vpc_cidr
        self.isolated_subnet_cidrs = isolated_subnet_cidrs(platform, region)
        self._principal_account = {"StringEquals": {"aws:PrincipalAccount": platform.account}}

        self.vpc = self._vpc(config.availability_zones)
        self.isolated_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, one_per_az=True)
        self.isolated_route_table_ids: tuple[str, ...] = tuple(
            subnet.route_table.route_table_id for subnet in self.vpc.isolated_subnets
        )

        # The description predates the fleet store and is kept: changing it replaces the group, whose id other
        # stacks import (CloudFormation refuses to change an export in use). The rules say what the group allows.
        self.router_security_group = self._client_group(
            "RouterSecurityGroup", "Router Lambda: HTTPS out to the endpoints, gateways and peered cells only"
        )
        self.model_security_group = self._client_group(
            "ModelSecurityGroup", "SageMaker escrow endpoints: HTTPS out to the endpoints and gateways only"
        )

        # Flow logs first: the key and the log group are reused by later stacks of the cell.
        self.log_key: kms.Key = LogsKey(self, "LogsKey", description=f"{platform.name} {region} CloudWatch Logs").key
        self.flow_log_group = EncryptedLogGroup(
            self,
            "FlowLogs",
            retention_days=platform.log_retention_days,
            key=self.log_key,
            log_group_name=f"/{platform.name}/{region}/vpc-flow-logs",
        )
        self.flow_log = self._flow_log()

        self.endpoints: dict[str, PrivateInterfaceEndpoint] = self._interface_endpoints()
        self.runtime_endpoints: Mapping[str, ec2.InterfaceVpcEndpoint] = {
            name: self.endpoints[name].endpoint for name in RUNTIME_SERVICES
        }
        self.gateway_endpoints: dict[str, ec2.GatewayVpcEndpoint] = self._gateway_endpoints()
        self._client_egress()
        # Other clouds reached from this cell: tunnels, routes, resolver rules, the router's egress to them.
        reached = providers_reached_from(platform, region)
        self.cross_cloud: CrossCloudPaths | None = (
            CrossCloudPaths(
                self,
                "OtherClouds",
                platform_name=platform.name,
                providers=reached,
                vpc=self.vpc,
                subnets=self.isolated_subnets,
                route_table_ids=self.isolated_route_table_ids,
                router_group=self.router_security_group,
                log_key=self.log_key,
                retention_days=platform.log_retention_days,
            )
            if reached
            else None
        )
        # Peer region -> VPC peering connection id; filled by the links stack that owns each peering (stacks/links.py).
        self.peering_connections: dict[str, str] = {}
        self._contain_provider_logs()
        # Every other region's links stack reads this VPC's id: a writer; a network stack reads nothing.
        contain_cross_region_providers(self, self.log_key, writer=len(platform.region_names) > 1, reader=False)

    # --- VPC ---------------------------------------------------------------------------------------------------

    def _vpc(self, zones: Sequence[str]) -> ec2.Vpc:
        mask = ipaddress.IPv4Network(self.isolated_subnet_cidrs[0]).prefixlen
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(self.vpc_cidr),
            availability_zones=list(zones),
            nat_gateways=0,
            create_internet_gateway=False,
            enable_dns_hostnames=True,  # required for private DNS of interface endpoints
            enable_dns_support=True,
            restrict_default_security_group=True,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=mask)
            ],
        )
        actual = tuple(subnet.ipv4_cidr_block for subnet in vpc.isolated_subnets)
        if actual != self.isolated_subnet_cidrs:
            raise AssertionError(f"subnet plan {self.isolated_subnet_cidrs} differs from CDK's {actual}")
        return vpc

    def _client_group(self, construct_id: str, description: str) -> ec2.SecurityGroup:
        # No rule yet: egress is added per destination (endpoints, the S3 gateway's prefix list, peer cells, store).
        return ec2.SecurityGroup(self, construct_id, vpc=self.vpc, description=description, allow_all_outbound=False)

    def _client_egress(self) -> None:
        """HTTPS out of the client groups only to what each uses: its interface endpoints' security groups (added
        with the endpoints), for the models the S3 gateway's prefix list (their artifacts and image layers) and, for
        the router, the peer cells' isolated subnets where their runtime endpoints live (failover through the
        peering). The router uses no gateway. No rule reaches 0.0.0.0/0."""
        s3 = self.platform.regions[self.region_name].prefix_lists["s3"]
        self.model_security_group.add_egress_rule(
            ec2.Peer.prefix_list(s3), ec2.Port.tcp(443), f"HTTPS to the s3 gateway endpoint (prefix list {s3})"
        )
        for peer in self.platform.region_names:
            if peer == self.region_name:
                continue
            for cidr in isolated_subnet_cidrs(self.platform, peer):
                self.router_security_group.add_egress_rule(
                    ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), f"HTTPS to the {peer} runtime endpoints (peering)"
                )

    def _flow_log(self) -> ec2.CfnFlowLog:
        stack = cdk.Stack.of(self)
        role = iam.Role(
            self,
            "FlowLogsRole",
            description="VPC flow logs delivery to their CMK-encrypted log group",
            assumed_by=iam.ServicePrincipal(
                "vpc-flow-logs.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:vpc-flow-log/*"
                    },
                },
            ),
        )
        policy = iam.ManagedPolicy(
            self,
            "FlowLogsDelivery",
            description="Write VPC flow logs to this cell's flow-log group only",
            statements=[
                iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    resources=[self.flow_log_group.log_group.log_group_arn],
                )
            ],
        )
        role.add_managed_policy(policy)
        flow_log = ec2.CfnFlowLog(
            self,
            "FlowLog",
            resource_id=self.vpc.vpc_id,
            resource_type="VPC",
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=self.flow_log_group.log_group.log_group_arn,
            deliver_logs_permission_arn=role.role_arn,
            max_aggregation_interval=60,
        )
        flow_log.node.add_dependency(policy)
        return flow_log

    def _contain_provider_logs(self) -> None:
        """CDK's restrict-default-SG provider Lambda logs into a CMK-encrypted group with retention, not into an
        implicit /aws/lambda group without either (its role's AWSLambdaBasicExecutionRole allows any group)."""
        provider = self.node.try_find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
        if provider is None:
            return
        group = EncryptedLogGroup(
            self,
            "RestrictDefaultSgLogs",
            retention_days=self.platform.log_retention_days,
            key=self.log_key,
            log_group_name=f"/{self.platform.name}/{self.region_name}/restrict-default-sg",
        )
        confine_provider(provider, group.log_group)

    # --- endpoints ---------------------------------------------------------------------------------------------

    def _interface_endpoints(self) -> dict[str, PrivateInterfaceEndpoint]:
        hosts_escrow = bool(escrow_artifacts(self.platform, self.region_name))
        groups = {ROUTER: self.router_security_group, MODEL: self.model_security_group}
        endpoints: dict[str, PrivateInterfaceEndpoint] = {}
        router_needs = router_endpoint_needs(self.platform, self.region_name)
        for spec in INTERFACE_ENDPOINTS:
            clients = () if spec.escrow_only and not hosts_escrow else spec.clients
            if spec.name in router_needs and ROUTER not in clients:
                clients = (*clients, ROUTER)
            if not clients:
                continue
            construct_id = "".join(part.capitalize() for part in spec.name.replace("-", ".").split("."))
            endpoint = PrivateInterfaceEndpoint(
                self,
                f"{construct_id}Endpoint",
                vpc=self.vpc,
                service=ec2.InterfaceVpcEndpointAwsService(spec.name),
                subnets=self.isolated_subnets,
                policy=self._interface_policy(spec.name),
                description=f"{spec.name} endpoint: HTTPS from the {' and '.join(clients)} security groups only",
            )
            for client in clients:
                endpoint.security_group.add_ingress_rule(
                    ec2.Peer.security_group_id(groups[client].security_group_id),
                    ec2.Port.tcp(443),
                    f"HTTPS from the {client} security group",
                )
                # A separate rule (not inline in either group): the ingress above already ties the two groups.
                ec2.CfnSecurityGroupEgress(
                    self,
                    f"{client.capitalize()}To{construct_id}Endpoint",
                    group_id=groups[client].security_group_id,
                    ip_protocol="tcp",
                    from_port=443,
                    to_port=443,
                    destination_security_group_id=endpoint.security_group.security_group_id,
                    description=f"HTTPS to the {spec.name} endpoint",
                )
            endpoints[spec.name] = endpoint
        return endpoints

    def _interface_policy(self, service: str) -> list[iam.PolicyStatement]:
        grants = endpoint_grants(self.platform, self.region_name)
        if service == BEDROCK_RUNTIME:
            policy = self._invoke_policy(BEDROCK_INVOKE_ACTIONS, grants.bedrock_runtime)
            return policy + self._deploy_time_invoke_policy() + self._guardrail_policy() if grants.bedrock else policy
        if service == SAGEMAKER_RUNTIME:
            return self._invoke_policy(SAGEMAKER_INVOKE_ACTIONS, grants.sagemaker)
        if service in ("ecr.api", "ecr.dkr"):
            return self._ecr_policy()
        if service == "sts" and "sts" in router_endpoint_needs(self.platform, self.region_name):
            return self._grant_policy(service) + self._web_identity_policy()
        return self._grant_policy(service)

    def _grant_policy(self, service: str) -> list[iam.PolicyStatement]:
        partition = partition_of(self.region_name)
        perimeter = {
            "StringEquals": {**self._principal_account["StringEquals"], "aws:ResourceAccount": self.platform.account}
        }
        return [
            iam.PolicyStatement(
                sid=grant.sid,
                principals=[iam.AnyPrincipal()],
                actions=list(grant.actions),
                resources=[
                    r.format(p=partition, r=self.region_name, a=self.platform.account, n=self.platform.name)
                    for r in grant.resources
                ],
                conditions=perimeter,
            )
            for grant in SERVICE_GRANTS[service]
        ]

    def _web_identity_policy(self) -> list[iam.PolicyStatement]:
        """GetWebIdentityToken (workload identity federation to another cloud) has no resource: the account's own
        principals only, for the audiences of the providers this cell reaches (the router's policy says the same)."""
        return [
            iam.PolicyStatement(
                sid="WebIdentityTokensForProviders",
                principals=[iam.AnyPrincipal()],
                actions=[GET_WEB_IDENTITY_TOKEN],
                resources=["*"],
                conditions={
                    **self._principal_account,
                    "ForAllValues:StringEquals": {
                        "sts:IdentityTokenAudience": web_identity_audiences(self.platform, self.region_name)
                    },
                },
            )
        ]

    def _ecr_policy(self) -> list[iam.PolicyStatement]:
        """Pull the configured escrow images only: their exact repositories, in their registries' accounts (AWS's
        Deep Learning Containers live in AWS-owned accounts); the token call has no resource to scope."""
        partition = partition_of(self.region_name)
        repositories = sorted(
            {
                (image.split(".", 1)[0], image.split("/", 1)[1].split(":", 1)[0].split("@", 1)[0])
                for image in escrow_images(self.platform, self.region_name)
            }
        )
        return [
            iam.PolicyStatement(
                sid="ConfiguredEscrowImages",
                principals=[iam.AnyPrincipal()],
                actions=list(ECR_IMAGE_ACTIONS),
                resources=[
                    f"arn:{partition}:ecr:{self.region_name}:{registry}:repository/{repository}"
                    for registry, repository in repositories
                ],
                conditions={
                    "StringEquals": {
                        **self._principal_account["StringEquals"],
                        "aws:ResourceAccount": sorted({registry for registry, _ in repositories}),
                    }
                },
            ),
            iam.PolicyStatement(
                sid="RegistryToken",
                principals=[iam.AnyPrincipal()],
                actions=["ecr:GetAuthorizationToken"],
                resources=["*"],
                conditions=self._principal_account,
            ),
        ]

    def _invoke_policy(self, actions: Sequence[str], arns: Sequence[str]) -> list[iam.PolicyStatement]:
        if not arns:
            # Nothing to invoke in this region: the endpoint serves no one (an explicit deny, never a "*" grant).
            return [
                iam.PolicyStatement(
                    sid="NoTargetsInThisRegion",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=list(actions),
                    resources=["*"],
                )
            ]
        return [
            iam.PolicyStatement(
                sid="InvokeConfiguredTargetsOnly",
                principals=[iam.AnyPrincipal()],
                actions=list(actions),
                resources=list(arns),
                conditions=self._principal_account,
            )
        ]

    def _deploy_time_invoke_policy(self) -> list[iam.PolicyStatement]:
        """Application inference profiles and purchased PT get their ARNs from Bedrock when the models stack (deployed
        after this one) creates them. The endpoint allows them by resource type in this account and region, and only
        those carrying the platform's tag (the models stack tags every profile and PT `spillway:platform`)."""
        arns = [
            f"arn:{partition_of(self.region_name)}:bedrock:{self.region_name}:{self.platform.account}:{kind}/*"
            for kind in deploy_time_resource_types(self.platform, self.region_name)
        ]
        if not arns:
            return []
        return [
            iam.PolicyStatement(
                sid="InvokeOwnTaggedProfilesAndProvisionedThroughput",
                principals=[iam.AnyPrincipal()],
                actions=list(BEDROCK_INVOKE_ACTIONS),
                resources=arns,
                conditions={
                    "StringEquals": {
                        "aws:PrincipalAccount": self.platform.account,
                        f"aws:ResourceTag/{PLATFORM_TAG}": self.platform.name,
                    }
                },
            )
        ]

    def _guardrail_policy(self) -> list[iam.PolicyStatement]:
        """The guardrails this cell's models stack (deployed after this one) builds get their ids from Bedrock: the
        endpoint allows ApplyGuardrail on this account and region's guardrails carrying the platform's tag only. The
        router's own policy names each guardrail's exact ARN (stacks/models.py)."""
        if not self.platform.guardrails_in(self.region_name):
            return []
        arn = f"arn:{partition_of(self.region_name)}:bedrock:{self.region_name}:{self.platform.account}:guardrail/*"
        return [
            iam.PolicyStatement(
                sid="ApplyOwnTaggedGuardrails",
                principals=[iam.AnyPrincipal()],
                actions=[APPLY_GUARDRAIL],
                resources=[arn],
                conditions={
                    "StringEquals": {
                        "aws:PrincipalAccount": self.platform.account,
                        f"aws:ResourceTag/{PLATFORM_TAG}": self.platform.name,
                    }
                },
            )
        ]

    def _gateway_endpoints(self) -> dict[str, ec2.GatewayVpcEndpoint]:
        subnets = [self.isolated_subnets]
        s3 = self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=subnets)
        for statement in self._s3_policy():
            s3.add_to_policy(statement)
        return {"s3": s3}

    def _s3_policy(self) -> list[iam.PolicyStatement]:
        partition = self.platform.regions[self.region_name].partition
        pattern = (
            f"arn:{partition}:s3:::{bucket_name(self.platform.name, '*', self.platform.account, self.region_name)}"
        )
        # Bucket names are global: the name pattern alone would also match another account's bucket, a way out of
        # the escrow VPC. The bucket must be this account's too.
        own_buckets = {
            "StringEquals": {
                "aws:PrincipalAccount": self.platform.account,
                "aws:ResourceAccount": self.platform.account,
            }
        }
        statements = [
            iam.PolicyStatement(
                sid="ProjectBuckets",
                principals=[iam.AnyPrincipal()],
                actions=list(S3_PROJECT_ACTIONS),
                resources=[pattern, f"{pattern}/*"],
                conditions=own_buckets,
            )
        ]
        artifacts = escrow_artifacts(self.platform, self.region_name)
        if artifacts:
            objects = []
            for url in artifacts:
                parsed = urlparse(url)
                objects.append(f"arn:{partition}:s3:::{parsed.netloc}/{parsed.path.lstrip('/')}")
            statements.append(
                iam.PolicyStatement(
                    sid="EscrowModelArtifacts",
                    principals=[iam.AnyPrincipal()],
                    actions=["s3:GetObject"],
                    resources=objects,
                    conditions=own_buckets,
                )
            )
            # ECR serves image layers from this AWS-owned bucket through pre-signed URLs (ECR's principal, not ours).
            statements.append(
                iam.PolicyStatement(
                    sid="EcrImageLayers",
                    principals=[iam.AnyPrincipal()],
                    actions=["s3:GetObject"],
                    resources=[f"arn:{partition}:s3:::prod-{self.region_name}-starport-layer-bucket/*"],
                )
            )
        return statements

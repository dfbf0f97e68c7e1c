"""Model capacity of one cell (one region): SageMaker escrow endpoints, Bedrock application inference profiles,
opt-in Provisioned Throughput, and the router's invoke policy.

What the stack holds
--------------------
- **Escrow endpoints** (`EscrowModel`, one per SageMaker model offered in the region): a model with network
  isolation on and a VPC config in the cell's isolated subnets (model security group); an endpoint config with the
  model's own customer-managed key on the volume, `min_instances` >= 2 (spread by SageMaker over the subnets' zones)
  and no data capture (zero knowledge); an execution role that reads only its artifact folder and decrypts only
  with its own key; the artifact bucket (that key, TLS only, versioned, public access blocked, access logs) whose
  policy lets no principal but that role read objects; Application Auto Scaling with target tracking on invocations
  per instance plus the scheduled actions of the config, so capacity is warm before known peaks.
- **Application inference profiles**, one per (feature, Bedrock model) served on demand in the region, copying the
  model's system (cross-region) inference profile or its foundation model, tagged feature / model / cost-center.
- **Provisioned Throughput**, only for `provisioned.create` blocks (a paid commitment opted into twice, see
  stacks/platform.py): a custom resource (Provider framework, is-complete polling until InService) whose handler runs
  in the isolated subnets and reaches Bedrock's control plane through an interface endpoint this stack adds.
  Units and term are in the resource's Metadata and in the stack's Outputs.
- **The router's invoke policy** (`router_invoke_policy`, `<platform>-router-invoke-<region>`): every ARN that
  `targets.router_grants` names for the region's router (failover regions included; the same function feeds the
  network stacks' endpoint policies) plus this region's deploy-time ARNs (application inference profiles, purchased
  PT). Deploy-time ARNs of *other* regions cannot be named here without a cycle (cells fail over to each other), so
  each cell also creates `<platform>-router-invoke-<router region>-in-<region>` naming its own deploy-time ARNs for
  every other region's router (`failover_invoke_policies`); `router_invoke_policy_names` lists what a router
  attaches. Names are deterministic, so the router stack attaches them without cross-region references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import custom_resources as cr
from constructs import Construct

from spillway.backends.workload_identity import JWT_LIFETIME_S, SIGNING_ALGORITHM
from stacks.cell import CellStack
from stacks.constructs import EncryptedLogGroup, PrivateInterfaceEndpoint
from stacks.constructs.guardrail import PlatformGuardrail
from stacks.constructs.key_policy import ServiceUse, restricted_key
from stacks.constructs.provider_secret import ProviderSecret
from stacks.eni import ENI_ACTIONS, eni_guard
from stacks.naming import (
    access_logs_bucket_name,
    application_profile_name,
    artifact_bucket_name,
    endpoint_name,
    partition_of,
    pt_handler_name,
    router_policy_name,
)
from stacks.network import (
    APPLY_GUARDRAIL,
    BEDROCK_INVOKE_ACTIONS,
    GET_WEB_IDENTITY_TOKEN,
    PLATFORM_TAG,
    SAGEMAKER_INVOKE_ACTIONS,
    web_identity_audiences,
)
from stacks.platform import (
    EscrowEndpoint,
    Model,
    Platform,
    ProvisionedPurchase,
)
from stacks.targets import providers_reached_from, router_grants

if TYPE_CHECKING:
    from stacks.network import NetworkStack

PT_HANDLER_ASSET = Path(__file__).resolve().parents[1] / "lambdas" / "provisioned_throughput"
PT_METADATA = "Spillway::ProvisionedThroughput"
VARIANT = "AllTraffic"
# Object writes and deletions of an artifact bucket: only platform.artifact_publishers may make them.
ARTIFACT_WRITE_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObject",
    "s3:PutObjectAcl",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionAcl",
    "s3:RestoreObject",
)
# The only tag keys a purchase may carry (the custom resource's Tags below): aws:TagKeys is fixed to them.
PT_TAG_KEYS = ("cost-center", PLATFORM_TAG, "spillway:model", "spillway:provisioned-name")
PT_CONTROL_ACTIONS = (
    "bedrock:CreateProvisionedModelThroughput",
    "bedrock:GetProvisionedModelThroughput",
    "bedrock:DeleteProvisionedModelThroughput",
    "bedrock:TagResource",
)


# --- names and plans (pure: no construct, shared with tests) -------------------------------------------------------


def profile_pairs(platform: Platform, region: str) -> tuple[tuple[str, str], ...]:
    """(feature, model) pairs that get an application inference profile in `region`: the region serves the feature
    and the Bedrock model of its hierarchy is offered on demand there."""
    pairs = []
    for feature in sorted(platform.features):
        spec = platform.features[feature]
        if region not in spec.regions:
            continue
        for model in spec.models:
            offer = platform.models[model].regions.get(region)
            if platform.models[model].kind == "bedrock" and offer is not None and offer.on_demand:
                pairs.append((feature, model))
    return tuple(pairs)


def profile_source_arn(platform: Platform, model: Model, region: str) -> str:
    """What an application inference profile copies: the system inference profile, or the foundation model."""
    partition = partition_of(region)
    if model.inference_profile is not None:
        return f"arn:{partition}:bedrock:{region}:{platform.account}:inference-profile/{model.inference_profile.id}"
    return f"arn:{partition}:bedrock:{region}::foundation-model/{model.model_id}"


def purchases_in(platform: Platform, region: str) -> dict[str, ProvisionedPurchase]:
    """Provisioned Throughput the stack of `region` buys, by model."""
    return {
        name: offer.purchase
        for name, model in sorted(platform.models.items())
        if (offer := model.regions.get(region)) is not None and offer.purchase is not None
    }


def router_regions_using(platform: Platform, region: str) -> tuple[str, ...]:
    """Regions whose router may use targets located in `region` (their features list it), sorted."""
    return tuple(r for r in platform.region_names if any(region in f.regions for f in platform.features_served_in(r)))


def router_invoke_policy_names(platform: Platform, router_region: str) -> tuple[str, ...]:
    """Every managed policy the router of `router_region` attaches: its own, and one per other region holding
    deploy-time ARNs (application inference profiles, purchased PT) its features may use."""
    names = [router_policy_name(platform, router_region)]
    for located in platform.region_names:
        if located != router_region and any(_deploy_time_needs(platform, router_region, located)):
            names.append(router_policy_name(platform, router_region, located))
    return tuple(names)


def _deploy_time_needs(platform: Platform, router_region: str, located: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(profile pairs, purchased models) located in `located` that the router of `router_region` may invoke."""
    served = {f.name for f in platform.features_served_in(router_region)}
    pairs = [pair for pair in profile_pairs(platform, located) if pair[0] in served]
    used_models = {m for f in served for m in platform.features[f].models if located in platform.features[f].regions}
    bought = [m for m in purchases_in(platform, located) if m in used_models]
    return (pairs, bought) if pairs or bought else ([], [])


# --- constructs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cell:
    platform: Platform
    region: str
    network: NetworkStack


class EscrowModel(Construct):
    """One SageMaker escrow model in one cell: key, artifact bucket, role, model, endpoint config, endpoint,
    auto scaling."""

    def __init__(
        self, scope: Construct, construct_id: str, *, cell: _Cell, model: str, spec: EscrowEndpoint,
        access_logs: s3.IBucket,
    ) -> None:  # fmt: skip
        super().__init__(scope, construct_id)
        platform, region, network = cell.platform, cell.region, cell.network
        stack = cdk.Stack.of(self)
        self.endpoint_name = endpoint_name(platform, model)

        bucket_name = artifact_bucket_name(platform.name, model, platform.account, region)
        self.key = restricted_key(
            self,
            "Key",
            description=f"{platform.name} {model} escrow model in {region}: artifacts and endpoint volumes",
            uses=[
                # Artifacts (bucket key on: S3 sets the bucket's ARN as the context), endpoint volumes.
                ServiceUse("s3", {"aws:s3:arn": f"arn:{stack.partition}:s3:::{bucket_name}"}),
                ServiceUse("sagemaker"),
                ServiceUse("ec2"),
            ],
        )
        self.bucket = s3.Bucket(
            self,
            "Artifacts",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix=f"{model}/",
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        if self.bucket.bucket_name != spec.artifact_bucket and not cdk.Token.is_unresolved(self.bucket.bucket_name):
            raise AssertionError(f"{model}: artifact bucket {self.bucket.bucket_name} != {spec.artifact_bucket}")

        self.role = iam.Role(
            self,
            "ExecutionRole",
            description=f"SageMaker execution role of the {model} escrow endpoint in {region}",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": platform.account}}
            ),
        )
        prefix_arn = self.bucket.arn_for_objects(f"{spec.artifact_prefix}*")
        vpc_arn = f"arn:{stack.partition}:ec2:{region}:{platform.account}:vpc/{network.vpc.vpc_id}"
        repository = spec.image_uri.split("/", 1)[1].split(":", 1)[0].split("@", 1)[0]
        registry = spec.image_uri.split(".", 1)[0]
        self.log_group = EncryptedLogGroup(
            self,
            "EndpointLogs",
            retention_days=platform.log_retention_days,
            key=network.log_key,
            log_group_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
        ).log_group
        self.policy = iam.ManagedPolicy(
            self,
            "ExecutionPolicy",
            description=f"{model} escrow endpoint: its artifact folder, its key, its image, its VPC, its log group",
            statements=[
                iam.PolicyStatement(sid="ReadOwnArtifactFolder", actions=["s3:GetObject"], resources=[prefix_arn]),
                iam.PolicyStatement(
                    sid="DecryptWithOwnKey",
                    actions=["kms:Decrypt", "kms:DescribeKey"],
                    resources=[self.key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="VolumeGrantOnOwnKey",
                    actions=["kms:CreateGrant"],
                    resources=[self.key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                ),
                iam.PolicyStatement(
                    sid="PullOwnImage",
                    actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    resources=[f"arn:{stack.partition}:ecr:{region}:{registry}:repository/{repository}"],
                ),
                iam.PolicyStatement(sid="EcrToken", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
                iam.PolicyStatement(
                    sid="DescribeVpc",
                    actions=[
                        "ec2:DescribeDhcpOptions",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSecurityGroups",
                        "ec2:DescribeSubnets",
                        "ec2:DescribeVpcs",
                    ],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="NetworkInterfacesInCellVpcOnly",
                    # Every resource these actions authorize (network interface, subnet, security group) carries
                    # ec2:Vpc, so the condition is plain ArnEquals: a request outside the cell's VPC never matches.
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:CreateNetworkInterfacePermission",
                        "ec2:DeleteNetworkInterface",
                    ],
                    resources=["*"],
                    conditions={"ArnEquals": {"ec2:Vpc": vpc_arn}},
                ),
                iam.PolicyStatement(
                    sid="ReleaseNetworkInterfacePermissions",
                    # The request names only a permission id: IAM offers no resource and no ec2:Vpc key to scope it.
                    # It can only withdraw a permission; it grants nothing.
                    actions=["ec2:DeleteNetworkInterfacePermission"],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="OwnLogGroup",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    # The group's Arn attribute already ends in ":*": it covers the group and all its streams.
                    resources=[self.log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="EndpointMetrics",
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
                ),
            ],
        )
        self.role.add_managed_policy(self.policy)
        # Objects are read by the execution role and no one else; TLS only comes from enforce_ssl.
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyTheExecutionRoleReadsArtifacts",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[self.bucket.arn_for_objects("*")],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": self.role.role_arn}},
            )
        )
        # Nobody but the configured publishers (platform.artifact_publishers) writes or removes a model: anyone else
        # IAM allows would otherwise be able to replace what the endpoint serves.
        publishers = list(platform.artifact_publishers)
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyPublishersWriteArtifacts",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=list(ARTIFACT_WRITE_ACTIONS),
                resources=[self.bucket.arn_for_objects("*")],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": publishers}} if publishers else None,
            )
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="ExecutionRoleReadsItsFolder",
                principals=[iam.ArnPrincipal(self.role.role_arn)],
                actions=["s3:GetObject"],
                resources=[prefix_arn],
            )
        )

        subnet_ids = network.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, one_per_az=True).subnet_ids
        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            enable_network_isolation=True,
            vpc_config=sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=[network.model_security_group.security_group_id], subnets=subnet_ids
            ),
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=spec.image_uri, model_data_url=spec.model_data_url, mode="SingleModel"
            ),
        )
        self.model.node.add_dependency(self.policy, self.role, self.bucket)
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            kms_key_id=self.key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=self.model.attr_model_name,
                    initial_instance_count=spec.min_instances,
                    instance_type=spec.instance_type,
                    initial_variant_weight=1.0,
                )
            ],
            # No data_capture_config: requests and responses are never written anywhere (zero knowledge).
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
        )
        self.endpoint.node.add_dependency(self.log_group)

        self.scaling = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=spec.min_instances,
            max_capacity=spec.max_instances,
            # Application Auto Scaling acts for SageMaker through its service-linked role (created on first use);
            # without this CDK would add a role of its own that nothing assumes.
            role=iam.Role.from_role_arn(
                self,
                "ScalingServiceLinkedRole",
                f"arn:{stack.partition}:iam::{platform.account}:role/aws-service-role/"
                "sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                mutable=False,
            ),
        )
        self.scaling.node.add_dependency(self.endpoint)
        self.scaling.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=spec.invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_out_cooldown=cdk.Duration.minutes(2),
            scale_in_cooldown=cdk.Duration.minutes(10),
        )
        for action in spec.schedule:
            self.scaling.scale_on_schedule(
                action.name,
                schedule=appscaling.Schedule.expression(action.expression),
                min_capacity=action.min_instances,
                max_capacity=action.max_instances,
                time_zone=cdk.TimeZone.of(action.timezone),
            )


class ProvisionedThroughputs(Construct):
    """The Provisioned Throughput purchases of one cell: one provider (handler in the isolated subnets, reaching
    Bedrock's control plane through its own interface endpoint), one custom resource per purchase."""

    def __init__(
        self, scope: Construct, construct_id: str, *, cell: _Cell, purchases: Mapping[str, ProvisionedPurchase]
    ) -> None:
        super().__init__(scope, construct_id)
        platform, region, network = cell.platform, cell.region, cell.network
        stack = cdk.Stack.of(self)
        partition = stack.partition
        models = {name: platform.models[name].model_id for name in purchases}
        served = sorted(f"arn:{partition}:bedrock:{region}::foundation-model/{mid}" for mid in models.values())
        provisioned = f"arn:{partition}:bedrock:{region}:{platform.account}:provisioned-model/*"
        names = sorted(p.name for p in purchases.values())

        self.role = iam.Role(
            self,
            "HandlerRole",
            description=f"{platform.name} Provisioned Throughput handler in {region}",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        self.log_group = EncryptedLogGroup(
            self, "HandlerLogs", retention_days=platform.log_retention_days, key=network.log_key
        ).log_group
        name_condition = {"StringEquals": {"aws:RequestTag/spillway:provisioned-name": names}}
        fixed_tag_keys = {"ForAllValues:StringEquals": {"aws:TagKeys": list(PT_TAG_KEYS)}}
        # The handlers' names are fixed so the role's policy can name their ARNs without referring to them (a cycle).
        handler_names = {entry: pt_handler_name(platform, region, entry) for entry in ("on_event", "is_complete")}
        handler_arns = {
            entry: f"arn:{partition}:lambda:{region}:{platform.account}:function:{name}"
            for entry, name in handler_names.items()
        }
        self.policy = iam.ManagedPolicy(
            self,
            "HandlerPolicy",
            description="Buy, watch and release only this cell's configured Provisioned Throughput",
            statements=[
                iam.PolicyStatement(
                    sid="CreateConfiguredPurchases",
                    actions=["bedrock:CreateProvisionedModelThroughput"],
                    resources=[*served, provisioned],
                    conditions={**name_condition, **fixed_tag_keys},
                ),
                iam.PolicyStatement(
                    # Re-tagging only what already carries one of this cell's names, with the fixed tag keys: the role
                    # cannot tag someone else's PT into its reach (Get and Delete require the same tag).
                    sid="RetagOwnPurchases",
                    actions=["bedrock:TagResource"],
                    resources=[provisioned],
                    conditions={
                        "StringEquals": {
                            "aws:RequestTag/spillway:provisioned-name": names,
                            "aws:ResourceTag/spillway:provisioned-name": names,
                        },
                        **fixed_tag_keys,
                    },
                ),
                iam.PolicyStatement(
                    sid="WatchAndReleaseOwnPurchases",
                    actions=["bedrock:GetProvisionedModelThroughput", "bedrock:DeleteProvisionedModelThroughput"],
                    resources=[provisioned],
                    conditions={"StringEquals": {"aws:ResourceTag/spillway:provisioned-name": names}},
                ),
                iam.PolicyStatement(
                    sid="OwnLogGroup",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    # The group's Arn attribute already ends in ":*": it covers the group and all its streams.
                    resources=[self.log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="VpcNetworkInterfaces",  # what Lambda needs to attach the handlers to the isolated subnets
                    actions=[*ENI_ACTIONS, "ec2:DescribeNetworkInterfaces"],
                    resources=["*"],
                ),
                eni_guard(*handler_arns.values()),
            ],
        )
        self.role.add_managed_policy(self.policy)

        # Bedrock's control plane from the isolated subnets: an interface endpoint for the model security group.
        self.control_endpoint = PrivateInterfaceEndpoint(
            self,
            "BedrockControlEndpoint",
            vpc=network.vpc,
            service=ec2.InterfaceVpcEndpointAwsService.BEDROCK,
            subnets=network.isolated_subnets,
            policy=[
                iam.PolicyStatement(
                    sid="ProvisionedThroughputHandlerOnly",
                    principals=[iam.AnyPrincipal()],
                    actions=list(PT_CONTROL_ACTIONS),
                    resources=[*served, provisioned],
                    conditions={"ArnEquals": {"aws:PrincipalArn": self.role.role_arn}},
                )
            ],
            description="bedrock control-plane endpoint: HTTPS from the model security group (PT handler) only",
        )
        self.control_endpoint.security_group.add_ingress_rule(
            ec2.Peer.security_group_id(network.model_security_group.security_group_id),
            ec2.Port.tcp(443),
            "HTTPS from the model security group",
        )
        # And out of the model group to it: a rule of this stack on the network's group (no reference back).
        ec2.CfnSecurityGroupEgress(
            self,
            "ModelGroupToBedrockControl",
            group_id=network.model_security_group.security_group_id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            destination_security_group_id=self.control_endpoint.security_group.security_group_id,
            description="HTTPS to the bedrock control-plane endpoint (Provisioned Throughput handler)",
        )

        def handler(construct_id: str, entry: str, timeout: int) -> lambda_.Function:
            function = lambda_.Function(
                self,
                construct_id,
                function_name=handler_names[entry],
                description=f"Provisioned Throughput {entry} (CloudFormation custom resource)",
                runtime=lambda_.Runtime.PYTHON_3_13,
                architecture=lambda_.Architecture.ARM_64,
                code=lambda_.Code.from_asset(str(PT_HANDLER_ASSET), exclude=["__pycache__", "*.pyc"]),
                handler=f"handler.{entry}",
                role=self.role,
                timeout=cdk.Duration.seconds(timeout),
                memory_size=256,
                reserved_concurrent_executions=2,
                vpc=network.vpc,
                vpc_subnets=network.isolated_subnets,
                security_groups=[network.model_security_group],
                log_group=self.log_group,
            )
            function.node.add_dependency(self.policy, self.control_endpoint)
            return function

        self.on_event = handler("OnEvent", "on_event", 60)
        self.is_complete = handler("IsComplete", "is_complete", 30)
        self.framework_logs = EncryptedLogGroup(
            self, "FrameworkLogs", retention_days=platform.log_retention_days, key=network.log_key
        ).log_group
        # The Provider framework's functions' environment and the waiter's executions: a key of their own, used only
        # through Lambda and Step Functions (and by CloudWatch Logs delivery for the waiter's logs).
        own, account = f"arn:{partition}", platform.account
        self.framework_key = restricted_key(
            self,
            "FrameworkKey",
            description=f"{platform.name} Provisioned Throughput provider framework in {region}: environment, waiter",
            uses=[
                ServiceUse("lambda", {"aws:lambda:FunctionArn": f"{own}:lambda:{region}:{account}:function:*"}),
                ServiceUse("states", {"aws:states:stateMachineArn": f"{own}:states:{region}:{account}:stateMachine:*"}),
            ],
            service_statements=[
                iam.PolicyStatement(
                    sid="WaiterLogDelivery",
                    principals=[iam.ServicePrincipal("delivery.logs.amazonaws.com")],
                    actions=["kms:Decrypt"],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": platform.account}},
                )
            ],
        )
        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.on_event,
            is_complete_handler=self.is_complete,
            query_interval=cdk.Duration.minutes(1),
            total_timeout=cdk.Duration.hours(2),
            log_group=self.framework_logs,
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(
                destination=self.framework_logs, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
            provider_function_env_encryption=self.framework_key,
        )
        _waiter_encryption(self.provider, self.framework_key)
        _framework_roles(self.provider, self.framework_logs, platform.account)

        self.resources: dict[str, cdk.CustomResource] = {}
        self.arns: dict[str, str] = {}
        for model, purchase in sorted(purchases.items()):
            model_id = models[model]
            resource = cdk.CustomResource(
                self,
                f"Pt{_camel(model)}",
                service_token=self.provider.service_token,
                resource_type="Custom::BedrockProvisionedThroughput",
                removal_policy=cdk.RemovalPolicy.DESTROY,  # Delete runs the handler: it keeps a committed PT
                properties={
                    "ModelId": f"arn:{partition}:bedrock:{region}::foundation-model/{model_id}",
                    "ModelUnits": str(purchase.model_units),
                    "CommitmentDuration": purchase.commitment_duration or "",
                    "ProvisionedModelName": purchase.name,
                    "Tags": {
                        "spillway:provisioned-name": purchase.name,
                        "spillway:model": model,
                        "cost-center": platform.cost_center,
                        # The bedrock-runtime endpoint allows provisioned-model/* only with this tag (network.py).
                        PLATFORM_TAG: platform.name,
                    },
                },
            )
            facts = {
                "model": model,
                "modelId": model_id,
                "region": region,
                "modelUnits": purchase.model_units,
                "commitment": purchase.commitment,
                "provisionedModelName": purchase.name,
                "note": "Paid commitment, billed per model unit per hour for the whole term; a committed PT is "
                "kept when this resource is deleted.",
            }
            child = resource.node.default_child
            assert isinstance(child, cdk.CfnResource)
            child.add_metadata(PT_METADATA, facts)
            arn = resource.get_att_string("ProvisionedModelArn")
            self.resources[model] = resource
            self.arns[model] = arn
            cdk.CfnOutput(
                self, f"{_camel(model)}Arn", value=arn, description=f"Provisioned Throughput ARN of {model} in {region}"
            )
            cdk.CfnOutput(
                self, f"{_camel(model)}ModelUnits", value=str(purchase.model_units),
                description=f"Provisioned Throughput model units bought for {model} in {region} (paid)",
            )  # fmt: skip
            cdk.CfnOutput(
                self, f"{_camel(model)}Commitment", value=purchase.commitment,
                description=f"Provisioned Throughput commitment term of {model} in {region}",
            )  # fmt: skip


def _waiter_encryption(provider: cr.Provider, key: kms.IKey) -> None:
    """The waiter state machine (an L1 inside CDK's Provider) encrypts its executions with `key`; its role may use
    the key through Step Functions only."""
    waiter = provider.node.find_child("waiter-state-machine")
    machine = waiter.node.find_child("Resource")
    assert isinstance(machine, cdk.CfnResource)
    machine.add_property_override(
        "EncryptionConfiguration",
        {"Type": "CUSTOMER_MANAGED_KMS_KEY", "KmsKeyId": key.key_arn, "KmsDataKeyReusePeriodSeconds": 300},
    )
    role = waiter.node.find_child("Role")
    assert isinstance(role, iam.Role)
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions={"StringLike": {"kms:ViaService": "states.*.amazonaws.com"}},
        )
    )


def _framework_roles(provider: cr.Provider, log_group: logs.ILogGroup, account: str) -> None:
    """CDK's Provider roles, narrowed: the framework functions write their own CMK log group only (instead of
    AWSLambdaBasicExecutionRole, which allows any group), and only Step Functions of this account, for a state machine
    of this account, may assume the waiter's role."""
    for name in ("framework-onEvent", "framework-isComplete", "framework-onTimeout"):
        function = provider.node.find_child(name)
        assert isinstance(function, lambda_.Function)
        role = function.role
        assert isinstance(role, iam.Role)
        resource = role.node.default_child
        assert isinstance(resource, iam.CfnRole)
        resource.managed_policy_arns = []  # (the property itself, so cdk-nag sees it too)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
            )
        )
    waiter_role = provider.node.find_child("waiter-state-machine").node.find_child("Role")
    trust = waiter_role.node.default_child
    assert isinstance(trust, iam.CfnRole)
    stack = cdk.Stack.of(provider)
    trust.add_property_override(
        "AssumeRolePolicyDocument.Statement.0.Condition",
        {
            "StringEquals": {"aws:SourceAccount": account},
            "ArnLike": {"aws:SourceArn": f"arn:{stack.partition}:states:{stack.region}:{account}:stateMachine:*"},
        },
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


class ModelsStack(CellStack):
    """One cell's model capacity. See the module docstring."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, network: NetworkStack,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(
            scope,
            construct_id,
            platform=platform,
            region=region,
            kind="models",
            description=f"{platform.name} model capacity in {region} (escrow endpoints, Bedrock)",
            **kwargs,
        )
        self.network = network
        self.add_stack_dependency(network)
        cell = _Cell(platform, region, network)

        # Escrow endpoints.
        escrow = {
            name: offer.endpoint
            for name, model in sorted(platform.models.items())
            if (offer := model.regions.get(region)) is not None and offer.endpoint is not None
        }
        self.access_logs: s3.Bucket | None = None
        self.escrow: dict[str, EscrowModel] = {}
        if escrow:
            self.access_logs = self._access_logs_bucket()
            for name, spec in escrow.items():
                self.escrow[name] = EscrowModel(
                    self, f"Escrow{_camel(name)}", cell=cell, model=name, spec=spec, access_logs=self.access_logs
                )

        # Application inference profiles: spend per feature and model.
        self.application_profiles: dict[tuple[str, str], bedrock.CfnApplicationInferenceProfile] = {}
        for feature, model in profile_pairs(platform, region):
            self.application_profiles[(feature, model)] = bedrock.CfnApplicationInferenceProfile(
                self,
                f"Profile{_camel(feature)}{_camel(model)}",
                inference_profile_name=application_profile_name(platform, feature, model),
                description=f"{feature} on {model} in {region}: cost allocation per feature",
                model_source=bedrock.CfnApplicationInferenceProfile.InferenceProfileModelSourceProperty(
                    copy_from=profile_source_arn(platform, platform.models[model], region)
                ),
                tags=[
                    cdk.CfnTag(key="cost-center", value=platform.cost_center),
                    cdk.CfnTag(key="spillway:feature", value=feature),
                    cdk.CfnTag(key="spillway:model", value=model),
                    # The bedrock-runtime endpoint allows application-inference-profile/* only with this tag.
                    cdk.CfnTag(key=PLATFORM_TAG, value=platform.name),
                ],
            )

        # Provisioned Throughput: only what the config buys, explicitly.
        purchases = purchases_in(platform, region)
        self.provisioned: ProvisionedThroughputs | None = (
            ProvisionedThroughputs(self, "ProvisionedThroughput", cell=cell, purchases=purchases) if purchases else None
        )

        # Guardrails of the features homed here (stacks/constructs/guardrail.py).
        self.guardrails: dict[str, PlatformGuardrail] = {
            name: PlatformGuardrail(self, f"Guardrail{_camel(name)}", platform=platform, spec=platform.guardrails[name])
            for name in platform.guardrails_in(region)
        }

        # Keys of the other clouds' providers this cell's router reaches (stacks/constructs/provider_secret.py).
        self.provider_secrets: dict[str, ProviderSecret] = {
            provider.name: ProviderSecret(
                self,
                f"ProviderSecret{_camel(provider.name)}",
                platform=platform.name,
                account=platform.account,
                provider=provider.name,
                api_key=provider.api_key,
            )
            for provider in providers_reached_from(platform, region)
            if provider.api_key is not None
        }

        # The router's invoke policies.
        self.router_invoke_policy = self._invoke_policy(region)
        self.failover_invoke_policies: dict[str, iam.ManagedPolicy] = {
            other: self._invoke_policy(other)
            for other in router_regions_using(platform, region)
            if other != region and any(_deploy_time_needs(platform, other, region))
        }

    def deploy_time_arns(self, router_region: str) -> list[str]:
        """Tokens of this cell's application inference profiles and purchased PT that `router_region`'s router uses."""
        pairs, bought = _deploy_time_needs(self.platform, router_region, self.region_name)
        arns = [self.application_profiles[pair].attr_inference_profile_arn for pair in pairs]
        if self.provisioned is not None:
            arns.extend(self.provisioned.arns[model] for model in bought)
        return arns

    def _invoke_policy(self, router_region: str) -> iam.ManagedPolicy:
        own = router_region == self.region_name
        name = router_policy_name(self.platform, router_region, self.region_name)
        statements: list[iam.PolicyStatement] = []
        bedrock_arns: Sequence[str] = self.deploy_time_arns(router_region)
        sagemaker_arns: Sequence[str] = ()
        if own:
            grants = router_grants(self.platform, router_region)
            bedrock_arns = [*grants.bedrock_runtime, *bedrock_arns]
            sagemaker_arns = grants.sagemaker
        if bedrock_arns:
            statements.append(
                iam.PolicyStatement(
                    sid="InvokeBedrockTargets", actions=list(BEDROCK_INVOKE_ACTIONS), resources=list(bedrock_arns)
                )
            )
        if own and self.guardrails:
            # Converse with a guardrailConfig needs ApplyGuardrail on it and its key; exact ARNs (tokens) only.
            statements.append(
                iam.PolicyStatement(
                    sid="ApplyFeatureGuardrails",
                    actions=[APPLY_GUARDRAIL],
                    resources=[g.guardrail_arn for _, g in sorted(self.guardrails.items())],
                )
            )
            statements.append(
                iam.PolicyStatement(
                    sid="DecryptFeatureGuardrails",
                    actions=["kms:Decrypt"],
                    resources=[g.key_arn for _, g in sorted(self.guardrails.items())],
                )
            )
        if sagemaker_arns:
            statements.append(
                iam.PolicyStatement(
                    sid="InvokeEscrowEndpoints", actions=list(SAGEMAKER_INVOKE_ACTIONS), resources=list(sagemaker_arns)
                )
            )
        if own:
            statements.extend(self._other_cloud_statements())
        if not statements:
            # The router serves no feature (an empty policy cannot be deployed): say so with a deny, never a "*" grant.
            statements.append(
                iam.PolicyStatement(
                    sid="NoTargets",
                    effect=iam.Effect.DENY,
                    actions=[*BEDROCK_INVOKE_ACTIONS, *SAGEMAKER_INVOKE_ACTIONS],
                    resources=["*"],
                )
            )
        where = "every region it may use" if own else f"{self.region_name} (deploy-time ARNs)"
        return iam.ManagedPolicy(
            self,
            "RouterInvoke" if own else f"RouterInvoke{_camel(router_region)}",
            managed_policy_name=name,
            description=f"The {router_region} router may invoke exactly its targets in {where}",
            statements=statements,
        )

    def _other_cloud_statements(self) -> list[iam.PolicyStatement]:
        """What the router needs for its providers in other clouds: their secrets (exact ARNs) and keys (through
        Secrets Manager only), and web identity tokens for exactly its workload identity providers' audiences."""
        statements: list[iam.PolicyStatement] = []
        secrets = sorted(self.provider_secrets.items())
        if secrets:
            statements.append(
                iam.PolicyStatement(
                    sid="ReadProviderKeys",
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[secret.secret_arn for _, secret in secrets],
                )
            )
            statements.append(
                iam.PolicyStatement(
                    sid="DecryptProviderKeys",
                    actions=["kms:Decrypt"],
                    resources=[secret.key_arn for _, secret in secrets],
                    conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{self.region_name}.amazonaws.com"}},
                )
            )
        audiences = web_identity_audiences(self.platform, self.region_name)
        if audiences:
            statements.append(
                iam.PolicyStatement(
                    sid="WebIdentityTokensForProviders",
                    actions=[GET_WEB_IDENTITY_TOKEN],
                    resources=["*"],  # the action has no resource: the conditions bound what may be asked for
                    conditions={
                        "ForAllValues:StringEquals": {"sts:IdentityTokenAudience": audiences},
                        "NumericLessThanEquals": {"sts:DurationSeconds": JWT_LIFETIME_S},
                        "StringEquals": {"sts:SigningAlgorithm": SIGNING_ALGORITHM},
                    },
                )
            )
        return statements

    def _access_logs_bucket(self) -> s3.Bucket:
        # S3 server access logs can only be delivered to SSE-S3 buckets; this one holds request metadata, no data.
        return s3.Bucket(
            self,
            "ArtifactAccessLogs",
            bucket_name=access_logs_bucket_name(self.platform.name, self.platform.account, self.region_name),
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(self.platform.log_retention_days),
                    noncurrent_version_expiration=cdk.Duration.days(30),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

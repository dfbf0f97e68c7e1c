"""The router Lambda with its role and layers.

Python 3.13 on arm64, started through the router's own Runtime API loop (lambdas/router/runtime_loop.py, run by its
`AWS_LAMBDA_EXEC_WRAPPER` script), which answers the buffered routes as the managed runtime would and the streaming
route in Lambda's response-streaming mode; in the cell's isolated subnets with the network's router security group,
reserved concurrency, its environment encrypted with the cell's router key, X-Ray active, logs to a CMK-encrypted
group. Code: the asset stacks/packaging.py stages (lambdas/router plus that cell's routing.json); dependencies: the
layer `make` builds; the AWS AppConfig Agent extension layer from the config. Its role attaches customer-managed
policies only: the models stacks' invoke policies (the only invoke permissions) and `RouterRuntime` (its own table,
configuration, logs, key, traces); the function gets the role through `without_policy_updates()`, so CDK's grants
never add an inline policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_signer as signer
from constructs import Construct
from runtime_loop import (
    STREAM_HANDLER_VAR,
    STREAM_ROUTES_VAR,
    WRAPPER,
    WRAPPER_VAR,
    render_routes,
)

from stacks.constructs.concern import Concern
from stacks.constructs.encrypted_log_group import EncryptedLogGroup
from stacks.constructs.monitoring import METRICS_NAMESPACE, METRICS_SERVICE
from stacks.constructs.router_api import STREAMED_RESOURCES
from stacks.constructs.routing_config import APPCONFIG_FLAGS_PROFILE, APPCONFIG_PROFILE, RoutingConfig
from stacks.eni import ENI_ACTIONS, eni_guard
from stacks.naming import function_arn, function_name
from stacks.packaging import ASSET_EXCLUDES
from stacks.platform import Platform, PlatformConfigError

HANDLER = "handler.lambda_handler"  # also the managed runtime's, should the wrapper ever be taken away
STREAM_HANDLER = "handler.lambda_stream_handler"
LAMBDA_MAX_TIMEOUT_S = 15 * 60  # a function's longest timeout (Lambda quotas); a stream cannot outlive it either
TASK_ROOT = "/var/task"  # where Lambda unpacks the function's code (LAMBDA_TASK_ROOT)
RUNTIME = lambda_.Runtime.PYTHON_3_13  # the interpreter the router's tests run on (TOOLCHAIN.md)


@dataclass(frozen=True, slots=True)
class FunctionNetwork:
    """Where the function runs: the cell's VPC, its isolated subnets, the router security group, the logs key."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup
    log_key: kms.IKey


class RouterFunction(Concern):
    """`function`, `role`, `runtime_policy`, `log_group`, `dependencies_layer`."""

    # Whether the function answers InvokeWithResponseStream in Lambda's streaming mode: the managed Python runtime
    # cannot (it buffers what the handler returns); runtime_loop.py, which replaces its bootstrap, can. The API
    # deploys the streaming integrations only when this is true (stacks/constructs/router_api.py, STREAMED_RESOURCES).
    streams = True

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, network: FunctionNetwork,
        key: kms.IKey, invoke_policies: Sequence[iam.IManagedPolicy], failover_policy_names: Sequence[str],
        config: RoutingConfig, code_dir: Path, deps_dir: Path,
        extension_layer_arn: str, timeout_s: int, store_policies: Sequence[iam.IManagedPolicy] = (),
        store_environment: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(scope, construct_id)
        if timeout_s > LAMBDA_MAX_TIMEOUT_S:
            raise PlatformConfigError(
                platform.source,
                "features",
                f"the longest deadline served in {region} needs a {timeout_s} s function timeout with the router's "
                f"margins, over Lambda's {LAMBDA_MAX_TIMEOUT_S} s: shorten it",
            )
        self.function_name = function_name(platform, region)
        self.function_arn = function_arn(platform, region)
        self.log_group = EncryptedLogGroup(
            self,
            "FunctionLogs",
            retention_days=platform.log_retention_days,
            key=network.log_key,
            log_group_name=f"/aws/lambda/{self.function_name}",
        ).log_group
        self.role, self.runtime_policy = self._role(
            key=key, invoke_policies=invoke_policies, failover_policy_names=failover_policy_names,
            config=config,
        )  # fmt: skip
        for policy in store_policies:  # the fleet store's connect grant (stacks/constructs/fleet_store.py)
            self.role.add_managed_policy(policy)
        self.dependencies_layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(str(deps_dir), exclude=ASSET_EXCLUDES),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="Router dependencies (lambdas/router/requirements.txt at the versions the tests ran)",
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.extension_layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "AppConfigExtension", extension_layer_arn
        )
        settings = platform.router
        # Code signing: the router's code and layers are checked against this signing profile. WARN, not ENFORCE:
        # `make synth` stages unsigned assets (signing needs AWS Signer, which no local build can reach), so a
        # deployment logs unsigned code (CloudWatch metric SignatureValidationErrors) instead of refusing it. A
        # pipeline that signs (aws signer start-signing-job with this profile) switches it to ENFORCE.
        self.signing_profile = signer.SigningProfile(
            self, "SigningProfile", platform=signer.Platform.AWS_LAMBDA_SHA384_ECDSA
        )
        self.code_signing = lambda_.CodeSigningConfig(
            self,
            "CodeSigning",
            signing_profiles=[self.signing_profile],
            untrusted_artifact_on_deployment=lambda_.UntrustedArtifactOnDeployment.WARN,
            description=f"{platform.name} router in {region}: code signed by its own signing profile",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=self.function_name,
            description=f"{platform.name} router: spillover, fallback and failover for {region}",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(code_dir), exclude=ASSET_EXCLUDES),
            layers=[self.dependencies_layer, self.extension_layer],
            # The grants CDK would add (X-Ray, key, VPC) land in RouterRuntime instead of an inline DefaultPolicy.
            role=self.role.without_policy_updates(),
            memory_size=settings.memory_mb,
            timeout=cdk.Duration.seconds(timeout_s),
            reserved_concurrent_executions=settings.reserved_concurrency,
            vpc=network.vpc,
            vpc_subnets=network.subnets,
            security_groups=[network.security_group],
            environment_encryption=key,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            code_signing_config=self.code_signing,
            environment={**self._environment(config), **(store_environment or {})},
        )
        self.function.node.add_dependency(self.runtime_policy, *store_policies)

    @classmethod
    def _environment(cls, config: RoutingConfig) -> Mapping[str, str]:
        # Read by lambdas/router/handler.py (its docstring lists them); routing.json is bundled beside it.
        return {
            **cls.runtime_environment(),
            "SPILLWAY_APPCONFIG_APPLICATION": config.application_name,
            "SPILLWAY_APPCONFIG_ENVIRONMENT": config.environment_name,
            "SPILLWAY_APPCONFIG_PROFILE": APPCONFIG_PROFILE,
            "SPILLWAY_APPCONFIG_FLAGS_PROFILE": APPCONFIG_FLAGS_PROFILE,
            "POWERTOOLS_SERVICE_NAME": METRICS_SERVICE,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "AWS_APPCONFIG_EXTENSION_PREFETCH_LIST": config.prefetch,
            "AWS_APPCONFIG_EXTENSION_POLL_INTERVAL_SECONDS": "15",
        }

    @classmethod
    def runtime_environment(cls) -> Mapping[str, str]:
        """What starts the router's runtime loop instead of the managed bootstrap, and which methods it streams:
        those the API integrates with `responseTransferMode: STREAM` (lambdas/router/runtime_loop.py)."""
        if not cls.streams:
            return {}
        return {
            WRAPPER_VAR: f"{TASK_ROOT}/{WRAPPER}",
            STREAM_HANDLER_VAR: STREAM_HANDLER,
            STREAM_ROUTES_VAR: render_routes(STREAMED_RESOURCES),
        }

    def _role(
        self, *, key: kms.IKey, invoke_policies: Sequence[iam.IManagedPolicy], failover_policy_names: Sequence[str],
        config: RoutingConfig,
    ) -> tuple[iam.Role, iam.ManagedPolicy]:  # fmt: skip
        role = iam.Role(
            self,
            "FunctionRole",
            role_name=self.function_name,
            description="The router Lambda: invoke the configured targets, its fleet store, config, logs, traces",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        # The invoke permissions: the models stacks' customer-managed policies, and nothing else grants an invoke.
        for policy in invoke_policies:
            role.add_managed_policy(policy)
        for index, name in enumerate(failover_policy_names):
            role.add_managed_policy(iam.ManagedPolicy.from_managed_policy_name(self, f"FailoverInvoke{index}", name))
        runtime = iam.ManagedPolicy(
            self,
            "RouterRuntime",
            description="The router's own resources: routing configuration, logs, key, traces, ENIs",
            statements=[
                iam.PolicyStatement(
                    sid="RoutingConfiguration",
                    actions=["appconfig:GetLatestConfiguration", "appconfig:StartConfigurationSession"],
                    resources=list(config.configuration_arns),
                ),
                iam.PolicyStatement(
                    sid="OwnLogGroup",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="RouterKey",
                    # Decrypt only: the function's environment and the routing configuration. The router writes
                    # nothing under this key (its shared state is the fleet store, under the store's own key).
                    actions=["kms:Decrypt"],
                    resources=[key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="Traces",  # X-Ray has no resource-level permissions for these actions
                    actions=["xray:PutTelemetryRecords", "xray:PutTraceSegments"],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="VpcNetworkInterfaces",  # what Lambda needs to attach the function to the isolated subnets
                    actions=[*ENI_ACTIONS, "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"],
                    resources=["*"],
                ),
                eni_guard(self.function_arn),
            ],
        )
        role.add_managed_policy(runtime)
        return role, runtime

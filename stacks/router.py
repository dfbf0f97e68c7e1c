"""The router of one cell (one region): the Lambda, its private API, the shared health table, the routing config
delivered through AWS AppConfig, alarms and a dashboard.

What the stack holds
--------------------
- **The Lambda** (`function`): Python 3.13 on arm64 in the cell's isolated subnets with the network's router
  security group, reserved concurrency, its environment encrypted with the cell's router key, X-Ray active, logs
  to a CMK-encrypted group. Code: ``lambdas/router`` staged per region with that cell's rendered ``routing.json``
  (the table the router serves when AppConfig has never answered); dependencies: a layer built by ``make`` from
  ``lambdas/router/requirements.txt`` at the versions installed in ``.venv`` (no Docker); the AWS AppConfig Agent
  extension layer from the config. Its role attaches customer-managed policies only: the models' invoke
  policies (the only invoke permissions) and ``RouterRuntime`` (its own table, configuration, logs, key, traces).
- **The API** (`api`): API Gateway REST, private (through an ``execute-api`` interface endpoint this stack adds to
  the cell's VPC) or regional, per ``router.api.endpoint_type``. IAM auth on every method, a resource policy naming
  the allowed callers (and, private, the allowed VPC endpoints), request validation with a JSON model of the
  Converse body, stage throttling, one usage plan and API key per calling service, JSON access logs without bodies
  to a CMK log group, execution logs (errors only) in a CMK log group the stack creates before the stage, X-Ray,
  and a WAF web ACL (AWS managed rules and a rate-based rule) with CMK-encrypted logs.
- **The health table**: one DynamoDB global table (``<platform>-health``, the network's naming convention) shared
  by every cell. It is defined once, in the router stack of the first region (`health_table_owner`), with a
  replica in every other cell. Each replica is encrypted with its own cell's router key, named across regions by
  its deterministic alias ARN (``alias/<platform>-router-<region>``), so synthesis needs no cross-region reference;
  the owner stack therefore deploys after the other cells' router stacks (a stack dependency says so). Every cell
  backs up its own replica in an AWS Backup plan to a CMK-encrypted vault.
- **AppConfig**: an application, an environment per cell with a CloudWatch-alarm monitor (router 5xx) that rolls a
  deployment back, a hosted configuration profile with a JSON Schema validator (`routing_table_schema`, derived
  from the schema in lambdas/router/spillway/config.py), the rendered table as its version (with, per feature,
  ``invoke_ids`` naming this cell's application inference profiles and purchased PT by their deploy-time ARNs,
  `stacks.routing.with_invoke_ids`; the bundled routing.json has none), a linear deployment
  strategy (20% a minute, then a bake time) and the deployment itself.
- **Alarms** (to an encrypted SNS topic) on API 5xx, spill rate and failover rate per feature, breaker opens,
  backend throttles and Lambda throttles; a **dashboard** of the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_appconfig as appconfig
from aws_cdk import aws_backup as backup
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.cell import CellStack
from stacks.constructs import EncryptedLogGroup, PrivateInterfaceEndpoint
from stacks.models import ENI_ACTIONS, eni_guard, router_invoke_policy_names
from stacks.network import table_name
from stacks.platform import Platform, PlatformConfigError, partition_of
from stacks.routing import ROUTER_ROOT, render_routing_table, with_invoke_ids

# API Gateway's own answers (before the router runs): (type, HTTP status or None to keep the default, code, message).
# `$context.error.responseType` names the gateway's reason without quoting anything the caller sent.
GATEWAY_RESPONSES: dict[str, tuple[apigw.ResponseType, str | None, str, str]] = {
    "BadRequestBody": (
        apigw.ResponseType.BAD_REQUEST_BODY,
        "400",
        "BadRequest",
        "the body does not match the Converse request schema",
    ),
    "BadRequestParameters": (
        apigw.ResponseType.BAD_REQUEST_PARAMETERS,
        "400",
        "BadRequest",
        "a required path parameter is missing",
    ),
    "Throttled": (apigw.ResponseType.THROTTLED, "429", "TooManyRequests", "the calling service is over its rate limit"),
    "QuotaExceeded": (
        apigw.ResponseType.QUOTA_EXCEEDED,
        "429",
        "QuotaExceeded",
        "the calling service is over its daily quota",
    ),
    "IntegrationTimeout": (
        apigw.ResponseType.INTEGRATION_TIMEOUT,
        "504",
        "DeadlineExceeded",
        "the router did not answer within the integration timeout",
    ),
    "Default4xx": (
        apigw.ResponseType.DEFAULT_4_XX,
        None,
        "$context.error.responseType",
        "request refused by the gateway",
    ),
    "Default5xx": (
        apigw.ResponseType.DEFAULT_5_XX,
        None,
        "$context.error.responseType",
        "the gateway could not answer",
    ),
}

if TYPE_CHECKING:
    from stacks.models import ModelsStack
    from stacks.network import NetworkStack

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPS_DIR = REPO_ROOT / "build" / "router-deps"  # written by `make` ($(STAMPS)/router-deps)
STAGING_DIR = REPO_ROOT / "build" / "router-code"  # per-region code assets, content-addressed
HANDLER = "handler.lambda_handler"
ROUTING_FILE = "routing.json"
RUNTIME = lambda_.Runtime.PYTHON_3_13  # the interpreter the router's tests run on (TOOLCHAIN.md)
# What never ships in the function's asset: bytecode, tests, and the checked-in routing.json (replaced per cell).
CODE_EXCLUDES = ("__pycache__", "*.pyc", "*.pyo", "tests", ".pytest_cache", ".mypy_cache")
ASSET_EXCLUDES = ["**/__pycache__", "*.pyc", "tests"]

STAGE = "live"
HEALTH_PURPOSE = "health"
HEALTH_TTL_ATTRIBUTE = "expires_at"
APPCONFIG_PROFILE = "routing-table"
APPCONFIG_FLAGS_PROFILE = "flags"
METRICS_NAMESPACE = "Spillway"  # lambdas/router/spillway/telemetry.py (POWERTOOLS_METRICS_NAMESPACE)
METRICS_SERVICE = "spillway-router"  # the `service` dimension of every router metric
API_RESOURCES = (("POST", "/v1/features/{feature}/converse"), ("GET", "/v1/features"), ("GET", "/v1/health"))
INTEGRATION_MARGIN_S = 1  # API Gateway waits this much longer than the longest feature deadline
FUNCTION_MARGIN_S = 3  # and the Lambda this much longer again (telemetry flush after the answer)

# Fields of the access log: who called what, and how it went. No body, no header value, no query string.
ACCESS_LOG_FIELDS: Mapping[str, str] = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTimeEpoch",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "callerAccount": "$context.identity.accountId",
    "caller": "$context.identity.caller",
    "userArn": "$context.identity.userArn",
    "sourceIp": "$context.identity.sourceIp",
    "vpceId": "$context.identity.vpceId",
    "apiKeyId": "$context.identity.apiKeyId",
    "wafStatus": "$context.waf.status",
    "authorizeStatus": "$context.authorize.status",
    "errorType": "$context.error.responseType",
    "xrayTraceId": "$context.xrayTraceId",
}


class RouterBuildError(PlatformConfigError):
    """A build artifact the router stack needs is missing; app.py prints it like a config error."""


def health_table_owner(platform: Platform) -> str:
    """The region whose router stack defines the global health table (the others hold replicas)."""
    return platform.region_names[0]


def router_key_alias(platform: Platform, region: str) -> str:
    return f"alias/{platform.name}-router-{region}"


def router_key_alias_arn(platform: Platform, region: str) -> str:
    return f"arn:{partition_of(region)}:kms:{region}:{platform.account}:{router_key_alias(platform, region)}"


def function_name(platform: Platform, region: str) -> str:
    return f"{platform.name}-router-{region}"


def api_name(platform: Platform, region: str) -> str:
    return f"{platform.name}-router-{region}"


def health_table_arn(platform: Platform, region: str) -> str:
    name = table_name(platform, HEALTH_PURPOSE)
    return f"arn:{partition_of(region)}:dynamodb:{region}:{platform.account}:table/{name}"


def served_deadline_s(platform: Platform, region: str) -> int:
    """The longest deadline of the features the cell serves, in whole seconds (rounded up)."""
    deadlines = [f.deadline_ms for f in platform.features_served_in(region)] or [1000]
    return -(-max(deadlines) // 1000)


# --- packaging -------------------------------------------------------------------------------------------------


def dependencies_layer_dir() -> Path:
    """The layer folder `make` builds; a clear error (not a jsii traceback) when it is missing."""
    if not (DEPS_DIR / "python").is_dir():
        where = DEPS_DIR.relative_to(REPO_ROOT) if DEPS_DIR.is_relative_to(REPO_ROOT) else DEPS_DIR
        raise RouterBuildError(
            str(where),
            "",
            "the router's dependency layer is missing: run `make synth` (or `make .stamps/router-deps`), which "
            "installs lambdas/router/requirements.txt for Lambda (arm64, Python 3.13) without Docker",
        )
    return DEPS_DIR


def _code_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in {"__pycache__", "tests", ".pytest_cache", ".mypy_cache"} for part in relative.parts):
            continue
        if path.suffix in {".pyc", ".pyo"} or str(relative) == ROUTING_FILE or not path.is_file():
            continue
        files.append(path)
    return files


def stage_router_code(table: Mapping[str, Any], *, source: Path = ROUTER_ROOT, staging: Path = STAGING_DIR) -> Path:
    """The function's asset for one cell: lambdas/router without bytecode or tests, plus the cell's routing.json.

    The folder is named by a digest of its content, written to a temporary name and renamed into place, so the same
    bytes always give the same folder (and the same asset hash), and concurrent syntheses never see half a folder.
    """
    rendered = (json.dumps(table, indent=2, sort_keys=True) + "\n").encode()
    files = _code_files(source)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(ROUTING_FILE.encode() + b"\0" + rendered)
    target = staging / digest.hexdigest()[:24]
    if target.is_dir():
        return target
    staging.mkdir(parents=True, exist_ok=True)
    temporary = staging / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    for path in files:
        destination = temporary / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    (temporary / ROUTING_FILE).write_bytes(rendered)
    try:
        temporary.rename(target)
    except OSError:  # another synthesis staged the same content first
        shutil.rmtree(temporary, ignore_errors=True)
    return target


# --- the routing table's JSON Schema (AppConfig validator, draft-04) -------------------------------------------

_NAME = "^[A-Za-z0-9._:-]{1,128}$"


def routing_table_schema() -> dict[str, Any]:
    """JSON Schema (draft-04, what AppConfig validators speak) of the routing table, version 1.

    It mirrors the structure documented in lambdas/router/spillway/config.py: keys, types, enums and bounds. The
    cross-references (a feature's models and regions name existing targets) stay with the router's own loader, which
    also validates every table at synth time (stacks/routing.py) and rejects a bad one at run time (last known good).
    """
    number = {"type": "number", "minimum": 0}
    positive_int = {"type": "integer", "minimum": 1}
    names = {"type": "array", "items": {"type": "string", "pattern": _NAME}, "uniqueItems": True}
    capacity = {"type": "string", "enum": ["provisioned", "on_demand"]}
    nonempty = {"type": "string", "minLength": 1}
    breaker_keys = (
        "error_rate", "slow_rate", "window_s", "min_requests", "consecutive_failures", "latency_ms", "ttft_ms",
        "cooldown_s", "max_cooldown_s", "half_open_trickle", "ramp_steps", "ramp_successes", "capacity_cooldown_s",
    )  # fmt: skip
    breaker_props: dict[str, Any] = dict.fromkeys(breaker_keys, number)
    breaker_props["ramp_steps"] = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}}
    breaker_props["latency_ms"] = {"type": ["number", "null"], "minimum": 0}
    breaker_props["ttft_ms"] = {"type": ["number", "null"], "minimum": 0}
    target = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model", "capacity", "region", "backend"],
        "properties": {
            "model": {"type": "string", "pattern": _NAME},
            "capacity": capacity,
            "region": {"type": "string", "pattern": _NAME},
            "max_in_flight": positive_int,
            "backend": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["kind", "model_id"],
                        "properties": {"kind": {"enum": ["bedrock"]}, "model_id": {"type": "string", "minLength": 1}},
                    },
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["kind", "endpoint_name"],
                        "properties": {
                            "kind": {"enum": ["sagemaker"]},
                            "endpoint_name": {"type": "string", "minLength": 1},
                        },
                    },
                ]
            },
        },
    }
    feature = {
        "type": "object",
        "additionalProperties": False,
        "required": ["first_capacity", "models", "home_region", "deadline_ms", "attempt_timeout_ms", "max_attempts"],
        "properties": {
            "first_capacity": capacity,
            "models": {**names, "minItems": 1},
            "home_region": {"type": "string", "pattern": _NAME},
            "failover_regions": names,
            "order": {
                "type": "array",
                "items": {"enum": ["spill", "failover", "fallback"]},
                "uniqueItems": True,
            },
            "deadline_ms": {"type": "number", "minimum": 1},
            "attempt_timeout_ms": {
                "type": "object",
                "additionalProperties": False,
                "required": ["min", "max"],
                "properties": {"min": number, "max": number},
            },
            "max_attempts": positive_int,
            "fallback_on_context_overflow": {"type": "boolean"},
            "converse": {"type": "object"},  # checked in full by the router's loader at synth (stacks/routing.py)
            "breaker": {"type": "object", "additionalProperties": False, "properties": breaker_props},
            "invoke_ids": {
                "type": "object",
                "patternProperties": {"^[A-Za-z0-9._:-]+/(provisioned|on_demand)/[A-Za-z0-9._:-]+$": nonempty},
                "additionalProperties": False,
            },
        },
    }
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "Spillway routing table, version 1 (lambdas/router/spillway/config.py)",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "targets", "features"],
        "properties": {
            "version": {"enum": [1]},
            "targets": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "patternProperties": {"^[A-Za-z0-9._:-]+/(provisioned|on_demand)/[A-Za-z0-9._:-]+$": target},
            },
            "features": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "patternProperties": {"^[A-Za-z0-9._-]{1,64}$": feature},
            },
            "limits": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"max_request_bytes": positive_int},
            },
        },
    }


def flags_schema() -> dict[str, Any]:
    """JSON Schema (draft-04) of the flags profile: ``{"canary": {feature: {"model": name, "share": 0..1}}}``."""
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "canary": {
                "type": "object",
                "additionalProperties": False,
                "patternProperties": {
                    "^[A-Za-z0-9._-]{1,64}$": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["model", "share"],
                        "properties": {
                            "model": {"type": "string", "pattern": _NAME},
                            "share": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    }
                },
            }
        },
    }


def converse_request_schema() -> apigw.JsonSchema:
    """The API Gateway model of the converse body, rendered from the router's own contract (spillway.api): the
    members and their types only; the handler validates the details."""
    from spillway.api import gateway_request_schema  # noqa: PLC0415 (stacks.routing puts the router on the path)

    return _api_gateway_schema(gateway_request_schema())


def _api_gateway_schema(doc: Mapping[str, Any]) -> apigw.JsonSchema:
    """A JSON Schema (draft 4) document as CDK's JsonSchema: camelCase keys to snake_case, nested schemas too."""
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "$schema":
            kwargs["schema"] = apigw.JsonSchemaVersion.DRAFT4
        elif key == "type":
            kwargs["type"] = apigw.JsonSchemaType[value.upper()]
        elif key == "properties":
            kwargs["properties"] = {name: _api_gateway_schema(member) for name, member in value.items()}
        elif key == "items":
            kwargs["items"] = _api_gateway_schema(value)
        else:
            kwargs[re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()] = value
    return apigw.JsonSchema(**kwargs)


def _sorted_keys(value: Any) -> Any:
    """`value` with every object's keys sorted (what json.dumps(sort_keys=True) gave, for to_json_string)."""
    if isinstance(value, Mapping):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


# --- the stack -------------------------------------------------------------------------------------------------


class RouterStack(CellStack):
    """One cell's router. See the module docstring."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, network: NetworkStack,
        models: ModelsStack, **kwargs: Any,
    ) -> None:  # fmt: skip
        settings = platform.router
        layer_arn = settings.extension_layer_arn(platform.source, region)  # a config error before any construct
        deps = dependencies_layer_dir()
        super().__init__(
            scope,
            construct_id,
            platform=platform,
            region=region,
            kind="router",
            description=f"{platform.name} router in {region}: Lambda, private API, health, config",
            **kwargs,
        )
        self.network = network
        self.models = models
        self.add_stack_dependency(network)
        self.add_stack_dependency(models)
        self.function_name = function_name(platform, region)
        # Built from the name, not the function's attribute: the role's policy cannot refer to the function it serves.
        self.function_arn = f"arn:{self.partition}:lambda:{region}:{platform.account}:function:{self.function_name}"
        self.api_name = api_name(platform, region)
        self.table = render_routing_table(platform, region)  # token free: bundled with the function
        # What AppConfig hosts: the same table plus, per feature, the cell's application inference profiles and
        # purchased PT (deploy-time ARNs of this region's models stack) under invoke_ids.
        self.hosted_table = with_invoke_ids(
            platform,
            region,
            self.table,
            {pair: profile.attr_inference_profile_arn for pair, profile in models.application_profiles.items()},
            dict(models.provisioned.arns) if models.provisioned is not None else {},
        )
        self.features = tuple(sorted(self.table["features"]))
        self.targets = tuple(sorted(self.table["targets"]))

        # One key for the cell's router data: environment, table replica, backups, configuration, alarm topic.
        self.key = self._key()
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{platform.name}-router-alarms-{region}",
            display_name=f"{platform.name} router alarms ({region})",
            master_key=self.key,
            enforce_ssl=True,
        )

        # Health table (global) and its backups.
        self.health_table_name = table_name(platform, HEALTH_PURPOSE)
        self.health_table_arn = health_table_arn(platform, region)
        self.health_table: dynamodb.TableV2 | None = None
        if region == health_table_owner(platform):
            self.health_table = self._health_table()
        self.backup_plan, self.backup_selection = self._backup()

        # Alarms first: the AppConfig environment's monitor is one of them. They name the function and the API by
        # their literal names, so the role's policy (which names the AppConfig ids) does not make a cycle.
        self.alarms: dict[str, cw.Alarm] = self._alarms()

        # AppConfig.
        self.appconfig_application_name = f"{platform.name}-router"
        self.appconfig_environment_name = region
        self._appconfig()

        # The function.
        self.log_group = EncryptedLogGroup(
            self,
            "FunctionLogs",
            retention_days=platform.log_retention_days,
            key=network.log_key,
            log_group_name=f"/aws/lambda/{self.function_name}",
        ).log_group
        self.role, self.runtime_policy = self._role()
        self.dependencies_layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(str(deps), exclude=ASSET_EXCLUDES),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="Router dependencies (lambdas/router/requirements.txt at the versions the tests ran)",
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.extension_layer = lambda_.LayerVersion.from_layer_version_arn(self, "AppConfigExtension", layer_arn)
        self.code_dir = stage_router_code(self.table)
        self.function = self._function()

        # The API.
        self.execute_api_endpoint: PrivateInterfaceEndpoint | None = None
        if settings.endpoint_type == "private":
            self.execute_api_endpoint = self._execute_api_endpoint()
        self.access_log_group = EncryptedLogGroup(
            self,
            "ApiAccessLogs",
            retention_days=platform.log_retention_days,
            key=network.log_key,
            log_group_name=f"/{platform.name}/{region}/router-api-access",
        ).log_group
        self.api = self._api()
        self.execution_log_group = self._execution_logs()
        self.usage_plans, self.api_keys = self._usage_plans()
        self.web_acl, self.web_acl_association = self._waf()

        self.dashboard = self._dashboard()

    # --- key and table ---------------------------------------------------------------------------------------

    def _key(self) -> kms.Key:
        key = kms.Key(
            self,
            "RouterKey",
            alias=router_key_alias(self.platform, self.region_name),
            description=f"{self.platform.name} router data in {self.region_name}: environment, health table, "
            "backups, routing configuration, alarm topic",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # CloudWatch alarms publish to the encrypted alarm topic: the service needs the key, for this account only.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": self.platform.account}},
            )
        )
        return key

    def _health_table(self) -> dynamodb.TableV2:
        others = [r for r in self.platform.region_names if r != self.region_name]
        return dynamodb.TableV2(
            self,
            "HealthTable",
            table_name=self.health_table_name,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute=HEALTH_TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            encryption=dynamodb.TableEncryptionV2.customer_managed_key(
                self.key, replica_key_arns={r: router_key_alias_arn(self.platform, r) for r in others}
            ),
            replicas=[
                dynamodb.ReplicaTableProps(
                    region=r,
                    point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                        point_in_time_recovery_enabled=True
                    ),
                    deletion_protection=True,
                )
                for r in others
            ],
        )

    def _backup(self) -> tuple[backup.BackupPlan, backup.BackupSelection]:
        vault = backup.BackupVault(
            self,
            "BackupVault",
            backup_vault_name=f"{self.platform.name}-router-{self.region_name}",
            encryption_key=self.key,
            block_recovery_point_deletion=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        plan = backup.BackupPlan(
            self,
            "BackupPlan",
            backup_plan_name=f"{self.platform.name}-router-{self.region_name}",
            backup_plan_rules=[
                backup.BackupPlanRule(
                    rule_name="Daily35Days",
                    backup_vault=vault,
                    schedule_expression=events.Schedule.cron(hour="3", minute="15"),
                    delete_after=cdk.Duration.days(35),
                )
            ],
        )
        # The owner's replica by its token (so the table is created first), every other cell's replica by name.
        arn = self.health_table.table_arn if self.health_table is not None else self.health_table_arn
        selection = plan.add_selection(
            "HealthTable",
            backup_selection_name=f"{self.health_table_name}-{self.region_name}",
            resources=[backup.BackupResource.from_arn(arn)],
        )
        return plan, selection

    # --- AppConfig -------------------------------------------------------------------------------------------

    def _appconfig(self) -> None:
        self.appconfig_application = appconfig.Application(
            self,
            "ConfigApplication",
            application_name=self.appconfig_application_name,
            description=f"{self.platform.name} router configuration (routing table) in {self.region_name}",
        )
        monitor_role = iam.Role(
            self,
            "ConfigMonitorRole",
            description="AWS AppConfig reads the router's rollback alarm during deployments",
            assumed_by=iam.ServicePrincipal(
                "appconfig.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": self.platform.account}},
            ),
        )
        rollback_alarm = self.alarms["Api5xx"]
        monitor_role.add_managed_policy(
            iam.ManagedPolicy(
                self,
                "ConfigMonitorPolicy",
                description="Describe the router's 5xx alarm only (AppConfig automatic rollback)",
                statements=[
                    iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=[rollback_alarm.alarm_arn])
                ],
            )
        )
        self.appconfig_environment = appconfig.Environment(
            self,
            "ConfigEnvironment",
            application=self.appconfig_application,
            environment_name=self.appconfig_environment_name,
            description=f"The {self.region_name} cell; a deployment rolls back when the router's 5xx alarm fires",
            monitors=[appconfig.Monitor.from_cloud_watch_alarm(rollback_alarm, monitor_role)],
        )
        self.deployment_strategy = appconfig.DeploymentStrategy(
            self,
            "ConfigStrategy",
            deployment_strategy_name=f"{self.platform.name}-router-linear-20pct-{self.region_name}",
            description="20% of the router instances a minute, then 5 minutes of bake time watching the 5xx alarm",
            rollout_strategy=appconfig.RolloutStrategy.linear(
                growth_factor=20,
                deployment_duration=cdk.Duration.minutes(5),
                final_bake_time=cdk.Duration.minutes(5),
            ),
        )
        self.routing_profile = appconfig.HostedConfiguration(
            self,
            "RoutingTable",
            application=self.appconfig_application,
            name=APPCONFIG_PROFILE,
            description="The cell's routing table, rendered from config/platform.yaml by stacks/routing.py",
            type=appconfig.ConfigurationType.FREEFORM,
            # Token-aware JSON: the invoke ids are attribute references of the models stack.
            content=appconfig.ConfigurationContent.from_inline_json(
                cdk.Stack.of(self).to_json_string(_sorted_keys(self.hosted_table))
            ),
            validators=[appconfig.JsonSchemaValidator.from_inline(json.dumps(routing_table_schema(), sort_keys=True))],
            deployment_strategy=self.deployment_strategy,
            deploy_to=[self.appconfig_environment],
            kms_key=self.key,
            deployment_key=self.key,
        )
        # Canary flags (lambdas/router/spillway/routing_source.py): operators deploy new versions of this profile on
        # their own, through the same strategy and rollback monitor; the stack only creates it, with no canary.
        self.flags_profile = appconfig.HostedConfiguration(
            self,
            "Flags",
            application=self.appconfig_application,
            name=APPCONFIG_FLAGS_PROFILE,
            description='Router flags: canary shares per feature, {"canary": {feature: {model, share}}}',
            type=appconfig.ConfigurationType.FREEFORM,
            content=appconfig.ConfigurationContent.from_inline_json(json.dumps({"canary": {}})),
            validators=[appconfig.JsonSchemaValidator.from_inline(json.dumps(flags_schema(), sort_keys=True))],
            deployment_strategy=self.deployment_strategy,
            deploy_to=[self.appconfig_environment],
            kms_key=self.key,
            deployment_key=self.key,
        )
        # The flags deployment waits for the table's: AppConfig runs one deployment per environment at a time.
        self.flags_profile.node.add_dependency(self.routing_profile)
        self.configuration_arns = tuple(
            f"arn:{self.partition}:appconfig:{self.region}:{self.account}:application/"
            f"{self.appconfig_application.application_id}/environment/{self.appconfig_environment.environment_id}/"
            f"configuration/{profile.configuration_profile_id}"
            for profile in (self.routing_profile, self.flags_profile)
        )

    # --- the function ----------------------------------------------------------------------------------------

    def _role(self) -> tuple[iam.Role, iam.ManagedPolicy]:
        role = iam.Role(
            self,
            "FunctionRole",
            role_name=f"{self.platform.name}-router-{self.region_name}",
            description="The router Lambda: invoke the configured targets, its health table, config, logs, traces",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        # The invoke permissions: the models stacks' customer-managed policies, and nothing else grants an invoke.
        names = router_invoke_policy_names(self.platform, self.region_name)
        role.add_managed_policy(self.models.router_invoke_policy)
        for index, name in enumerate(names[1:]):
            role.add_managed_policy(iam.ManagedPolicy.from_managed_policy_name(self, f"FailoverInvoke{index}", name))
        table = self.health_table_arn
        runtime = iam.ManagedPolicy(
            self,
            "RouterRuntime",
            description="The router's own resources: health table, routing configuration, logs, key, traces, ENIs",
            statements=[
                iam.PolicyStatement(
                    sid="HealthTable",
                    # lambdas/router/spillway/store.py: one BatchGetItem per sync, conditional UpdateItem per write.
                    actions=["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem"],
                    resources=[table],
                ),
                iam.PolicyStatement(
                    sid="RoutingConfiguration",
                    actions=["appconfig:GetLatestConfiguration", "appconfig:StartConfigurationSession"],
                    resources=list(self.configuration_arns),
                ),
                iam.PolicyStatement(
                    sid="OwnLogGroup",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="RouterKey",
                    # Environment and configuration (decrypt); the health table replica (DynamoDB, on our behalf).
                    actions=["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"],
                    resources=[self.key.key_arn],
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

    def _function(self) -> lambda_.Function:
        deadline_s = served_deadline_s(self.platform, self.region_name)
        settings = self.platform.router
        prefetch = ",".join(
            f"/applications/{self.appconfig_application_name}/environments/{self.appconfig_environment_name}/"
            f"configurations/{profile}"
            for profile in (APPCONFIG_PROFILE, APPCONFIG_FLAGS_PROFILE)
        )
        function = lambda_.Function(
            self,
            "Function",
            function_name=self.function_name,
            description=f"{self.platform.name} router: spillover, fallback and failover for {self.region_name}",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(self.code_dir), exclude=ASSET_EXCLUDES),
            layers=[self.dependencies_layer, self.extension_layer],
            # The grants CDK would add (X-Ray, key, VPC) land in RouterRuntime instead of an inline DefaultPolicy.
            role=self.role.without_policy_updates(),
            memory_size=settings.memory_mb,
            timeout=cdk.Duration.seconds(deadline_s + INTEGRATION_MARGIN_S + FUNCTION_MARGIN_S),
            reserved_concurrent_executions=settings.reserved_concurrency,
            vpc=self.network.vpc,
            vpc_subnets=self.network.isolated_subnets,
            security_groups=[self.network.router_security_group],
            environment_encryption=self.key,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            environment={
                # Read by lambdas/router/handler.py (its docstring lists them); routing.json is bundled beside it.
                "SPILLWAY_HEALTH_TABLE": self.health_table_name,
                "SPILLWAY_APPCONFIG_APPLICATION": self.appconfig_application_name,
                "SPILLWAY_APPCONFIG_ENVIRONMENT": self.appconfig_environment_name,
                "SPILLWAY_APPCONFIG_PROFILE": APPCONFIG_PROFILE,
                "SPILLWAY_APPCONFIG_FLAGS_PROFILE": APPCONFIG_FLAGS_PROFILE,
                "POWERTOOLS_SERVICE_NAME": METRICS_SERVICE,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "AWS_APPCONFIG_EXTENSION_PREFETCH_LIST": prefetch,
                "AWS_APPCONFIG_EXTENSION_POLL_INTERVAL_SECONDS": "15",
            },
        )
        function.node.add_dependency(self.runtime_policy)
        return function

    # --- the API ---------------------------------------------------------------------------------------------

    def _execute_api_endpoint(self) -> PrivateInterfaceEndpoint:
        account = self.platform.account
        endpoint = PrivateInterfaceEndpoint(
            self,
            "ExecuteApiEndpoint",
            vpc=self.network.vpc,
            service=ec2.InterfaceVpcEndpointAwsService.APIGATEWAY,
            subnets=self.network.isolated_subnets,
            policy=[
                iam.PolicyStatement(
                    sid="InvokeThisAccountsApis",
                    principals=[iam.AnyPrincipal()],
                    actions=["execute-api:Invoke"],
                    resources=[f"arn:{self.partition}:execute-api:{self.region}:{account}:*/*"],
                )
            ],
            description="execute-api endpoint: HTTPS to the private router API from this cell's VPC",
        )
        # Callers inside the cell's VPC (literal CIDR: cdk-nag can evaluate it); other VPCs use their own endpoints.
        endpoint.allow_from_cidrs(self, [self.platform.regions[self.region_name].vpc_cidr], "HTTPS from the VPC")
        return endpoint

    def _resource_policy(self) -> iam.PolicyDocument:
        settings = self.platform.router
        principals: list[iam.IPrincipal] = [
            iam.AccountPrincipal(caller) if caller.isdigit() else iam.ArnPrincipal(caller)
            for caller in settings.allowed_callers
        ]
        statements = [
            iam.PolicyStatement(
                sid="AllowedCallers",
                principals=principals,
                actions=["execute-api:Invoke"],
                resources=["execute-api:/*"],
            )
        ]
        if self.execute_api_endpoint is not None:
            endpoints = [
                self.execute_api_endpoint.endpoint.vpc_endpoint_id,
                *settings.caller_vpc_endpoints.get(self.region_name, ()),
            ]
            statements.append(
                iam.PolicyStatement(
                    sid="OnlyThroughAllowedVpcEndpoints",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["execute-api:Invoke"],
                    resources=["execute-api:/*"],
                    conditions={"StringNotEquals": {"aws:SourceVpce": endpoints}},
                )
            )
        return iam.PolicyDocument(statements=statements)

    def _api(self) -> apigw.RestApi:
        settings = self.platform.router
        private = self.execute_api_endpoint is not None
        endpoint_configuration = (
            apigw.EndpointConfiguration(
                types=[apigw.EndpointType.PRIVATE], vpc_endpoints=[self.execute_api_endpoint.endpoint]
            )
            if self.execute_api_endpoint is not None
            else apigw.EndpointConfiguration(types=[apigw.EndpointType.REGIONAL])
        )
        keyed = bool(settings.calling_services)
        api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=self.api_name,
            description=f"{self.platform.name} router in {self.region_name} ({'private' if private else 'regional'})",
            endpoint_configuration=endpoint_configuration,
            policy=self._resource_policy(),
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.RETAIN,
            disable_execute_api_endpoint=False,
            api_key_source_type=apigw.ApiKeySourceType.HEADER if keyed else None,
            deploy=True,
            retain_deployments=False,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                description="The router's only stage",
                throttling_rate_limit=settings.rate_limit,
                throttling_burst_limit=settings.burst_limit,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # full request/response logging would write prompts: never
                access_log_destination=apigw.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(dict(ACCESS_LOG_FIELDS))),
            ),
            default_method_options=apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.IAM, api_key_required=keyed
            ),
            min_compression_size=cdk.Size.kibibytes(1),
        )
        validator = api.add_request_validator(
            "Validator",
            request_validator_name="body-and-parameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        model = api.add_model(
            "ConverseRequest",
            model_name="ConverseRequest",
            content_type="application/json",
            schema=converse_request_schema(),
        )
        deadline_s = served_deadline_s(self.platform, self.region_name)
        integration = apigw.LambdaIntegration(
            self.function,
            proxy=True,
            allow_test_invoke=False,
            timeout=cdk.Duration.seconds(deadline_s + INTEGRATION_MARGIN_S),
        )
        v1 = api.root.add_resource("v1")
        features = v1.add_resource("features")
        converse = features.add_resource("{feature}").add_resource("converse")
        converse.add_method(
            "POST",
            integration,
            operation_name="converse",
            request_validator=validator,
            request_models={"application/json": model},
            request_parameters={"method.request.path.feature": True},
        )
        features.add_method("GET", integration, operation_name="listFeatures", request_validator=validator)
        v1.add_resource("health").add_method("GET", integration, operation_name="health", request_validator=validator)
        self._gateway_responses(api)
        return api

    def _execution_logs(self) -> logs.ILogGroup:
        """The stage's execution logs (logging level ERROR), in a group this stack owns.

        Left to itself API Gateway creates ``API-Gateway-Execution-Logs_<restApiId>/<stage>`` on the first error,
        unencrypted and kept forever. The group exists before the stage (a dependency), with the platform's
        retention and the cell's logs key (its key policy admits CloudWatch Logs for every group of this account
        and region), so API Gateway writes into it instead.
        """
        group = EncryptedLogGroup(
            self,
            "ApiExecutionLogs",
            retention_days=self.platform.log_retention_days,
            key=self.network.log_key,
            log_group_name=cdk.Fn.join("", ["API-Gateway-Execution-Logs_", self.api.rest_api_id, f"/{STAGE}"]),
        )
        self.api.deployment_stage.node.add_dependency(group)
        return group.log_group

    @staticmethod
    def _gateway_responses(api: apigw.RestApi) -> None:
        """Answers API Gateway gives itself, in the router's error shape. The defaults would echo the validator's
        error string, which quotes the caller's keys: zero knowledge forbids it, so these messages are fixed."""
        for response_id, (response_type, status, code, message) in GATEWAY_RESPONSES.items():
            body = {"error": {"code": code, "message": message, "request_id": "$context.requestId"}}
            api.add_gateway_response(
                response_id,
                type=response_type,
                status_code=status,
                templates={"application/json": json.dumps(body)},
                response_headers={"x-spillway-request-id": "context.requestId"},
            )

    def _usage_plans(self) -> tuple[dict[str, apigw.UsagePlan], dict[str, apigw.IApiKey]]:
        """One usage plan and key per calling service: the key identifies whose throttle and quota a request uses.

        It is not an authentication: IAM (SigV4) and the resource policy decide who may call. API Gateway generates
        the key values (they are not in the template); a service's operators read theirs with apigateway:GET.
        """
        plans: dict[str, apigw.UsagePlan] = {}
        keys: dict[str, apigw.IApiKey] = {}
        for name, service in sorted(self.platform.router.calling_services.items()):
            construct = "".join(part.capitalize() for part in name.split("-"))
            plan = self.api.add_usage_plan(
                f"UsagePlan{construct}",
                name=f"{self.api_name}-{name}",
                description=f"Throttle and quota of the {name} service",
                throttle=apigw.ThrottleSettings(rate_limit=service.rate_limit, burst_limit=service.burst_limit),
                quota=(
                    apigw.QuotaSettings(limit=service.quota_per_day, period=apigw.Period.DAY)
                    if service.quota_per_day is not None
                    else None
                ),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
            )
            key = self.api.add_api_key(
                f"ApiKey{construct}",
                api_key_name=f"{self.api_name}-{name}",
                description=f"Identifies the {name} service for its usage plan (not a credential: IAM authorizes)",
            )
            plan.add_api_key(key)
            plans[name], keys[name] = plan, key
        return plans, keys

    def _waf(self) -> tuple[wafv2.CfnWebACL, wafv2.CfnWebACLAssociation]:
        name = f"{self.platform.name}-router-{self.region_name}"

        def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=False
            )

        def managed(priority: int, group: str, overrides: Sequence[str] = ()) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=group,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=group,
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                            )
                            for rule in overrides
                        ]
                        or None,
                    )
                ),
                visibility_config=visibility(group),
            )

        settings = self.platform.router
        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=name,
            description="Router API: AWS managed rules and a per-source rate limit",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility(name),
            rules=[
                # Converse bodies are up to spillway/limits.py's MAX_REQUEST_BYTES (about 6 MB), over the common rule
                # set's 8 KiB body limit: that one rule counts instead of blocking; the handler enforces the size.
                managed(0, "AWSManagedRulesCommonRuleSet", ["SizeRestrictions_BODY"]),
                managed(1, "AWSManagedRulesKnownBadInputsRuleSet"),
                managed(2, "AWSManagedRulesAmazonIpReputationList"),
                wafv2.CfnWebACL.RuleProperty(
                    name="RatePerSource",
                    priority=3,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            # No single source may use more than the whole stage's rate over five minutes.
                            limit=max(100, settings.rate_limit * 300),
                            aggregate_key_type="IP",
                            evaluation_window_sec=300,
                        )
                    ),
                    visibility_config=visibility("RatePerSource"),
                ),
            ],
        )
        association = wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=self.api.deployment_stage.stage_arn, web_acl_arn=acl.attr_arn
        )
        waf_logs = EncryptedLogGroup(
            self,
            "WafLogs",
            retention_days=self.platform.log_retention_days,
            key=self.network.log_key,
            log_group_name=f"aws-waf-logs-{name}",  # WAF delivers only to groups named aws-waf-logs-*
        ).log_group
        logging = wafv2.CfnLoggingConfiguration(
            self,
            "WebAclLogging",
            resource_arn=acl.attr_arn,
            log_destination_configs=[
                f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:{waf_logs.log_group_name}"
            ],
            # SigV4 signatures, session tokens and API keys stay out of the WAF logs (WAF never logs bodies).
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": header})
                for header in ("authorization", "x-amz-security-token", "x-api-key")
            ],
        )
        logging.node.add_dependency(waf_logs)
        return acl, association

    # --- alarms and dashboard --------------------------------------------------------------------------------

    def _metric(self, name: str, minutes: int = 1, **dimensions: str) -> cw.Metric:
        return cw.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={"service": METRICS_SERVICE, **dimensions},
            statistic="Sum",
            period=cdk.Duration.minutes(minutes),
        )

    @staticmethod
    def _aws(namespace: str, name: str, dims: Mapping[str, str], statistic: str = "Sum") -> cw.Metric:
        return cw.Metric(
            namespace=namespace, metric_name=name, dimensions_map=dict(dims), statistic=statistic,
            period=cdk.Duration.minutes(1),
        )  # fmt: skip

    def _insights(self, metric: str, schema: str, label: str) -> cw.MathExpression:
        """The sum of a router metric over every target (a Metrics Insights query: one series, any target count)."""
        query = " ".join(
            ("SELECT", f"SUM({metric})", "FROM", f'SCHEMA("{METRICS_NAMESPACE}", {schema})',
             "WHERE", f"service = '{METRICS_SERVICE}'")
        )  # fmt: skip
        return cw.MathExpression(
            expression=query,
            label=label,
            period=cdk.Duration.minutes(1),
        )

    def _alarms(self) -> dict[str, cw.Alarm]:
        alarms: dict[str, cw.Alarm] = {}
        action = cw_actions.SnsAction(self.alarm_topic)
        prefix = f"{self.platform.name}-router-{self.region_name}"

        def add(
            construct_id: str, name: str, description: str, metric: cw.IMetric, threshold: float,
            *, evaluation: int = 3, datapoints: int = 2,
        ) -> None:  # fmt: skip
            alarm = metric.create_alarm(
                self,
                f"Alarm{construct_id}",
                alarm_name=f"{prefix}-{name}",
                alarm_description=description,
                threshold=threshold,
                evaluation_periods=evaluation,
                datapoints_to_alarm=datapoints,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
            alarms[construct_id] = alarm

        api_dims = {"ApiName": self.api_name, "Stage": STAGE}
        add(
            "Api5xx",
            "api-5xx",
            "Router API 5xx (also AppConfig's rollback monitor): a bad routing table or a router fault",
            self._aws("AWS/ApiGateway", "5XXError", api_dims),
            5,
        )
        for feature in self.features:
            construct = "".join(part.capitalize() for part in feature.replace(".", "-").split("-"))
            requests = self._metric("Requests", 5, feature=feature)
            for metric, name, threshold in (("Spills", "spill-rate", 50), ("Failovers", "failover-rate", 10)):
                rate = cw.MathExpression(
                    expression="IF(requests > 0, 100 * events / requests, 0)",
                    using_metrics={"events": self._metric(metric, 5, feature=feature), "requests": requests},
                    label=f"{metric} per request (%) of {feature}",
                    period=cdk.Duration.minutes(5),
                )
                add(
                    f"{metric}{construct}",
                    f"{name}-{feature}",
                    f"{feature}: {metric.lower()} on {threshold}% or more of requests over 5 minutes",
                    rate,
                    threshold,
                )
        add(
            "BreakerOpens",
            "breaker-open",
            "A circuit breaker opened on some target (see the dashboard for which)",
            self._insights("BreakerOpens", "service, target", "breaker opens"),
            1,
            evaluation=1,
            datapoints=1,
        )
        add(
            "DeploymentFaults",
            "deployment-faults",
            "A target answered with a deployment fault (missing endpoint or model id, access denied, bad credentials "
            "or signature): fix the deployment; the router moves on to the next target meanwhile",
            self._insights("DeploymentFaults", "service, feature, target", "deployment faults"),
            1,
            evaluation=1,
            datapoints=1,
        )
        add(
            "BackendThrottles",
            "backend-throttles",
            "Backends throttle the router (capacity): spillover is carrying load; PT or quotas may need raising",
            self._insights("Throttles", "service, feature, target", "backend throttles"),
            20,
        )
        add(
            "LambdaThrottles",
            "lambda-throttles",
            "The router Lambda hit its reserved concurrency: callers get 429/5xx; raise router.reserved_concurrency",
            self._aws("AWS/Lambda", "Throttles", {"FunctionName": self.function_name}),
            1,
        )
        return alarms

    def _dashboard(self) -> cw.Dashboard:
        api_dims = {"ApiName": self.api_name, "Stage": STAGE}
        fn_dims = {"FunctionName": self.function_name}

        aws = self._aws

        per_feature = [
            self._metric(name, feature=f) for f in self.features for name in ("Spills", "Fallbacks", "Failovers")
        ]
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{self.platform.name}-router-{self.region_name}")
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24, height=4),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="API requests and errors",
                left=[aws("AWS/ApiGateway", n, api_dims) for n in ("Count", "4XXError", "5XXError")],
                width=12,
            ),
            cw.GraphWidget(
                title="API latency (p99)",
                left=[aws("AWS/ApiGateway", n, api_dims, "p99") for n in ("Latency", "IntegrationLatency")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Requests per feature",
                left=[self._metric("Requests", feature=f) for f in self.features],
                width=12,
            ),
            cw.GraphWidget(title="Spills, fallbacks, failovers", left=per_feature, width=12),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Breakers and backend throttles",
                left=[
                    self._insights("BreakerOpens", "service, target", "breaker opens"),
                    self._insights("Throttles", "service, feature, target", "backend throttles"),
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Router Lambda",
                left=[aws("AWS/Lambda", n, fn_dims) for n in ("Invocations", "Errors", "Throttles")],
                right=[aws("AWS/Lambda", "ConcurrentExecutions", fn_dims, "Maximum")],
                width=12,
            ),
        )
        return dashboard

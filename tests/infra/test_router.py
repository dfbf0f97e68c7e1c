"""The router stacks (stacks/router.py), asserted on the session's templates: Lambda, API, AppConfig, alarms,
dashboard, and the assets they ship; and that no stack keeps the DynamoDB health table the fleet store replaced."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stacks import ROUTER_ROOT, packaging
from stacks.constructs.fleet_store import ENV_URL
from stacks.constructs.router_api import ACCESS_LOG_FIELDS, API_RESOURCES
from stacks.constructs.routing_config import APPCONFIG_PROFILE
from stacks.eni import ENI_ACTIONS
from stacks.packaging import RouterBuildError, stage_router_code
from stacks.platform import Platform
from stacks.router import routing_table_schema
from stacks.routing import render_routing_table
from tests.infra.conftest import Template, resources_of

INVOKE_ACTION = re.compile(r"^(bedrock:Invoke|sagemaker:Invoke)", re.IGNORECASE)


@pytest.fixture(scope="module")
def routers(platform: Platform, templates: Mapping[str, Template]) -> dict[str, Template]:
    return {region: templates[f"{platform.name}-router-{region}"] for region in platform.region_names}


def _one(template: Template, resource_type: str) -> Mapping[str, Any]:
    found = resources_of(template, resource_type)
    assert len(found) == 1, f"{resource_type}: {sorted(found)}"
    return next(iter(found.values()))["Properties"]


def _function(template: Template) -> Mapping[str, Any]:
    return _one(template, "AWS::Lambda::Function")


def _logical_id(template: Template, resource_type: str, prefix: str) -> str:
    (found,) = [k for k in resources_of(template, resource_type) if k.startswith(prefix)]
    return found


def _statements(template: Template) -> Iterator[Mapping[str, Any]]:
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        documents = [props.get("PolicyDocument"), props.get("AssumeRolePolicyDocument")]
        documents += [p.get("PolicyDocument") for p in props.get("Policies", [])]
        for document in documents:
            if isinstance(document, Mapping):
                yield from document.get("Statement", [])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- the function --------------------------------------------------------------------------------------------


def test_function_runtime_architecture_and_handler(routers: Mapping[str, Template]) -> None:
    for template in routers.values():
        function = _function(template)
        version = tuple(int(part) for part in function["Runtime"].removeprefix("python").split("."))
        assert function["Runtime"].startswith("python")
        assert version >= (3, 13)
        assert function["Architectures"] == ["arm64"]
        module, _, name = function["Handler"].partition(".")
        assert re.search(rf"^def {name}\(", (ROUTER_ROOT / f"{module}.py").read_text(encoding="utf-8"), re.M)
        assert function["TracingConfig"] == {"Mode": "Active"}


def test_function_in_isolated_subnets_with_the_router_security_group(
    platform: Platform, routers: Mapping[str, Template]
) -> None:
    for region, template in routers.items():
        vpc = _function(template)["VpcConfig"]
        (group,) = vpc["SecurityGroupIds"]
        assert "RouterSecurityGroup" in group["Fn::ImportValue"]
        assert group["Fn::ImportValue"].startswith(f"{platform.name}-network-{region}:")
        assert len(vpc["SubnetIds"]) == len(platform.regions[region].availability_zones)
        assert all("isolatedSubnet" in subnet["Fn::ImportValue"] for subnet in vpc["SubnetIds"])


def test_reserved_concurrency_and_encrypted_environment(platform: Platform, routers: Mapping[str, Template]) -> None:
    for template in routers.values():
        function = _function(template)
        assert function["ReservedConcurrentExecutions"] == platform.router.reserved_concurrency
        assert function["MemorySize"] == platform.router.memory_mb
        key = _logical_id(template, "AWS::KMS::Key", "RouterKey")
        assert function["KmsKeyArn"] == {"Fn::GetAtt": [key, "Arn"]}
        assert resources_of(template, "AWS::KMS::Key")[key]["Properties"]["EnableKeyRotation"] is True


def test_function_environment_names_its_own_resources(platform: Platform, routers: Mapping[str, Template]) -> None:
    # The router reads its environment once, in spillway/settings.py, whose docstring lists every variable.
    settings_doc = (ROUTER_ROOT / "spillway" / "settings.py").read_text(encoding="utf-8")
    for region, template in routers.items():
        env = _function(template)["Environment"]["Variables"]
        assert ENV_URL in env  # every cell's router shares its state through the fleet store
        assert not {name for name in env if name.startswith("SPILLWAY_HEALTH")}  # the DynamoDB store is gone
        assert env["SPILLWAY_APPCONFIG_ENVIRONMENT"] == region
        assert env["SPILLWAY_APPCONFIG_PROFILE"] == APPCONFIG_PROFILE
        prefetch = env["AWS_APPCONFIG_EXTENSION_PREFETCH_LIST"]
        assert f"/environments/{region}/configurations/{APPCONFIG_PROFILE}" in prefetch
        for name in env:
            if name.startswith("SPILLWAY_"):
                assert f"``{name}``" in settings_doc, f"{name} is not read by the router's settings"


def test_function_layers_are_the_dependencies_and_the_appconfig_extension(
    platform: Platform, routers: Mapping[str, Template]
) -> None:
    for region, template in routers.items():
        layers = _function(template)["Layers"]
        assert platform.router.appconfig_extension_layer_arns[region] in layers
        layer = _one(template, "AWS::Lambda::LayerVersion")
        assert layer["CompatibleArchitectures"] == ["arm64"]
        assert layer["CompatibleRuntimes"] == [_function(template)["Runtime"]]


# --- the role ------------------------------------------------------------------------------------------------


def test_role_attaches_the_models_policy_and_customer_managed_policies_only(
    platform: Platform, routers: Mapping[str, Template]
) -> None:
    for region, template in routers.items():
        roles = resources_of(template, "AWS::IAM::Role")
        role_id = _logical_id(template, "AWS::IAM::Role", "FunctionRole")
        role = roles[role_id]["Properties"]
        assert "Policies" not in role
        attached = json.dumps(role["ManagedPolicyArns"])
        assert f"{platform.name}-models-{region}:ExportsOutputRefRouterInvoke" in attached
        assert ":aws:policy/" not in attached  # no AWS managed policy on the router
        assert resources_of(template, "AWS::IAM::Policy") == {}  # no inline (CDK default) policy anywhere
        runtime = resources_of(template, "AWS::IAM::ManagedPolicy")[
            _logical_id(template, "AWS::IAM::ManagedPolicy", "RouterRuntime")
        ]["Properties"]
        actions = {a for s in runtime["PolicyDocument"]["Statement"] for a in _as_list(s["Action"])}
        assert not any(INVOKE_ACTION.match(a) for a in actions)  # invoke permissions come from the models only


def test_no_invoke_action_on_a_wildcard_resource_anywhere(templates: Mapping[str, Template]) -> None:
    checked = 0
    for name, template in templates.items():
        for statement in _statements(template):
            if statement.get("Effect") != "Allow":
                continue
            actions = [a for a in _as_list(statement.get("Action", [])) if isinstance(a, str)]
            if any(INVOKE_ACTION.match(a) or a in {"bedrock:*", "sagemaker:*"} for a in actions):
                assert "*" not in _as_list(statement.get("Resource", [])), f"{name}: {statement}"
                checked += 1
    # The models stacks' invoke policies (and the endpoint policies) grant invokes: a test that found none checked
    # nothing, e.g. after a change in how statements are found.
    assert checked > 0


def test_runtime_policy_names_exact_resources(routers: Mapping[str, Template]) -> None:
    for template in routers.values():
        runtime = resources_of(template, "AWS::IAM::ManagedPolicy")[
            _logical_id(template, "AWS::IAM::ManagedPolicy", "RouterRuntime")
        ]["Properties"]["PolicyDocument"]["Statement"]
        by_sid = {s["Sid"]: s for s in runtime}
        assert len(_as_list(by_sid["RoutingConfiguration"]["Resource"])) == 2  # the table and the flags profiles
        assert "Fn::GetAtt" in json.dumps(by_sid["RouterKey"]["Resource"])
        assert by_sid["RouterKey"]["Action"] == "kms:Decrypt"  # environment and configuration: it writes nothing
        wildcard = {s["Sid"] for s in runtime if "*" in _as_list(s["Resource"]) and s["Effect"] == "Allow"}
        assert wildcard == {"Traces", "VpcNetworkInterfaces"}  # what IAM cannot scope (acknowledged, with reasons)


def test_function_code_cannot_use_the_eni_actions(platform: Platform, routers: Mapping[str, Template]) -> None:
    """AWS's lambda:SourceFunctionArn guard: Lambda's own ENI calls carry no such key, calls from the function's
    code do, so a Deny on the key equal to the function's ARN leaves the ENI actions to the Lambda service."""
    for region, template in routers.items():
        runtime = resources_of(template, "AWS::IAM::ManagedPolicy")[
            _logical_id(template, "AWS::IAM::ManagedPolicy", "RouterRuntime")
        ]["Properties"]["PolicyDocument"]["Statement"]
        (deny,) = [s for s in runtime if s["Effect"] == "Deny"]
        assert sorted(_as_list(deny["Action"])) == sorted(ENI_ACTIONS)
        allowed = {a for s in runtime if s["Effect"] == "Allow" for a in _as_list(s["Action"])}
        assert set(ENI_ACTIONS) <= allowed
        assert deny["Resource"] == "*"
        name = _function(template)["FunctionName"]
        assert list(deny["Condition"]) == ["ArnEquals"]
        arns = _as_list(deny["Condition"]["ArnEquals"]["lambda:SourceFunctionArn"])
        assert arns == [f"arn:aws:lambda:{region}:{platform.account}:function:{name}"]


# --- the API -------------------------------------------------------------------------------------------------


def test_every_method_requires_iam_and_an_api_key(platform: Platform, routers: Mapping[str, Template]) -> None:
    for template in routers.values():
        methods = resources_of(template, "AWS::ApiGateway::Method")
        assert len(methods) == len(API_RESOURCES) + 1  # and converse-stream (STREAM_RESOURCE)
        for method in methods.values():
            assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
            assert method["Properties"]["ApiKeyRequired"] is bool(platform.router.calling_services)
        post = [m["Properties"] for m in methods.values() if m["Properties"]["HttpMethod"] == "POST"]
        assert len(post) == 3  # converse and converse-stream (the gateway checks their body's shape), chat completions
        assert all(p["RequestValidatorId"] for p in post)
        converse = [p for p in post if p.get("OperationName") in ("converse", "converseStream")]
        assert len(converse) == 2
        assert all("application/json" in p["RequestModels"] for p in converse)


def test_private_api_resource_policy(platform: Platform, routers: Mapping[str, Template]) -> None:
    for template in routers.values():
        api = _one(template, "AWS::ApiGateway::RestApi")
        assert api["EndpointConfiguration"]["Types"] == ["PRIVATE"]
        statements = {s["Sid"]: s for s in api["Policy"]["Statement"]}
        principals = json.dumps(statements["AllowedCallers"]["Principal"])
        for caller in platform.router.allowed_callers:
            assert caller in principals
        deny = statements["OnlyFromTheCellOrTheCallersEndpoints"]
        assert deny["Effect"] == "Deny"
        assert "aws:SourceVpc" in deny["Condition"]["StringNotEquals"]
        endpoint = _logical_id(template, "AWS::EC2::VPCEndpoint", "ExecuteApiEndpoint")
        vpce = resources_of(template, "AWS::EC2::VPCEndpoint")[endpoint]["Properties"]
        assert vpce["PrivateDnsEnabled"] is True
        assert "execute-api" in json.dumps(vpce["ServiceName"])
        ingress = [r["Properties"] for r in resources_of(template, "AWS::EC2::SecurityGroupIngress").values()]
        # CIDR rules (the execute-api endpoint's) stay inside the cells' VPCs; the others (the fleet store's) name a
        # security group.
        callers = {c for cidrs in platform.router.caller_cidrs.values() for c in cidrs}
        assert {r["CidrIp"] for r in ingress if "CidrIp" in r} <= callers
        assert all("CidrIp" in r or "SourceSecurityGroupId" in r for r in ingress)
        assert not any("CidrIpv6" in r for r in ingress)


def test_stage_throttling_tracing_and_access_logs_without_bodies(
    platform: Platform, routers: Mapping[str, Template]
) -> None:
    for region, template in routers.items():
        stage = _one(template, "AWS::ApiGateway::Stage")
        assert stage["TracingEnabled"] is True
        (settings,) = stage["MethodSettings"]
        assert settings["ThrottlingRateLimit"] == platform.router.rate_limit
        assert settings["ThrottlingBurstLimit"] == platform.router.burst_limit
        assert settings["DataTraceEnabled"] is False
        fmt = json.loads(stage["AccessLogSetting"]["Format"])
        assert fmt == dict(ACCESS_LOG_FIELDS)
        text = json.dumps(fmt).lower()
        for forbidden in ("body", "$input", "requestoverride", "responseoverride", "querystring", "header"):
            assert forbidden not in text
        group = _logical_id(template, "AWS::Logs::LogGroup", "ApiAccessLogs")
        # The log group's ARN without the trailing ":*" (aws-apigateway:logGroupDestinationArnWithoutWildcard).
        assert stage["AccessLogSetting"]["DestinationArn"] == {
            "Fn::Join": ["", [f"arn:aws:logs:{region}:{platform.account}:log-group:", {"Ref": group}]]
        }
        assert "KmsKeyId" in resources_of(template, "AWS::Logs::LogGroup")[group]["Properties"]


def test_execution_logs_in_our_own_cmk_group_before_the_stage(
    platform: Platform, routers: Mapping[str, Template]
) -> None:
    """Logging level ERROR makes API Gateway write API-Gateway-Execution-Logs_<restApiId>/<stage>: the stack owns
    that group (CMK, retention) and the stage waits for it, so API Gateway never creates it unencrypted."""
    for template in routers.values():
        (stage_id,) = resources_of(template, "AWS::ApiGateway::Stage")
        stage = template["Resources"][stage_id]
        assert stage["Properties"]["MethodSettings"][0]["LoggingLevel"] == "ERROR"
        group_id = _logical_id(template, "AWS::Logs::LogGroup", "ApiExecutionLogs")
        group = template["Resources"][group_id]["Properties"]
        api_id = _logical_id(template, "AWS::ApiGateway::RestApi", "Api")
        assert group["LogGroupName"] == {
            "Fn::Join": ["", ["API-Gateway-Execution-Logs_", {"Ref": api_id}, f"/{stage['Properties']['StageName']}"]]
        }
        assert group["RetentionInDays"] == platform.log_retention_days
        assert "KmsKeyId" in group
        assert group_id in _as_list(stage.get("DependsOn", []))


def test_usage_plan_and_key_per_calling_service(platform: Platform, routers: Mapping[str, Template]) -> None:
    for template in routers.values():
        plans = [p["Properties"] for p in resources_of(template, "AWS::ApiGateway::UsagePlan").values()]
        assert len(plans) == len(platform.router.calling_services)
        assert len(resources_of(template, "AWS::ApiGateway::ApiKey")) == len(plans)
        assert len(resources_of(template, "AWS::ApiGateway::UsagePlanKey")) == len(plans)
        for service in platform.router.calling_services.values():
            (plan,) = [p for p in plans if p["UsagePlanName"].endswith(f"-{service.name}")]
            assert plan["Throttle"] == {"RateLimit": service.rate_limit, "BurstLimit": service.burst_limit}
            assert plan["Quota"] == {"Limit": service.quota_per_day, "Period": "DAY"}
        for key in resources_of(template, "AWS::ApiGateway::ApiKey").values():
            assert "Value" not in key["Properties"]  # API Gateway generates the value; never in a template


def test_waf_on_the_stage_with_managed_rules_rate_limit_and_redacted_logs(routers: Mapping[str, Template]) -> None:
    for template in routers.values():
        acl_id = _logical_id(template, "AWS::WAFv2::WebACL", "WebAcl")
        acl = resources_of(template, "AWS::WAFv2::WebACL")[acl_id]["Properties"]
        assert acl["Scope"] == "REGIONAL"
        statements = [r["Statement"] for r in acl["Rules"]]
        groups = {s["ManagedRuleGroupStatement"]["Name"] for s in statements if "ManagedRuleGroupStatement" in s}
        assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= groups
        assert any("RateBasedStatement" in r["Statement"] for r in acl["Rules"])
        association = _one(template, "AWS::WAFv2::WebACLAssociation")
        assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
        assert "/stages/" in json.dumps(association["ResourceArn"])
        logging = _one(template, "AWS::WAFv2::LoggingConfiguration")
        redacted = {f["SingleHeader"]["Name"] for f in logging["RedactedFields"] if "SingleHeader" in f}
        assert {"authorization", "x-amz-security-token", "x-api-key"} <= redacted


# --- no DynamoDB -----------------------------------------------------------------------------------------------


def test_no_stack_has_a_dynamodb_table_grant_endpoint_or_backup(templates: Mapping[str, Template]) -> None:
    """The router's shared state is the fleet store: no table, replica, backup of one, IAM or endpoint statement,
    key use through DynamoDB or gateway endpoint for it is left in any template (docs/design-notes.md)."""
    for name, template in templates.items():
        types = {r["Type"] for r in template.get("Resources", {}).values()}
        assert not {t for t in types if t.startswith(("AWS::DynamoDB::", "AWS::Backup::"))}, name
        assert "dynamodb" not in json.dumps(template).lower(), name


# --- AppConfig -------------------------------------------------------------------------------------------------


def test_appconfig_profile_validator_strategy_deployment_and_rollback_monitor(
    platform: Platform, routers: Mapping[str, Template]
) -> None:
    for region, template in routers.items():
        found = resources_of(template, "AWS::AppConfig::ConfigurationProfile").values()
        profiles = {p["Properties"]["Name"]: p["Properties"] for p in found}
        profile = profiles[APPCONFIG_PROFILE]
        (validator,) = profile["Validators"]
        assert validator["Type"] == "JSON_SCHEMA"
        assert json.loads(validator["Content"]) == routing_table_schema()
        assert "KmsKeyIdentifier" in profile
        versions = resources_of(template, "AWS::AppConfig::HostedConfigurationVersion").values()
        contents = [_hosted_content(v["Properties"]["Content"]) for v in versions]
        (hosted,) = [c for c in contents if "targets" in c]
        # The hosted table is the rendered one plus each feature's invoke_ids (deploy-time ARNs of the cell's models
        # stack, imported: tests/infra/test_models.py checks which), and passes the AppConfig validator's schema.
        jsonschema.Draft4Validator(routing_table_schema()).validate(hosted)
        assert any("invoke_ids" in f for f in hosted["features"].values())
        for feature in hosted["features"].values():
            assert all(v == "<token>" for v in feature.pop("invoke_ids", {}).values())
        assert hosted == render_routing_table(platform, region)
        strategy = _one(template, "AWS::AppConfig::DeploymentStrategy")
        assert (strategy["GrowthType"], strategy["GrowthFactor"]) == ("LINEAR", 20)
        assert strategy["DeploymentDurationInMinutes"] == 5
        assert strategy["FinalBakeTimeInMinutes"] >= 1
        deployments = resources_of(template, "AWS::AppConfig::Deployment")
        assert len(deployments) == 2
        strategy_id = _logical_id(template, "AWS::AppConfig::DeploymentStrategy", "ConfigStrategy")
        assert all(strategy_id in json.dumps(d["Properties"]["DeploymentStrategyId"]) for d in deployments.values())
        environment = _one(template, "AWS::AppConfig::Environment")
        assert environment["Name"] == region
        (monitor,) = environment["Monitors"]
        alarm = _logical_id(template, "AWS::CloudWatch::Alarm", "AlarmApi5xx")
        assert monitor["AlarmArn"] == {"Fn::GetAtt": [alarm, "Arn"]}
        role = _logical_id(template, "AWS::IAM::Role", "ConfigMonitorRole")
        assert monitor["AlarmRoleArn"] == {"Fn::GetAtt": [role, "Arn"]}


def _hosted_content(content: Any) -> Any:
    """A hosted configuration's JSON, each CloudFormation token (an imported ARN) standing in as "<token>"."""
    if isinstance(content, dict):
        content = "".join(p if isinstance(p, str) else "<token>" for p in content["Fn::Join"][1])
    return json.loads(content)


@pytest.mark.parametrize("region", ["us-east-1", "us-west-2"])
def test_rendered_tables_pass_the_appconfig_schema(platform: Platform, region: str) -> None:
    jsonschema.Draft4Validator.check_schema(routing_table_schema())
    jsonschema.Draft4Validator(routing_table_schema()).validate(render_routing_table(platform, region))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda t: t.update(version=2),
        lambda t: t.update(extra=1),
        lambda t: next(iter(t["targets"].values())).update(capacity="reserved"),
        lambda t: next(iter(t["targets"].values()))["backend"].update(kind="openai"),
        lambda t: next(iter(t["features"].values())).pop("deadline_ms"),
        lambda t: next(iter(t["features"].values())).update(order=["spill", "sideways"]),
        lambda t: t["targets"].update({"no-slashes": next(iter(t["targets"].values()))}),
    ],
)
def test_the_schema_rejects_broken_tables(platform: Platform, breakage: Any) -> None:
    table = json.loads(json.dumps(render_routing_table(platform, "us-east-1")))
    breakage(table)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(routing_table_schema()).validate(table)


# --- alarms and dashboard --------------------------------------------------------------------------------------


def test_alarms_and_dashboard(platform: Platform, routers: Mapping[str, Template]) -> None:
    telemetry = (ROUTER_ROOT / "spillway" / "telemetry.py").read_text(encoding="utf-8")
    for region, template in routers.items():
        found = resources_of(template, "AWS::CloudWatch::Alarm").values()
        alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in found}
        prefix = f"{platform.name}-router-{region}-"
        expected = {"api-5xx", "breaker-open", "deployment-faults", "backend-throttles", "lambda-throttles"}
        for feature in sorted(render_routing_table(platform, region)["features"]):
            expected |= {f"spill-rate-{feature}", f"failover-rate-{feature}"}
        assert {name.removeprefix(prefix) for name in alarms} == expected
        for alarm in alarms.values():
            assert alarm["AlarmActions"]
            assert alarm["OKActions"]
            for metric in alarm.get("Metrics", []):
                expression = metric.get("Expression", "")
                stat = metric.get("MetricStat", {}).get("Metric", {})
                if stat.get("Namespace") == "Spillway":
                    assert re.search(rf"\b{stat['MetricName']}\b", telemetry)
                for name in re.findall(r"SUM\((\w+)\)", expression):
                    assert re.search(rf"\b{name}\b", telemetry)
        topic = _one(template, "AWS::SNS::Topic")
        assert "KmsMasterKeyId" in topic
        dashboard = _one(template, "AWS::CloudWatch::Dashboard")
        assert dashboard["DashboardName"] == f"{platform.name}-router-{region}"


# --- assets ----------------------------------------------------------------------------------------------------


def test_no_asset_ships_bytecode(synth: Any) -> None:
    assets = [p for p in Path(synth.outdir).iterdir() if p.name.startswith("asset.") and p.is_dir()]
    assert assets
    for asset in assets:
        assert not list(asset.rglob("__pycache__")), asset.name
        assert not list(asset.rglob("*.pyc")), asset.name


def test_each_cell_ships_its_own_routing_table(platform: Platform, routers: Mapping[str, Template], synth: Any) -> None:
    for region, template in routers.items():
        key = _function(template)["Code"]["S3Key"]
        asset = Path(synth.outdir) / f"asset.{key.removesuffix('.zip')}"
        shipped = json.loads((asset / "routing.json").read_text(encoding="utf-8"))
        assert shipped == render_routing_table(platform, region)
        assert (asset / "handler.py").is_file()
        assert (asset / "spillway" / "config.py").is_file()
        assert not (asset / "tests").exists()


def _defined_functions(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def test_the_asset_ships_no_openapi_renderer(routers: Mapping[str, Template], synth: Any) -> None:
    """docs/openapi.json is rendered by tools/openapi.py: none of its functions, nor its schema references, ship."""
    renderer = _defined_functions(Path(__file__).resolve().parents[2] / "tools" / "openapi.py") - {"main"}
    assert {"openapi_document", "openapi_path"} <= renderer
    for template in routers.values():
        key = _function(template)["Code"]["S3Key"]
        asset = Path(synth.outdir) / f"asset.{key.removesuffix('.zip')}"
        modules = list(asset.rglob("*.py"))
        assert asset / "spillway" / "api.py" in modules
        assert not (asset / "tools").exists()
        for module in modules:
            assert not _defined_functions(module) & renderer, module.relative_to(asset)
            assert "#/components/schemas/" not in module.read_text(), module.relative_to(asset)


def test_staging_is_deterministic(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "handler.py").write_text("def lambda_handler(e, c): ...\n")
    (source / "pkg" / "__pycache__" / "x.cpython-313.pyc").write_bytes(b"\0")
    (source / "routing.json").write_text("{}")  # the checked-in default is replaced
    first = stage_router_code({"b": 1, "a": 2}, source=source, staging=tmp_path / "stage")
    second = stage_router_code({"a": 2, "b": 1}, source=source, staging=tmp_path / "stage")
    assert first == second
    assert sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file()) == ["handler.py", "routing.json"]
    assert json.loads((first / "routing.json").read_text()) == {"a": 2, "b": 1}
    other = stage_router_code({"a": 3}, source=source, staging=tmp_path / "stage")
    assert other != first


def test_missing_dependency_layer_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(packaging, "DEPS_DIR", tmp_path / "no-such-folder")
    with pytest.raises(RouterBuildError, match=r"run `make synth`"):
        packaging.dependencies_layer_dir()


def test_gateway_answers_in_the_router_error_shape_without_echoing_the_caller(templates: dict[str, Any]) -> None:
    """API Gateway's own 4xx/5xx (validator, throttle, auth) use the router's error shape and fixed messages: the
    default BAD_REQUEST_BODY answer would quote the caller's keys through $context.error.validationErrorString."""
    for name, template in templates.items():
        if "-router-" not in name:
            continue
        responses = {
            r["Properties"]["ResponseType"]: r["Properties"]
            for r in resources_of(template, "AWS::ApiGateway::GatewayResponse").values()
        }
        assert {"BAD_REQUEST_BODY", "DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED"} <= set(responses)
        for props in responses.values():
            body = json.loads(props["ResponseTemplates"]["application/json"])
            assert set(body["error"]) == {"code", "message", "request_id"}
            assert "validationErrorString" not in json.dumps(body)
        assert responses["BAD_REQUEST_BODY"]["StatusCode"] == "400"

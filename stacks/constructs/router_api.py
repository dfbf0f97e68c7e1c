"""The router's API: API Gateway REST, private (through an ``execute-api`` interface endpoint added to the cell's
VPC) or regional, per ``router.api.endpoint_type``.

IAM auth on every method, a resource policy naming the allowed callers (and, private, the allowed VPC endpoints),
request validation with a JSON model of the Converse body (a parameter: stacks/router.py renders it), stage
throttling, one usage plan and API key per calling service, JSON access logs without bodies to a CMK log group,
execution logs (errors only) in a CMK log group created before the stage, X-Ray, and gateway responses in the
router's error shape. The WAF is its own construct (stacks/constructs/web_acl.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.cell import CellStack
from stacks.constructs.api_gateway_account import ApiGatewayAccountRole
from stacks.constructs.concern import Concern, flat_unique_id
from stacks.constructs.encrypted_log_group import EncryptedLogGroup
from stacks.constructs.monitoring import STAGE
from stacks.constructs.private_endpoint import PrivateInterfaceEndpoint
from stacks.gateway_responses import GATEWAY_RESPONSES
from stacks.naming import access_log_group_name, api_name
from stacks.platform import Platform

# API Gateway's own answers, in the router's error shape: stacks/gateway_responses.py (the local world renders the
# same definitions).
API_RESOURCES = (
    ("POST", "/v1/features/{feature}/converse"),
    ("GET", "/v1/features"),
    ("GET", "/v1/health"),
    ("POST", "/v1/chat/completions"),  # the OpenAI-compatible front door: prompt-carrying too (the WAF's scope-down)
    ("GET", "/v1/models"),
)
# The streaming route (handler.lambda_stream_handler), deployed when the function answers in Lambda's streaming mode
# (`RouterFunction.streams`: its runtime loop, lambdas/router/runtime_loop.py, streams the methods named here, which
# the function's environment lists; the managed Python runtime alone would buffer, and behind a STREAM integration
# could only fail).
STREAM_RESOURCE = ("POST", "/v1/features/{feature}/converse-stream")
# The OpenAI door: integrated in streaming mode too once the function streams (`stream: true` is a body value, and
# API Gateway picks the integration per method), its whole answers then come from the same streaming entry.
CHAT_RESOURCE = ("POST", "/v1/chat/completions")
# Every method behind a STREAM integration once the function streams: the function must answer exactly these in
# Lambda's streaming mode (its runtime loop's list of streamed routes is this tuple).
STREAMED_RESOURCES = (STREAM_RESOURCE, CHAT_RESOURCE)
# API Gateway REST's limits for a response-streaming integration: 15 minutes in all (developer guide, "Stream the
# integration response for your proxy integrations in API Gateway"); the 5-minute idle limit is theirs to enforce.
STREAM_TIMEOUT_MAX_S = 15 * 60

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


class RouterApi(Concern):
    """`api`, `execute_api_endpoint` (private only), `access_log_group`, `execution_log_group`, `usage_plans`,
    `api_keys`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, platform: Platform, region: str, vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection, log_key: kms.IKey, function: lambda_.IFunction,
        converse_schema: apigw.JsonSchema, integration_timeout_s: int, streams: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(scope, construct_id)
        self.platform = platform
        self.region_name = region
        self.api_name = api_name(platform, region)
        self.execute_api_endpoint: PrivateInterfaceEndpoint | None = None
        if platform.router.endpoint_type == "private":
            self.execute_api_endpoint = self._execute_api_endpoint(vpc, subnets)
        self.access_log_group = EncryptedLogGroup(
            self,
            "ApiAccessLogs",
            retention_days=platform.log_retention_days,
            key=log_key,
            log_group_name=access_log_group_name(platform, region),
        ).log_group
        self.api = self._api(vpc, function, converse_schema, integration_timeout_s, streams)
        if self.execute_api_endpoint is not None:
            self._scope_endpoint_policy(self.execute_api_endpoint, self.api)
        self.execution_log_group = self._execution_logs(log_key)
        self.usage_plans, self.api_keys = self._usage_plans()
        self.account_role: ApiGatewayAccountRole | None = None
        if platform.router.account_cloudwatch_role:
            self.account_role = ApiGatewayAccountRole(self, "AccountLogging", api=self.api)

    def _execute_api_endpoint(self, vpc: ec2.IVpc, subnets: ec2.SubnetSelection) -> PrivateInterfaceEndpoint:
        """The cell's execute-api endpoint; its policy names this API once it exists (`_scope_endpoint_policy`)."""
        endpoint = PrivateInterfaceEndpoint(
            self,
            "ExecuteApiEndpoint",
            vpc=vpc,
            service=ec2.InterfaceVpcEndpointAwsService.APIGATEWAY,
            subnets=subnets,
            description="execute-api endpoint: HTTPS to the private router API from this cell's VPC",
        )
        # Only the callers' own subnets in the cell's VPC (router.api.caller_cidrs, literal: cdk-nag can evaluate
        # them), never the router and model subnets; callers in other VPCs use their own endpoints.
        callers = self.platform.router.caller_cidrs.get(self.region_name, ())
        endpoint.allow_from_cidrs(self, callers, "HTTPS from the caller subnets")
        return endpoint

    def _scope_endpoint_policy(self, endpoint: PrivateInterfaceEndpoint, api: apigw.RestApi) -> None:
        """Through this endpoint: only this API, only by the configured caller roles, only this account's API."""
        stack = cdk.Stack.of(self)
        endpoint.endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeTheRouterApiOnly",
                principals=[iam.AnyPrincipal()],
                actions=["execute-api:Invoke"],
                resources=[
                    f"arn:{stack.partition}:execute-api:{stack.region}:{self.platform.account}:{api.rest_api_id}/*"
                ],
                conditions={
                    "StringEquals": {"aws:ResourceAccount": self.platform.account},
                    "ArnEquals": {"aws:PrincipalArn": list(self.platform.router.allowed_callers)},
                },
            )
        )

    def _resource_policy(self, vpc: ec2.IVpc) -> iam.PolicyDocument:
        """The configured caller roles by exact ARN; private, only from the cell's VPC or the callers' endpoints.

        The VPC (not this stack's endpoint id) names the cell's own path, so the endpoint's policy can name this API
        without a cycle; requests from the VPC reach the API only through its execute-api endpoint.
        """
        settings = self.platform.router
        statements = [
            iam.PolicyStatement(
                sid="AllowedCallers",
                principals=[iam.ArnPrincipal(caller) for caller in settings.allowed_callers],
                actions=["execute-api:Invoke"],
                resources=["execute-api:/*"],
            )
        ]
        if self.execute_api_endpoint is not None:
            elsewhere: dict[str, object] = {"aws:SourceVpc": vpc.vpc_id}
            callers = list(settings.caller_vpc_endpoints.get(self.region_name, ()))
            if callers:
                elsewhere["aws:SourceVpce"] = callers
            statements.append(
                iam.PolicyStatement(
                    sid="OnlyFromTheCellOrTheCallersEndpoints",
                    effect=iam.Effect.DENY,
                    principals=[iam.AnyPrincipal()],
                    actions=["execute-api:Invoke"],
                    resources=["execute-api:/*"],
                    conditions={"StringNotEquals": elsewhere},
                )
            )
        return iam.PolicyDocument(statements=statements)

    def _api(
        self, vpc: ec2.IVpc, function: lambda_.IFunction, converse_schema: apigw.JsonSchema,
        integration_timeout_s: int, streams: bool,
    ) -> apigw.RestApi:  # fmt: skip
        settings = self.platform.router
        private = self.execute_api_endpoint is not None
        endpoint_configuration = apigw.EndpointConfiguration(
            types=[apigw.EndpointType.PRIVATE if private else apigw.EndpointType.REGIONAL]
        )
        keyed = bool(settings.calling_services)
        api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=self.api_name,
            description=f"{self.platform.name} router in {self.region_name} ({'private' if private else 'regional'})",
            endpoint_configuration=endpoint_configuration,
            policy=self._resource_policy(vpc),
            cloud_watch_role=False,  # an account-level setting: ApiGatewayAccountRole, only on request
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
        self._keep_flat_unique_id(api)  # API Gateway names the Lambda permissions after it
        validator = api.add_request_validator(
            "Validator",
            request_validator_name="body-and-parameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        model = api.add_model(
            "ConverseRequest", model_name="ConverseRequest", content_type="application/json", schema=converse_schema
        )
        integration = apigw.LambdaIntegration(
            function,
            proxy=True,
            allow_test_invoke=False,
            timeout=cdk.Duration.seconds(integration_timeout_s),
        )
        v1 = api.root.add_resource("v1")
        features = v1.add_resource("features")
        feature = features.add_resource("{feature}")
        converse = feature.add_resource("converse")
        add_converse_method(converse, "converse", integration, validator, model)
        if streams:
            add_converse_stream(feature, function, validator, model, integration_timeout_s)
        features.add_method("GET", integration, operation_name="listFeatures", request_validator=validator)
        v1.add_resource("health").add_method("GET", integration, operation_name="health", request_validator=validator)
        add_chat_completions(v1, function, integration, validator, integration_timeout_s, streams=streams)
        v1.add_resource("models").add_method(
            "GET", integration, operation_name="listModels", request_validator=validator
        )
        self._gateway_responses(api)
        return api

    def _keep_flat_unique_id(self, construct: Construct) -> None:
        """Some L2s build construct ids from another construct's unique id: keep the one it had before concerns."""
        stack = cdk.Stack.of(self)
        if isinstance(stack, CellStack):
            stack.flat_unique_ids[cdk.Names.node_unique_id(construct.node)] = flat_unique_id(construct)

    def _execution_logs(self, log_key: kms.IKey) -> logs.ILogGroup:
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
            key=log_key,
            log_group_name=cdk.Fn.join("", ["API-Gateway-Execution-Logs_", self.api.rest_api_id, f"/{STAGE}"]),
        )
        self.api.deployment_stage.node.add_dependency(group)
        return group.log_group

    @staticmethod
    def _gateway_responses(api: apigw.RestApi) -> None:
        """Answers API Gateway gives itself, in the router's error shape. The defaults would echo the validator's
        error string, which quotes the caller's keys: zero knowledge forbids it, so these messages are fixed."""
        for response_id, response in GATEWAY_RESPONSES.items():
            api.add_gateway_response(
                response_id,
                type=apigw.ResponseType.of(response.response_type),
                status_code=response.status,
                templates={"application/json": response.body_template()},
                response_headers=response.header_parameters(),
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
            self._keep_flat_unique_id(key)  # the usage plan key resource is named after it
            plan.add_api_key(key)
            plans[name], keys[name] = plan, key
        return plans, keys


def stream_timeout_s(integration_timeout_s: int) -> int:
    """The streaming route's integration timeout: the buffered route's (the longest feature deadline plus the
    margin: a stream ends by the same deadline), within API Gateway's 15 minutes for a streamed answer."""
    return min(integration_timeout_s, STREAM_TIMEOUT_MAX_S)


def streaming_integration(function: lambda_.IFunction, integration_timeout_s: int) -> apigw.LambdaIntegration:
    """AWS_PROXY to the function's response-streaming invocation (`responseTransferMode: STREAM`, URI
    `/2021-11-15/functions/{arn}/response-streaming-invocations`), answered by handler.lambda_stream_handler."""
    return apigw.LambdaIntegration(
        function,
        proxy=True,
        allow_test_invoke=False,
        response_transfer_mode=apigw.ResponseTransferMode.STREAM,
        timeout=cdk.Duration.seconds(stream_timeout_s(integration_timeout_s)),
    )


def add_chat_completions(
    v1: apigw.IResource, function: lambda_.IFunction, buffered: apigw.Integration,
    validator: apigw.IRequestValidator, integration_timeout_s: int, *, streams: bool,
) -> apigw.Method:  # fmt: skip
    """`POST /v1/chat/completions`, the OpenAI-compatible door (spillway/openai_api.py; the handler checks its body
    field by field). API Gateway picks an integration per method, not per body, so once the function streams the
    whole method is the streaming integration: handler.lambda_stream_handler answers `stream: false` whole and
    `stream: true` chunk by chunk. Until then, the buffered one (the chunks then arrive at the end)."""
    integration = streaming_integration(function, integration_timeout_s) if streams else buffered
    method, path = CHAT_RESOURCE
    resource = v1
    for part in path.split("/")[2:]:  # below /v1
        resource = resource.add_resource(part)
    return resource.add_method(method, integration, operation_name="chatCompletions", request_validator=validator)


def add_converse_stream(
    feature: apigw.IResource, function: lambda_.IFunction, validator: apigw.IRequestValidator, model: apigw.IModel,
    integration_timeout_s: int,
) -> apigw.Method:  # fmt: skip
    """`POST .../{feature}/converse-stream`: validated like converse, integrated with AWS_PROXY to the function's
    response-streaming invocation (`responseTransferMode: STREAM`, URI `/2021-11-15/functions/{arn}/
    response-streaming-invocations`). The integration's lambda:InvokeFunction permission also authorises
    InvokeWithResponseStream (Lambda has no separate action for it)."""
    integration = streaming_integration(function, integration_timeout_s)
    return add_converse_method(feature.add_resource("converse-stream"), "converseStream", integration, validator, model)


def add_converse_method(
    resource: apigw.IResource, operation_name: str, integration: apigw.Integration,
    validator: apigw.IRequestValidator, model: apigw.IModel,
) -> apigw.Method:  # fmt: skip
    """A POST taking a Converse body: the gateway checks it against the model and requires the feature."""
    return resource.add_method(
        "POST",
        integration,
        operation_name=operation_name,
        request_validator=validator,
        request_models={"application/json": model},
        request_parameters={"method.request.path.feature": True},
    )

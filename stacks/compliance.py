"""The compliance gate: cdk-nag's AwsSolutions and NIST 800-53 rev 5 packs on every stack, and every
acknowledgement with its reason, in one place.

Any unacknowledged finding fails synthesis (cdk-nag 3 raises ValidationFailed from `app.synth()`). An
acknowledgement is scoped to one construct and one finding, and its reason must name the compensating control:
`acknowledge` refuses a bare pack or rule family, an unscoped app or stack, and a reason too short to say why.
The ledger of acknowledgements is written next to cdk-nag's report (cdk.out/compliance-acknowledgements.json),
since cdk-nag's own report lists only open violations.

The per-stack functions below (`network`, `links`, ...) are the whole list of exceptions a reviewer must read.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks
from constructs import IConstruct

if TYPE_CHECKING:
    from stacks.links import LinksStack
    from stacks.models import ModelsStack
    from stacks.network import NetworkStack
    from stacks.router import RouterStack

LEDGER_FILE = "compliance-acknowledgements.json"
REPORT_FILE = "validation-report.json"
# A cdk-nag rule (IAM4/IAM5 with their granular [...] part), or a warning of CDK's built-in CloudFormation validation.
_RULE = re.compile(r"^((AwsSolutions|NIST\.800\.53\.R5)-[A-Za-z0-9]+(\[[^\]]+\])?|CloudFormation-Validate::W[0-9]{4})$")
_MIN_REASON = 60


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    path: str
    rule: str
    reason: str


class ComplianceGate:
    """Installs the packs on an app and records each acknowledgement made through it."""

    def __init__(self, app: cdk.App) -> None:
        self.app = app
        self.acknowledgements: list[Acknowledgement] = []
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True), NIST80053R5Checks(app, verbose=True))

    def acknowledge(self, scope: IConstruct, rule: str, reason: str) -> None:
        """Acknowledge one finding on one construct (and its children, e.g. an L2 and its CfnResource)."""
        if not _RULE.match(rule):
            raise ValueError(f"acknowledge one rule by its full id, not {rule!r}")
        if isinstance(scope, (cdk.App, cdk.Stage, cdk.Stack)):
            raise ValueError(f"{rule}: scope it to a resource, not to {scope.node.path or 'the app'}")
        if len(reason.strip()) < _MIN_REASON:
            raise ValueError(f"{rule} on {scope.node.path}: the reason must name the compensating control")
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))
        self.acknowledgements.append(Acknowledgement(scope.node.path, rule, reason))

    def write_ledger(self, outdir: str | Path) -> Path:
        path = Path(outdir) / LEDGER_FILE
        entries = sorted((asdict(a) for a in self.acknowledgements), key=lambda a: (a["path"], a["rule"]))
        path.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
        return path


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    path: str
    severity: str


def read_findings(outdir: str | Path) -> list[Finding]:
    """Open findings from cdk-nag's report (absent when synthesis found nothing)."""
    path = Path(outdir) / REPORT_FILE
    if not path.exists():
        return []
    report = json.loads(path.read_text(encoding="utf-8"))
    return [
        Finding(violation["ruleName"], construct["constructPath"], violation.get("severity", "error"))
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
        for construct in violation.get("violatingConstructs", [])
    ]


# --- acknowledgements, stack by stack ---------------------------------------------------------------------------


def network(gate: ComplianceGate, stack: NetworkStack) -> None:
    """Escrow network cell: no acknowledgement needed; every finding is fixed in the resources.

    Flow logs (ALL traffic) go to a log group with retention and a rotating CMK; the flow-log role has a
    customer-managed policy (no inline policy); endpoints are closed (`open=False`) and admit 443 from security
    groups only; subnets are isolated and assign no public IP; the default security group is emptied.
    Not seen by cdk-nag (its rules inspect L1 classes, and CDK's provider framework emits generic CfnResources):
    the restrict-default-SG provider Lambda and CDK's cross-region export writer. The first logs to a CMK log group
    with retention (NetworkStack._contain_provider_logs); the second is CDK's own, scoped to
    ssm:*Parameter* on /cdk/exports/* of the account. tests/infra/test_network.py pins which Lambdas exist.
    """
    for subnet in stack.vpc.isolated_subnets:
        gate.acknowledge(
            subnet,
            "CloudFormation-Validate::W3010",
            "Availability zones are named explicitly so synthesis makes no account lookup; stacks/platform.py "
            "checks that each configured zone belongs to the cell's region, and a zone change is a reviewed "
            "config change, not a drift.",
        )


def links(gate: ComplianceGate, stack: LinksStack) -> None:
    """Cross-region reachability: no acknowledgement needed.

    Endpoint ingress from peers uses literal CIDRs of the peers' isolated subnets (port 443 only), which cdk-nag
    evaluates and accepts; routes go to peer VPC CIDRs through the peering only. CDK's cross-region export reader
    and writer (provider framework, generic CfnResources) are not inspected by cdk-nag; their roles are limited by
    CDK to the /cdk/exports/<stack>/* SSM parameters of the account.
    """


def models(gate: ComplianceGate, stack: ModelsStack) -> None:
    """Model capacity cell: escrow endpoints, application inference profiles, opt-in Provisioned Throughput."""
    for escrow in stack.escrow.values():
        bucket_arn = _token_name(stack, escrow.bucket.node.default_child, "Arn")
        policy = escrow.policy
        gate.acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{bucket_arn}/{escrow_prefix(stack, escrow)}*]",
            "The execution role reads the objects of its own artifact folder only (one model version's files); "
            "the bucket is the model's own, encrypted with its own key, and its policy denies reads to any other "
            "principal.",
        )
        gate.acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "Only actions that IAM cannot scope to a resource ARN: ecr:GetAuthorizationToken, ec2:Describe*, "
            "cloudwatch:PutMetricData (limited by a namespace condition), the ENI create/delete and "
            "create-permission actions SageMaker needs for the VPC config (an ArnEquals ec2:Vpc condition admits "
            "the cell's VPC only; the key is on every resource they touch), and ec2:DeleteNetworkInterfacePermission, "
            "which names only a permission id and can only revoke. Only sagemaker.amazonaws.com of this account can "
            "assume the role; the image pull names the one repository.",
        )
        gate.acknowledge(
            escrow.bucket,
            "NIST.800.53.R5-S3BucketReplicationEnabled",
            "Model artifacts are build outputs kept in the release pipeline and uploaded to each cell's own "
            "bucket; a second region runs its own cell with its own copy, so replication adds no availability. "
            "Versioning protects against overwrite.",
        )
    if stack.access_logs is not None:
        gate.acknowledge(
            stack.access_logs,
            "NIST.800.53.R5-S3BucketReplicationEnabled",
            "Server access logs of the cell's artifact buckets: request metadata only, versioned, TLS only and "
            "expired after the platform's log retention; CloudTrail data events are the organisation's durable copy.",
        )
        gate.acknowledge(
            stack.access_logs,
            "NIST.800.53.R5-S3DefaultEncryptionKMS",
            "S3 delivers server access logs only to SSE-S3 buckets (SSE-KMS targets are not supported); the bucket "
            "holds request metadata, never model data, and public access is blocked with TLS enforced.",
        )
    if stack.provisioned is not None:
        _provisioned_throughput(gate, stack)
    from stacks.network import web_identity_audiences  # noqa: PLC0415 (stacks import this module's gate)

    if web_identity_audiences(stack.platform, stack.region_name):
        gate.acknowledge(
            stack.router_invoke_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "sts:GetWebIdentityToken has no resource type (IAM's service authorization reference), so its one "
            "statement names '*'. Its conditions bound it: the token's audiences must all be the platform file's "
            "workload identity providers (ForAllValues sts:IdentityTokenAudience), RS256, at most 300 s; the STS "
            "endpoint's policy admits only this account's principals for the same audiences. Every other statement "
            "of the policy names exact ARNs.",
        )


def escrow_prefix(stack: ModelsStack, escrow: object) -> str:
    name = next(n for n, e in stack.escrow.items() if e is escrow)
    offer = stack.platform.models[name].regions[stack.region_name]
    assert offer.endpoint is not None
    return offer.endpoint.artifact_prefix


def _token_name(stack: cdk.Stack, resource: IConstruct | None, attribute: str) -> str:
    """How cdk-nag spells a resource attribute token in a finding id: <LogicalId.Attribute>."""
    assert isinstance(resource, cdk.CfnElement)
    return f"<{stack.resolve(resource.logical_id)}.{attribute}>"


def _provisioned_throughput(gate: ComplianceGate, stack: ModelsStack) -> None:
    """Only when the config buys Provisioned Throughput: the custom resource's handler and CDK's Provider framework."""
    pt = stack.provisioned
    assert pt is not None
    partition_arn = f"arn:{stack.partition}:bedrock:{stack.region_name}:{stack.platform.account}:provisioned-model/*"
    gate.acknowledge(
        pt.policy,
        f"AwsSolutions-IAM5[Resource::{partition_arn}]",
        "A provisioned model's id is assigned by Bedrock when it is bought, so no exact ARN exists beforehand; "
        "every statement on it requires the spillway:provisioned-name tag (request or resource) to be one of the "
        "names in this cell's config.",
    )
    gate.acknowledge(
        pt.policy,
        "AwsSolutions-IAM5[Resource::*]",
        "Only the EC2 network-interface actions Lambda needs to attach the two handlers to the VPC, which IAM "
        "cannot scope to a resource before the interface exists. The same policy denies the ENI create/delete/"
        "assign/unassign actions whenever lambda:SourceFunctionArn is one of the two handlers' ARNs (AWS's "
        "documented guard), so handler code cannot use them; only the Lambda service's own attachment can.",
    )
    for handler in (pt.on_event, pt.is_complete):
        gate.acknowledge(
            handler,
            "AwsSolutions-L1",
            "Pinned to python3.13, the interpreter make test also runs the unit tests on (this handler's among them, "
            "with botocore's Stubber); moving runtimes is a tested change, not an automatic one.",
        )
        gate.acknowledge(
            handler,
            "NIST.800.53.R5-LambdaDLQ",
            "Invoked synchronously by the Provider framework, which returns every failure to CloudFormation (the "
            "stack event is the record and the stack rolls back); an asynchronous dead-letter queue would never "
            "receive anything.",
        )
    provider = pt.provider
    on_event = _token_name(stack, pt.on_event.node.default_child, "Arn")
    is_complete = _token_name(stack, pt.is_complete.node.default_child, "Arn")
    for name in ("framework-onEvent", "framework-isComplete", "framework-onTimeout"):
        function = provider.node.find_child(name)
        for arn in (on_event, is_complete):
            gate.acknowledge(
                function,
                f"AwsSolutions-IAM5[Resource::{arn}:*]",
                "The Provider framework invokes exactly this cell's two handler functions, any version (':*'); no "
                "other function is named.",
            )
        gate.acknowledge(
            function,
            "NIST.800.53.R5-IAMNoInlinePolicy",
            "CDK's Provider framework generates this role's inline policy: lambda:InvokeFunction and "
            "lambda:GetFunction on this cell's two handler functions (any version), states:StartExecution on the "
            "provider's own waiter (the onEvent function only), and logs:CreateLogStream/PutLogEvents on the "
            "framework's CMK-encrypted log group (models.py _framework_roles replaced AWSLambdaBasicExecutionRole). "
            "CDK rebuilds it with the same scope on every synthesis.",
        )
        gate.acknowledge(
            function,
            "NIST.800.53.R5-LambdaDLQ",
            "The Provider framework reports every failure back to CloudFormation (stack events, rollback), so no "
            "event is lost; a dead-letter queue would duplicate that record.",
        )
        gate.acknowledge(
            function,
            "NIST.800.53.R5-LambdaConcurrency",
            "Runs only during a deployment that changes this cell's Provisioned Throughput, once per custom "
            "resource event; CloudFormation itself bounds the concurrency.",
        )
        gate.acknowledge(
            function,
            "NIST.800.53.R5-LambdaInsideVPC",
            "The framework only speaks the CloudFormation protocol (pre-signed S3 response, Step Functions, Lambda "
            "invoke) and never sees model traffic; the Bedrock calls run in the VPC handler in the isolated subnets.",
        )
    waiter = provider.node.find_child("waiter-state-machine")
    framework = [
        _token_name(stack, provider.node.find_child(name).node.default_child, "Arn")
        for name in ("framework-isComplete", "framework-onTimeout")
    ]
    for arn in framework:
        gate.acknowledge(
            waiter,
            f"AwsSolutions-IAM5[Resource::{arn}:*]",
            "The waiter state machine invokes exactly the framework's is-complete and timeout functions of this "
            "provider, any version (':*'); no other function is named.",
        )
    gate.acknowledge(
        waiter,
        "NIST.800.53.R5-IAMNoInlinePolicy",
        "CDK generates the waiter's inline role policy: lambda:InvokeFunction on the framework's is-complete and "
        "timeout functions (any version), the CloudWatch Logs log-delivery actions (authorized on '*' only) for its "
        "CMK-encrypted framework log group, and kms:Decrypt/GenerateDataKey on the framework key through Step "
        "Functions only. Only Step Functions of this account, for its state machines, may assume the role.",
    )
    gate.acknowledge(
        waiter,
        "AwsSolutions-IAM5[Resource::*]",
        "Step Functions log delivery (logs:CreateLogDelivery and friends) is authorized only on '*' by CloudWatch "
        "Logs; the delivery target is the cell's CMK-encrypted framework log group named in the state machine.",
    )
    gate.acknowledge(
        waiter,
        "AwsSolutions-SF2",
        "SF2 asks for X-Ray tracing. The waiter is CDK's Provider state machine: during a deployment that buys PT "
        "it calls the framework's is-complete function once a minute, and a trace would show only that poll. Its "
        "executions are logged at ALL (without execution data) to the cell's CMK-encrypted framework log group, the "
        "state machine is encrypted with the framework key, and every outcome is a CloudFormation stack event.",
    )


def router(gate: ComplianceGate, stack: RouterStack) -> None:
    """Router cell: the Lambda, its API, the fleet store, AppConfig, alarms.

    Fixed in the resources, so not acknowledged: IAM auth, request validation, access logs and X-Ray on the API;
    a WAF web ACL on the stage; the Lambda in the isolated subnets with reserved concurrency and a CMK-encrypted
    environment; customer-managed policies only on its role (CDK's grants are dropped: `without_policy_updates`);
    CMK-encrypted log groups, topic and configuration.
    The fleet store needs none either: cdk-nag 3.0.2 has no rule for ElastiCache serverless caches, users or user
    groups (its six ElastiCache rules read CfnCacheCluster and CfnReplicationGroup only), so what those rules ask
    (in the VPC, encrypted, multi-AZ, authenticated) is proven by tests/infra/test_fleet_store.py instead.
    """
    gate.acknowledge(
        stack.router_function.runtime_policy,
        "AwsSolutions-IAM5[Resource::*]",
        "Only actions IAM cannot scope to a resource: xray:PutTraceSegments/PutTelemetryRecords and the ENI "
        "actions Lambda performs with the function's role to attach it to the VPC. The same policy denies the ENI "
        "create/delete/assign/unassign actions whenever lambda:SourceFunctionArn is the router function's ARN, i.e. "
        "to any call made from inside the function (AWS's documented guard), so only the Lambda service can use "
        "them. Config, logs and key are exact ARNs; invoke permissions come only from the models' policies, "
        "which name exact model and endpoint ARNs.",
    )
    gate.acknowledge(
        stack.function,
        "AwsSolutions-L1",
        "The runtime is pinned to Python 3.13, the interpreter make test runs the router's tests on "
        "(make test-lambda-runtime) and the one its dependency layer is built for (make's router-deps step); moving "
        "to a newer runtime is a toolchain change made with the tests, not a silent default.",
    )
    gate.acknowledge(
        stack.function,
        "NIST.800.53.R5-LambdaDLQ",
        "The router is invoked synchronously by API Gateway only: a failure is returned to the caller as a 5xx or "
        "503 with Retry-After, there is no asynchronous event to dead-letter, and failures raise the 5xx, breaker "
        "and throttle alarms (SNS, CMK-encrypted) that notify the operators.",
    )
    for method in stack.api.methods:
        gate.acknowledge(
            method,
            "AwsSolutions-COG4",
            "Callers are services, not end users: every method requires IAM (SigV4) authorization, and the API's "
            "resource policy admits only the configured caller accounts and roles (and, private, only through the "
            "allowed VPC endpoints). A Cognito user pool would add a second identity store without adding control.",
        )
    stage = stack.api.deployment_stage
    gate.acknowledge(
        stage,
        "NIST.800.53.R5-APIGWCacheEnabledAndEncrypted",
        "Caching is off on purpose: the responses are model completions, unique per request, and a cache would keep "
        "prompt-derived content at rest against the zero-knowledge rule. No data is stored by the stage; transport "
        "is TLS and the Lambda's answers are never persisted.",
    )
    gate.acknowledge(
        stage,
        "NIST.800.53.R5-APIGWSSLEnabled",
        "A client certificate authenticates API Gateway to an HTTP backend; this API's only integration is the "
        "router Lambda (AWS_PROXY), invoked by API Gateway under IAM with a Lambda resource policy naming this API, "
        "so there is no HTTP backend to present a certificate to. Callers reach the API over TLS only.",
    )
    if stack.router_api.account_role is not None:
        _account_cloudwatch_role(gate, stack.router_api.account_role.role)


def _account_cloudwatch_role(gate: ComplianceGate, role: IConstruct) -> None:
    """Only when the platform file sets router.api.account_cloudwatch_role."""
    gate.acknowledge(
        role,
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
        "The account-level role API Gateway uses to write access and execution logs in this region, set because "
        "the platform file asks for it (router.api.account_cloudwatch_role); AWS maintains the policy for exactly "
        "that service, and only API Gateway, for this account's APIs in this region, can assume the role. Both "
        "groups it writes for this API exist before the stage, created by the router stack: the access log group and "
        "API-Gateway-Execution-Logs_<restApiId>/live (errors only, no data trace), each CMK-encrypted with the "
        "platform's retention, so the role never creates an unencrypted or unexpiring group for this API.",
    )

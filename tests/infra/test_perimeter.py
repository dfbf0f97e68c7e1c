"""Issue 13's medium findings, read from the synthesized templates of the example platform: endpoint policies that
name their actions and carry a resource perimeter, security-group egress to named destinations only, key policies
that separate administration from use, who may call the API, and the PT handler's tagging. Each check is a function
that returns the problems it finds; a test plants one weakness to show the check catches it."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from stacks.constructs.key_policy import ADMIN_ACTIONS
from stacks.network import isolated_subnet_cidrs
from stacks.platform import Platform
from stacks.targets import providers_reached_from
from tests.infra.conftest import Template, resources_of

RUNTIME_SERVICES = ("bedrock-runtime", "sagemaker.runtime")
# The fleet store (ElastiCache Serverless, TLS always on), reached from the router's group to the store's group only.
TLS_STORE_PORTS = {("tcp", 6379, 6379), ("tcp", 6380, 6380)}
CRYPTO_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncrypt", "kms:*", "*")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _service(props: Mapping[str, Any]) -> str:
    name = props["ServiceName"]
    text = name if isinstance(name, str) else json.dumps(name)
    return text.rsplit(".", 1)[-1] if "sagemaker.runtime" not in text else "sagemaker.runtime"


# --- checks -------------------------------------------------------------------------------------------------------


def endpoint_policy_problems(template: Template, account: str) -> list[str]:
    """Interface endpoints other than the model runtimes (which name exact ARNs): no wildcard action, and every Allow
    carries aws:ResourceAccount (or names exact ECR repositories of their registries' accounts)."""
    problems = []
    for logical_id, endpoint in resources_of(template, "AWS::EC2::VPCEndpoint").items():
        props = endpoint["Properties"]
        if props.get("VpcEndpointType") != "Interface" or any(s in json.dumps(props["ServiceName"]) for s in (
            "bedrock-runtime", "sagemaker.runtime", "execute-api"
        )):  # fmt: skip
            continue
        for statement in props["PolicyDocument"]["Statement"]:
            if statement["Effect"] != "Allow":
                continue
            actions = _list(statement["Action"])
            if any("*" in action for action in actions):
                problems.append(f"{logical_id}: wildcard action {actions}")
            conditions = statement.get("Condition", {}).get("StringEquals", {})
            if conditions.get("aws:PrincipalAccount") != account:
                problems.append(f"{logical_id}: no aws:PrincipalAccount")
            if actions == ["ecr:GetAuthorizationToken"]:
                continue  # a token for the caller's own registry access: no resource to scope
            if actions == ["sts:GetWebIdentityToken"]:  # no resource either: bound to the providers' audiences
                audiences = statement.get("Condition", {}).get("ForAllValues:StringEquals", {})
                if not audiences.get("sts:IdentityTokenAudience"):
                    problems.append(f"{logical_id}: web identity tokens for any audience")
                continue
            if "aws:ResourceAccount" not in conditions:
                problems.append(f"{logical_id}: no resource perimeter (aws:ResourceAccount)")
    return problems


def egress_problems(template: Template, allowed_cidrs: set[str], dns_cidrs: frozenset[str] = frozenset()) -> list[str]:
    """Every egress rule of the template: tcp/443 to a security group, a prefix list, or an allowed literal CIDR;
    DNS (53) only to `dns_cidrs` (the other clouds' resolvers, from the Route 53 Resolver endpoint)."""
    problems = []
    for logical_id, rule in _egress_rules(template):
        ports = (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort"))
        if rule.get("CidrIp") == "255.255.255.255/32":  # CDK's "no egress" placeholder
            continue
        if ports in {("udp", 53, 53), ("tcp", 53, 53)} and rule.get("CidrIp") in dns_cidrs:
            continue
        to_store = ports in TLS_STORE_PORTS and "DestinationSecurityGroupId" in rule
        if ports != ("tcp", 443, 443) and not to_store:
            problems.append(f"{logical_id}: egress other than tcp/443")
        if "DestinationSecurityGroupId" in rule or "DestinationPrefixListId" in rule:
            continue
        cidr = rule.get("CidrIp") or rule.get("CidrIpv6")
        if cidr not in allowed_cidrs:
            problems.append(f"{logical_id}: egress to {cidr}")
    return problems


def _egress_rules(template: Template) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            for rule in props.get("SecurityGroupEgress", []):
                yield logical_id, rule
        elif resource["Type"] == "AWS::EC2::SecurityGroupEgress":
            yield logical_id, props


def key_policy_problems(template: Template) -> list[str]:
    """Every KMS key: administrators cannot use it; account principals use it only through a named service."""
    problems = []
    for logical_id, key in resources_of(template, "AWS::KMS::Key").items():
        for statement in key["Properties"]["KeyPolicy"]["Statement"]:
            if statement["Effect"] != "Allow":
                continue
            principal = json.dumps(statement.get("Principal"))
            if ":root" not in principal:
                if "Service" not in statement["Principal"] or not statement.get("Condition"):
                    problems.append(f"{logical_id}: {statement.get('Sid')} admits a principal without a condition")
                continue
            actions = _list(statement["Action"])
            uses = [a for a in actions if a.startswith(CRYPTO_ACTIONS) or a in {"*", "kms:*"}]
            via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
            if uses and not via:
                problems.append(f"{logical_id}: {statement.get('Sid')} lets the account use the key directly")
            if via and not set(actions) <= {*CRYPTO_ACTIONS, "kms:DescribeKey", "kms:GenerateDataKey*",
                                            "kms:ReEncrypt*", "kms:CreateGrant"}:  # fmt: skip
                problems.append(f"{logical_id}: {statement.get('Sid')} mixes administration into use")
            if not uses and not via and not set(actions) <= set(ADMIN_ACTIONS):
                problems.append(f"{logical_id}: {statement.get('Sid')} grants {actions}")
    return problems


# --- tests --------------------------------------------------------------------------------------------------------


def test_endpoint_policies_name_actions_with_a_resource_perimeter(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region in platform.region_names:
        template = templates[f"{platform.name}-network-{region}"]
        assert endpoint_policy_problems(template, platform.account) == [], region
        services = {_service(e["Properties"]) for e in resources_of(template, "AWS::EC2::VPCEndpoint").values()}
        assert "appconfig" not in services  # the AppConfig agent calls appconfigdata only
    planted = copy.deepcopy(templates[f"{platform.name}-network-{platform.region_names[0]}"])
    for endpoint in resources_of(planted, "AWS::EC2::VPCEndpoint").values():
        if "xray" in json.dumps(endpoint["Properties"]["ServiceName"]):
            endpoint["Properties"]["PolicyDocument"]["Statement"] = [
                {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
                 "Condition": {"StringEquals": {"aws:PrincipalAccount": platform.account}}}
            ]  # fmt: skip
    found = endpoint_policy_problems(planted, platform.account)
    assert any("wildcard action" in p for p in found)
    assert any("resource perimeter" in p for p in found)


def test_egress_goes_only_to_endpoints_gateways_and_peer_cells(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region in platform.region_names:
        peers = {c for p in platform.region_names if p != region for c in isolated_subnet_cidrs(platform, p)}
        # Another cloud's private endpoints (HTTPS) and resolvers (DNS), over the cell's VPN.
        paths = [p.path for p in providers_reached_from(platform, region) if p.path is not None]
        endpoints = {f"{ip}/32" for path in paths for ip in path.endpoint_ips}
        resolvers = frozenset(f"{ip}/32" for path in paths for ip in path.dns_resolvers)
        for kind in ("network", "models", "router", "links"):
            template = templates[f"{platform.name}-{kind}-{region}"]
            assert egress_problems(template, peers | endpoints, resolvers) == [], (kind, region)
        network = templates[f"{platform.name}-network-{region}"]
        prefix_lists = {
            r["DestinationPrefixListId"] for _, r in _egress_rules(network) if "DestinationPrefixListId" in r
        }
        assert prefix_lists == set(platform.regions[region].prefix_lists.values())
        for cidr in peers:
            assert not ipaddress.ip_network(cidr).overlaps(ipaddress.ip_network(platform.regions[region].vpc_cidr))
    planted = copy.deepcopy(templates[f"{platform.name}-network-{platform.region_names[0]}"])
    group = next(r for k, r in planted["Resources"].items() if k.startswith("RouterSecurityGroup"))
    group["Properties"]["SecurityGroupEgress"].append(
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"}
    )
    assert any("egress to 0.0.0.0/0" in p for p in egress_problems(planted, set()))
    group["Properties"]["SecurityGroupEgress"].append(
        {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "CidrIp": "8.8.8.8/32"}
    )  # DNS to anyone but the providers' resolvers
    assert any("egress other than tcp/443" in p for p in egress_problems(planted, set(), frozenset({"10.200.0.10/32"})))


def test_every_key_separates_administration_from_use(platform: Platform, templates: Mapping[str, Template]) -> None:
    keys = 0
    for name, template in templates.items():
        assert key_policy_problems(template) == [], name
        keys += len(resources_of(template, "AWS::KMS::Key"))
    assert keys >= 3 * len(platform.region_names)  # logs, router and escrow keys of every cell
    planted = copy.deepcopy(templates[f"{platform.name}-router-{platform.region_names[0]}"])
    key = next(iter(resources_of(planted, "AWS::KMS::Key").values()))
    key["Properties"]["KeyPolicy"]["Statement"].append(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}
    )
    assert any("use the key directly" in p for p in key_policy_problems(planted))


def test_the_router_key_is_used_only_through_its_services(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region in platform.region_names:
        template = templates[f"{platform.name}-router-{region}"]
        (key,) = [k for i, k in resources_of(template, "AWS::KMS::Key").items() if i.startswith("RouterKey")]
        statements = {s["Sid"]: s for s in key["Properties"]["KeyPolicy"]["Statement"]}
        uses = {sid for sid in statements if sid.startswith("UseThrough")}
        assert uses == {"UseThroughLambda", "UseThroughSns", "UseThroughAppconfig"}  # no table, no backup vault
        function = statements["UseThroughLambda"]["Condition"]
        assert function["StringEquals"]["kms:ViaService"] == f"lambda.{region}.amazonaws.com"
        assert f"{platform.name}-router-{region}" in json.dumps(function)  # only with the function's ARN as context
        assert set(ADMIN_ACTIONS).isdisjoint({"kms:Decrypt", "kms:Encrypt"})


def test_the_api_admits_exact_caller_roles_and_the_endpoint_only_this_api(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    callers = sorted(platform.router.allowed_callers)
    for region in platform.region_names:
        template = templates[f"{platform.name}-router-{region}"]
        ((api_id, api),) = resources_of(template, "AWS::ApiGateway::RestApi").items()
        statements = {s["Sid"]: s for s in api["Properties"]["Policy"]["Statement"]}
        principals = sorted(_list(statements["AllowedCallers"]["Principal"]["AWS"]))
        assert principals == callers
        assert not any(p.endswith(":root") or p.isdigit() for p in principals)
        (endpoint,) = [
            e["Properties"] for e in resources_of(template, "AWS::EC2::VPCEndpoint").values()
            if "execute-api" in json.dumps(e["Properties"]["ServiceName"])
        ]  # fmt: skip
        (allow,) = endpoint["PolicyDocument"]["Statement"]
        assert _list(allow["Action"]) == ["execute-api:Invoke"]
        assert {"Ref": api_id} in _list(allow["Resource"])[0]["Fn::Join"][1]
        assert allow["Condition"]["StringEquals"] == {"aws:ResourceAccount": platform.account}
        assert sorted(_list(allow["Condition"]["ArnEquals"]["aws:PrincipalArn"])) == callers


def test_the_pt_handler_tags_only_its_own_purchases_with_fixed_keys(opted_in_models: Template) -> None:
    policies = resources_of(opted_in_models, "AWS::IAM::ManagedPolicy")
    statements = [
        s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "bedrock:TagResource" in _list(s["Action"])
    ]  # fmt: skip
    assert statements, "the PT-buying platform grants tagging somewhere"
    for statement in statements:
        assert _list(statement["Action"]) == ["bedrock:TagResource"]
        equals = statement["Condition"]["StringEquals"]
        assert "aws:ResourceTag/spillway:provisioned-name" in equals
        assert statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]


def lambda_logging_problems(template: Template) -> list[str]:
    """Every function logs to a log group of its stack with a CMK and a retention, and no role of the template
    carries AWSLambdaBasicExecutionRole (which writes any group)."""
    resources = template.get("Resources", {})
    problems = []
    for logical_id, function in resources_of(template, "AWS::Lambda::Function").items():
        target = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
        group = resources.get(target.get("Ref")) if isinstance(target, dict) else None
        if group is None or group["Type"] != "AWS::Logs::LogGroup":
            problems.append(f"{logical_id}: logs to an implicit /aws/lambda group")
            continue
        if "KmsKeyId" not in group["Properties"] or "RetentionInDays" not in group["Properties"]:
            problems.append(f"{logical_id}: its log group lacks a CMK or a retention")
    for logical_id, role in resources_of(template, "AWS::IAM::Role").items():
        if "AWSLambdaBasicExecutionRole" in json.dumps(role["Properties"].get("ManagedPolicyArns", [])):
            problems.append(f"{logical_id}: AWSLambdaBasicExecutionRole")
    return problems


def test_every_function_logs_inside_the_rules(
    templates: Mapping[str, Template], pt_templates: Mapping[str, Template]
) -> None:
    for name, template in {**templates, **{f"pt:{k}": v for k, v in pt_templates.items()}}.items():
        assert lambda_logging_problems(template) == [], name
    planted = copy.deepcopy(next(t for t in templates.values() if resources_of(t, "AWS::Lambda::Function")))
    for function in resources_of(planted, "AWS::Lambda::Function").values():
        function["Properties"].pop("LoggingConfig", None)
    assert any("implicit /aws/lambda" in p for p in lambda_logging_problems(planted))


def test_the_export_writer_changes_only_the_consumers_parameters(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region in platform.region_names:
        for kind in ("network", "links"):
            for logical_id, role in resources_of(
                templates[f"{platform.name}-{kind}-{region}"], "AWS::IAM::Role"
            ).items():
                if "CrossRegionExportWriter" not in logical_id:
                    continue
                (statement,) = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                for arn in _list(statement["Resource"]):
                    assert re.fullmatch(rf"arn:aws:ssm:[a-z0-9-]+:{platform.account}:parameter/cdk/exports/"
                                        rf"{platform.name}-links-[a-z0-9-]+/\*", arn), arn  # fmt: skip
                    assert f":ssm:{region}:" not in arn


def test_pt_framework_environment_and_waiter_use_a_cmk(opted_in_models: Template) -> None:
    functions = {k: f["Properties"] for k, f in resources_of(opted_in_models, "AWS::Lambda::Function").items()}
    framework = [p for k, p in functions.items() if "framework" in k]
    assert len(framework) == 3
    assert all("KmsKeyArn" in p for p in framework)
    (machine,) = resources_of(opted_in_models, "AWS::StepFunctions::StateMachine").values()
    assert machine["Properties"]["EncryptionConfiguration"]["Type"] == "CUSTOMER_MANAGED_KMS_KEY"
    (waiter_role,) = [r for k, r in resources_of(opted_in_models, "AWS::IAM::Role").items() if "waiter" in k]
    (trust,) = waiter_role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": "111122223333"}
    assert key_policy_problems(opted_in_models) == []


def service_trust_problems(template: Template) -> list[str]:
    """Roles a service other than Lambda assumes: each trust statement names aws:SourceAccount (Lambda sends none
    for execution roles)."""
    problems = []
    for logical_id, role in resources_of(template, "AWS::IAM::Role").items():
        for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            services = _list(statement.get("Principal", {}).get("Service", []))
            if not services or services == ["lambda.amazonaws.com"]:
                continue
            if "aws:SourceAccount" not in statement.get("Condition", {}).get("StringEquals", {}):
                problems.append(f"{logical_id}: {services} without aws:SourceAccount")
    return problems


def test_service_roles_are_bound_to_this_account(
    templates: Mapping[str, Template], pt_templates: Mapping[str, Template]
) -> None:
    for name, template in {**templates, **{f"pt:{k}": v for k, v in pt_templates.items()}}.items():
        assert service_trust_problems(template) == [], name
        roles = json.dumps(resources_of(template, "AWS::IAM::Role"))
        assert "application-autoscaling.amazonaws.com" not in roles  # the service-linked role does the scaling


def test_the_account_cloudwatch_role_is_an_explicit_choice(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    assert platform.router.account_cloudwatch_role  # the example opts in
    for region in platform.region_names:
        template = templates[f"{platform.name}-router-{region}"]
        (account,) = resources_of(template, "AWS::ApiGateway::Account").values()
        role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
        (trust,) = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:apigateway:{region}::/restapis/*"


def test_artifact_buckets_deny_writes_to_all_but_the_publishers(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region in platform.region_names:
        policies = resources_of(templates[f"{platform.name}-models-{region}"], "AWS::S3::BucketPolicy").values()
        denies = [
            s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and "s3:PutObject" in _list(s["Action"])
        ]  # fmt: skip
        assert denies, region
        for deny in denies:
            assert deny["Principal"] == {"AWS": "*"}
            assert _list(deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) == list(platform.artifact_publishers)


def test_every_stack_has_termination_protection(assembly: Any) -> None:
    assert all(stack.termination_protection for stack in assembly.stacks)


def test_the_router_function_checks_code_signatures(platform: Platform, templates: Mapping[str, Template]) -> None:
    for region in platform.region_names:
        template = templates[f"{platform.name}-router-{region}"]
        (function,) = resources_of(template, "AWS::Lambda::Function").values()
        config_id = function["Properties"]["CodeSigningConfigArn"]["Fn::GetAtt"][0]
        config = template["Resources"][config_id]["Properties"]
        profile_ref = json.dumps(config["AllowedPublishers"]["SigningProfileVersionArns"])
        (profile_id,) = resources_of(template, "AWS::Signer::SigningProfile")
        assert profile_id in profile_ref
        assert config["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"] == "Warn"  # see router_function.py


def test_the_execute_api_endpoint_admits_only_the_caller_subnets(
    platform: Platform, templates: Mapping[str, Template]
) -> None:
    for region in platform.region_names:
        template = templates[f"{platform.name}-router-{region}"]
        ingress = [r["Properties"] for r in resources_of(template, "AWS::EC2::SecurityGroupIngress").values()]
        admitted = {r["CidrIp"] for r in ingress if "CidrIp" in r}
        assert admitted == set(platform.router.caller_cidrs[region])
        for cidr in admitted:  # never the subnets of the router, the models and the endpoints
            for subnet in isolated_subnet_cidrs(platform, region):
                assert not ipaddress.ip_network(cidr).overlaps(ipaddress.ip_network(subnet)), (cidr, subnet)

"""The models stacks: escrow endpoints, application inference profiles, opt-in PT, the router's invoke policies.

Most tests read the session's shared templates; one small in-memory synthesis proves the PT opt-in, and a loop of
generated platforms proves that endpoint policies and router policies come from the same grants.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
import yaml

from spillway.config import parse_routing_table
from stacks.assembly import FEATURE_FLAGS, Assembly, build, synthesize
from stacks.eni import ENI_ACTIONS
from stacks.models import (
    PT_METADATA,
    ModelsStack,
    profile_pairs,
    profile_source_arn,
    router_invoke_policy_names,
)
from stacks.naming import application_profile_name, endpoint_name, router_policy_name
from stacks.network import NetworkStack
from stacks.platform import Platform, parse_platform, purchase_sentence
from stacks.targets import endpoint_grants, feature_targets, router_grants
from tests.infra.config_documents import example, region_document
from tests.infra.conftest import Template, resources_of

INVOKE_ACTIONS = {
    "bedrock:InvokeModel",
    "bedrock:InvokeModelWithResponseStream",
    "sagemaker:InvokeEndpoint",
    "sagemaker:InvokeEndpointWithResponseStream",
}

# The router's statements for other clouds (stacks/models.py `_other_cloud_statements`), checked apart.
OTHER_CLOUD_SIDS = {"ReadProviderKeys", "DecryptProviderKeys", "WebIdentityTokensForProviders"}


def models_template(templates: Mapping[str, Template], region: str) -> Template:
    return templates[f"spillway-models-{region}"]


def only(resources: Mapping[str, Any]) -> Mapping[str, Any]:
    assert len(resources) == 1, list(resources)
    return next(iter(resources.values()))


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return as_list(document["Statement"])


def getatt(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical, attribute = value["Fn::GetAtt"]
        return logical, attribute
    return None


# --- SageMaker escrow endpoints -------------------------------------------------------------------------------------


@pytest.fixture(params=["us-east-1", "us-west-2"])
def region(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_escrow_model_is_isolated_in_the_cell_vpc(templates: Mapping[str, Template], region: str) -> None:
    model = only(resources_of(models_template(templates, region), "AWS::SageMaker::Model"))["Properties"]
    assert model["EnableNetworkIsolation"] is True
    vpc = model["VpcConfig"]
    assert len(vpc["Subnets"]) == 2  # one isolated subnet per zone of the cell
    assert all("Fn::ImportValue" in s and "network" in json.dumps(s) for s in vpc["Subnets"])
    assert len(vpc["SecurityGroupIds"]) == 1
    assert "ModelSecurityGroup" in json.dumps(vpc["SecurityGroupIds"])
    container = model["PrimaryContainer"]
    assert container["ModelDataUrl"] == f"s3://spillway-llama-escrow-111122223333-{region}/llama-escrow/v1/model.tar.gz"
    assert f".dkr.ecr.{region}." in container["Image"]


def test_endpoint_config_is_encrypted_redundant_and_captures_nothing(
    templates: Mapping[str, Template], region: str, platform: Platform
) -> None:
    template = models_template(templates, region)
    config = only(resources_of(template, "AWS::SageMaker::EndpointConfig"))["Properties"]
    key = getatt(config["KmsKeyId"])
    assert key is not None
    assert key[1] == "Arn"
    assert template["Resources"][key[0]]["Type"] == "AWS::KMS::Key"
    assert template["Resources"][key[0]]["Properties"]["EnableKeyRotation"] is True
    assert "DataCaptureConfig" not in config
    (variant,) = config["ProductionVariants"]
    assert variant["InitialInstanceCount"] >= 2
    endpoint = platform.models["llama-escrow"].regions[region].endpoint
    assert endpoint is not None
    assert variant["InitialInstanceCount"] == endpoint.min_instances
    assert variant["InstanceType"] == endpoint.instance_type
    served = only(resources_of(template, "AWS::SageMaker::Endpoint"))["Properties"]
    assert served["EndpointName"] == endpoint_name(platform, "llama-escrow")


def _execution_role(template: Template) -> tuple[str, list[Mapping[str, Any]]]:
    model = only(resources_of(template, "AWS::SageMaker::Model"))["Properties"]
    role = getatt(model["ExecutionRoleArn"])
    assert role is not None
    attached = template["Resources"][role[0]]["Properties"]["ManagedPolicyArns"]
    assert all(set(arn) == {"Ref"} for arn in attached)  # customer-managed policies of this stack only
    found = [
        statement
        for arn in attached
        for statement in statements(template["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
    ]
    inline = [
        p for p in resources_of(template, "AWS::IAM::Policy").values() if {"Ref": role[0]} in p["Properties"]["Roles"]
    ]
    assert not inline
    return role[0], found


def test_execution_role_reads_only_its_artifact_folder_and_key(templates: Mapping[str, Template], region: str) -> None:
    template = models_template(templates, region)
    _, found = _execution_role(template)
    s3 = [s for s in found if any(str(a).startswith("s3:") for a in as_list(s["Action"]))]
    assert len(s3) == 1
    assert as_list(s3[0]["Action"]) == ["s3:GetObject"]
    assert json.dumps(s3[0]["Resource"]).endswith('"/llama-escrow/v1/*"]]}')
    kms = [s for s in found if any(str(a).startswith("kms:") for a in as_list(s["Action"]))]
    assert kms
    keys = {getatt(s["Resource"]) for s in kms}
    config = only(resources_of(template, "AWS::SageMaker::EndpointConfig"))["Properties"]
    assert keys == {getatt(config["KmsKeyId"])}
    for statement in found:
        if statement["Resource"] == "*":
            assert not {a for a in as_list(statement["Action"]) if a.startswith(("s3:", "kms:"))}


def test_execution_role_network_interfaces_only_in_the_cell_vpc(
    platform: Platform, templates: Mapping[str, Template], region: str
) -> None:
    template = models_template(templates, region)
    _, found = _execution_role(template)
    eni = [s for s in found if {"ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface"} & set(as_list(s["Action"]))]
    assert len(eni) == 1
    # Plain ArnEquals (the key is on every resource these actions touch): no IfExists loophole.
    assert set(eni[0]["Condition"]) == {"ArnEquals"}
    vpc = json.dumps(eni[0]["Condition"]["ArnEquals"]["ec2:Vpc"])
    assert f":ec2:{region}:{platform.account}:vpc/" in vpc
    assert "IfExists" not in json.dumps(found)
    unconditioned = {a for s in found if "Condition" not in s and s["Resource"] == "*" for a in as_list(s["Action"])}
    assert not unconditioned & {"ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface"}


def _log_stream_suffixes(template: Template) -> list[Any]:
    """Policy resources that append ':*' to a log group's Arn attribute, which already ends in ':*'."""
    groups = set(resources_of(template, "AWS::Logs::LogGroup"))
    found = []
    for resource in template["Resources"].values():
        document = resource.get("Properties", {}).get("PolicyDocument")
        if not isinstance(document, Mapping):
            continue
        for statement in statements(document):
            for value in as_list(statement.get("Resource", [])):
                parts = value.get("Fn::Join", ["", []])[1] if isinstance(value, Mapping) else []
                for part, after in itertools.pairwise(parts):
                    if getatt(part) is not None and getatt(part)[0] in groups and str(after).startswith(":*"):
                        found.append(value)
    return found


def test_log_group_permissions_name_the_group_arn_once(
    templates: Mapping[str, Template], opted_in: tuple[Platform, dict[str, Any], Any]
) -> None:
    checked = [*templates.values(), opted_in[1]]
    for template in checked:
        assert not _log_stream_suffixes(template)
    own_logs = [
        s
        for template in checked
        for p in resources_of(template, "AWS::IAM::ManagedPolicy").values()
        for s in statements(p["Properties"]["PolicyDocument"])
        if s.get("Sid") == "OwnLogGroup"
    ]
    assert len(own_logs) >= 3  # the escrow role in each region and the PT handler
    for statement in own_logs:
        (resource,) = as_list(statement["Resource"])
        assert getatt(resource) is not None
        assert getatt(resource)[1] == "Arn"


def test_artifact_bucket_rules(templates: Mapping[str, Template], region: str, platform: Platform) -> None:
    template = models_template(templates, region)
    buckets = resources_of(template, "AWS::S3::Bucket")
    artifacts = {k: v for k, v in buckets.items() if "Artifacts" in k}
    ((logical, bucket),) = artifacts.items()
    props = bucket["Properties"]
    assert props["BucketName"] == f"spillway-llama-escrow-111122223333-{region}"
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    config = only(resources_of(template, "AWS::SageMaker::EndpointConfig"))["Properties"]
    assert getatt(rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]) == getatt(config["KmsKeyId"])
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True
    }  # fmt: skip
    assert "DestinationBucketName" in props["LoggingConfiguration"]
    policy = next(
        p["Properties"]["PolicyDocument"]
        for p in resources_of(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": logical}
    )
    denies = [s for s in statements(policy) if s["Effect"] == "Deny"]
    assert any(s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)
    role, _ = _execution_role(template)
    (others,) = [s for s in denies if "ArnNotEquals" in s.get("Condition", {}) and "s3:GetObject" in s["Action"]]
    assert others["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == {"Fn::GetAtt": [role, "Arn"]}
    (writers,) = [s for s in denies if "s3:PutObject" in as_list(s["Action"])]
    assert as_list(writers["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) == list(platform.artifact_publishers)
    allows = [s for s in statements(policy) if s["Effect"] == "Allow"]
    assert all(s["Principal"] == {"AWS": {"Fn::GetAtt": [role, "Arn"]}} for s in allows)


def test_autoscaling_tracks_invocations_and_warms_before_peaks(
    templates: Mapping[str, Template], region: str, platform: Platform
) -> None:
    template = models_template(templates, region)
    endpoint = platform.models["llama-escrow"].regions[region].endpoint
    assert endpoint is not None
    target = only(resources_of(template, "AWS::ApplicationAutoScaling::ScalableTarget"))["Properties"]
    assert target["ResourceId"] == f"endpoint/{endpoint_name(platform, 'llama-escrow')}/variant/AllTraffic"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (endpoint.min_instances, endpoint.max_instances)
    scheduled = {
        a["ScheduledActionName"]: (a["Schedule"], a["Timezone"], a["ScalableTargetAction"])
        for a in target["ScheduledActions"]
    }
    assert scheduled == {
        s.name: (s.expression, s.timezone, {"MinCapacity": s.min_instances, "MaxCapacity": s.max_instances})
        for s in endpoint.schedule
    }
    policy = only(resources_of(template, "AWS::ApplicationAutoScaling::ScalingPolicy"))["Properties"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == endpoint.invocations_per_instance


# --- Bedrock ---------------------------------------------------------------------------------------------------------


def test_application_inference_profiles_per_feature_and_model(
    templates: Mapping[str, Template], region: str, platform: Platform
) -> None:
    profiles = resources_of(models_template(templates, region), "AWS::Bedrock::ApplicationInferenceProfile")
    expected = profile_pairs(platform, region)
    assert len(expected) >= 4  # every feature x Bedrock model of its hierarchy served in the region
    assert len(profiles) == len(expected)
    by_name = {p["Properties"]["InferenceProfileName"]: p["Properties"] for p in profiles.values()}
    for feature, model in expected:
        props = by_name[application_profile_name(platform, feature, model)]
        tags = {t["Key"]: t["Value"] for t in props["Tags"]}
        assert tags["spillway:feature"] == feature
        assert tags["spillway:model"] == model
        assert tags["cost-center"] == platform.cost_center
        assert props["ModelSource"]["CopyFrom"] == profile_source_arn(platform, platform.models[model], region)


def test_example_buys_no_provisioned_throughput(templates: Mapping[str, Template]) -> None:
    for name, template in templates.items():
        types = {r["Type"] for r in template["Resources"].values()}
        assert "Custom::BedrockProvisionedThroughput" not in types, name
        assert PT_METADATA not in json.dumps(template), name


# --- the router's invoke policies ------------------------------------------------------------------------------------


def invoke_policies(templates: Mapping[str, Template]) -> dict[str, Mapping[str, Any]]:
    """Managed policies by name, across every template."""
    return {
        policy["Properties"]["ManagedPolicyName"]: policy["Properties"]["PolicyDocument"]
        for template in templates.values()
        for policy in resources_of(template, "AWS::IAM::ManagedPolicy").values()
        if str(policy["Properties"].get("ManagedPolicyName", "")).startswith("spillway-router-invoke-")
    }


def all_statements(templates: Mapping[str, Template]) -> Iterator[Mapping[str, Any]]:
    for template in templates.values():
        for resource in template["Resources"].values():
            props = resource.get("Properties", {})
            for key in ("PolicyDocument", "AssumeRolePolicyDocument"):
                if isinstance(props.get(key), dict) and "Statement" in props[key]:
                    yield from statements(props[key])


TAG_CONDITION = "aws:ResourceTag/spillway:platform"
DEPLOY_TIME_TYPES = ("application-inference-profile", "provisioned-model")


def tag_scoped(statement: Mapping[str, Any]) -> bool:
    return TAG_CONDITION in statement.get("Condition", {}).get("StringEquals", {})


def test_no_invoke_action_on_a_wildcard_anywhere(templates: Mapping[str, Template]) -> None:
    """Exact ARNs everywhere, except the bedrock-runtime endpoint's tag-scoped statement: application inference
    profiles and purchased PT of this account and region carrying the platform's tag (their ids come from Bedrock
    after the endpoint exists)."""
    checked = scoped = 0
    for template in templates.values():
        for resource in template["Resources"].values():
            props = resource.get("Properties", {})
            for key in ("PolicyDocument", "AssumeRolePolicyDocument"):
                if not (isinstance(props.get(key), dict) and "Statement" in props[key]):
                    continue
                for statement in statements(props[key]):
                    actions = set(as_list(statement.get("Action", [])))
                    if statement["Effect"] != "Allow" or not actions & INVOKE_ACTIONS:
                        continue
                    checked += 1
                    if resource["Type"] == "AWS::EC2::VPCEndpoint" and tag_scoped(statement):
                        scoped += 1
                        assert statement["Condition"]["StringEquals"][TAG_CONDITION] == "spillway"
                        for arn in as_list(statement["Resource"]):
                            assert arn.count("*") == 1
                            assert arn.rsplit(":", 1)[1].split("/")[0] in DEPLOY_TIME_TYPES
                        continue
                    for arn in as_list(statement["Resource"]):
                        assert "*" not in json.dumps(arn), (statement.get("Sid"), arn)
    assert checked >= 6  # 2 endpoint policies + router policies per region
    assert scoped == 2  # one per bedrock-runtime endpoint


def test_router_policy_names_exact_arns(templates: Mapping[str, Template], platform: Platform) -> None:
    policies = invoke_policies(templates)
    for region in platform.region_names:
        names = router_invoke_policy_names(platform, region)
        assert names[0] == router_policy_name(platform, region) == f"spillway-router-invoke-{region}"
        assert set(names) <= set(policies)
        static, tokens = _router_arns(policies, names)
        grants = router_grants(platform, region)
        assert static == set(grants.bedrock_runtime) | set(grants.sagemaker)
        # Application inference profiles of every region the router may use, by their attribute token.
        expected = sum(
            1
            for other in platform.region_names
            for feature, _ in profile_pairs(platform, other)
            if feature in {f.name for f in platform.features_served_in(region)}
        )
        assert len(tokens) == expected
        assert all(attribute == "InferenceProfileArn" for _, attribute in tokens)


def _router_arns(
    policies: Mapping[str, Mapping[str, Any]], names: tuple[str, ...]
) -> tuple[set[str], set[tuple[str, str]]]:
    static: set[str] = set()
    tokens: set[tuple[str, str]] = set()
    for name in names:
        for statement in statements(policies[name]):
            if statement.get("Sid") in OTHER_CLOUD_SIDS:
                continue  # the providers' secrets and web identity tokens: tests/infra/test_other_clouds.py
            assert set(as_list(statement["Action"])) <= INVOKE_ACTIONS
            for resource in as_list(statement["Resource"]):
                token = getatt(resource)
                if token is None:
                    assert isinstance(resource, str)
                    static.add(resource)
                else:
                    tokens.add((f"{name}:{token[0]}", token[1]))
    return static, tokens


def endpoint_policy_arns(templates: Mapping[str, Template], region: str) -> set[str]:
    arns: set[str] = set()
    for endpoint in resources_of(templates[f"spillway-network-{region}"], "AWS::EC2::VPCEndpoint").values():
        document = endpoint["Properties"].get("PolicyDocument")
        for statement in statements(document) if document else []:
            if statement["Effect"] != "Allow" or not set(as_list(statement["Action"])) & INVOKE_ACTIONS:
                continue
            if not tag_scoped(statement):  # deploy-time profiles and PT: by tag, tested in test_network.py
                arns.update(as_list(statement["Resource"]))
    return arns


def assert_same_grants(platform: Platform, endpoint_arns: Mapping[str, set[str]], router_arns: Mapping[str, set[str]]):
    """IAM covers the endpoint grants of every region the router may use; every endpoint ARN is some router's."""
    for router in platform.region_names:
        served = {f.name for f in platform.features_served_in(router)}
        for located in {r for f in served for r in platform.features[f].regions}:
            used_there = {
                arn for f in served for t in feature_targets(platform, f) if t.region == located for arn in t.arns
            }
            assert used_there <= endpoint_arns[located], (router, located)
            assert used_there <= router_arns[router], (router, located)
    for located, arns in endpoint_arns.items():
        assert arns <= set().union(*router_arns.values()), located


def test_endpoint_and_router_policies_come_from_the_same_grants(
    templates: Mapping[str, Template], platform: Platform
) -> None:
    policies = invoke_policies(templates)
    endpoint_arns = {r: endpoint_policy_arns(templates, r) for r in platform.region_names}
    router_arns = {r: _router_arns(policies, router_invoke_policy_names(platform, r))[0] for r in platform.region_names}
    for region in platform.region_names:
        grants = endpoint_grants(platform, region)
        assert endpoint_arns[region] == set(grants.bedrock_runtime) | set(grants.sagemaker)
    # In the example every feature is served in both cells, so each router covers every endpoint grant.
    for router in platform.region_names:
        assert set().union(*endpoint_arns.values()) <= router_arns[router]
    assert_same_grants(platform, endpoint_arns, router_arns)


# --- generated platforms ---------------------------------------------------------------------------------------------

REGIONS = {
    "us-east-1": "10.50.0.0/16",
    "us-west-2": "10.51.0.0/16",
    "eu-west-1": "10.52.0.0/16",
}
BEDROCK_MODELS = ["amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0", "meta.llama3-70b-instruct-v1:0"]


def generated_platform(seed: int) -> Platform:
    rng = random.Random(seed)
    regions = rng.sample(sorted(REGIONS), rng.randint(2, 3))
    document: dict[str, Any] = {
        "platform": {"name": "gen", "account": "210987654321"},
        "regions": {r: region_document(r, REGIONS[r], [f"{r}a", f"{r}b"]) for r in regions},
        "models": {},
        "features": {},
    }
    for i, model_id in enumerate(BEDROCK_MODELS):
        offers = {}
        # model-0 is offered on demand everywhere, so every generated feature has somewhere to go.
        for region in regions if i == 0 else rng.sample(regions, rng.randint(1, len(regions))):
            offer: dict[str, Any] = {"on_demand": True}
            if i and rng.random() < 0.4:
                offer["provisioned"] = {"arn": f"arn:aws:bedrock:{region}:210987654321:provisioned-model/pt{i}{seed}"}
                offer["on_demand"] = rng.random() < 0.5
            offers[region] = offer
        document["models"][f"model-{i}"] = {"kind": "bedrock", "model_id": model_id, "regions": offers}
    escrow_regions = rng.sample(regions, rng.randint(1, len(regions)))
    document["models"]["escrow"] = {
        "kind": "sagemaker",
        "regions": {
            r: {
                "endpoint": {
                    "image_uri": f"763104351884.dkr.ecr.{r}.amazonaws.com/djl-inference:0.31.0-neuronx-sdk2.20.2",
                    "model_data_url": f"s3://gen-escrow-210987654321-{r}/escrow/v{seed}/model.tar.gz",
                    "instance_type": "ml.inf2.xlarge",
                }
            }
            for r in escrow_regions
        },
    }
    names = sorted(document["models"])
    for j in range(rng.randint(1, 4)):
        home, *rest = rng.sample(regions, len(regions))
        hierarchy = rng.sample(names, rng.randint(1, len(names)))
        if "model-0" not in hierarchy:  # the schema wants every region of a feature to offer it a usable model
            hierarchy.insert(rng.randint(0, len(hierarchy)), "model-0")
        document["features"][f"feature-{j}"] = {
            "first_capacity": rng.choice(["provisioned", "on_demand"]),
            "models": hierarchy,
            "home_region": home,
            "failover_regions": rest[: rng.randint(0, len(rest))],
        }
    return parse_platform(yaml.safe_dump(document), f"generated-{seed}")


@pytest.mark.parametrize("seed", range(8))
def test_generated_platforms_keep_endpoint_and_router_policies_in_step(seed: int) -> None:
    """Build (not synthesize) the network and models stacks of a random platform and compare their documents."""
    platform = generated_platform(seed)
    app = cdk.App(context=FEATURE_FLAGS, analytics_reporting=False, builtin_cloud_formation_validation=False)
    endpoint_arns: dict[str, set[str]] = {}
    router_arns: dict[str, set[str]] = {r: set() for r in platform.region_names}
    model_stacks = {}
    for region in platform.region_names:
        network = NetworkStack(app, f"net-{region}", platform=platform, region=region)
        endpoint_arns[region] = set()
        for endpoint in network.runtime_endpoints.values():
            cfn = endpoint.node.default_child
            document = network.resolve(cfn.policy_document)  # type: ignore[union-attr]
            for statement in statements(document):
                if statement["Effect"] == "Allow" and not tag_scoped(statement):
                    endpoint_arns[region].update(as_list(statement["Resource"]))
        model_stacks[region] = ModelsStack(app, f"models-{region}", platform=platform, region=region, network=network)
    for region, stack in model_stacks.items():
        for router, policy in {region: stack.router_invoke_policy, **stack.failover_invoke_policies}.items():
            document = stack.resolve(policy.document.to_json())
            for statement in statements(document):
                assert set(as_list(statement["Action"])) <= INVOKE_ACTIONS
                if statement["Effect"] == "Deny":  # a router that serves no feature
                    grants = router_grants(platform, router)
                    assert not grants.bedrock
                    assert not grants.sagemaker
                    continue
                for resource in as_list(statement["Resource"]):
                    assert "*" not in json.dumps(resource)
                    if isinstance(resource, str):
                        router_arns[router].add(resource)
    assert_same_grants(platform, endpoint_arns, router_arns)


# --- Provisioned Throughput opt-in: one small synthesis ------------------------------------------------------------


@pytest.fixture(scope="module")
def opted_in(tmp_path_factory: pytest.TempPathFactory) -> tuple[Platform, dict[str, Any], Any]:
    document = example()
    sonnet = document["models"]["claude-sonnet"]
    document["platform"]["allow_provisioned_purchase"] = True
    sonnet["regions"]["us-east-1"]["provisioned"] = {
        "max_in_flight": 8,
        "create": {
            "model_units": 2,
            "commitment": "SIX_MONTHS",
            "acknowledge_cost": purchase_sentence(2, "SIX_MONTHS", sonnet["model_id"], "us-east-1"),
        },
    }
    platform = parse_platform(yaml.safe_dump(document), "opt-in.yaml")
    outdir = tmp_path_factory.mktemp("pt.out")
    result = synthesize(build(platform, outdir=outdir, cloudformation_validation=False))
    template = json.loads((result.outdir / "spillway-models-us-east-1.template.json").read_text(encoding="utf-8"))
    return platform, template, result


def test_opted_in_pt_is_visible_in_metadata_and_outputs(opted_in: tuple[Platform, dict[str, Any], Any]) -> None:
    _, template, result = opted_in
    # The gate, for the models stacks (other stacks of the assembly are another test's business).
    assert not [f for f in result.findings if f.path.startswith("spillway-models-")], result.summary()
    ((logical, resource),) = {
        k: v for k, v in template["Resources"].items() if v["Type"] == "Custom::BedrockProvisionedThroughput"
    }.items()
    props = resource["Properties"]
    assert (props["ModelUnits"], props["CommitmentDuration"]) == ("2", "SixMonths")
    assert props["ProvisionedModelName"] == "spillway-claude-sonnet-us-east-1"
    facts = resource["Metadata"][PT_METADATA]
    assert (facts["modelUnits"], facts["commitment"]) == (2, "SIX_MONTHS")
    outputs = {o.get("Description"): o["Value"] for o in template["Outputs"].values()}
    assert outputs["Provisioned Throughput model units bought for claude-sonnet in us-east-1 (paid)"] == "2"
    assert outputs["Provisioned Throughput commitment term of claude-sonnet in us-east-1"] == "SIX_MONTHS"
    arn = {"Fn::GetAtt": [logical, "ProvisionedModelArn"]}
    assert outputs["Provisioned Throughput ARN of claude-sonnet in us-east-1"] == arn
    router = next(
        p["Properties"]["PolicyDocument"]
        for p in resources_of(template, "AWS::IAM::ManagedPolicy").values()
        if p["Properties"].get("ManagedPolicyName") == "spillway-router-invoke-us-east-1"
    )
    assert any(arn in as_list(s["Resource"]) for s in statements(router))


def test_opted_in_pt_is_tagged_for_the_endpoint_and_invoked_by_its_arn(
    opted_in: tuple[Platform, dict[str, Any], Any],
) -> None:
    platform, template, result = opted_in
    ((logical, resource),) = {
        k: v for k, v in template["Resources"].items() if v["Type"] == "Custom::BedrockProvisionedThroughput"
    }.items()
    # The endpoint policy's tag condition matches what the PT carries.
    assert resource["Properties"]["Tags"]["spillway:platform"] == platform.name
    # The bedrock-runtime endpoint of the buying region allows provisioned-model/* by that tag; the other does not.
    for region, bought in (("us-east-1", True), ("us-west-2", False)):
        network = read_template(result, f"spillway-network-{region}")
        endpoint = next(
            e["Properties"]
            for e in resources_of(network, "AWS::EC2::VPCEndpoint").values()
            if str(e["Properties"]["ServiceName"]).endswith(".bedrock-runtime")
        )
        scoped = [s for s in statements(endpoint["PolicyDocument"]) if tag_scoped(s)]
        assert len(scoped) == 1
        expected = [f"arn:aws:bedrock:{region}:{platform.account}:application-inference-profile/*"]
        if bought:
            expected.append(f"arn:aws:bedrock:{region}:{platform.account}:provisioned-model/*")
        assert sorted(as_list(scoped[0]["Resource"])) == sorted(expected)
        assert scoped[0]["Condition"] == {
            "StringEquals": {"aws:PrincipalAccount": platform.account, TAG_CONDITION: platform.name}
        }
    # The us-east-1 router's hosted table invokes the PT by its ARN for the features that start on provisioned.
    export = export_of(template, {"Fn::GetAtt": [logical, "ProvisionedModelArn"]})
    invoke_ids = hosted_invoke_ids(read_template(result, "spillway-router-us-east-1"))
    pt = "claude-sonnet/provisioned/us-east-1"
    users = {f for f, ids in invoke_ids.items() if ids.get(pt) == {"Fn::ImportValue": export}}
    provisioned_first = {
        f.name for f in platform.features_served_in("us-east-1")
        if f.first_capacity == "provisioned" and "claude-sonnet" in f.models and "us-east-1" in f.regions
    }  # fmt: skip
    assert users
    assert users == provisioned_first
    # us-west-2's router cannot reference a us-east-1 token: its table keeps the PT's base id (the name).
    west = hosted_invoke_ids(read_template(result, "spillway-router-us-west-2"))
    assert not [ids for ids in west.values() if pt in ids]


def test_hosted_routing_table_invokes_each_features_application_profiles(
    templates: Mapping[str, Template], assembly: Assembly, region: str
) -> None:
    models = models_template(templates, region)
    profiles = {
        (tag_value(p, "spillway:feature"), tag_value(p, "spillway:model")): logical
        for logical, p in resources_of(models, "AWS::Bedrock::ApplicationInferenceProfile").items()
    }
    assert profiles
    invoke_ids = hosted_invoke_ids(templates[f"spillway-router-{region}"])
    expected: dict[str, dict[str, Any]] = {}
    for (feature, model), logical in profiles.items():
        export = export_of(models, {"Fn::GetAtt": [logical, "InferenceProfileArn"]})
        expected.setdefault(feature, {})[f"{model}/on_demand/{region}"] = {"Fn::ImportValue": export}
    # Every profile of the cell is invoked by its feature, and nothing else (no other region's token, no PT: the
    # example buys none).
    assert invoke_ids == expected
    # The bundled table has no invoke ids: it is the fallback, without per-feature attribution.
    bundled = json.loads((assembly.routers[region].code_dir / "routing.json").read_text(encoding="utf-8"))
    assert not [f for f in bundled["features"].values() if "invoke_ids" in f]


def read_template(result: Any, stack: str) -> dict[str, Any]:
    return json.loads((result.outdir / f"{stack}.template.json").read_text(encoding="utf-8"))


def tag_value(resource: Mapping[str, Any], key: str) -> str:
    return next(t["Value"] for t in resource["Properties"]["Tags"] if t["Key"] == key)


def export_of(template: Mapping[str, Any], value: Any) -> str:
    """The export name under which `template` publishes `value` (a cross-stack reference in the same region)."""
    (name,) = [
        o["Export"]["Name"] for o in template.get("Outputs", {}).values() if o["Value"] == value and "Export" in o
    ]
    return str(name)


def hosted_invoke_ids(router: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The invoke_ids of each feature in the router's AppConfig-hosted routing table, tokens as CloudFormation."""
    (content,) = [
        v["Properties"]["Content"]
        for v in resources_of(router, "AWS::AppConfig::HostedConfigurationVersion").values()
        if "targets" in json.dumps(v["Properties"]["Content"])
    ]
    parts = content["Fn::Join"][1] if isinstance(content, dict) else [content]
    # Stand each token in as a placeholder string, parse, then put the tokens back.
    text = "".join(p if isinstance(p, str) else f"@@{i}@@" for i, p in enumerate(parts))
    table = json.loads(text)
    parse_routing_table(table)  # what the router reads, tokens standing in as strings
    return {
        name: {tid: parts[int(v.strip("@"))] if v.startswith("@@") else v for tid, v in f["invoke_ids"].items()}
        for name, f in table["features"].items()
        if f.get("invoke_ids")
    }


def test_opted_in_pt_handler_runs_in_the_escrow_subnets(opted_in: tuple[Platform, dict[str, Any], Any]) -> None:
    _, template, _ = opted_in
    handlers = {
        k: v["Properties"]
        for k, v in resources_of(template, "AWS::Lambda::Function").items()
        if "ProvisionedThroughput" in k and ("OnEvent" in k or "IsComplete" in k) and "framework" not in k
    }
    assert len(handlers) == 2
    for props in handlers.values():
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert len(props["VpcConfig"]["SubnetIds"]) == 2
        assert "ModelSecurityGroup" in json.dumps(props["VpcConfig"]["SecurityGroupIds"])
    endpoints = resources_of(template, "AWS::EC2::VPCEndpoint")
    (control,) = [e for e in endpoints.values() if "bedrock" in json.dumps(e["Properties"]["ServiceName"])]
    assert control["Properties"]["PrivateDnsEnabled"] is True
    (statement,) = statements(control["Properties"]["PolicyDocument"])
    assert "ArnEquals" in statement["Condition"]
    assert not [r for r in as_list(statement["Resource"]) if r == "*"]
    # The handler may create only the configured PT (by name tag) and manage only what it created.
    policy = next(
        p["Properties"]["PolicyDocument"]
        for k, p in resources_of(template, "AWS::IAM::ManagedPolicy").items()
        if "HandlerPolicy" in k
    )
    for statement in statements(policy):
        if any(str(a).startswith("bedrock:") for a in as_list(statement["Action"])):
            names = json.dumps(statement["Condition"])
            assert "spillway-claude-sonnet-us-east-1" in names


def test_opted_in_pt_handler_code_cannot_use_the_eni_actions(
    opted_in: tuple[Platform, dict[str, Any], Any],
) -> None:
    """AWS's lambda:SourceFunctionArn guard: the ENI actions are denied to calls from inside the two handlers."""
    platform, template, _ = opted_in
    policy = next(
        p["Properties"]["PolicyDocument"]
        for k, p in resources_of(template, "AWS::IAM::ManagedPolicy").items()
        if "HandlerPolicy" in k
    )
    (deny,) = [s for s in statements(policy) if s["Effect"] == "Deny"]
    assert sorted(as_list(deny["Action"])) == sorted(ENI_ACTIONS)
    assert deny["Resource"] == "*"
    names = sorted(
        p["Properties"]["FunctionName"]
        for k, p in resources_of(template, "AWS::Lambda::Function").items()
        if "ProvisionedThroughput" in k and ("OnEvent" in k or "IsComplete" in k) and "framework" not in k
    )
    assert names == [f"{platform.name}-pt-check-us-east-1", f"{platform.name}-pt-event-us-east-1"]
    arns = as_list(deny["Condition"]["ArnEquals"]["lambda:SourceFunctionArn"])
    assert sorted(arns) == [f"arn:aws:lambda:us-east-1:{platform.account}:function:{n}" for n in names]


def test_pt_asset_ships_no_bytecode(opted_in: tuple[Platform, dict[str, Any], Any]) -> None:
    _, _, result = opted_in
    assets = [
        p.parent
        for p in Path(result.outdir).glob("asset.*/handler.py")
        if "CreateProvisionedModelThroughput" in p.read_text(encoding="utf-8")
        or "create_provisioned_model_throughput" in p.read_text(encoding="utf-8")
    ]
    assert len(assets) == 1
    for asset in assets:
        assert sorted(p.name for p in asset.iterdir()) == ["handler.py"]

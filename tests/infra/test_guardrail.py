"""Platform guardrails: the platform file's `guardrails:`, the construct, the router's grant, the endpoint policy and
the routing tables, checked on the synthesized templates of the example plus one guarded feature."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from stacks.assembly import Assembly, SynthResult, build, synthesize
from stacks.naming import router_policy_name
from stacks.platform import Platform
from stacks.router import RouterStack
from stacks.routing import render_routing_table, with_invoke_ids
from tests.infra.config_documents import assert_names_key, parse, rejects
from tests.infra.conftest import Template, resources_of, templates_of
from tests.infra.guarded_documents import GUARDED_FEATURE, GUARDED_REGION, GUARDRAIL, guarded_example

OTHER_REGION = "us-west-2"


@pytest.fixture(scope="module")
def guarded() -> Platform:
    return parse(guarded_example())


@pytest.fixture(scope="module")
def guarded_synth(guarded: Platform, tmp_path_factory: pytest.TempPathFactory) -> tuple[Assembly, SynthResult]:
    assembly = build(guarded, outdir=tmp_path_factory.mktemp("guarded.out"), cloudformation_validation=False)
    return assembly, synthesize(assembly)


@pytest.fixture(scope="module")
def guarded_templates(guarded_synth: tuple[Assembly, SynthResult]) -> dict[str, Template]:
    return templates_of(*guarded_synth)


def _one(template: Template, resource_type: str) -> tuple[str, Mapping[str, Any]]:
    found = resources_of(template, resource_type)
    assert len(found) == 1, sorted(found)
    return next(iter(found.items()))


def _statement(policy_document: Mapping[str, Any], sid: str) -> Mapping[str, Any]:
    matches = [s for s in policy_document["Statement"] if s.get("Sid") == sid]
    assert len(matches) == 1, [s.get("Sid") for s in policy_document["Statement"]]
    return matches[0]


# --- validation: each planted mistake names the file and the key ------------------------------------------------


def _guard(document: dict[str, Any], feature: str, guardrail: str = GUARDRAIL) -> None:
    document["guardrails"] = guarded_example()["guardrails"]
    document["features"][feature].setdefault("converse", {})["guardrail"] = guardrail


def test_an_unknown_guardrail_is_named() -> None:
    error = rejects(lambda d: _guard(d, "summarize-thread", "no-such-guardrail"))
    assert_names_key(error, "features.summarize-thread.converse.guardrail", "unknown guardrail 'no-such-guardrail'")


def test_a_guardrail_on_a_feature_with_a_sagemaker_model_is_refused() -> None:
    error = rejects(lambda d: _guard(d, "redact-escrow"))
    assert_names_key(error, "features.redact-escrow.models[0]", "model 'llama-escrow' is sagemaker")


def test_a_guarded_feature_does_not_fail_over() -> None:
    def mutate(document: dict[str, Any]) -> None:
        document["features"]["summarize-thread"]["models"] = ["claude-sonnet", "nova-lite"]  # Bedrock only
        _guard(document, "summarize-thread")  # it fails over to us-west-2

    error = rejects(mutate)
    assert_names_key(error, "features.summarize-thread.failover_regions", "does not fail over")


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        (("content_filters", "HATE"), "EXTREME", "guardrails.support-safety.content_filters.HATE", "HIGH"),
        (("content_filters", "GOSSIP"), "LOW", "guardrails.support-safety.content_filters.GOSSIP", "SEXUAL"),
        (("sensitive_information", "EMAIL"), "HIDE", "guardrails.support-safety.sensitive_information.EMAIL", "BLOCK"),
        (("managed_word_lists",), ["SLANG"], "guardrails.support-safety.managed_word_lists[0]", "PROFANITY"),
        (("blocked_input_message",), "", "guardrails.support-safety.blocked_input_message", "1-500"),
    ],
)
def test_a_bad_guardrail_setting_is_named(path: tuple[str, ...], value: object, key: str, words: str) -> None:
    def mutate(document: dict[str, Any]) -> None:
        document.update({k: v for k, v in guarded_example().items() if k in ("guardrails", "features")})
        target = document["guardrails"][GUARDRAIL]
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    assert_names_key(rejects(mutate), key, words)


def test_a_guardrail_that_filters_nothing_is_refused() -> None:
    def mutate(document: dict[str, Any]) -> None:
        document["guardrails"] = {"idle": {"blocked_input_message": "no", "blocked_output_message": "no"}}

    assert_names_key(rejects(mutate), "guardrails.idle", "filters nothing")


# --- the routing tables -----------------------------------------------------------------------------------------


def test_the_bundled_table_leaves_the_guarded_feature_out(guarded: Platform) -> None:
    bundled = render_routing_table(guarded, GUARDED_REGION)
    assert GUARDED_FEATURE not in bundled["features"]
    assert "summarize-thread" in bundled["features"]  # the unguarded features stay
    assert "guardrailConfig" not in json.dumps(bundled)


def test_the_hosted_table_carries_the_cells_guardrail(guarded: Platform) -> None:
    hosted = with_invoke_ids(
        guarded, GUARDED_REGION, render_routing_table(guarded, GUARDED_REGION, {GUARDRAIL: ("gr0abc", "3")}), {}, {}
    )
    converse = hosted["features"][GUARDED_FEATURE]["converse"]
    assert converse["defaults"]["guardrailConfig"] == {"guardrailIdentifier": "gr0abc", "guardrailVersion": "3"}
    assert "guardrailConfig" not in converse["caller_may_override"]


def test_the_platform_file_may_let_callers_send_their_own_guardrail() -> None:
    document = guarded_example()
    document["features"][GUARDED_FEATURE]["converse"]["caller_may_override"] = ["guardrail"]
    table = render_routing_table(parse(document), GUARDED_REGION, {GUARDRAIL: ("gr0abc", "3")})
    assert table["features"][GUARDED_FEATURE]["converse"]["caller_may_override"] == ["guardrailConfig"]


def test_a_cell_without_the_guardrail_cannot_render_its_feature(guarded: Platform) -> None:
    with pytest.raises(Exception, match="builds no guardrail 'support-safety'"):
        render_routing_table(guarded, GUARDED_REGION, {})


# --- the synthesized templates ----------------------------------------------------------------------------------


def test_the_guarded_platform_passes_the_compliance_gate(guarded_synth: tuple[Assembly, SynthResult]) -> None:
    _, result = guarded_synth
    assert result.passed, [f for f in result.findings if f.severity == "error"]


def test_the_guardrail_is_built_in_its_home_cell_only(
    guarded: Platform, guarded_templates: dict[str, Template]
) -> None:
    home = guarded_templates[f"{guarded.name}-models-{GUARDED_REGION}"]
    other = guarded_templates[f"{guarded.name}-models-{OTHER_REGION}"]
    assert resources_of(other, "AWS::Bedrock::Guardrail") == {}
    logical_id, guardrail = _one(home, "AWS::Bedrock::Guardrail")
    props = guardrail["Properties"]
    assert props["Name"] == f"{guarded.name}-{GUARDRAIL}"
    assert props["BlockedInputMessaging"] == "This request cannot be answered."
    assert props["BlockedOutputsMessaging"] == "This answer was withheld."
    filters = {
        f["Type"]: (f["InputStrength"], f["OutputStrength"]) for f in props["ContentPolicyConfig"]["FiltersConfig"]
    }
    assert filters == {"HATE": ("HIGH", "HIGH"), "INSULTS": ("MEDIUM", "MEDIUM"), "PROMPT_ATTACK": ("HIGH", "NONE")}
    assert props["TopicPolicyConfig"]["TopicsConfig"][0]["Type"] == "DENY"
    assert props["WordPolicyConfig"]["ManagedWordListsConfig"] == [{"Type": "PROFANITY"}]
    assert {e["Type"]: e["Action"] for e in props["SensitiveInformationPolicyConfig"]["PiiEntitiesConfig"]} == {
        "EMAIL": "ANONYMIZE",
        "US_SOCIAL_SECURITY_NUMBER": "BLOCK",
    }
    tags = {t["Key"]: t["Value"] for t in props["Tags"]}
    assert tags == {
        "cost-center": guarded.cost_center,
        "spillway:guardrail": GUARDRAIL,
        "spillway:platform": guarded.name,
    }
    # Its own customer-managed key, usable only through Bedrock.
    key_id = props["KmsKeyArn"]["Fn::GetAtt"][0]
    key = home["Resources"][key_id]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    use = _statement(key["Properties"]["KeyPolicy"], "UseThroughBedrock")
    assert use["Condition"]["StringEquals"]["kms:ViaService"] == f"bedrock.{GUARDED_REGION}.amazonaws.com"
    # A pinned version of it.
    _, version = _one(home, "AWS::Bedrock::GuardrailVersion")
    assert version["Properties"]["GuardrailIdentifier"] == {"Fn::GetAtt": [logical_id, "GuardrailId"]}


def test_the_router_may_apply_exactly_the_guardrail(guarded: Platform, guarded_templates: dict[str, Template]) -> None:
    home = guarded_templates[f"{guarded.name}-models-{GUARDED_REGION}"]
    guardrail_id, _ = _one(home, "AWS::Bedrock::Guardrail")
    key_id = home["Resources"][guardrail_id]["Properties"]["KmsKeyArn"]["Fn::GetAtt"][0]
    policies = {
        p["Properties"].get("ManagedPolicyName"): p["Properties"]["PolicyDocument"]
        for p in resources_of(home, "AWS::IAM::ManagedPolicy").values()
    }
    own = policies[router_policy_name(guarded, GUARDED_REGION)]
    apply = _statement(own, "ApplyFeatureGuardrails")
    assert apply["Action"] == "bedrock:ApplyGuardrail"
    assert apply["Resource"] == {"Fn::GetAtt": [guardrail_id, "GuardrailArn"]}
    decrypt = _statement(own, "DecryptFeatureGuardrails")
    assert decrypt["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
    # No other policy of any stack grants ApplyGuardrail, and none on a wildcard.
    for template in guarded_templates.values():
        for resource in template["Resources"].values():
            document = resource.get("Properties", {}).get("PolicyDocument")
            if resource["Type"] == "AWS::IAM::ManagedPolicy" and document is not own:
                assert "ApplyGuardrail" not in json.dumps(document)


def test_the_runtime_endpoint_allows_only_the_platforms_guardrails(
    guarded: Platform, guarded_templates: dict[str, Template]
) -> None:
    def runtime_policy(region: str) -> Mapping[str, Any] | None:
        network = guarded_templates[f"{guarded.name}-network-{region}"]
        for endpoint in resources_of(network, "AWS::EC2::VPCEndpoint").values():
            if "bedrock-runtime" in json.dumps(endpoint["Properties"]["ServiceName"]):
                return endpoint["Properties"]["PolicyDocument"]
        return None

    home = runtime_policy(GUARDED_REGION)
    assert home is not None
    statement = _statement(home, "ApplyOwnTaggedGuardrails")
    assert statement["Action"] == "bedrock:ApplyGuardrail"
    assert statement["Resource"] == f"arn:aws:bedrock:{GUARDED_REGION}:{guarded.account}:guardrail/*"
    assert statement["Condition"]["StringEquals"] == {
        "aws:PrincipalAccount": guarded.account,
        "aws:ResourceTag/spillway:platform": guarded.name,
    }
    other = runtime_policy(OTHER_REGION)
    assert other is None or "ApplyGuardrail" not in json.dumps(other)


def test_the_hosted_table_names_the_cells_guardrail_and_version(
    guarded: Platform, guarded_synth: tuple[Assembly, SynthResult]
) -> None:
    assembly, _ = guarded_synth
    router = next(s for s in assembly.stacks if isinstance(s, RouterStack) and s.region_name == GUARDED_REGION)
    config = router.resolve(router.hosted_table)["features"][GUARDED_FEATURE]["converse"]["defaults"]["guardrailConfig"]
    # Deploy-time references to this cell's guardrail (models stack): its id and its version's number.
    assert "GuardrailId" in json.dumps(config["guardrailIdentifier"])
    assert "Version" in json.dumps(config["guardrailVersion"])
    assert GUARDED_FEATURE in router.features  # monitored like every feature it serves
    shipped = json.loads((router.code_dir / "routing.json").read_text(encoding="utf-8"))
    assert GUARDED_FEATURE not in shipped["features"]  # the bundle never serves it unguarded


def test_cfn_lint_accepts_the_guarded_models_template(
    guarded: Platform, guarded_synth: tuple[Assembly, SynthResult]
) -> None:
    """CloudFormation's own resource schema (through cfn-lint) on the guardrail's properties: names, lengths, enums."""
    cfnlint_api = pytest.importorskip("cfnlint.api", reason="cfn-lint is pinned in requirements-dev.txt")
    _, result = guarded_synth
    template = result.outdir / f"{guarded.name}-models-{GUARDED_REGION}.template.json"
    matches = cfnlint_api.lint_file(template, config=cfnlint_api.ManualArgs(regions=[GUARDED_REGION]))
    errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []

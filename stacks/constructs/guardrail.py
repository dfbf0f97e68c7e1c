"""One platform guardrail in one cell: its customer-managed key, the AWS::Bedrock::Guardrail and a version.

Bedrock applies it to a feature's Converse requests (the routing table's `converse.defaults.guardrailConfig`, with
this cell's id and version: stacks/routing.py with_invoke_ids). The router applies a pinned version, never DRAFT,
so editing the platform file's guardrail publishes a new version the hosted table moves to in one deployment.
"""

from __future__ import annotations

import hashlib

import aws_cdk as cdk
from aws_cdk import aws_bedrock as bedrock
from constructs import Construct

from stacks.constructs.key_policy import ServiceUse, restricted_key
from stacks.naming import guardrail_name
from stacks.network import PLATFORM_TAG  # the bedrock-runtime endpoint allows ApplyGuardrail only with it
from stacks.platform import Guardrail, Platform


class PlatformGuardrail(Construct):
    """The guardrail `spec` in this stack's region, encrypted with its own key, with a published version."""

    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform, spec: Guardrail) -> None:
        super().__init__(scope, construct_id)
        region = cdk.Stack.of(self).region
        self.key = restricted_key(
            self,
            "Key",
            description=f"{platform.name} guardrail {spec.name} in {region}: its policies and messages",
            uses=[ServiceUse("bedrock")],
        )
        tags = [
            cdk.CfnTag(key="cost-center", value=platform.cost_center),
            cdk.CfnTag(key="spillway:guardrail", value=spec.name),
            cdk.CfnTag(key=PLATFORM_TAG, value=platform.name),
        ]
        self.guardrail = bedrock.CfnGuardrail(
            self,
            "Guardrail",
            name=guardrail_name(platform, spec.name),
            description=f"{platform.name} guardrail {spec.name}",
            blocked_input_messaging=spec.blocked_input_message,
            blocked_outputs_messaging=spec.blocked_output_message,
            kms_key_arn=self.key.key_arn,
            content_policy_config=_content_policy(spec),
            topic_policy_config=_topic_policy(spec),
            word_policy_config=_word_policy(spec),
            sensitive_information_policy_config=_pii_policy(spec),
            tags=tags,
        )
        self.version = bedrock.CfnGuardrailVersion(
            self,
            "Version",
            guardrail_identifier=self.guardrail.attr_guardrail_id,
            # The description changes with the definition, so a changed guardrail publishes a new version.
            description=f"{spec.name} {_digest(spec)}",
        )

    @property
    def guardrail_id(self) -> str:
        return self.guardrail.attr_guardrail_id

    @property
    def guardrail_arn(self) -> str:
        return self.guardrail.attr_guardrail_arn

    @property
    def version_number(self) -> str:
        return self.version.attr_version

    @property
    def key_arn(self) -> str:
        return self.key.key_arn


def _digest(spec: Guardrail) -> str:
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


def _content_policy(spec: Guardrail) -> bedrock.CfnGuardrail.ContentPolicyConfigProperty | None:
    if not spec.content_filters:
        return None
    return bedrock.CfnGuardrail.ContentPolicyConfigProperty(
        filters_config=[
            bedrock.CfnGuardrail.ContentFilterConfigProperty(
                type=kind,
                input_strength=strength,
                # Bedrock filters prompt attacks on input only: their output strength must be NONE.
                output_strength="NONE" if kind == "PROMPT_ATTACK" else strength,
            )
            for kind, strength in sorted(spec.content_filters.items())
        ]
    )


def _topic_policy(spec: Guardrail) -> bedrock.CfnGuardrail.TopicPolicyConfigProperty | None:
    if not spec.denied_topics:
        return None
    return bedrock.CfnGuardrail.TopicPolicyConfigProperty(
        topics_config=[
            bedrock.CfnGuardrail.TopicConfigProperty(
                name=topic.name, definition=topic.definition, type="DENY", examples=list(topic.examples) or None
            )
            for topic in spec.denied_topics
        ]
    )


def _word_policy(spec: Guardrail) -> bedrock.CfnGuardrail.WordPolicyConfigProperty | None:
    if not (spec.words or spec.managed_word_lists):
        return None
    return bedrock.CfnGuardrail.WordPolicyConfigProperty(
        words_config=[bedrock.CfnGuardrail.WordConfigProperty(text=word) for word in spec.words] or None,
        managed_word_lists_config=[
            bedrock.CfnGuardrail.ManagedWordsConfigProperty(type=kind) for kind in spec.managed_word_lists
        ]
        or None,
    )


def _pii_policy(spec: Guardrail) -> bedrock.CfnGuardrail.SensitiveInformationPolicyConfigProperty | None:
    if not spec.sensitive_information:
        return None
    return bedrock.CfnGuardrail.SensitiveInformationPolicyConfigProperty(
        pii_entities_config=[
            bedrock.CfnGuardrail.PiiEntityConfigProperty(type=kind, action=action)
            for kind, action in sorted(spec.sensitive_information.items())
        ]
    )

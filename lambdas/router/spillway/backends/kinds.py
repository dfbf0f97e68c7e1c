"""The registry of backend kinds: what each kind means, everywhere it matters.

One entry per kind holds its routing-table form (the ``backend`` object's key naming what is invoked, and the
reference the loader builds), its runtime (boto3 service, IAM actions, VPC endpoint service, implementation), and
what it can express of a Converse request (its capabilities). The router's config loader, planner and handler read
it; so do the stacks (stacks/targets.py, stacks/routing.py, stacks/network.py), which import it as they import the
loader. Standard library only, and nothing of the router above it, so every layer may read it.

Capabilities are named in the router's request vocabulary (`request_needs`): a request member (``guardrailConfig``),
a message content block (``image``), a system block (``system.guardContent``), a block inside a tool result
(``toolResult.image``) or a kind of tool (``toolConfig.systemTool``). A name never carries caller content.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..api import CONTENT_BLOCKS, REQUEST_FIELDS, SYSTEM_BLOCKS, TOOL_KINDS, TOOL_RESULT_BLOCKS


@dataclass(frozen=True, slots=True)
class BedrockRef:
    model_id: str
    kind: Literal["bedrock"] = "bedrock"
    # Converse members the feature's platform settings decide (service tier, performance, guardrail), sent unless
    # the request carries its own (which the handler admits only where the platform lets callers override).
    defaults: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class SageMakerRef:
    endpoint_name: str
    kind: Literal["sagemaker"] = "sagemaker"


BackendRef = BedrockRef | SageMakerRef

# Everything a request can ask of a backend, in the names `request_needs` gives.
EVERYTHING: frozenset[str] = frozenset(
    (
        *REQUEST_FIELDS,
        *CONTENT_BLOCKS,
        *(f"system.{block}" for block in SYSTEM_BLOCKS),
        *(f"toolResult.{block}" for block in TOOL_RESULT_BLOCKS),
        *(f"toolConfig.{kind}" for kind in TOOL_KINDS),
    )
)


def request_needs(request: Mapping[str, Any]) -> frozenset[str]:
    """What a validated request asks of a backend: its members and the kinds of block and tool it uses."""
    needs: set[str] = set(request)
    for message in request.get("messages") or ():
        for block in message.get("content") or ():
            needs.update(block)
            result = block.get("toolResult")
            if isinstance(result, Mapping):
                for part in result.get("content") or ():
                    if isinstance(part, Mapping):
                        needs.update(f"toolResult.{kind}" for kind in part)
    for block in request.get("system") or ():
        needs.update(f"system.{kind}" for kind in block)
    tool_config = request.get("toolConfig")
    if isinstance(tool_config, Mapping):
        for tool in tool_config.get("tools") or ():
            if isinstance(tool, Mapping):
                needs.update(f"toolConfig.{kind}" for kind in tool)
    return frozenset(needs) & EVERYTHING  # only the vocabulary: what validation let through has no other names


@dataclass(frozen=True, slots=True)
class BackendKind:
    name: str
    ref_field: str  # the routing table's backend key naming what is invoked
    ref: type[BedrockRef] | type[SageMakerRef]  # built with that key's value
    service: str  # the boto3 runtime service
    endpoint_service: str  # the interface VPC endpoint's service name (com.amazonaws.<region>.<this>)
    invoke_actions: tuple[str, ...]  # IAM actions a call is authorized as
    implementation: str  # "module:Class" of the runtime backend, imported when the router is built
    can: frozenset[str]  # what it can express, from EVERYTHING

    def missing(self, needs: frozenset[str]) -> frozenset[str]:
        """What of `needs` this kind cannot express (empty when it can serve the request)."""
        return needs - self.can

    def make_ref(self, value: str) -> BackendRef:
        return self.ref(value)


KINDS: dict[str, BackendKind] = {
    "bedrock": BackendKind(
        name="bedrock",
        ref_field="model_id",
        ref=BedrockRef,
        service="bedrock-runtime",
        endpoint_service="bedrock-runtime",
        # Converse is authorized as InvokeModel (ConverseStream as InvokeModelWithResponseStream): IAM has no
        # bedrock:Converse action.
        invoke_actions=("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"),
        implementation="spillway.backends.bedrock:BedrockBackend",
        can=EVERYTHING,  # Converse itself: every member and block passes through
    ),
    "sagemaker": BackendKind(
        name="sagemaker",
        ref_field="endpoint_name",
        ref=SageMakerRef,
        service="sagemaker-runtime",
        endpoint_service="sagemaker.runtime",
        invoke_actions=("sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"),
        implementation="spillway.backends.sagemaker:SageMakerBackend",
        # The chat-completions API of LLM serving containers (spillway/backends/chat.py): text, tool calls and
        # results of text or JSON, a text system prompt, the four inference settings. cachePoint is a caching hint
        # with no meaning there and is left out. Nothing else has a form in that API.
        can=frozenset(
            (
                "messages",
                "system",
                "inferenceConfig",
                "toolConfig",
                "text",
                "toolUse",
                "toolResult",
                "cachePoint",
                "system.text",
                "system.cachePoint",
                "toolResult.text",
                "toolResult.json",
                "toolConfig.toolSpec",
                "toolConfig.cachePoint",
            )
        ),
    ),
}


def kind_of(name: str) -> BackendKind:
    """The registered kind, or KeyError naming the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown backend kind {name!r}; the kinds are {', '.join(sorted(KINDS))}") from None


def make_backends(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """One runtime backend per kind, each built with the same arguments (the shared client pool)."""
    backends: dict[str, Any] = {}
    for name, kind in KINDS.items():
        module, _, attribute = kind.implementation.partition(":")
        backends[name] = getattr(importlib.import_module(module), attribute)(*args, **kwargs)
    return backends

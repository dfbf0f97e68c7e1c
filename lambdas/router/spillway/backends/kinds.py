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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

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


# How an OpenAI-compatible endpoint is authenticated: the function's role (SigV4: Bedrock's OpenAI-compatible
# endpoints), a bearer key read from Secrets Manager (Azure OpenAI, self-hosted servers), or workload identity
# federation: an AWS STS web identity token for the function's role, exchanged at the provider's security token
# service for a short-lived access token (Google Cloud's Vertex AI; spillway/backends/workload_identity.py).
OPENAI_AUTH_MODES = ("sigv4", "secret", "workload_identity")
# Google's workload identity pool provider, the audience of the token exchange (its JWT audience is "https:" + this).
WORKLOAD_AUDIENCE = re.compile(
    r"^//iam\.googleapis\.com/projects/[0-9]{1,20}/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}"
    r"/providers/[a-z0-9-]{4,32}$"
)


@dataclass(frozen=True, slots=True)
class OpenAIRef:
    """A model behind an OpenAI-compatible Chat Completions endpoint (spillway/backends/openai_compat.py)."""

    base_url: str  # https://host[:port]/path, up to (not including) /chat/completions
    model: str  # the endpoint's own model name, sent as the request's "model"
    auth: str  # one of OPENAI_AUTH_MODES
    secret_id: str | None = None  # auth "secret": the Secrets Manager secret holding the key
    signing_service: str = "bedrock"  # auth "sigv4": the service the signature is scoped to
    images: bool = False  # the model takes image parts (else an image is this target's client error)
    audience: str | None = None  # auth "workload_identity": the workload identity pool provider (WORKLOAD_AUDIENCE)
    token_url: str | None = None  # auth "workload_identity": the provider's token exchange (Google: sts.googleapis.com)
    kind: Literal["openai"] = "openai"


BackendRef = BedrockRef | SageMakerRef | OpenAIRef


class RefError(ValueError):
    """A backend object's key is wrong: the loader reports it at ``<path>.<key>``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise RefError(key, "must be a non-empty string")
    return value


def _url(obj: Mapping[str, Any], key: str) -> str:
    url = _text(obj, key).rstrip("/")
    loopback = url.startswith(("http://127.0.0.1:", "http://localhost:"))  # the local stand-ins only
    if not (url.startswith("https://") or loopback) or any(c in url for c in "?# "):
        raise RefError(key, "must be an https:// URL without query (plain http: loopback only)")
    return url


def parse_openai_ref(obj: Mapping[str, Any]) -> OpenAIRef:
    """An ``openai`` backend object (its keys already checked against the kind's fields)."""
    base_url = _url(obj, "base_url")
    auth = _text(obj, "auth")
    if auth not in OPENAI_AUTH_MODES:
        raise RefError("auth", f"must be one of {OPENAI_AUTH_MODES}, not {auth!r}")
    secret_id = _text(obj, "secret_id") if "secret_id" in obj else None
    if (auth == "secret") != (secret_id is not None):
        raise RefError("secret_id", "is required with auth 'secret' and only with it")
    federated = auth == "workload_identity"
    for key in ("audience", "token_url"):
        if federated != (key in obj):
            raise RefError(key, "is required with auth 'workload_identity' and only with it")
    audience = _text(obj, "audience") if federated else None
    if audience is not None and not WORKLOAD_AUDIENCE.match(audience):
        raise RefError(
            "audience",
            "must name a workload identity pool provider: //iam.googleapis.com/projects/<number>/locations/global/"
            "workloadIdentityPools/<pool>/providers/<provider>",
        )
    token_url = _url(obj, "token_url") if federated else None
    images = obj.get("images", False)
    if not isinstance(images, bool):
        raise RefError("images", "must be true or false")
    service = _text(obj, "signing_service") if "signing_service" in obj else "bedrock"
    return OpenAIRef(base_url, _text(obj, "model"), auth, secret_id, service, images, audience, token_url)


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


# What the chat-completions API of serving containers can express (spillway/backends/chat.py).
CHAT_CAN: frozenset[str] = frozenset(
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
)


@dataclass(frozen=True, slots=True)
class BackendKind:
    name: str
    ref_field: str  # the routing table's backend key naming what is invoked
    ref: type[BedrockRef] | type[SageMakerRef] | type[OpenAIRef]  # built with that key's value
    service: str  # the boto3 runtime service
    endpoint_service: str  # the interface VPC endpoint's service name (com.amazonaws.<region>.<this>); "": none
    invoke_actions: tuple[str, ...]  # IAM actions a call is authorized as
    implementation: str  # "module:Class" of the runtime backend, imported when the router is built
    can: frozenset[str]  # what it can express, from EVERYTHING
    # A kind of several backend keys: all its required keys, its optional ones, and the parser that checks them.
    required_fields: tuple[str, ...] = ()
    optional_fields: frozenset[str] = frozenset()
    parse: Callable[[Mapping[str, Any]], BackendRef] | None = None
    # The platform file can name it: CDK renders its targets, its VPC endpoint and its grants (stacks/).
    in_platform_file: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required_fields or (self.ref_field,)

    def missing(self, needs: frozenset[str]) -> frozenset[str]:
        """What of `needs` this kind cannot express (empty when it can serve the request)."""
        return needs - self.can

    def make_ref(self, value: str) -> BackendRef:
        """The reference of a single-key kind (a kind of several keys has a parse hook instead)."""
        if issubclass(self.ref, OpenAIRef):
            raise TypeError("an openai reference is built by its parse hook")
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
        can=CHAT_CAN,
    ),
    "openai": BackendKind(
        name="openai",
        ref_field="model",
        ref=OpenAIRef,
        # The service a SigV4-signed call is scoped to (Bedrock's OpenAI-compatible endpoints); http.client, not boto3.
        service="bedrock",
        # No endpoint of its own: each provider's path (stacks/providers.py) says how it is reached. Bedrock's
        # OpenAI-compatible Chat Completions (bedrock-runtime /openai/v1) go through the bedrock kind's endpoint.
        endpoint_service="",
        # What Bedrock authorizes its OpenAI-compatible Chat Completions as (bedrock-runtime /openai/v1; streamed:
        # InvokeModelWithResponseStream), granted on the exact foundation models of a bedrock provider's targets.
        invoke_actions=("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"),
        implementation="spillway.backends.openai_compat:OpenAICompatBackend",
        # Chat completions (spillway/backends/openai_compat.py): what SageMaker's containers take, plus images as
        # data URLs (on a target with images: true), structured output and request metadata.
        can=CHAT_CAN | {"outputConfig", "requestMetadata", "image"},
        required_fields=("base_url", "model", "auth"),
        optional_fields=frozenset({"secret_id", "signing_service", "images", "audience", "token_url"}),
        parse=parse_openai_ref,
    ),
}


def kind_of(name: str) -> BackendKind:
    """The registered kind, or KeyError naming the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown backend kind {name!r}; the kinds are {', '.join(sorted(KINDS))}") from None


def endpoint_of(backend: BackendRef, region: str) -> str:
    """Where a target's requests connect: its kind's runtime service in its region (Bedrock's provisioned and
    on-demand targets of a region share bedrock-runtime), or an OpenAI-compatible endpoint's host."""
    if isinstance(backend, OpenAIRef):
        return urlsplit(backend.base_url).netloc
    return f"{kind_of(backend.kind).service}.{region}"


def make_backends(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """One runtime backend per kind, each built with the same arguments (the shared client pool)."""
    backends: dict[str, Any] = {}
    for name, kind in KINDS.items():
        module, _, attribute = kind.implementation.partition(":")
        backends[name] = getattr(importlib.import_module(module), attribute)(*args, **kwargs)
    return backends

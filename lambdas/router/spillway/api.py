"""The HTTP contract of the router: request validation, error bodies, routes and limits.

Standard library only; the handler (Powertools) maps these to responses. Validation runs before any backend call
and answers in a fixed vocabulary: an error message names a JSON path made of known keys and list indices only,
never a value or a key the caller invented, so no error ever echoes the caller's content. docs/openapi.json is
rendered from this contract by tools/openapi.py, outside the Lambda asset.

The request is Bedrock's ConverseRequest (the shape of the botocore the router ships) without ``modelId`` (the router
picks the model) and ``promptVariables`` (the router takes no prompt ARNs): every other member is passed through to
the backend unchanged. ``messages``, ``system``, ``inferenceConfig`` and ``toolConfig`` are checked here in depth;
the others by type here and in full by botocore's parameter validation in the backend (a client error, answered at
once). Binary members (image, document, video and audio bytes, ``reasoningContent.redactedContent``) are base64
strings in this JSON body, as on Bedrock's own wire; the Bedrock backend decodes them by walking botocore's shape.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import INVALID_BASE64
from .limits import carried_size

CONVERSE_PATH = "/v1/features/<feature>/converse"
CONVERSE_STREAM_PATH = "/v1/features/<feature>/converse-stream"
FEATURES_PATH = "/v1/features"
HEALTH_PATH = "/v1/health"
CHAT_PATH = "/v1/chat/completions"  # the OpenAI-compatible front door (openai_api.py)
MODELS_PATH = "/v1/models"

# The ConverseRequest members (botocore 1.44.5) a caller may send, with the JSON type of each: every member of the
# installed model is either here or in REFUSED_FIELDS (tests/router/test_openapi.py walks the model).
REQUEST_MEMBERS: dict[str, str] = {
    "messages": "array",
    "system": "array",
    "inferenceConfig": "object",
    "toolConfig": "object",
    "guardrailConfig": "object",
    "additionalModelRequestFields": "object",
    "additionalModelResponseFieldPaths": "array",
    "requestMetadata": "object",
    "performanceConfig": "object",
    "serviceTier": "object",
    "outputConfig": "object",
}
REQUEST_FIELDS = tuple(REQUEST_MEMBERS)
# Members the router refuses, and why (the message names the member only, never what the caller sent).
REFUSED_FIELDS: dict[str, str] = {
    "modelId": "is the router's to decide (the feature's policy picks model, capacity and region): leave it out",
    "promptVariables": (
        "fills a Bedrock prompt-management prompt, and the router takes no prompt ARNs as a model: leave it out"
    ),
}
ROLES = ("user", "assistant", "system")  # ConversationRole's enum (a test compares it with botocore)
# Members of bedrock-runtime's ContentBlock / SystemContentBlock shapes (botocore 1.44.5); a test compares them
# with the installed botocore model so an upgrade that adds a block type is noticed.
CONTENT_BLOCKS = (
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
    "toolAddition",
    "toolRemoval",
)
SYSTEM_BLOCKS = ("text", "guardContent", "cachePoint")
TOOL_RESULT_BLOCKS = ("json", "text", "image", "document", "video", "searchResult")  # ToolResultContentBlock
TOOL_KINDS = ("toolSpec", "systemTool", "cachePoint")  # Tool
INFERENCE_KEYS = ("maxTokens", "temperature", "topP", "stopSequences")
TOOL_CONFIG_KEYS = ("tools", "toolChoice")
MAX_MESSAGES = 1000
MAX_STOP_SEQUENCES = 2500
FEATURE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Error codes the router itself answers with (a backend's client error keeps the backend's code).
BAD_REQUEST = "BadRequest"
INVALID_JSON = "InvalidJson"
UNKNOWN_FEATURE = "UnknownFeature"
NOT_FOUND = "NotFound"
METHOD_NOT_ALLOWED = "MethodNotAllowed"
PAYLOAD_TOO_LARGE = "PayloadTooLarge"
UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
NO_CAPACITY = "NoCapacity"
DEADLINE_EXCEEDED = "DeadlineExceeded"
CONFIG_UNAVAILABLE = "ConfigUnavailable"
ROUTER_ERROR = "RouterError"

# The fixed message of each error code; a backend's client error gets MODEL_REJECTED (its own message may quote
# the prompt, so it is never passed on).
MESSAGES = {
    UNKNOWN_FEATURE: "this deployment serves no such feature; GET /v1/features lists them",
    NOT_FOUND: "no such resource",
    METHOD_NOT_ALLOWED: "this resource does not accept that method",
    UNSUPPORTED_MEDIA_TYPE: "the body must be JSON: send Content-Type: application/json",
    INVALID_JSON: "the body is not valid UTF-8 JSON",
    NO_CAPACITY: "no capacity is left for this feature right now; retry after the Retry-After seconds",
    DEADLINE_EXCEEDED: "the request's deadline was spent before a model answered",
    CONFIG_UNAVAILABLE: "the router has no valid routing configuration",
    ROUTER_ERROR: "the router failed unexpectedly; the request may be retried",
    INVALID_BASE64: "a binary member (bytes, redactedContent) is not valid base64",
}
MODEL_REJECTED = "the model rejected the request (see the error code); its message is withheld"


class ApiError(Exception):
    """An answer other than 200: status, code and a message in the router's own words."""

    def __init__(self, status: int, code: str, message: str | None = None, *, retry_after_s: int | None = None):
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, code)
        self.retry_after_s = retry_after_s


def unsupported_message(names: tuple[str, ...]) -> str:
    """UnsupportedContent's message: the member, block or tool kinds no target of the feature can express (names
    from the request vocabulary, never content)."""
    return (
        f"no model of this feature can take: {', '.join(names)}; docs/calling-the-router.md lists what each backend "
        "kind takes"
    )


def error_body(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_body(raw: bytes, max_bytes: int, *, base64_encoded: bool = False) -> dict[str, Any]:
    """Size, JSON and shape checks, in that order. Returns the request to hand to the engine."""
    return validate_request(load_json(raw, max_bytes, base64_encoded=base64_encoded))


def load_json(raw: bytes, max_bytes: int, *, base64_encoded: bool = False) -> object:
    """Size and JSON checks (both front doors). The size is the body's as the Lambda event carries it
    (spillway.limits): what must fit in Lambda's payload."""
    if carried_size(raw, base64_encoded=base64_encoded) > max_bytes:
        raise ApiError(
            413,
            PAYLOAD_TOO_LARGE,
            f"the body is over this deployment's limit of {max_bytes} bytes (as carried in the Lambda event, where "
            "quotes, backslashes and line breaks count twice); send large documents and videos by s3Location",
        )
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, INVALID_JSON) from None


def validate_request(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        _bad("$", "the body must be a JSON object")
    for key in body:
        if key in REFUSED_FIELDS:
            _bad(key, REFUSED_FIELDS[key])
        if key not in REQUEST_MEMBERS:
            _bad("$", f"the body has a field this API does not accept; the fields are {', '.join(REQUEST_FIELDS)}")
    if "messages" not in body:
        _bad("messages", "is required")
    _messages(body["messages"])
    if "system" in body:
        _blocks(body["system"], "system", SYSTEM_BLOCKS, nonempty=False)
    if "inferenceConfig" in body:
        _inference(body["inferenceConfig"])
    if "toolConfig" in body:
        _tool_config(body["toolConfig"])
    for key, json_type in REQUEST_MEMBERS.items():  # the rest by type here, in full by botocore in the backend
        if key in body:
            _typed(body[key], key, json_type)
    return {key: body[key] for key in REQUEST_FIELDS if key in body}


def refuse_platform_members(request: Mapping[str, Any], decided: Iterable[str], overridable: AbstractSet[str]) -> None:
    """400 for a member the feature's platform settings decide and do not let callers override (named, no value)."""
    for member in sorted(set(decided) - set(overridable)):
        if member in request:
            _bad(member, "is decided by this feature's platform settings, which do not let a caller override it")


def _typed(raw: object, path: str, json_type: str) -> None:
    if json_type == "object" and not isinstance(raw, dict):
        _bad(path, "must be an object")
    if json_type == "array" and not isinstance(raw, list):
        _bad(path, "must be a list")


def _messages(raw: object) -> None:
    if not isinstance(raw, list) or not raw:
        _bad("messages", "must be a non-empty list of messages")
    if len(raw) > MAX_MESSAGES:
        _bad("messages", f"at most {MAX_MESSAGES} messages")
    for i, message in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            _bad(path, "a message must be an object with role and content")
        if set(message) - {"role", "content"}:
            _bad(path, "a message has only the fields role and content")
        if message.get("role") not in ROLES:
            _bad(f"{path}.role", f"must be one of: {', '.join(ROLES)}")
        if "content" not in message:
            _bad(f"{path}.content", "is required")
        _blocks(message["content"], f"{path}.content", CONTENT_BLOCKS, nonempty=True)


def _blocks(raw: object, path: str, kinds: tuple[str, ...], *, nonempty: bool) -> None:
    if not isinstance(raw, list) or (nonempty and not raw):
        _bad(path, "must be a non-empty list of content blocks" if nonempty else "must be a list of content blocks")
    for j, block in enumerate(raw):
        where = f"{path}[{j}]"
        if not isinstance(block, dict) or len(block) != 1:
            _bad(where, f"a content block is an object with exactly one of: {', '.join(kinds)}")
        (kind,) = block
        if kind not in kinds:
            _bad(where, f"a content block is an object with exactly one of: {', '.join(kinds)}")
        if kind == "text" and not isinstance(block[kind], str):
            _bad(f"{where}.text", "must be a string")
        if kind != "text" and not isinstance(block[kind], dict):
            _bad(f"{where}.{kind}", "must be an object")


def _inference(raw: object) -> None:
    path = "inferenceConfig"
    if not isinstance(raw, dict):
        _bad(path, "must be an object")
    if set(raw) - set(INFERENCE_KEYS):
        _bad(path, f"the fields are {', '.join(INFERENCE_KEYS)}")
    if "maxTokens" in raw:
        value = raw["maxTokens"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _bad(f"{path}.maxTokens", "must be an integer of at least 1")
    for key in ("temperature", "topP"):
        if key in raw:
            value = raw[key]
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not 0 <= value <= 1:
                _bad(f"{path}.{key}", "must be a number from 0 to 1")
    if "stopSequences" in raw:
        seqs = raw["stopSequences"]
        if not isinstance(seqs, list) or len(seqs) > MAX_STOP_SEQUENCES or not all(isinstance(s, str) for s in seqs):
            _bad(f"{path}.stopSequences", "must be a list of strings")


def _tool_config(raw: object) -> None:
    path = "toolConfig"
    if not isinstance(raw, dict):
        _bad(path, "must be an object")
    if set(raw) - set(TOOL_CONFIG_KEYS):
        _bad(path, f"the fields are {', '.join(TOOL_CONFIG_KEYS)}")
    tools = raw.get("tools")
    if not isinstance(tools, list) or not tools:
        _bad(f"{path}.tools", "must be a non-empty list of tools")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or len(tool) != 1:
            _bad(f"{path}.tools[{i}]", f"a tool is an object with one of: {', '.join(TOOL_KINDS)}")
    if "toolChoice" in raw and not isinstance(raw["toolChoice"], dict):
        _bad(f"{path}.toolChoice", "must be an object")


def _bad(path: str, problem: str) -> NoReturn:
    raise ApiError(400, BAD_REQUEST, f"{path}: {problem}")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # Powertools rule syntax: <name> for a path parameter
    operation_id: str
    summary: str
    statuses: tuple[int, ...]


ROUTES = (
    Route(
        "POST",
        CONVERSE_PATH,
        "converse",
        "Converse with the models of one feature, routed across capacity, models and regions",
        (200, 400, 404, 413, 415, 502, 503, 504),
    ),
    Route(
        "POST",
        CONVERSE_STREAM_PATH,
        "converseStream",
        "ConverseStream with the models of one feature: server-sent events, one per ConverseStream event, then a "
        "last `spillway` event with the route and usage, or the error when the stream ended incomplete",
        (200, 400, 404, 413, 415, 502, 503, 504),
    ),
    Route("GET", FEATURES_PATH, "listFeatures", "The features this deployment serves", (200, 502, 503)),
    Route("GET", HEALTH_PATH, "health", "This router instance's view of its targets' health", (200, 502, 503)),
    Route(
        "POST",
        CHAT_PATH,
        "chatCompletions",
        "OpenAI Chat Completions (the feature is the request's model), translated to Converse and routed",
        (200, 400, 404, 413, 415, 502, 503, 504),
    ),
    Route("GET", MODELS_PATH, "listModels", "The features, as OpenAI's model list", (200, 502, 503)),
)
# The OpenAI-shaped operations: their errors are OpenAI's error object, their bodies OpenAI's.
OPENAI_OPERATIONS = ("chatCompletions", "listModels")


def gateway_request_schema() -> dict[str, Any]:
    """The body's shape for API Gateway's request validator (JSON Schema draft 4): the members and their types.

    The refused members are let through so that the handler can say why they are refused; the handler checks the
    details (the gateway's own answer is one fixed message)."""
    properties: dict[str, Any] = {name: {"type": json_type} for name, json_type in REQUEST_MEMBERS.items()}
    properties["messages"]["minItems"] = 1
    properties.update({name: {} for name in REFUSED_FIELDS})
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "ConverseRequest",
        "type": "object",
        "required": ["messages"],
        "additionalProperties": False,
        "properties": properties,
    }


def public_feature(feature: Any, canary: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "name": feature.name,
        "models": list(feature.models),
        "first_capacity": feature.first_capacity,
        "home_region": feature.home_region,
        "failover_regions": list(feature.failover_regions),
        "deadline_ms": feature.deadline_ms,
        "canary": dict(canary) if canary else None,
    }

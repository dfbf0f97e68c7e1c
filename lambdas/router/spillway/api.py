"""The HTTP contract of the router: request validation, error bodies and the OpenAPI document.

Standard library only; the handler (Powertools) maps these to responses. Validation runs before any backend call
and answers in a fixed vocabulary: an error message names a JSON path made of known keys and list indices only,
never a value or a key the caller invented, so no error ever echoes the caller's content.

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

API_TITLE = "Spillway router"
API_VERSION = "1.0.0"

CONVERSE_PATH = "/v1/features/<feature>/converse"
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


def openapi_path(rule: str) -> str:
    return re.sub(r"<(\w+)>", r"{\1}", rule)


# -- OpenAPI 3.0 --------------------------------------------------------------------------------------------------

_REF = "#/components/schemas/"
_ERROR_HEADERS = {
    "x-spillway-request-id": {"description": "API Gateway's request id", "schema": {"type": "string"}},
}
_ROUTE_HEADERS = {
    "x-spillway-target": {
        "description": "the target that served: model/capacity/region",
        "schema": {"type": "string"},
    },
    "x-spillway-attempts": {"description": "backend calls made for this request", "schema": {"type": "integer"}},
    "x-spillway-service-tier": {
        "description": "the Bedrock service tier that served, as Converse's answer says (absent when it says none)",
        "schema": {"type": "string", "enum": ["priority", "default", "flex", "reserved"]},
    },
    "x-spillway-route": {
        "description": "every target tried or passed over, in order, as target=outcome, comma-separated",
        "schema": {"type": "string"},
    },
    **_ERROR_HEADERS,
}
_ROUTED_ERRORS = (400, 503, 504)
_STATUS_TEXT = {
    200: "OK",
    400: "Malformed or invalid body, or the model rejected the request (its error code kept, message withheld)",
    404: "Unknown feature",
    413: "Body over the size limit: what fits in Lambda's 6 MB payload (spillway/limits.py), or lower if configured",
    415: "Content-Type is not application/json",
    502: "The router failed unexpectedly (never a bare 500)",
    503: "No capacity left, or no routing configuration; see Retry-After",
    504: "The deadline was spent",
}


_CHECKED_IN_DEPTH = ("messages", "system", "inferenceConfig", "toolConfig")


def _passed_through(json_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": json_type, "description": "Converse's member of this name, passed through"}
    if json_type == "object":
        schema["additionalProperties"] = True
    return schema


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


def _schemas() -> dict[str, Any]:
    any_obj = {"type": "object", "additionalProperties": True}
    block = {
        "type": "object",
        "description": "a Converse content block: exactly one of its members",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {k: ({"type": "string"} if k == "text" else any_obj) for k in CONTENT_BLOCKS},
        "additionalProperties": False,
    }
    system_block = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {k: ({"type": "string"} if k == "text" else any_obj) for k in SYSTEM_BLOCKS},
        "additionalProperties": False,
    }
    return {
        "ContentBlock": block,
        "SystemContentBlock": system_block,
        "Message": {
            "type": "object",
            "required": ["role", "content"],
            "additionalProperties": False,
            "properties": {
                "role": {"type": "string", "enum": list(ROLES)},
                "content": {"type": "array", "minItems": 1, "items": {"$ref": _REF + "ContentBlock"}},
            },
        },
        "InferenceConfiguration": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "maxTokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                "topP": {"type": "number", "minimum": 0, "maximum": 1},
                "stopSequences": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP_SEQUENCES},
            },
        },
        "ToolConfiguration": {
            "type": "object",
            "required": ["tools"],
            "additionalProperties": False,
            "properties": {
                "tools": {"type": "array", "minItems": 1, "items": any_obj},
                "toolChoice": any_obj,
            },
        },
        "ConverseRequest": {
            "type": "object",
            "description": "Bedrock Converse's request without modelId: the feature's policy picks the model",
            "required": ["messages"],
            "additionalProperties": False,
            "properties": {
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_MESSAGES,
                    "items": {"$ref": _REF + "Message"},
                },
                "system": {"type": "array", "items": {"$ref": _REF + "SystemContentBlock"}},
                "inferenceConfig": {"$ref": _REF + "InferenceConfiguration"},
                "toolConfig": {"$ref": _REF + "ToolConfiguration"},
                **{
                    name: _passed_through(json_type)
                    for name, json_type in REQUEST_MEMBERS.items()
                    if name not in _CHECKED_IN_DEPTH
                },
            },
        },
        "ConverseResponse": {
            "type": "object",
            "description": "Bedrock Converse's response shape, whichever backend served",
            "required": ["output", "stopReason", "usage", "metrics"],
            "properties": {
                "output": {
                    "type": "object",
                    "properties": {"message": {"$ref": _REF + "Message"}},
                },
                "stopReason": {
                    "type": "string",
                    "enum": [
                        "end_turn",
                        "tool_use",
                        "max_tokens",
                        "stop_sequence",
                        "guardrail_intervened",
                        "content_filtered",
                        "malformed_model_output",
                        "malformed_tool_use",
                        "model_context_window_exceeded",
                    ],
                },
                "usage": {
                    "type": "object",
                    "properties": {
                        "inputTokens": {"type": "integer"},
                        "outputTokens": {"type": "integer"},
                        "totalTokens": {"type": "integer"},
                    },
                },
                "metrics": {"type": "object", "properties": {"latencyMs": {"type": "integer"}}},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "request_id"],
                    "properties": {
                        "code": {"type": "string", "description": "the router's code, or the model's error code"},
                        "message": {"type": "string", "description": "the router's words; never the caller's"},
                        "request_id": {"type": "string"},
                    },
                }
            },
        },
        "FeatureList": {
            "type": "object",
            "required": ["features"],
            "properties": {
                "features": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "models", "first_capacity", "home_region", "failover_regions"],
                        "properties": {
                            "name": {"type": "string"},
                            "models": {"type": "array", "items": {"type": "string"}},
                            "first_capacity": {"type": "string", "enum": ["provisioned", "on_demand"]},
                            "home_region": {"type": "string"},
                            "failover_regions": {"type": "array", "items": {"type": "string"}},
                            "deadline_ms": {"type": "number"},
                            "canary": {
                                "type": "object",
                                "nullable": True,
                                "properties": {"model": {"type": "string"}, "share": {"type": "number"}},
                            },
                        },
                    },
                }
            },
        },
        "Health": {
            "type": "object",
            "required": ["region", "config", "store", "targets"],
            "properties": {
                "region": {"type": "string"},
                "config": {
                    "type": "object",
                    "properties": {
                        "source": {"type": "string", "enum": ["appconfig", "last_known_good", "bundled", "none"]},
                        "version": {"type": "string", "nullable": True},
                        "flags_version": {"type": "string", "nullable": True},
                    },
                },
                "store": {"type": "object", "additionalProperties": True},
                "targets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "state": {"type": "string", "enum": ["closed", "open", "half_open", "ramping"]},
                            "cooldown_remaining_s": {"type": "number"},
                            "capacity_cooldown_remaining_s": {"type": "number"},
                            "trips": {"type": "integer"},
                            "in_flight": {"type": "integer"},
                        },
                    },
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of ROUTES. docs/openapi.json is this, written by `python -m tools.openapi`."""
    paths: dict[str, Any] = {}
    ok_schema = {
        "converse": "ConverseResponse",
        "listFeatures": "FeatureList",
        "health": "Health",
        "chatCompletions": "ChatCompletion",
        "listModels": "ModelList",
    }
    routed_operations = ("converse", "chatCompletions")
    for route in ROUTES:
        responses: dict[str, Any] = {}
        for status in route.statuses:
            if status == 200:
                responses["200"] = {
                    "description": "OK",
                    "headers": _ROUTE_HEADERS if route.operation_id in routed_operations else _ERROR_HEADERS,
                    "content": {"application/json": {"schema": {"$ref": _REF + ok_schema[route.operation_id]}}},
                }
                continue
            # A converse answer after routing (a model's 400, no capacity, the deadline) says where it went too.
            routed = route.operation_id in routed_operations and status in _ROUTED_ERRORS
            headers = dict(_ROUTE_HEADERS if routed else _ERROR_HEADERS)
            if status == 503:
                headers["Retry-After"] = {"description": "seconds, 1 to 60", "schema": {"type": "integer"}}
            responses[str(status)] = {
                "description": _STATUS_TEXT[status],
                "headers": headers,
                "content": {"application/json": {"schema": {"$ref": _REF + _error_schema(route)}}},
            }
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "security": [{"sigv4": []}],
            "responses": responses,
        }
        if "<feature>" in route.path:
            operation["parameters"] = [
                {
                    "name": "feature",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": FEATURE_NAME.pattern},
                }
            ]
        if route.method == "POST":
            request_schema = "ChatCompletionRequest" if route.operation_id == "chatCompletions" else "ConverseRequest"
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF + request_schema}}},
            }
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": (
                "Private LLM routing across Bedrock Provisioned Throughput, Bedrock On-Demand and SageMaker "
                "endpoints, with spillover, model fallback and regional failover. IAM (SigV4) authentication."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {**_schemas(), **_openai_schemas()},
            "securitySchemes": {
                "sigv4": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "x-amazon-apigateway-authtype": "awsSigv4",
                }
            },
        },
    }


def _error_schema(route: Route) -> str:
    return "OpenAIError" if route.operation_id in OPENAI_OPERATIONS else "Error"


def _openai_schemas() -> dict[str, Any]:
    """The OpenAI-shaped bodies, as far as the router defines them (openai_api.py says what maps to what)."""
    any_obj = {"type": "object", "additionalProperties": True}
    return {
        "ChatCompletionRequest": {
            "type": "object",
            "description": (
                "OpenAI's chat completions request; members Converse cannot express are refused (400, param "
                "names the member). Non-streaming: stream true is refused."
            ),
            "required": ["model", "messages"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string", "pattern": FEATURE_NAME.pattern, "description": "the feature"},
                "messages": {"type": "array", "minItems": 1, "items": any_obj},
                "max_tokens": {"type": "integer", "minimum": 1},
                "max_completion_tokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "tools": {"type": "array", "minItems": 1, "items": any_obj},
                "tool_choice": {"oneOf": [{"type": "string", "enum": ["auto", "required"]}, any_obj]},
                "response_format": any_obj,
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "stream": {"type": "boolean", "enum": [False]},
                "n": {"type": "integer", "enum": [1]},
                "parallel_tool_calls": {"type": "boolean", "enum": [True]},
            },
        },
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "enum": ["chat.completion"]},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {"type": "array", "items": any_obj},
                "usage": {
                    "type": "object",
                    "properties": {
                        "prompt_tokens": {"type": "integer"},
                        "completion_tokens": {"type": "integer"},
                        "total_tokens": {"type": "integer"},
                    },
                },
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "object", "created", "owned_by"],
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"type": "string", "enum": ["model"]},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string"},
                        },
                    },
                },
            },
        },
        "OpenAIError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string", "description": "the router's words; never the caller's"},
                        "type": {"type": "string"},
                        "param": {"type": "string", "nullable": True, "description": "the member at fault"},
                        "code": {"type": "string", "description": "the router's code, or the model's"},
                    },
                }
            },
        },
    }


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


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

"""Render docs/openapi.json from the router's request contract (lambdas/router/spillway/api.py).

The contract (routes, request members, content vocabularies, limits, the feature-name pattern) is the router's; the
rendering lives here, outside the Lambda asset, because the router never serves the document.

python -m tools.openapi           # regenerate docs/openapi.json
python -m tools.openapi --check   # exit 1 when the committed document is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROUTER = ROOT / "lambdas" / "router"
DOC = ROOT / "docs" / "openapi.json"
if str(ROUTER) not in sys.path:  # the router's import root, as in the Lambda asset
    sys.path.insert(0, str(ROUTER))

from spillway.api import (  # noqa: E402 (needs the router's import root on the path)
    CONTENT_BLOCKS,
    FEATURE_NAME,
    MAX_MESSAGES,
    MAX_STOP_SEQUENCES,
    OPENAI_OPERATIONS,
    REQUEST_MEMBERS,
    ROLES,
    ROUTES,
    SYSTEM_BLOCKS,
)

API_TITLE = "Spillway router"
API_VERSION = "1.0.0"


def openapi_path(rule: str) -> str:
    """A Powertools rule (<name>) as an OpenAPI path template ({name})."""
    return re.sub(r"<(\w+)>", r"{\1}", rule)


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


_STREAM_OK = {
    "description": (
        "Server-sent events, sent as they come: `event: <ConverseStream event name>` (messageStart, "
        "contentBlockStart, contentBlockDelta, contentBlockStop, messageStop, metadata) with `data:` the event's "
        "members as Bedrock's ConverseStream gives them; then `event: spillway` with `data:` {complete, target, "
        "attempts, route: [{target, outcome, code}], usage, ttft_ms, continuations, error: {code, message} when "
        "complete is false}. "
        "A stream without a last `spillway` event, or with complete false, was cut: its partial answer is not whole. "
        "The headers go out with the first event: x-spillway-route lists the abandoned attempts and the serving "
        "target as `=first_token`. Where the feature continues cut streams (routing `continue_with_prefix`), a "
        "stream cut after its first token goes on at another target with the partial answer as its prefix: "
        "`event: spillwayContinuation` with `data:` {from, code, to, contentBlockIndex} marks the seam (the "
        "continuing target's messageStart is not sent, its content blocks go on at contentBlockIndex), and the last "
        "event lists the seams as `continuations` and names the continuing target. "
        "After 60 s with nothing to send the router sends the comment line "
        "`: keep-alive` (SSE clients ignore it). One sent before the first token opens the answer without the route "
        "headers; if no target then serves, the last `spillway` event has complete false, error {code, message, "
        "request_id}, status and retry_after_s: the error answer it would have been."
    ),
    "headers": {
        "x-spillway-target": {
            "description": "the target that streams: model/capacity/region",
            "schema": {"type": "string"},
        },
        "x-spillway-attempts": {
            "description": "attempts sent, the serving one included",
            "schema": {"type": "integer"},
        },
        "x-spillway-route": {"description": "target=outcome, in order", "schema": {"type": "string"}},
        "x-spillway-request-id": {"description": "API Gateway's request id", "schema": {"type": "string"}},
    },
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


_CHAT_STREAM_TEXT = (
    "A chat.completion (application/json); with stream true, server-sent `data:` lines of chat.completion.chunk "
    "objects (role first, content and tool-call deltas, a finish_reason, the usage chunk when "
    "stream_options.include_usage), then `data: [DONE]`. A stream that fails after its first token has no "
    "finish_reason and no [DONE]: its last line is an OpenAIError object. The headers go out with the first chunk."
)
_CHAT_STREAM = {"schema": {"type": "string"}}


def _error_schema(route: Any) -> str:
    return "OpenAIError" if route.operation_id in OPENAI_OPERATIONS else "Error"


def _openai_schemas() -> dict[str, Any]:
    """The OpenAI-shaped bodies, as far as the router defines them (openai_api.py says what maps to what)."""
    any_obj = {"type": "object", "additionalProperties": True}
    return {
        "ChatCompletionRequest": {
            "type": "object",
            "description": (
                "OpenAI's chat completions request; members Converse cannot express are refused (400, param "
                "names the member). stream true answers chat.completion.chunk server-sent events."
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
                "stream": {"type": "boolean"},
                "stream_options": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "only with stream true",
                    "properties": {
                        "include_usage": {"type": "boolean"},
                        "include_obfuscation": {"type": "boolean", "enum": [False]},
                    },
                },
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


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the router's ROUTES; docs/openapi.json is its rendering."""
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
            if status == 200 and route.operation_id == "converseStream":
                responses["200"] = _STREAM_OK
                continue
            if status == 200:
                content: dict[str, Any] = {
                    "application/json": {"schema": {"$ref": _REF + ok_schema[route.operation_id]}}
                }
                if route.operation_id == "chatCompletions":
                    content["text/event-stream"] = _CHAT_STREAM
                responses["200"] = {
                    "description": "OK" if route.operation_id != "chatCompletions" else _CHAT_STREAM_TEXT,
                    "headers": _ROUTE_HEADERS if route.operation_id in routed_operations else _ERROR_HEADERS,
                    "content": content,
                }
                continue
            # A converse answer after routing (a model's 400, no capacity, the deadline) says where it went too.
            routed = route.operation_id in (*routed_operations, "converseStream") and status in _ROUTED_ERRORS
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


def render() -> str:
    """docs/openapi.json's exact text."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `python -m tools.openapi`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

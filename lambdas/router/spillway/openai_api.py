"""The OpenAI-compatible front door: Chat Completions requests to the router's Converse form, and back.

``POST /v1/chat/completions`` names its feature in ``model``. The request is translated to the ConverseRequest the
Converse route takes (then checked by api.validate_request like any other), the engine routes it, and the Converse
answer is rendered as a ``chat.completion``. Nothing is dropped silently: a member Converse cannot express is a 400
that names the member (``param``), never its value. Standard library only.

What maps to what:

- ``system`` and ``developer`` messages -> ``system`` text blocks (in order); ``user`` text and ``image_url`` parts
  (base64 data URLs only: the escrow VPC has no internet) -> text and image blocks; ``assistant`` content and
  ``tool_calls`` -> text and ``toolUse`` blocks; ``tool`` messages -> ``toolResult`` blocks of a user turn.
  Consecutive messages of one Converse role are merged into one turn (Converse alternates roles).
- ``tools`` (functions) -> ``toolConfig.tools[].toolSpec``; ``tool_choice`` auto/required/named -> auto/any/tool.
- ``response_format`` json_schema -> ``outputConfig.textFormat`` (Converse's structured output); text -> nothing.
- ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``stop`` -> ``inferenceConfig``;
  ``metadata`` -> ``requestMetadata``.
- ``stream`` and ``stream_options.include_usage`` say how to answer (spillway/openai_stream.py renders the chunks);
  they are not part of the Converse request.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from . import api

CHAT_PATH = api.CHAT_PATH
MODELS_PATH = api.MODELS_PATH

# Members a chat request may carry; any other is refused by name (see _refuse).
_ACCEPTED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "metadata",
        "stream",
        "stream_options",
        "n",
        "parallel_tool_calls",
    }
)
# Chat Completions members the router refuses by name. An error names only members of OpenAI's documented API,
# never a key the caller invented (which could be content): an unknown member is refused without its name.
_OPENAI_MEMBERS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "modalities",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "safety_identifier",
        "seed",
        "service_tier",
        "store",
        "top_logprobs",
        "user",
        "verbosity",
        "web_search_options",
    }
)
_OPENAI_MESSAGE_MEMBERS = frozenset({"name", "audio", "function_call", "tool_calls", "tool_call_id", "refusal"})
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp);base64,(.*)$", re.DOTALL)
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# OpenAI's error types by status (its documented taxonomy: invalid_request_error for 4xx, server errors else).
_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
    504: "timeout",
}


class ChatError(api.ApiError):
    """An api.ApiError that names the request member it is about (OpenAI's ``param``)."""

    def __init__(self, param: str, problem: str, status: int = 400, code: str = api.BAD_REQUEST) -> None:
        super().__init__(status, code, f"{param}: {problem}")
        self.param = param


def _bad(param: str, problem: str) -> NoReturn:
    raise ChatError(param, problem)


def error_body(error: api.ApiError) -> dict[str, Any]:
    """OpenAI's error shape; the message is the router's own words (never the caller's content)."""
    param = getattr(error, "param", None)
    if param is None and error.code == api.BAD_REQUEST and ": " in error.message:
        param = error.message.split(": ", 1)[0]  # api.validate_request's messages start with the member's path
    kind = _ERROR_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": param, "code": error.code}}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completions request, parsed: its feature, its Converse form and how the answer goes back."""

    feature: str
    request: dict[str, Any]
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


def parse(raw: bytes, max_bytes: int, *, base64_encoded: bool = False) -> ChatRequest:
    """The chat completions body as a ChatRequest, or ChatError/ApiError."""
    body = api.load_json(raw, max_bytes, base64_encoded=base64_encoded)
    if not isinstance(body, dict):
        _bad("$", "the body must be a JSON object")
    chat = to_converse(body)
    return ChatRequest(chat.feature, api.validate_request(chat.request), chat.stream, chat.include_usage)


def to_converse(body: Mapping[str, Any]) -> ChatRequest:
    for key in body:
        if key not in _ACCEPTED:
            if key in _OPENAI_MEMBERS:
                _bad(key, "the router cannot express this member; leave it out")
            _bad("$", "the body has a member that is not part of the Chat Completions API")
    feature = body.get("model")
    if not isinstance(feature, str) or not api.FEATURE_NAME.match(feature):
        _bad("model", "must be the name of a feature (GET /v1/models lists them)")
    stream, include_usage = _flags(body)
    request: dict[str, Any] = {}
    system, messages = _messages(body.get("messages"))
    request["messages"] = messages
    if system:
        request["system"] = system
    inference = _inference(body)
    if inference:
        request["inferenceConfig"] = inference
    if "tools" in body:
        request["toolConfig"] = _tools(body["tools"], body.get("tool_choice"))
    elif "tool_choice" in body and body["tool_choice"] not in ("none", "auto"):
        _bad("tool_choice", "names a tool choice without tools")
    if "response_format" in body:
        output = _response_format(body["response_format"])
        if output:
            request["outputConfig"] = output
    if "metadata" in body:
        metadata = body["metadata"]
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            _bad("metadata", "must be an object of strings")
        request["requestMetadata"] = dict(metadata)
    return ChatRequest(feature, request, stream, include_usage)


def _flags(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """The members that must keep their defaults, ``stream`` and its options; returns (stream, include_usage)."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        _bad("stream", "must be a boolean")
    include_usage = _stream_options(body.get("stream_options"), stream)
    if body.get("n", 1) != 1:
        _bad("n", "only one choice per request (n: 1)")
    if body.get("parallel_tool_calls", True) is not True:
        _bad("parallel_tool_calls", "Converse cannot forbid parallel tool calls; leave it out")
    return stream, include_usage


def _stream_options(options: object, stream: bool) -> bool:
    """``stream_options.include_usage`` (OpenAI allows the options only with ``stream: true``)."""
    if options is None:
        return False
    if not stream:
        _bad("stream_options", "only allowed when stream is true")
    if not isinstance(options, dict):
        _bad("stream_options", "must be an object")
    for key, value in options.items():
        if key not in ("include_usage", "include_obfuscation"):
            _bad("stream_options", "has a member the router cannot express")
        if not isinstance(value, bool):
            _bad(f"stream_options.{key}", "must be a boolean")
    if options.get("include_obfuscation"):  # the router sends no padding: refused rather than silently not done
        _bad("stream_options.include_obfuscation", "the router adds no obfuscation padding; send false or leave out")
    return bool(options.get("include_usage", False))


def _messages(raw: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        _bad("messages", "must be a non-empty list of messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            _bad(path, "a message must be an object")
        role = message.get("role")
        if not isinstance(role, str) or role not in _MESSAGE_KEYS:
            _bad(f"{path}.role", "must be one of: system, developer, user, assistant, tool")
        extra = set(message) - _MESSAGE_KEYS[role]
        if extra:
            name = sorted(extra)[0]
            known = name in _OPENAI_MESSAGE_MEMBERS
            _bad(f"{path}.{name}" if known else path, "the router cannot express this member")
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _texts(message.get("content"), f"{path}.content"))
            continue
        if role == "user":
            blocks = _user_content(message.get("content"), f"{path}.content")
            _append(turns, "user", blocks)
        elif role == "assistant":
            _append(turns, "assistant", _assistant(message, path))
        else:
            _append(turns, "user", [_tool_result(message, path)])
    if not turns:
        _bad("messages", "needs at least one user message")
    return system, turns


_MESSAGE_KEYS: dict[Any, set[str]] = {
    "system": {"role", "content"},
    "developer": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _texts(content: object, path: str) -> list[str]:
    """A string, or a list of text parts."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        _bad(path, "must be a string or a list of text parts")
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            _bad(f"{path}[{j}]", "must be a text part")
        out.append(part["text"])
    return out


def _user_content(content: object, path: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list) or not content:
        _bad(path, "must be a string or a non-empty list of content parts")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{path}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{where}.image_url"))
        else:
            _bad(where, "the router takes text and image_url parts only")
    return blocks


def _image(raw: object, path: str) -> dict[str, Any]:
    url = raw.get("url") if isinstance(raw, dict) else None
    if not isinstance(url, str):
        _bad(f"{path}.url", "is required")
    if url.startswith(("http://", "https://")):
        _bad(f"{path}.url", "remote images cannot be fetched (the models have no internet): send a base64 data URL")
    match = _DATA_URL.match(url)
    if match is None:
        _bad(f"{path}.url", "must be a data URL: data:image/(png|jpeg|gif|webp);base64,...")
    data = match.group(2)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        _bad(f"{path}.url", "the data URL is not valid base64")
    image_format = "jpeg" if match.group(1) == "jpg" else match.group(1)
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _assistant(message: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if content is not None:
        blocks.extend({"text": text} for text in _texts(content, f"{path}.content") if text)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        _bad(f"{path}.tool_calls", "must be a list")
    for k, call in enumerate(calls):
        where = f"{path}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or call.get("type", "function") != "function" or not isinstance(function, dict):
            _bad(where, "must be a function call")
        if not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
            _bad(where, "needs an id and a function name")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            _bad(f"{where}.function.arguments", "must be a JSON object as text")
        if not isinstance(arguments, dict):
            _bad(f"{where}.function.arguments", "must be a JSON object as text")
        blocks.append({"toolUse": {"toolUseId": call["id"], "name": function["name"], "input": arguments}})
    if not blocks:
        _bad(path, "an assistant message needs content or tool_calls")
    return blocks


def _tool_result(message: Mapping[str, Any], path: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        _bad(f"{path}.tool_call_id", "is required")
    texts = _texts(message.get("content"), f"{path}.content")
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": text} for text in texts]}}


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _bad(key, "must be a number")
    if not 0 <= value <= 1:  # Converse's range; OpenAI's temperature goes to 2, which no Converse model takes
        _bad(key, "must be from 0 to 1 (Converse's range)")
    return float(value)


def _inference(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limits = {body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None}
    if len(limits) > 1:
        _bad("max_completion_tokens", "differs from max_tokens: send one")
    if limits:
        (limit,) = limits
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            _bad("max_tokens" if "max_tokens" in body else "max_completion_tokens", "must be an integer of at least 1")
        config["maxTokens"] = limit
    for key, member in (("temperature", "temperature"), ("top_p", "topP")):
        value = _number(body, key)
        if value is not None:
            config[member] = body[key]
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            _bad("stop", "must be a string or a list of strings")
        if stops:
            config["stopSequences"] = stops
    return config


def _tools(raw: object, choice: object) -> dict[str, Any]:
    if not isinstance(raw, list) or not raw:
        _bad("tools", "must be a non-empty list of functions")
    tools = []
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            _bad(f"tools[{i}]", "the router takes function tools only")
        extra = set(function) - {"name", "description", "parameters", "strict"}
        if extra:
            _bad(f"tools[{i}].function", "has a member the router cannot express")
        if not isinstance(function.get("name"), str):
            _bad(f"tools[{i}].function.name", "is required")
        spec: dict[str, Any] = {
            "name": function["name"],
            "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
        }
        if function.get("description") is not None:
            spec["description"] = function["description"]
        if function.get("strict") is not None:
            spec["strict"] = bool(function["strict"])
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    if choice is None or choice == "auto":
        return config
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        config["toolChoice"] = {"tool": {"name": choice["function"].get("name")}}
    else:
        _bad("tool_choice", "must be auto, required or a named function (Converse has no 'none')")
    return config


def _response_format(raw: object) -> dict[str, Any] | None:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        _bad("response_format", "json_object has no schema; Converse needs one: send type json_schema")
    if kind != "json_schema" or not isinstance(raw, dict):
        _bad("response_format", "must be text or json_schema")
    spec = raw.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict) or not isinstance(spec.get("name"), str):
        _bad("response_format.json_schema", "needs a name and a schema")
    definition: dict[str, Any] = {"schema": json.dumps(spec["schema"]), "name": spec["name"]}
    if isinstance(spec.get("description"), str):
        definition["description"] = spec["description"]
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


# -- answers ------------------------------------------------------------------------------------------------------


def completion(response: Mapping[str, Any], feature: str, request_id: str, now: float | None = None) -> dict[str, Any]:
    """A Converse answer as a ``chat.completion``."""
    output = response.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    blocks = message.get("content") if isinstance(message, Mapping) else None
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, Mapping):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), Mapping):
            use = block["toolUse"]
            arguments = json.dumps(use.get("input", {}), separators=(",", ":"))
            function = {"name": str(use.get("name", "")), "arguments": arguments}
            calls.append({"id": str(use.get("toolUseId", "")), "type": "function", "function": function})
        elif isinstance(block.get("reasoningContent"), Mapping):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    answer["refusal"] = None
    if calls:
        answer["tool_calls"] = calls
    if reasoning:
        answer["reasoning_content"] = "".join(reasoning)  # vLLM's and DeepSeek's name for it
    stop = response.get("stopReason")
    usage_raw = response.get("usage")
    usage: Mapping[str, Any] = usage_raw if isinstance(usage_raw, Mapping) else {}
    prompt_tokens = _count(usage.get("inputTokens"))
    completion_tokens = _count(usage.get("outputTokens"))
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time() if now is None else now),
        "model": feature,
        "choices": [
            {
                "index": 0,
                "message": answer,
                "finish_reason": finish_reason(stop),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def finish_reason(stop: object) -> str:
    """Converse's stopReason as OpenAI's finish_reason (an unknown or missing one is ``stop``)."""
    return _FINISH.get(stop, "stop") if isinstance(stop, str) else "stop"


def _count(raw: object) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0


def models_body(features: list[str]) -> dict[str, Any]:
    """``GET /v1/models``: each feature as an OpenAI model object."""
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "spillway"} for name in sorted(features)]
    return {"object": "list", "data": data}

"""Converse <-> the chat-completions API (OpenAI-style messages, as LLM serving containers such as LMI/vLLM and TGI
and OpenAI-compatible endpoints take them), both ways, so that a caller cannot tell which backend served:

- system text blocks -> one ``system`` message; text blocks -> ``content`` text; ``toolUse`` blocks of an assistant
  message -> ``tool_calls``; ``toolResult`` blocks of a user message -> ``tool`` messages (their text and JSON);
- inferenceConfig maxTokens/temperature/topP/stopSequences -> max_tokens/temperature/top_p/stop;
- toolConfig toolSpec -> ``tools`` (type function), toolChoice auto/any/tool -> auto/required/named function;
- the answer's message, tool calls, finish reason and usage -> Converse's output, stopReason and usage.

What this API has no form for is declared in the registry (spillway/backends/kinds.py, the sagemaker kind's
capabilities), and the planner passes such a target over before sending: nothing reaches `to_chat` that it would
have to drop. A block it still meets (a caller of this module that skipped the check) is refused, never dropped;
``cachePoint`` is a caching hint with no meaning here and is the one thing left out.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from ..errors import BackendError, ErrorClass
from . import malformed, usage_int
from .contract import BackendReply, Usage

_FINISH = {
    "stop": "end_turn",
    "eos_token": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filtered",
    "stop_sequence": "stop_sequence",
}


def to_chat(request: Mapping[str, Any], *, images: bool = False) -> dict[str, Any]:
    """The chat completions payload of a Converse request; `images`: the model takes image parts (data URLs)."""
    messages: list[dict[str, Any]] = []
    system = [b["text"] for b in request.get("system") or [] if isinstance(b, Mapping) and "text" in b]
    if system:
        messages.append({"role": "system", "content": "\n".join(system)})
    for message in request["messages"]:
        messages.extend(_message(message, images))
    payload: dict[str, Any] = {"messages": messages}
    config = request.get("inferenceConfig") or {}
    for src, dst in (("maxTokens", "max_tokens"), ("temperature", "temperature"), ("topP", "top_p")):
        if src in config:
            payload[dst] = config[src]
    if config.get("stopSequences"):
        payload["stop"] = list(config["stopSequences"])
    tools = request.get("toolConfig")
    if tools:
        payload.update(_tools(tools))
    return payload


def _message(message: Mapping[str, Any], images: bool = False) -> list[dict[str, Any]]:
    role = message["role"]
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in message["content"]:
        (kind,) = block
        value = block[kind]
        if kind == "text":
            parts.append({"type": "text", "text": value})
        elif kind == "image" and images and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _data_url(value)}})
        elif kind == "toolUse" and role == "assistant":
            calls.append(
                {
                    "id": str(value.get("toolUseId", "")),
                    "type": "function",
                    "function": {"name": str(value.get("name", "")), "arguments": json.dumps(value.get("input", {}))},
                }
            )
        elif kind == "toolResult" and role == "user":
            results.append({"role": "tool", "tool_call_id": str(value.get("toolUseId", "")), "content": _result(value)})
        elif kind == "cachePoint":
            continue
        else:
            raise BackendError(ErrorClass.CLIENT, "UnsupportedContentBlock", 400)
    out: list[dict[str, Any]] = list(results)
    if parts or calls or not results:
        # Text alone as one string (what every serving container takes); with an image, the list of parts.
        only_text = all(part["type"] == "text" for part in parts)
        content: Any = "\n".join(part["text"] for part in parts) if only_text else parts
        entry: dict[str, Any] = {"role": role, "content": content}
        if calls:
            entry["tool_calls"] = calls
        out.append(entry)
    return out


def _data_url(image: Mapping[str, Any]) -> str:
    data = image["source"]["bytes"]
    if isinstance(data, bytes | bytearray):
        data = base64.b64encode(data).decode()
    if not isinstance(data, str) or image["format"] not in ("png", "jpeg", "gif", "webp"):
        raise BackendError(ErrorClass.CLIENT, "UnsupportedContentBlock", 400)
    return f"data:image/{image['format']};base64,{data}"


def _result(value: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for block in value.get("content") or []:
        if isinstance(block, Mapping):
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif "json" in block:
                parts.append(json.dumps(block["json"]))
    return "\n".join(parts)


def _tools(config: Mapping[str, Any]) -> dict[str, Any]:
    tools = []
    for tool in config.get("tools") or []:
        spec = tool.get("toolSpec") if isinstance(tool, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        schema = spec.get("inputSchema") or {}
        function = {"name": spec.get("name"), "parameters": schema.get("json", {})}
        if spec.get("description"):
            function["description"] = spec["description"]
        tools.append({"type": "function", "function": function})
    out: dict[str, Any] = {"tools": tools} if tools else {}
    choice = config.get("toolChoice")
    if isinstance(choice, Mapping) and tools:
        if "any" in choice:
            out["tool_choice"] = "required"
        elif "tool" in choice and isinstance(choice["tool"], Mapping):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["tool"].get("name")}}
        elif "auto" in choice:
            out["tool_choice"] = "auto"
    return out


def from_chat(answer: Any, elapsed_ms: float) -> BackendReply:
    if not isinstance(answer, Mapping):
        raise malformed("SageMaker")
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], Mapping) else None
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, Mapping):
        raise malformed("SageMaker")
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"text": text})
    elif text is not None and not isinstance(text, str):
        raise malformed("SageMaker")
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise malformed("SageMaker")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise malformed("SageMaker") from None
        tool_use = {"toolUseId": str(call.get("id", "")), "name": str(function.get("name", "")), "input": arguments}
        content.append({"toolUse": tool_use})
    if not content:
        content.append({"text": ""})
    finish = choice.get("finish_reason") if choice is not None else None
    stop = _FINISH.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    usage_raw = answer.get("usage")
    usage_map: Mapping[str, Any] = usage_raw if isinstance(usage_raw, Mapping) else {}
    usage = Usage(usage_int(usage_map.get("prompt_tokens")), usage_int(usage_map.get("completion_tokens")))
    response = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "totalTokens": usage.input_tokens + usage.output_tokens,
        },
        "metrics": {"latencyMs": round(elapsed_ms)},
    }
    return BackendReply(response=response, latency_ms=elapsed_ms, ttft_ms=None, usage=usage)

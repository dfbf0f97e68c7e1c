"""The OpenAI-compatible front door through handler.lambda_handler: translation both ways, and every refusal."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from spillway.backends.contract import BackendReply, Usage
from spillway.errors import BackendError
from tests.router.conftest import Harness, api_event, body_of, header

PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()
SECRET = "the-caller-secret-text-7c1f"


def _chat(harness: Harness, body: Any, **kw: Any) -> dict[str, Any]:
    return harness.call(api_event("POST", "/v1/chat/completions", body=body, **kw))


def _simple(**extra: Any) -> dict[str, Any]:
    return {"model": "summarize-thread", "messages": [{"role": "user", "content": "hello"}], **extra}


def _openai_error(response: dict[str, Any]) -> dict[str, Any]:
    body = body_of(response)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


def test_a_full_request_reaches_the_backend_as_the_converse_it_means(harness: Harness) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    body = {
        "model": "summarize-thread",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "use tools"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
            {"role": "user", "content": "and so?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": "required",
        "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}},
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "metadata": {"team": "search"},
    }
    response = _chat(harness, body, request_id="rid-7")
    assert response["statusCode"] == 200
    sent = harness.bedrock.calls[0][1]
    assert sent == {
        "messages": [
            {
                "role": "user",
                "content": [{"text": "what is this?"}, {"image": {"format": "png", "source": {"bytes": PNG}}}],
            },
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "call_1", "name": "lookup", "input": {"q": "x"}}}],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "found it"}]}},
                    {"text": "and so?"},
                ],
            },
        ],
        "system": [{"text": "be brief"}, {"text": "use tools"}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {"toolSpec": {"name": "lookup", "description": "find", "inputSchema": {"json": {"type": "object"}}}}
            ],
            "toolChoice": {"any": {}},
        },
        "outputConfig": {
            "textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "reply"}},
            }
        },
        "requestMetadata": {"team": "search"},
    }
    completion = body_of(response)
    assert completion["object"] == "chat.completion"
    assert completion["id"] == "chatcmpl-rid-7"
    assert completion["model"] == "summarize-thread"
    assert completion["choices"][0]["message"]["content"] == "fine answer"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert header(response, "x-spillway-target") == PT


def test_a_tool_call_answer_is_rendered_as_tool_calls(harness: Harness) -> None:
    reply = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "tu-1", "name": "lookup", "input": {"q": "y"}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7},
        "metrics": {"latencyMs": 5},
    }
    harness.bedrock.plan[PT] = BackendReply(response=reply, latency_ms=5.0, usage=Usage(3, 4))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    response = _chat(harness, _simple(tools=tools))
    choice = body_of(response)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "tu-1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"y"}'}}
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"temperature": 1.5}, "temperature"),
        ({"n": 2}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": True, "stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        ({"tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "max_completion_tokens"),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages[0].name"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_what_converse_cannot_express_is_a_400_naming_the_member(
    harness: Harness, extra: dict[str, Any], param: str
) -> None:
    response = _chat(harness, _simple(**extra))
    assert response["statusCode"] == 400
    error = _openai_error(response)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert harness.bedrock.calls == []


def test_an_error_never_echoes_the_callers_content(harness: Harness) -> None:
    body = _simple(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": SECRET}}]}])
    response = _chat(harness, body)
    assert response["statusCode"] == 400
    assert SECRET not in response["body"]
    for invented in (SECRET, "my_private_note"):  # an unknown member is refused without its name
        response = _chat(harness, {**_simple(), invented: 1})
        assert response["statusCode"] == 400
        assert invented not in response["body"]
        assert _openai_error(response)["param"] == "$"


def test_an_unknown_feature_is_a_404_naming_model(harness: Harness) -> None:
    response = _chat(harness, {**_simple(), "model": "no-such-feature"})
    assert response["statusCode"] == 404
    assert _openai_error(response)["param"] == "model"


def test_no_capacity_is_the_converse_routes_503_with_retry_after(table_doc: dict[str, Any]) -> None:
    answers = []
    for door in ("chat", "converse"):  # each on a fresh router: the same state before the same request
        harness = Harness(table_doc)
        harness.bedrock.default = BackendError.of("ThrottlingException", 429, retry_after_s=3)
        answers.append(_chat(harness, _simple()) if door == "chat" else harness.converse())
        harness.handler.set_router(None)
    chat, converse = answers
    assert chat["statusCode"] == converse["statusCode"] == 503
    assert header(chat, "Retry-After") == header(converse, "Retry-After")
    assert header(chat, "Retry-After") is not None
    error = _openai_error(chat)
    assert error["code"] == "NoCapacity"
    assert error["type"] == "service_unavailable"


def test_models_lists_the_features_in_openais_list_shape(harness: Harness) -> None:
    response = harness.call(api_event("GET", "/v1/models"))
    assert response["statusCode"] == 200
    body = body_of(response)
    assert body["object"] == "list"
    features = body_of(harness.call(api_event("GET", "/v1/features")))["features"]
    assert [m["id"] for m in body["data"]] == sorted(f["name"] for f in features)
    assert all(m["object"] == "model" for m in body["data"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "summarize-thread", "messages": "hello"}, "messages"),
        ({"model": "summarize-thread", "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
        ({"model": "summarize-thread", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "summarize-thread", "messages": [{"role": "system", "content": "only a system prompt"}]},
            "messages",
        ),
        (
            {
                "model": "summarize-thread",
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]},
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({**_simple(), "tools": {"type": "function"}}, "tools"),
        ({**_simple(), "stop": 3}, "stop"),
        ({**_simple(), "metadata": {"a": 1}}, "metadata"),
        ({**_simple(), "max_tokens": 0}, "max_tokens"),
        (
            {**_simple(), "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema",
        ),
        (
            _simple(messages=[{"role": "tool", "content": "result without its call id"}]),
            "messages[0].tool_call_id",
        ),
    ],
)
def test_malformed_bodies_are_400s_that_name_the_member(harness: Harness, body: dict[str, Any], param: str) -> None:
    response = _chat(harness, body)
    assert response["statusCode"] == 400
    assert _openai_error(response)["param"] == param

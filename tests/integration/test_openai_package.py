"""The official `openai` package against the router's OpenAI-compatible door in the one-process world, each request
signed with SigV4 by tools/openai_client.py's httpx auth hook."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from local.emulator import Fault
from local.localrun import LocalWorld

# requirements-dev.txt pins it; the router's own requirements do not (the Lambda never imports it).
openai = pytest.importorskip("openai", reason="the openai package is in requirements-dev.txt only")
httpx2 = pytest.importorskip("httpx2", reason="the openai package's HTTP client")
from tools import openai_client  # noqa: E402
from tools.openai_client import client  # noqa: E402

FEATURE = "summarize-thread"


def test_the_openai_package_calls_the_router_signed_with_sigv4(world: LocalWorld) -> None:
    sent: list[httpx2.Request] = []  # type: ignore[name-defined]
    oa = client(world.url, "us-east-1", event_hooks={"request": [sent.append]})
    completion = oa.chat.completions.create(
        model=FEATURE, messages=[{"role": "user", "content": "hello from openai"}], max_completion_tokens=32
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    authorization = sent[0].headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/us-east-1/execute-api/aws4_request" in authorization
    models = [m.id for m in oa.models.list()]
    assert FEATURE in models


def test_the_openai_package_sees_the_routers_errors(world: LocalWorld) -> None:
    oa = client(world.url, "us-east-1")
    with pytest.raises(openai.NotFoundError) as caught:
        oa.chat.completions.create(model="no-such-feature", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model=FEATURE, messages=[{"role": "user", "content": "x"}], logit_bias={"1": 1})
    assert bad.value.param == "logit_bias"  # type: ignore[attr-defined]


# -- stream=True: the chunks read by the package, as they arrive over chunked HTTP --------------------------------

PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"
MESSAGES = [{"role": "user", "content": "stream the summary please"}]


def _model_id(world: LocalWorld, target: str) -> str:
    return str(world.table_doc["targets"][target]["backend"]["model_id"])


def _timeouts(world: LocalWorld, first_token_ms: float, inter_token_ms: float) -> None:
    doc = copy.deepcopy(world.table_doc)
    doc["features"][FEATURE].update(first_token_ms=first_token_ms, inter_token_ms=inter_token_ms)
    world.deploy_table(doc)
    world.await_config()


def test_the_openai_package_streams_what_the_buffered_door_answers(world: LocalWorld) -> None:
    oa = client(world.url, "us-east-1")
    whole = oa.chat.completions.create(model=FEATURE, messages=MESSAGES, max_completion_tokens=32)
    raw = oa.chat.completions.with_raw_response.create(
        model=FEATURE, messages=MESSAGES, max_completion_tokens=32, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"] == "text/event-stream"
    assert raw.headers["x-spillway-target"] == PT
    chunks = list(raw.parse())
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # the emulator answers a prompt the same way, streamed or not
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )


def test_a_stall_before_the_first_token_fails_over_unseen(world: LocalWorld) -> None:
    _timeouts(world, first_token_ms=400, inter_token_ms=1000)
    world.emu.set_fault(("us-east-1", "bedrock", _model_id(world, PT)), Fault.slow_first_token(5.0))
    raw = client(world.url, "us-east-1").chat.completions.with_raw_response.create(
        model=FEATURE, messages=MESSAGES, stream=True
    )
    assert raw.headers["x-spillway-route"] == f"{PT}=unavailable,{OD}=first_token"
    chunks = list(raw.parse())
    assert [c.choices[0].delta.role for c in chunks].count("assistant") == 1
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.stream_error("model_stream_error", after_tokens=2), "ModelStreamErrorException"),
        (Fault.stall(seconds=5.0, after_tokens=2), "StreamStalled"),
    ],
)
def test_a_failure_after_the_first_token_raises_apierror_while_iterating(
    world: LocalWorld, fault: Fault, code: str
) -> None:
    _timeouts(world, first_token_ms=3000, inter_token_ms=1500)  # generous: only the 5 s stall may exceed them
    world.emu.set_fault(("us-east-1", "bedrock", _model_id(world, PT)), fault)
    stream = client(world.url, "us-east-1").chat.completions.create(model=FEATURE, messages=MESSAGES, stream=True)
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        _drain(stream, received)
    assert caught.value.code == code
    assert not isinstance(caught.value, openai.APIStatusError)  # the status was 200: the error came in the stream
    assert [c.choices[0].finish_reason for c in received] == [None] * len(received)
    assert sum(1 for c in received if c.choices[0].delta.content) == 2


def _drain(stream: Any, into: list[Any]) -> None:
    for chunk in stream:
        into.append(chunk)


def test_no_first_token_anywhere_is_raised_by_create(world: LocalWorld) -> None:
    for target in world.table_doc["targets"].values():
        backend = target["backend"]
        kind, wire_id = backend["kind"], backend.get("model_id") or backend.get("endpoint_name")
        world.emu.set_fault((target["region"], kind, wire_id), Fault.error_response("unavailable"))
    with pytest.raises(openai.InternalServerError) as caught:
        client(world.url, "us-east-1").chat.completions.create(model=FEATURE, messages=MESSAGES, stream=True)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"]
    assert caught.value.code == "NoCapacity"


def test_the_documented_streaming_example_runs(world: LocalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/calling-the-router.md's streaming block for the `openai` package, run as written."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "calling-the-router.md").read_text()
    section = text.split("### Streaming: `stream: true`", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code, "calling-the-router.md", "exec"), namespace)  # our own documentation, run as written
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    answer, finish, usage = namespace["stream_completion"](world.url, FEATURE, "Hello", "us-east-1")
    assert answer
    assert finish == "stop"
    assert usage.completion_tokens > 0
    world.emu.set_fault(
        ("us-east-1", "bedrock", _model_id(world, PT)), Fault.stream_error("model_stream_error", after_tokens=1)
    )
    with pytest.raises(openai.APIError):
        namespace["stream_completion"](world.url, FEATURE, "Hello", "us-east-1")


def test_the_command_streams_and_exits_1_on_a_failed_stream(
    world: LocalWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    assert openai_client.main([world.url, FEATURE, "hello there", "--stream"]) == 0
    assert capsys.readouterr().out.strip()
    world.emu.set_fault(
        ("us-east-1", "bedrock", _model_id(world, PT)), Fault.stream_error("model_stream_error", after_tokens=1)
    )
    assert openai_client.main([world.url, FEATURE, "hello there", "--stream"]) == 1
    assert "the stream failed: ModelStreamErrorException" in capsys.readouterr().out

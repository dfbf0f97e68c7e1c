"""Routing across backend kinds in the one-process world: a hierarchy of Claude on PT, then on demand, then a model on
an OpenAI-compatible endpoint (the emulator's) keeps serving, through both front doors, when every Bedrock target is
down; the dead targets' breakers open so later requests go straight to the other kind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from local.emulator import Fault, TargetSpec
from local.emulator.openai_compat import base_path
from local.emulator.targets import Kind
from local.localrun import LocalWorld

GPT = "gpt-oss/on_demand/us-east-1"
WIRE_MODEL = "openai.gpt-oss-120b-1-0"
FEATURE = "summarize-thread"
JSON = {"Content-Type": "application/json"}


def _with_openai_target(world: LocalWorld) -> dict[str, Any]:
    """The example's table plus an openai target as the feature's last model (its endpoint on the emulator)."""
    world.emu.add_target(TargetSpec("us-east-1", Kind.OPENAI, WIRE_MODEL, name=GPT, echo=True))
    table = world.table_copy()
    base_url = world.emu.endpoint_url("us-east-1").rstrip("/") + base_path(WIRE_MODEL)
    backend = {"kind": "openai", "base_url": base_url, "model": WIRE_MODEL, "auth": "sigv4"}
    table["targets"][GPT] = {"model": "gpt-oss", "capacity": "on_demand", "region": "us-east-1", "backend": backend}
    feature = table["features"][FEATURE]
    # The example's Bedrock models, then this echoing target (the example's own model in another cloud is
    # tests/integration/test_multicloud_local.py's).
    bedrock = {t["model"] for t in table["targets"].values() if t["backend"]["kind"] == "bedrock"}
    feature["models"] = [*(m for m in feature["models"] if m in bedrock), "gpt-oss"]
    feature["max_attempts"] = len(table["targets"])  # room to try every Bedrock target, then the other kind
    return table


@pytest.fixture
def mixed(world: LocalWorld) -> Iterator[LocalWorld]:
    world.deploy_table(_with_openai_target(world))
    world.await_config()
    yield world
    world.emu.remove_target(("us-east-1", "openai", WIRE_MODEL))


def test_with_every_bedrock_target_down_the_openai_target_serves_everything(mixed: LocalWorld) -> None:
    bedrock = [t for t in mixed.by_id.values() if t.kind == "bedrock"]
    assert len(bedrock) >= 4
    for target in bedrock:
        mixed.set_fault(target.id, Fault.error_response("unavailable"))
    served = []
    for i in range(30):
        body = {"model": FEATURE, "messages": [{"role": "user", "content": f"request {i}"}]}
        reply = mixed.http.request("POST", "/v1/chat/completions", json.dumps(body).encode(), JSON)
        assert reply.status == 200
        served.append(reply.target)
        assert reply.json()["choices"][0]["message"]["content"] == f"request {i}"  # the emulator echoes
    assert served == [GPT] * 30  # nothing dropped, every answer from the other kind
    # The breakers opened: later requests stop trying the dead Bedrock targets.
    last = mixed.http.converse(FEATURE, {"messages": [{"role": "user", "content": [{"text": "after"}]}]})
    assert last.target == GPT
    assert last.header("x-spillway-attempts") == "1"


def test_streams_fail_over_to_the_openai_kind_before_their_first_token(mixed: LocalWorld) -> None:
    """Engine.stream treats an openai target as any other: with every Bedrock target down, both streaming doors are
    served from the OpenAI-compatible endpoint's own stream, and the caller sees nothing of the failed attempts."""
    for target in (t for t in mixed.by_id.values() if t.kind == "bedrock"):
        mixed.set_fault(target.id, Fault.error_response("unavailable"))
    openai = pytest.importorskip("openai", reason="the openai package is in requirements-dev.txt only")
    from tools.openai_client import client  # noqa: PLC0415 (needs the openai package)

    raw = client(mixed.url, "us-east-1").chat.completions.with_raw_response.create(
        model=FEATURE, messages=[{"role": "user", "content": "stream from the other cloud"}], stream=True
    )
    assert raw.headers["x-spillway-target"] == GPT
    assert raw.headers["x-spillway-route"].endswith(f"{GPT}=first_token")
    chunks = list(raw.parse())
    assert isinstance(chunks[0], openai.types.chat.ChatCompletionChunk)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "stream from the other cloud"
    assert chunks[-1].choices[0].finish_reason == "stop"
    request = {"messages": [{"role": "user", "content": [{"text": "and through converse-stream"}]}]}
    reply = mixed.http.request("POST", f"/v1/features/{FEATURE}/converse-stream", json.dumps(request).encode(), JSON)
    assert reply.status == 200
    assert reply.target == GPT
    events = [block for block in reply.body.decode().split("\n\n") if block]
    assert events[0].startswith("event: messageStart")
    trailer = json.loads(events[-1].split("data: ", 1)[1])
    assert (trailer["complete"], trailer["target"]) == (True, GPT)
    assert trailer["usage"]["outputTokens"] > 0  # from the endpoint's include_usage chunk


def test_an_openai_target_that_fails_mid_stream_ends_the_callers_stream_explicitly(mixed: LocalWorld) -> None:
    """After its first token the openai target's own error chunk cannot fail over: the door's last line is the
    error object (the package raises it), never a finish_reason or [DONE]."""
    for target in (t for t in mixed.by_id.values() if t.kind == "bedrock"):
        mixed.set_fault(target.id, Fault.error_response("unavailable"))
    mixed.emu.set_fault(("us-east-1", "openai", WIRE_MODEL), Fault.stream_error("internal", after_tokens=2))
    openai = pytest.importorskip("openai", reason="the openai package is in requirements-dev.txt only")
    from tools.openai_client import client  # noqa: PLC0415 (needs the openai package)

    words = "one two three four five"
    stream = client(mixed.url, "us-east-1").chat.completions.create(
        model=FEATURE, messages=[{"role": "user", "content": words}], stream=True
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        _drain(stream, received)
    assert caught.value.code == "ModelStreamError"  # the backend's code for the endpoint's error chunk
    assert "".join(c.choices[0].delta.content or "" for c in received) == "one two "
    assert all(c.choices[0].finish_reason is None for c in received)


def _drain(stream: Any, into: list[Any]) -> None:
    for chunk in stream:
        into.append(chunk)

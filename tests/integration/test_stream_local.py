"""The converse-stream route in the local world, read by the documented client (tools/stream_router.py: botocore
SigV4 signing, server-sent events read as they arrive over chunked HTTP): the same events as Bedrock's own
ConverseStream, failover before the first token unseen, an explicit incomplete end after it."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import Credentials

from local.emulator import Fault
from local.localrun import LocalWorld
from local.localrun.apigw import LocalContext, to_event
from tools import stream_router
from tools.stream_router import converse_stream, events

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
FEATURE = "summarize-thread"
PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "stream the summary"}]}]}


def _model_id(world: LocalWorld, target: str) -> str:
    return str(world.table_doc["targets"][target]["backend"]["model_id"])


def _stream(world: LocalWorld) -> tuple[int, dict[str, str], list[tuple[str, dict[str, Any]]]]:
    status, headers, events = converse_stream(world.url, FEATURE, REQUEST, "us-east-1", credentials=CREDS)
    return status, {k.lower(): v for k, v in headers.items()}, list(events)


def _with_first_token_ms(world: LocalWorld, first_token_ms: float, inter_token_ms: float = 1000.0) -> None:
    doc = copy.deepcopy(world.table_doc)
    doc["features"][FEATURE].update(first_token_ms=first_token_ms, inter_token_ms=inter_token_ms)
    world.deploy_table(doc)
    world.await_config()


def test_the_router_streams_what_bedrock_streams(world: LocalWorld) -> None:
    direct = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=world.emu.endpoint_url("us-east-1"),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    expected = [
        next(iter(e.items())) for e in direct.converse_stream(modelId=_model_id(world, PT), **REQUEST)["stream"]
    ]
    status, headers, events = _stream(world)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["x-spillway-target"] == PT
    assert headers["x-spillway-attempts"] == "1"
    *relayed, (last_name, trailer) = events
    assert [n for n, _ in relayed] == [n for n, _ in expected]
    deltas = [(n, m) for n, m in relayed if n == "contentBlockDelta"]
    assert deltas == [(n, m) for n, m in expected if n == "contentBlockDelta"]
    assert last_name == "spillway"
    assert trailer["complete"] is True
    assert trailer["target"] == PT
    assert trailer["usage"]["outputTokens"] > 0
    assert [(r["target"], r["outcome"]) for r in trailer["route"]] == [(PT, "ok")]


def test_a_stall_before_the_first_token_fails_over_unseen(world: LocalWorld) -> None:
    _with_first_token_ms(world, 400)
    world.emu.set_fault(("us-east-1", "bedrock", _model_id(world, PT)), Fault.slow_first_token(5.0))
    status, headers, events = _stream(world)
    assert status == 200
    assert headers["x-spillway-target"] == OD
    assert headers["x-spillway-route"] == f"{PT}=unavailable,{OD}=first_token"
    names = [n for n, _ in events]
    assert names.count("messageStart") == 1  # nothing of the abandoned attempt reached the caller
    trailer = events[-1][1]
    assert trailer["complete"] is True
    assert trailer["route"][0] == {"target": PT, "outcome": "unavailable", "code": "NoFirstToken"}


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.stream_error("model_stream_error", after_tokens=2), "ModelStreamErrorException"),
        (Fault.stall(seconds=5.0, after_tokens=2), "StreamStalled"),
    ],
)
def test_a_failure_mid_stream_ends_explicitly_incomplete(world: LocalWorld, fault: Fault, code: str) -> None:
    _with_first_token_ms(world, 3000, inter_token_ms=1500)  # generous: only the 5 s stall may exceed them
    world.emu.set_fault(("us-east-1", "bedrock", _model_id(world, PT)), fault)
    status, _headers, events = _stream(world)
    assert status == 200
    names = [n for n, _ in events]
    assert names.count("contentBlockDelta") == 2
    assert "messageStop" not in names
    assert names[-1] == "spillway"
    trailer = events[-1][1]
    assert trailer["complete"] is False
    assert trailer["error"]["code"] == code
    assert trailer["target"] == PT


def test_no_target_is_an_ordinary_error_answer(world: LocalWorld) -> None:
    for target in world.table_doc["targets"].values():
        backend = target["backend"]
        kind, wire_id = backend["kind"], backend.get("model_id") or backend.get("endpoint_name")
        world.emu.set_fault((target["region"], kind, wire_id), Fault.error_response("unavailable"))
    status, headers, events = _stream(world)
    assert status == 503
    assert "retry-after" in headers
    assert events == [("error", events[0][1])]
    assert events[0][1]["error"]["code"] == "NoCapacity"


def test_a_bad_body_is_refused_as_converse_refuses_it(world: LocalWorld) -> None:
    status, _headers, events = converse_stream(world.url, FEATURE, {"messages": []}, "us-east-1", credentials=CREDS)
    assert status == 400
    assert next(events)[0] == "error"


def test_behind_a_buffered_integration_the_same_events_arrive_whole(world: LocalWorld) -> None:
    """lambda_handler (a buffered API Gateway integration) answers the route with the whole event stream at once."""
    assert world.handler is not None
    body = json.dumps(REQUEST).encode()
    path = f"/v1/features/{FEATURE}/converse-stream"
    event = to_event("POST", path, {"Content-Type": "application/json"}, body, request_id="buffered-1")
    answer = world.handler.lambda_handler(event, LocalContext("buffered-1"))
    assert answer["statusCode"] == 200
    headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    headers.update({k.lower(): v[0] for k, v in (answer.get("multiValueHeaders") or {}).items()})
    assert headers["content-type"] == "text/event-stream"
    assert headers["x-spillway-target"] == PT
    names = [name for name, _ in events(io.BytesIO(answer["body"].encode()))]
    assert names[0] == "messageStart"
    assert names[-1] == "spillway"


def test_the_documented_client_reads_the_stream(world: LocalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/calling-the-router.md's streaming block, run as written against the local world."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "calling-the-router.md").read_text()
    section = text.split("## Streaming: converse-stream", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code, "calling-the-router.md", "exec"), namespace)  # our own documentation, run as written
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    received = list(namespace["converse_stream"](world.url, FEATURE, REQUEST, "us-east-1"))
    assert received[0][0] == "messageStart"
    assert received[-1][0] == "spillway"
    assert received[-1][1]["complete"] is True
    assert "".join(d["delta"]["text"] for n, d in received if n == "contentBlockDelta")


def test_the_command_exits_0_on_a_complete_stream_and_1_on_a_cut_one(
    world: LocalWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    assert stream_router.main([world.url, FEATURE, "hello there"]) == 0
    assert f"x-spillway-target: {PT}" in capsys.readouterr().out
    world.emu.set_fault(("us-east-1", "bedrock", _model_id(world, PT)), Fault.stream_error("internal", after_tokens=1))
    assert stream_router.main([world.url, FEATURE, "hello there"]) == 1
    assert '"complete": false' in capsys.readouterr().out

"""A stream cut after its first token, continued on the next target (routing.continue_with_prefix), end to end: the
emulator's mid-stream fault on the provisioned target, read by the router's real boto3 converse_stream; the
continuation sent to the on-demand target with the partial answer as the assistant's prefix (checked byte for byte
as the emulator received it, and against botocore's ConverseStream request model); the caller, reading with the
documented client, gets one answer with a marked seam, nothing twice, and a last event naming both targets."""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.validate import ParamValidator

from local.emulator import Fault
from local.localrun import LocalWorld
from tools import stream_router
from tools.stream_router import converse_stream

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
FEATURE = "summarize-thread"
EAST = "us-east-1"
PT = "claude-sonnet/provisioned/us-east-1"
OD = "claude-sonnet/on_demand/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "stream the summary"}]}]}


def _model_id(world: LocalWorld, target: str) -> str:
    return str(world.table_doc["targets"][target]["backend"]["model_id"])


def _opt_in(world: LocalWorld) -> None:
    doc = copy.deepcopy(world.table_doc)
    doc["features"][FEATURE].update(first_token_ms=3000, inter_token_ms=1500, continue_with_prefix=True)
    world.deploy_table(doc)
    world.await_config()


def _direct_text(world: LocalWorld, model_id: str) -> str:
    """What the on-demand target streams on its own, read with boto3 straight from the emulator."""
    client = boto3.client(
        "bedrock-runtime",
        region_name=EAST,
        endpoint_url=world.emu.endpoint_url(EAST),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    stream = client.converse_stream(modelId=model_id, **REQUEST)["stream"]
    return "".join(e["contentBlockDelta"]["delta"]["text"] for e in stream if "contentBlockDelta" in e)


def _texts(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [data["delta"]["text"] for name, data in events if name == "contentBlockDelta"]


def test_a_mid_stream_error_is_continued_on_the_next_target(world: LocalWorld) -> None:
    od_id = _model_id(world, OD)
    expected_continuation = _direct_text(world, od_id)
    world.emu.reset_stats()
    _opt_in(world)
    world.emu.set_fault(
        (EAST, "bedrock", _model_id(world, PT)), Fault.stream_error("model_stream_error", after_tokens=2)
    )

    status, headers, stream = converse_stream(world.url, FEATURE, REQUEST, EAST, credentials=CREDS)
    events = list(stream)
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200
    assert headers["x-spillway-target"] == PT  # the headers went out with the provisioned target's first token

    names = [name for name, _ in events]
    seam_at = names.index("spillwayContinuation")
    before, (_, seam), after = events[:seam_at], events[seam_at], events[seam_at + 1 : -1]
    assert seam == {"from": PT, "code": "ModelStreamErrorException", "to": OD, "contentBlockIndex": 0}
    assert names.count("messageStart") == 1  # nothing of the continuing target's opening was sent again
    assert names.count("spillwayContinuation") == 1
    assert [name for name, _ in after][-3:] == ["contentBlockStop", "messageStop", "metadata"]

    partial = "".join(_texts(before))
    assert len(_texts(before)) == 2
    # The continuation: the request again with the partial answer as a last assistant message, as sent on the wire.
    (body,) = [json.loads(raw) for raw in world.emu.received((EAST, "bedrock", od_id))]
    prefix = partial.rstrip()
    assert body["messages"] == [*REQUEST["messages"], {"role": "assistant", "content": [{"text": prefix}]}]
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model("ConverseStream").input_shape
    report = ParamValidator().validate({"modelId": od_id, "messages": body["messages"]}, shape)
    assert not report.has_errors(), report.generate_report()

    # Nothing twice: the caller's answer is the partial, then the continuation without the whitespace it already has.
    assert "".join(_texts(after)) == expected_continuation.lstrip()

    trailer = events[-1][1]
    assert events[-1][0] == "spillway"
    assert trailer["complete"] is True
    assert trailer["target"] == OD
    assert [(r["target"], r["outcome"], r["code"]) for r in trailer["route"]] == [
        (PT, "unavailable", "ModelStreamErrorException"),
        (OD, "ok", None),
    ]
    assert trailer["continuations"] == [seam]
    metadata = [data for name, data in after if name == "metadata"]
    assert trailer["usage"] == metadata[-1]["usage"]  # the cut segment reported none: the sum is the continuation's
    assert trailer["usage"]["outputTokens"] > 0


def test_without_the_opt_in_the_same_fault_ends_incomplete(world: LocalWorld) -> None:
    world.emu.set_fault(
        (EAST, "bedrock", _model_id(world, PT)), Fault.stream_error("model_stream_error", after_tokens=2)
    )
    _status, _headers, stream = converse_stream(world.url, FEATURE, REQUEST, EAST, credentials=CREDS)
    events = list(stream)
    assert "spillwayContinuation" not in [name for name, _ in events]
    assert events[-1][1]["complete"] is False
    assert world.emu.received((EAST, "bedrock", _model_id(world, OD))) == []


def test_the_command_line_client_reads_a_continued_stream_as_one_answer(
    world: LocalWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    _opt_in(world)
    world.emu.set_fault(
        (EAST, "bedrock", _model_id(world, PT)), Fault.stream_error("model_stream_error", after_tokens=2)
    )
    assert stream_router.main([world.url, FEATURE, "stream the summary"]) == 0
    out, err = capsys.readouterr()
    assert f"[continued: {PT} -> {OD} after ModelStreamErrorException]" in err
    assert '"complete": true' in out

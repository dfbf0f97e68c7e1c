"""The fleet's execution environments run the router's runtime loop (lambdas/router/runtime_loop.py) against a Runtime
API the fleet serves, one per environment (local/localrun/runtime_api.py): what Lambda does with each answer the
loop posts (buffered, streamed, an error before or after the first chunk, an init error), with a process that exits
or overruns, and with a caller that leaves a stream early. The function is tests/router/runtime_fixture's, so each
case is the loop's and the fleet's, not the router's."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.localrun.apigw import STREAM_RESOURCE, LocalContext
from local.localrun.fleet import GATEWAY_502, RUNTIME_ENVIRONMENT, Fleet
from local.localrun.server import InvocationError
from stacks.gateway_responses import by_type, render

FIXTURE = Path(__file__).resolve().parents[1] / "router" / "runtime_fixture"
BUFFERED_RESOURCE = "/v1/features/{feature}/converse"


def _fleet(tmp_path: Path, handler: str = "fake_function.buffered", reserved: int = 1) -> Fleet:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "_HANDLER": handler,
        "SPILLWAY_STREAM_HANDLER": "fake_function.stream",
        "LAMBDA_TASK_ROOT": str(FIXTURE),
        "AWS_LAMBDA_FUNCTION_NAME": "spillway-router-local",
    }
    return Fleet(env, reserved_concurrency=reserved, log_dir=tmp_path)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    functions = _fleet(tmp_path)
    try:
        yield functions
    finally:
        functions.stop()


def _event(resource: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "path": resource.replace("{feature}", "f"), "httpMethod": "POST", **extra}


def _read_into(got: list[bytes], stream: Iterator[bytes], each: Callable[[bytes], None] | None = None) -> None:
    for chunk in stream:
        got.append(chunk)
        if each is not None:
            each(chunk)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_an_event_is_answered_through_the_runtime_api_and_the_environment_is_frozen_in_next(fleet: Fleet) -> None:
    result = fleet.invoke(_event(BUFFERED_RESOURCE), LocalContext("req-1", 20_000))
    seen = json.loads(result["body"])
    assert seen["request_id"] == "req-1"  # the Runtime API's Lambda-Runtime-Aws-Request-Id
    assert 0 < seen["remaining_ms"] <= 20_000  # from Lambda-Runtime-Deadline-Ms
    [environment] = fleet.environments()
    assert result["headers"]["x-local-environment"] == str(environment.index)
    assert environment.api.nexts == 2  # the init's `next`, then the one after the answer: where it is frozen
    assert environment.api.parked
    assert _state(environment.pid) == "T"
    assert environment.api.violations == []
    [cold] = fleet.cold_starts
    assert 0 < cold.init_ms <= cold.cold_start_ms


def test_a_streamed_answer_passes_chunk_by_chunk(fleet: Fleet, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    stream = fleet.invoke_stream(_event(STREAM_RESOURCE, do="gate", gate=str(gate)), LocalContext("req-2", 20_000))
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.startswith(b"event: seen"):
            gate.touch()  # the function's next chunk waits for this: a fleet that buffered would never open it
    assert chunks[0].endswith(b"\x00" * 8)
    assert b"event: gate\ndata: opened\n\n" in chunks
    assert chunks[-1] == b"event: end\ndata: {}\n\n"
    [environment] = fleet.environments()
    assert environment.invocations == 1
    assert _state(environment.pid) == "T"


def test_function_errors_cost_their_event_a_502_and_the_environment_serves_on(fleet: Fleet) -> None:
    with pytest.raises(InvocationError) as raised:
        fleet.invoke(_event(BUFFERED_RESOURCE, do="raise"), LocalContext("req-3"))
    assert (raised.value.status, raised.value.body) == GATEWAY_502
    with pytest.raises(InvocationError) as before:  # a stream that fails before its first chunk: a whole error
        list(fleet.invoke_stream(_event(STREAM_RESOURCE, do="raise_before"), LocalContext("req-4")))
    assert before.value.status == 502
    got: list[bytes] = []
    with pytest.raises(InvocationError):  # after its first chunk: the trailers, and the stream is cut
        _read_into(got, fleet.invoke_stream(_event(STREAM_RESOURCE, do="raise_mid_stream"), LocalContext("req-5")))
    assert len(got) == 2
    assert fleet.invoke(_event(BUFFERED_RESOURCE), LocalContext("req-6"))["statusCode"] == 200
    assert len(fleet.cold_starts) == 1  # one environment served all four
    assert fleet.failures == 0


def test_a_buffered_answer_on_a_streaming_integration_is_a_502(fleet: Fleet) -> None:
    with pytest.raises(InvocationError) as raised:  # the loop streams only the routes it is told stream
        list(fleet.invoke_stream(_event(BUFFERED_RESOURCE), LocalContext("req-7")))
    assert raised.value.status == 502


def test_an_overrun_is_a_504_and_costs_the_environment(fleet: Fleet) -> None:
    event = {**_event(BUFFERED_RESOURCE, do="sleep", seconds=5), "requestContext": {"requestId": "api-req-8"}}
    with pytest.raises(InvocationError) as raised:
        fleet.invoke(event, LocalContext("req-8", 300))
    # The stacks' INTEGRATION_TIMEOUT gateway response, for API Gateway's request id.
    timed_out = by_type("INTEGRATION_TIMEOUT")
    context = {"requestId": "api-req-8", "error.responseType": "INTEGRATION_TIMEOUT"}
    status, headers, body = render(timed_out, context)
    assert (raised.value.status, raised.value.body, raised.value.headers) == (status, body, headers)
    assert json.loads(raised.value.body)["error"]["code"] == "DeadlineExceeded"
    assert fleet.environments() == []
    assert fleet.failures == 1
    assert fleet.invoke(_event(BUFFERED_RESOURCE), LocalContext("req-9"))["statusCode"] == 200
    assert len(fleet.cold_starts) == 2


def test_an_environment_killed_mid_stream_cuts_that_stream_only(fleet: Fleet, tmp_path: Path) -> None:
    gate = tmp_path / "never"
    got: list[bytes] = []
    killed = []

    def kill_after_seen(chunk: bytes) -> None:
        if chunk.startswith(b"event: seen"):
            killed.append(fleet.kill_busy())

    stream = fleet.invoke_stream(_event(STREAM_RESOURCE, do="gate", gate=str(gate)), LocalContext("req-10"))
    with pytest.raises(InvocationError) as raised:
        _read_into(got, stream, kill_after_seen)
    assert len(killed) == 1
    assert killed[0] is not None
    assert raised.value.status == 502
    assert len(got) == 2
    assert fleet.failures == 1
    assert fleet.invoke(_event(BUFFERED_RESOURCE), LocalContext("req-11"))["statusCode"] == 200


def test_a_caller_that_leaves_early_leaves_the_function_to_finish(fleet: Fleet, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    stream = fleet.invoke_stream(_event(STREAM_RESOURCE, do="gate", gate=str(gate)), LocalContext("req-12"))
    assert next(stream).endswith(b"\x00" * 8)
    gate.touch()
    stream.close()  # the function runs to its end, unread; its environment is then idle and frozen again
    [environment] = fleet.environments()
    assert environment.invocations == 1
    assert environment.api.parked
    assert _state(environment.pid) == "T"
    assert fleet.busy() == []


def test_an_init_error_fails_the_event_that_started_the_environment(tmp_path: Path) -> None:
    functions = _fleet(tmp_path, handler="broken_function.buffered")
    try:
        with pytest.raises(InvocationError) as raised:
            functions.invoke(_event(BUFFERED_RESOURCE), LocalContext("req-13"))
        assert raised.value.status == 502
        assert functions.failures == 1
        assert functions.environments() == []
        log = (tmp_path / "env-000.log").read_text()
        assert "init_error" in log
        assert "Traceback" not in log
    finally:
        functions.stop()


def test_the_fleet_starts_the_loop_as_the_function_is_configured_in_aws() -> None:
    from stacks.constructs.router_function import RouterFunction  # noqa: PLC0415 (CDK: only this test needs it)

    configured = dict(RouterFunction.runtime_environment())
    configured.pop("AWS_LAMBDA_EXEC_WRAPPER")  # the environment runs runtime_loop.py itself, as the wrapper does
    local = {k: v for k, v in RUNTIME_ENVIRONMENT.items() if k.startswith("SPILLWAY_")}
    assert local == configured
    assert RUNTIME_ENVIRONMENT["_HANDLER"] == "handler.lambda_handler"

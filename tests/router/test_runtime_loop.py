"""The router's runtime loop (lambdas/router/runtime_loop.py) in its own process, against the Runtime API on loopback
that the fleet world serves too (local/localrun/runtime_api.py), which checks the documented framing, headers and
trailers."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
import runtime_loop
from botocore.config import Config

from local.emulator import Emulator, Fault
from local.localrun.runtime_api import Answer, RuntimeApiStandIn
from spillway import sse
from tests.router.conftest import APP, ENV, PROFILE, _specs, api_event, converse_body, emulator_environment
from tests.router.runtime_fixture.fake_function import SECRET

ROUTER = Path(runtime_loop.__file__).resolve().parent
FIXTURE = Path(__file__).resolve().parent / "runtime_fixture"
STREAM_RESOURCE = "/v1/features/{feature}/converse-stream"
ROUTES = f"POST {STREAM_RESOURCE}"
TRACE = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
PRELUDE_WINDOW = 16 * 1024  # API Gateway: the metadata and delimiter must come within the first 16 KB


def _event(resource: str, method: str = "POST", **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "path": resource.replace("{feature}", "f"), "httpMethod": method, **extra}


def _start(stand_in: RuntimeApiStandIn, handler: str, **env: str) -> subprocess.Popen[bytes]:
    """runtime_loop.py as Lambda would run it: its own process, the environment Lambda sets."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": stand_in.address,
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(FIXTURE),
        "AWS_LAMBDA_FUNCTION_NAME": "spillway-router-us-east-1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-u", str(ROUTER / "runtime_loop.py")], env=environ, stderr=subprocess.PIPE
    )


@pytest.fixture
def fake_runtime() -> Iterator[RuntimeApiStandIn]:
    """The stand-in and a runtime serving tests/router/runtime_fixture/fake_function.py, buffered and streamed."""
    with RuntimeApiStandIn() as stand_in:
        process = _start(
            stand_in,
            "fake_function.buffered",
            SPILLWAY_STREAM_HANDLER="fake_function.stream",
            SPILLWAY_STREAM_ROUTES=ROUTES,
        )
        try:
            yield stand_in
        finally:
            stand_in.shut_down()
            _, err = process.communicate(timeout=30)
            # The documented exit: a 500 from `next` is a container error, after which the runtime exits.
            assert process.returncode == 1, err.decode()
            assert SECRET not in err.decode()
            assert stand_in.violations == []


def _api_gateway_stream(answer: Answer) -> tuple[dict[str, Any], bytes]:
    """What API Gateway's streaming Lambda proxy integration reads: the runtime's streaming headers, then a JSON
    prelude (statusCode, headers) and eight NUL bytes within the first 16 KB, then the body."""
    assert answer.kind == "response"
    assert answer.streamed
    headers = answer.headers
    assert headers["lambda-runtime-function-response-mode"] == "streaming"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    declared = {name.strip().lower() for name in headers["trailer"].split(",")}
    assert declared == {"lambda-runtime-function-error-type", "lambda-runtime-function-error-body"}
    assert "content-length" not in headers
    at = answer.body.find(b"\x00" * 8)
    assert at > 0
    assert at + 8 <= PRELUDE_WINDOW
    prelude = json.loads(answer.body[:at])
    assert isinstance(prelude["statusCode"], int)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in prelude["headers"].items())
    return prelude, answer.body[at + 8 :]


def _events(body: bytes) -> list[tuple[str, str]]:
    blocks = [b for b in body.decode().split("\n\n") if b]
    return [(b.split("\n")[0].removeprefix("event: "), b.split("\n")[1].removeprefix("data: ")) for b in blocks]


def test_a_buffered_route_is_answered_whole_with_the_invocations_context(fake_runtime: RuntimeApiStandIn) -> None:
    rid = fake_runtime.invoke(_event("/v1/features/{feature}/converse"), trace_id=TRACE, timeout_s=60)
    answer = fake_runtime.answer(rid)
    assert answer.kind == "response"
    assert not answer.streamed
    assert "lambda-runtime-function-response-mode" not in answer.headers
    result = json.loads(answer.body)
    assert result["statusCode"] == 200
    seen = json.loads(result["body"])
    assert seen["request_id"] == rid
    assert seen["function_arn"].endswith(":function:spillway-router-us-east-1")
    assert 0 < seen["remaining_ms"] <= 60_000
    assert seen["trace"] == TRACE  # _X_AMZN_TRACE_ID, from Lambda-Runtime-Trace-Id
    assert (seen["function_name"], seen["memory_mb"]) == ("spillway-router-us-east-1", 1024)
    # The next invocation has no trace header: the last one's must not linger.
    again = json.loads(json.loads(fake_runtime.answer(fake_runtime.invoke(_event("/v1/health", "GET"))).body)["body"])
    assert again["trace"] is None


def test_the_streaming_route_streams_chunk_by_chunk_in_api_gateways_format(
    fake_runtime: RuntimeApiStandIn, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"

    def open_gate(_: str, chunk: bytes) -> None:
        if chunk.startswith(b"event: seen"):
            gate.touch()  # the handler's next chunk waits for this: a buffering runtime would never send it

    fake_runtime.on_chunk = open_gate
    rid = fake_runtime.invoke(_event(STREAM_RESOURCE, do="gate", gate=str(gate)))
    answer = fake_runtime.answer(rid)
    prelude, body = _api_gateway_stream(answer)
    assert prelude["statusCode"] == 200
    assert [name for name, _ in _events(body)] == ["seen", "gate", "end"]
    assert ("gate", "opened") in _events(body)
    assert len(answer.chunks) == 4  # one HTTP chunk per chunk the handler yielded
    assert answer.trailers == {}  # a clean end: no error trailers
    assert json.loads(_events(body)[0][1])["request_id"] == rid


def test_the_same_path_on_another_method_or_resource_is_not_streamed(fake_runtime: RuntimeApiStandIn) -> None:
    """The mode follows the integration, which API Gateway attaches to a method of a resource template."""
    for event in (_event(STREAM_RESOURCE, "GET"), _event("/v1/features/{feature}/converse")):
        answer = fake_runtime.answer(fake_runtime.invoke(event))
        assert not answer.streamed
        assert json.loads(answer.body)["statusCode"] == 200


def test_an_empty_chunk_does_not_end_the_stream(fake_runtime: RuntimeApiStandIn) -> None:
    _, body = _api_gateway_stream(fake_runtime.answer(fake_runtime.invoke(_event(STREAM_RESOURCE, do="empty_chunk"))))
    assert [name for name, _ in _events(body)] == ["seen", "end"]


def test_an_error_mid_stream_ends_with_the_error_trailers(fake_runtime: RuntimeApiStandIn) -> None:
    answer = fake_runtime.answer(fake_runtime.invoke(_event(STREAM_RESOURCE, do="raise_mid_stream")))
    prelude, body = _api_gateway_stream(answer)
    assert prelude["statusCode"] == 200
    assert [name for name, _ in _events(body)] == ["seen"]  # what was sent stays sent
    assert answer.trailers["lambda-runtime-function-error-type"] == "Runtime.Unhandled"
    report = json.loads(base64.b64decode(answer.trailers["lambda-runtime-function-error-body"], validate=True))
    assert report["errorType"] == "RuntimeError"
    assert set(report) == {"errorMessage", "errorType", "stackTrace"}
    assert SECRET not in json.dumps(report)  # the exception's text may quote the caller
    # The environment serves on.
    assert not fake_runtime.answer(fake_runtime.invoke(_event("/v1/health", "GET"))).streamed


def test_a_stream_that_fails_before_its_first_chunk_is_an_invocation_error(fake_runtime: RuntimeApiStandIn) -> None:
    answer = fake_runtime.answer(fake_runtime.invoke(_event(STREAM_RESOURCE, do="raise_before")))
    assert answer.kind == "error"
    assert answer.headers["lambda-runtime-function-error-type"] == "Runtime.Unhandled"
    report = json.loads(answer.body)
    assert report["errorType"] == "RuntimeError"
    assert SECRET not in answer.body.decode()


def test_a_stream_handler_that_raises_when_called_is_an_invocation_error() -> None:
    with RuntimeApiStandIn() as stand_in:
        process = _start(
            stand_in,
            "fake_function.buffered",
            SPILLWAY_STREAM_HANDLER="fake_function.stream_that_is_no_generator",
            SPILLWAY_STREAM_ROUTES=ROUTES,
        )
        answer = stand_in.answer(stand_in.invoke(_event(STREAM_RESOURCE)))
        served = stand_in.answer(stand_in.invoke(_event("/v1/health", "GET")))  # and the environment serves on
        stand_in.shut_down()
        _, err = process.communicate(timeout=30)
    assert answer.kind == "error"
    assert json.loads(answer.body)["errorType"] == "RuntimeError"
    assert served.kind == "response"
    assert SECRET not in answer.body.decode() + err.decode()


def test_a_buffered_handler_that_raises_is_an_invocation_error(fake_runtime: RuntimeApiStandIn) -> None:
    answer = fake_runtime.answer(fake_runtime.invoke(_event("/v1/features/{feature}/converse", do="raise")))
    assert answer.kind == "error"
    assert answer.headers["lambda-runtime-function-error-type"] == "Runtime.Unhandled"
    assert json.loads(answer.body)["errorType"] == "RuntimeError"
    assert SECRET not in answer.body.decode()


def _init_failure(handler: str, **env: str) -> tuple[Answer, int, list[Answer]]:
    with RuntimeApiStandIn() as stand_in:
        rid = stand_in.invoke(_event("/v1/health", "GET"))
        process = _start(stand_in, handler, **env)
        report = stand_in.wait_init_error()
        process.communicate(timeout=30)
        assert stand_in.violations == []
        with pytest.raises(TimeoutError):
            stand_in.answer(rid, timeout_s=0.1)  # an environment whose init failed takes no invocation
        return report, process.returncode, stand_in.init_errors


def test_a_module_that_fails_its_init_is_reported_as_an_init_error_and_the_runtime_exits() -> None:
    report, status, everything = _init_failure("broken_function.handler")
    assert status == 1
    assert len(everything) == 1
    assert report.headers["lambda-runtime-function-error-type"] == "Runtime.InitError"
    doc = json.loads(report.body)
    assert doc["errorType"] == "ValueError"
    assert "SPILLWAY_DEADLINE_MARGIN_MS" in doc["errorMessage"]  # a bad setting names itself


@pytest.mark.parametrize(
    ("handler", "env"),
    [("fake_function.missing", {}), ("fake_function.buffered", {"SPILLWAY_STREAM_ROUTES": ROUTES})],
    ids=["no-such-buffered-handler", "streams-without-a-stream-handler"],
)
def test_a_handler_that_does_not_exist_is_an_init_error(handler: str, env: Mapping[str, str]) -> None:
    report, status, _ = _init_failure(handler, **env)
    assert status == 1
    assert report.headers["lambda-runtime-function-error-type"] == "Runtime.NoSuchHandler"


def _modules_after(code: str) -> set[str]:
    script = f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROUTER)
    return set(json.loads(done.stdout))


def test_the_loop_loads_no_module_the_routers_dependencies_do_not_load_anyway() -> None:
    """Its cold-start cost is its own few lines: http.client and the rest come with botocore and Powertools, which
    the handler imports in any case (standard library only; a new import here must be one of theirs)."""
    dependencies = _modules_after("import boto3, aws_lambda_powertools.event_handler")
    assert _modules_after("import runtime_loop") - dependencies == {"runtime_loop"}


def _raw_stream(stand_in: RuntimeApiStandIn, headers: Mapping[str, str], body: bytes) -> int:
    """Take an invocation and answer it with hand-written bytes (what a faulty runtime might send)."""
    host, port = stand_in.address.split(":")
    connection = http.client.HTTPConnection(host, int(port))
    stand_in.invoke(_event(STREAM_RESOURCE))
    connection.request("GET", "/2018-06-01/runtime/invocation/next")
    response = connection.getresponse()
    response.read()
    rid = response.headers["Lambda-Runtime-Aws-Request-Id"]
    connection.putrequest("POST", f"/2018-06-01/runtime/invocation/{rid}/response")
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(body)
    status = connection.getresponse().status
    connection.close()
    return status


STREAMING_HEADERS = {
    "Lambda-Runtime-Function-Response-Mode": "streaming",
    "Transfer-Encoding": "chunked",
    "Trailer": "Lambda-Runtime-Function-Error-Type",
}


@pytest.mark.parametrize(
    ("headers", "body", "violation"),
    [
        (STREAMING_HEADERS, b"5\r\nhello\r\n0\r\nLambda-Runtime-Function-Error-Body: eA==\r\n\r\n", "not declared"),
        (STREAMING_HEADERS, b"zz\r\nhello\r\n0\r\n\r\n", "not hexadecimal"),
        (STREAMING_HEADERS, b"3\r\nhello\r\n0\r\n\r\n", "without its CRLF"),
        ({"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n", "without Lambda-Runtime-Function-Response-Mode"),
    ],
    ids=["undeclared-trailer", "bad-chunk-size", "short-chunk", "no-response-mode"],
)
def test_the_stand_in_refuses_what_lambda_could_not_read(
    headers: Mapping[str, str], body: bytes, violation: str
) -> None:
    """The stand-in's checks can fail: each framing fault is refused and recorded."""
    with RuntimeApiStandIn() as stand_in:
        assert _raw_stream(stand_in, headers, body) == 400
        assert len(stand_in.violations) == 1
        assert violation in stand_in.violations[0]


def test_routes_render_and_parse_back() -> None:
    routes = {("POST", STREAM_RESOURCE), ("GET", "/v1/health")}
    assert runtime_loop.parse_routes(runtime_loop.render_routes(sorted(routes))) == routes
    assert runtime_loop.parse_routes(None) == frozenset()
    with pytest.raises(ValueError, match="METHOD /resource"):
        runtime_loop.parse_routes("POST converse-stream")


def test_the_prelude_the_router_writes_is_api_gateways() -> None:
    """spillway/sse.py's prelude is what _api_gateway_stream reads (the format is written once, in sse.py)."""
    chunk = sse.prelude(200, {"Content-Type": sse.EVENT_STREAM})
    answer = Answer("response", {
        "lambda-runtime-function-response-mode": "streaming", "transfer-encoding": "chunked",
        "content-type": runtime_loop.HTTP_INTEGRATION_RESPONSE,
        "trailer": f"{runtime_loop.ERROR_TYPE_HEADER}, {runtime_loop.ERROR_BODY_TRAILER}",
    }, chunk + b"event: x\ndata: {}\n\n", streamed=True)  # fmt: skip
    prelude, body = _api_gateway_stream(answer)
    assert prelude == {"statusCode": 200, "headers": {"Content-Type": "text/event-stream"}}
    assert body == b"event: x\ndata: {}\n\n"


# -- the router itself, started by its exec wrapper as Lambda starts it ------------------------------------------


def _router_event(path: str, text: str, request_id: str) -> dict[str, Any]:
    event = api_event("POST", path, body=converse_body(text), request_id=request_id)
    resource = STREAM_RESOURCE if path.endswith("/converse-stream") else "/v1/features/{feature}/converse"
    event["resource"] = event["requestContext"]["resourcePath"] = resource
    return event


def _bedrock(emu: Emulator, region: str) -> Any:
    return boto3.client(
        "bedrock-runtime", region_name=region, endpoint_url=emu.endpoint_url(region),
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )  # fmt: skip


def _delta_text(body: bytes) -> str:
    return "".join(
        json.loads(data)["delta"].get("text", "") for name, data in _events(body) if name == "contentBlockDelta"
    )


def _router_process(stand_in: RuntimeApiStandIn, emu: Emulator, out: Any, routes: str) -> subprocess.Popen[bytes]:
    """The real router, started as Lambda starts it: the wrapper given the runtime's own command line (whose first
    word is its interpreter), against the emulator, streaming ``routes``; its output to ``out``."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "spillway-router-us-east-1",
        "AWS_LAMBDA_RUNTIME_API": stand_in.address,
        "LAMBDA_TASK_ROOT": str(ROUTER),
        "_HANDLER": "handler.lambda_handler",
        "SPILLWAY_STREAM_HANDLER": "handler.lambda_stream_handler",
        "SPILLWAY_STREAM_ROUTES": routes,
        **emulator_environment(emu),
    }
    return subprocess.Popen(
        [str(ROUTER / runtime_loop.WRAPPER), sys.executable, "/var/runtime/bootstrap.py"],
        env=environ, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_the_router_answers_both_ways_through_its_wrapper_and_loop(table_doc: dict[str, Any], tmp_path: Path) -> None:
    """runtime-wrapper, given the managed runtime's command line, runs the loop with the real handler (built and
    warmed at init against the emulator): Converse answered whole, ConverseStream streamed as API Gateway reads it,
    and a model error mid-stream ended by the router's explicit incomplete event (its designed answer, so no error
    trailers). Nothing of the caller's text reaches the function's output."""
    words = "the caller's private words"
    log = tmp_path / "function.log"
    with Emulator(_specs(table_doc)) as emu, RuntimeApiStandIn() as stand_in, log.open("wb") as out:
        emu.set_configuration(APP, ENV, PROFILE, table_doc)
        process = _router_process(stand_in, emu, out, ROUTES)
        try:
            whole = stand_in.answer(
                stand_in.invoke(_router_event("/v1/features/summarize-thread/converse", words, "r-1")), timeout_s=90
            )
            streamed = stand_in.answer(
                stand_in.invoke(_router_event("/v1/features/summarize-thread/converse-stream", words, "r-2"))
            )
            # What Bedrock's ConverseStream sends the target that served, for the same request (boto3, directly).
            target = table_doc["targets"][_api_gateway_stream(streamed)[0]["headers"]["x-spillway-target"]]
            direct = _bedrock(emu, target["region"]).converse_stream(
                modelId=target["backend"]["model_id"], **converse_body(words)
            )
            expected = [next(iter(e.items())) for e in direct["stream"]]
            emu.set_fault("*", Fault.stream_error(after_tokens=1))
            broken = stand_in.answer(
                stand_in.invoke(_router_event("/v1/features/summarize-thread/converse-stream", words, "r-3"))
            )
        finally:
            stand_in.shut_down()
            process.communicate(timeout=30)
    assert stand_in.violations == []
    assert not whole.streamed
    result = json.loads(whole.body)
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["output"]["message"]["content"] == [{"text": words}]

    prelude, body = _api_gateway_stream(streamed)
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["Content-Type"] == sse.EVENT_STREAM
    assert prelude["headers"]["x-spillway-target"]
    *relayed, (last, trailer) = _events(body)
    assert [name for name, _ in relayed] == [name for name, _ in expected]
    deltas = [json.loads(data) for name, data in relayed if name == "contentBlockDelta"]
    assert deltas == [members for name, members in expected if name == "contentBlockDelta"]
    assert _delta_text(body) == words
    assert last == sse.TRAILER_EVENT
    assert json.loads(trailer)["complete"] is True
    assert streamed.trailers == {}

    prelude, body = _api_gateway_stream(broken)
    assert prelude["statusCode"] == 200
    last = json.loads(_events(body)[-1][1])
    assert last["complete"] is False
    assert broken.trailers == {}

    output = log.read_text()
    assert '"routed"' in output  # the router's log lines did go there
    assert words not in output


def test_the_openai_door_streams_through_the_loop_and_answers_whole_from_the_same_entry(
    table_doc: dict[str, Any], tmp_path: Path
) -> None:
    """Chat completions is a streamed method (API Gateway integrates the method, not the body's `stream`): through
    the wrapper and loop, `stream: true` is chat.completion.chunk lines ending with [DONE], and `stream: false` the
    whole chat.completion after the same prelude."""
    chat = "/v1/chat/completions"

    def chat_event(request_id: str, **extra: Any) -> dict[str, Any]:
        body = {"model": "summarize-thread", "messages": [{"role": "user", "content": "the caller's words"}], **extra}
        event = api_event("POST", chat, body=body, request_id=request_id)
        event["resource"] = event["requestContext"]["resourcePath"] = chat
        return event

    log = tmp_path / "function.log"
    with Emulator(_specs(table_doc)) as emu, RuntimeApiStandIn() as stand_in, log.open("wb") as out:
        emu.set_configuration(APP, ENV, PROFILE, table_doc)
        routes = runtime_loop.render_routes([("POST", STREAM_RESOURCE), ("POST", chat)])
        process = _router_process(stand_in, emu, out, routes)
        try:
            streamed = stand_in.answer(stand_in.invoke(chat_event("c-1", stream=True)), timeout_s=90)
            whole = stand_in.answer(stand_in.invoke(chat_event("c-2")))
        finally:
            stand_in.shut_down()
            process.communicate(timeout=30)
    assert stand_in.violations == []
    prelude, body = _api_gateway_stream(streamed)
    assert (prelude["statusCode"], prelude["headers"]["Content-Type"]) == (200, sse.EVENT_STREAM)
    lines = [block.removeprefix("data: ") for block in body.decode().split("\n\n") if block]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "the caller's words"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    prelude, body = _api_gateway_stream(whole)
    assert (prelude["statusCode"], prelude["headers"]["Content-Type"]) == (200, "application/json")
    completion = json.loads(body)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "the caller's words"
    assert "the caller's words" not in log.read_text()

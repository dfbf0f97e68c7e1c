"""Zero knowledge: canary strings sent through every path never reach a log line, metric, trace or error.

The real backends run (Bedrock and SageMaker, with clients whose services answer or fail with messages that quote
the canary, as real services do). Everything the process emits is captured: stdout and stderr (Powertools Logger
and EMF metrics), every Python log record at DEBUG, and every trace document the router sends to the X-Ray daemon
(a UDP socket on loopback). The canary may appear in one place only: the body of a successful answer, which is the
caller's own completion.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from spillway import sse
from spillway.backends import ClientPool
from spillway.backends.bedrock import BedrockBackend
from spillway.backends.openai_compat import OpenAICompatBackend
from spillway.backends.sagemaker import SageMakerBackend
from spillway.continuation import SEAM_EVENT
from spillway.limits import MAX_REQUEST_BYTES
from tests.router.conftest import BEDROCK_META, Harness, LambdaContext, XRayDaemon, api_event

CANARY = "ZKCANARY-51e9b7"


def _canary(where: str) -> str:
    return f"{CANARY}-{where}"


class FakeRuntime:
    """Stands in for a bedrock-runtime / sagemaker-runtime client: `behave(params)` answers or raises."""

    meta = BEDROCK_META

    def __init__(self, behave: Callable[[dict[str, Any]], Any]) -> None:
        self.behave = behave

    def converse(self, **params: Any) -> Any:
        return self.behave(params)

    def invoke_endpoint(self, **params: Any) -> Any:
        answer = self.behave(params)
        raw = json.dumps(answer).encode()

        class Body:
            def read(self) -> bytes:
                return raw

        return {"Body": Body()}

    def converse_stream(self, **params: Any) -> Any:
        """The behaviour's Converse answer as ConverseStream events (a MidStream fails after its first events)."""
        answer = self.behave(params)
        if isinstance(answer, MidStream):
            return {"stream": FakeEventStream(answer.events(), answer.error)}
        text = answer["output"]["message"]["content"][0]["text"]
        return {"stream": FakeEventStream(MidStream(text, None).events() + _converse_tail(), None)}

    def invoke_endpoint_with_response_stream(self, **params: Any) -> Any:
        answer = self.behave(params)
        if isinstance(answer, MidStream):
            return {"Body": FakeEventStream(answer.parts(), answer.error)}
        text = answer["choices"][0]["message"]["content"]
        parts = [
            *MidStream(text, None).parts(),
            *_sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ]
        return {"Body": FakeEventStream([*parts, {"PayloadPart": {"Bytes": b"data: [DONE]\n\n"}}], None)}


class MidStream:
    """A stream that sends `text` as its first token, then fails with `error` (the service's message quoting it)."""

    def __init__(self, text: str, error: BaseException | None) -> None:
        self.text, self.error = text, error

    def events(self) -> list[dict[str, Any]]:
        delta = {"contentBlockIndex": 0, "delta": {"text": self.text}}
        return [{"messageStart": {"role": "assistant"}}, {"contentBlockDelta": delta}]

    def parts(self) -> list[dict[str, Any]]:
        return _sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": self.text}}]})


def _sse(chunk: Any) -> list[dict[str, Any]]:
    return [{"PayloadPart": {"Bytes": b"data: " + json.dumps(chunk).encode() + b"\n\n"}}]


def _converse_tail() -> list[dict[str, Any]]:
    usage = {"inputTokens": 5, "outputTokens": 5, "totalTokens": 10}
    return [
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": usage, "metrics": {"latencyMs": 3}}},
    ]


class FakeEventStream:
    """What botocore's EventStream offers the backends: iteration (raising where the service failed) and close."""

    def __init__(self, items: list[dict[str, Any]], error: BaseException | None) -> None:
        self.items, self.error = items, error

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self.items
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        pass


def _client_error(code: str, status: int, message: str, operation: str = "Converse") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {"x-debug": message}},
            "OriginalMessage": message,
        },
        operation,
    )


def _echo(params: dict[str, Any]) -> Any:
    """A healthy model that repeats the prompt (the worst case for leaks)."""
    text = json.dumps(params.get("messages") or params.get("Body") or "")
    if "modelId" in params:
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": "echo " + text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 5, "outputTokens": 5, "totalTokens": 10},
            "metrics": {"latencyMs": 3},
        }
    return {"choices": [{"message": {"role": "assistant", "content": "echo " + text}, "finish_reason": "stop"}]}


def _quoting(code: str, status: int) -> Callable[[dict[str, Any]], Any]:
    def fail(params: dict[str, Any]) -> Any:
        raise _client_error(code, status, f"rejected input {json.dumps(params.get('messages', ''))}")

    return fail


def _overflowing(params: dict[str, Any]) -> Any:
    raise _client_error("ValidationException", 400, f"Input is too long for requested model: {params.get('messages')}")


def _raise(exc: BaseException) -> Callable[[dict[str, Any]], Any]:
    def fail(params: dict[str, Any]) -> Any:
        raise exc

    return fail


@pytest.fixture(params=[True, False], ids=["buffered-via-stream", "buffered-apis"])
def zk(
    table_doc: dict[str, Any], logs: io.StringIO, request: pytest.FixtureRequest
) -> Iterator[tuple[Harness, list[Any]]]:
    """Every test twice: buffered requests served through the streaming APIs (the default) and through the buffered
    ones (a feature's buffered_via_stream: false)."""
    doc = copy.deepcopy(table_doc)  # the session's table stays as rendered
    for feature in doc["features"].values():
        feature["buffered_via_stream"] = request.param
    h = Harness(doc)
    h.logs = logs  # type: ignore[attr-defined]
    behaviour: list[Any] = [_echo]

    def current(params: dict[str, Any]) -> Any:
        return behaviour[0](params)  # looked up per call: a test swaps the behaviour

    pool = ClientPool(lambda service, region, config: FakeRuntime(current))
    h.router.backends.update(
        {"bedrock": BedrockBackend(pool), "sagemaker": SageMakerBackend(pool), "openai": OpenAICompatBackend(pool)}
    )
    yield h, behaviour
    h.handler.set_router(None)


def _request(where: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": [{"text": _canary(f"{where}-user")}]},
            {"role": "assistant", "content": [{"text": _canary(f"{where}-assistant")}]},
            {"role": "user", "content": [{"text": _canary(f"{where}-again")}]},
        ],
        "system": [{"text": _canary(f"{where}-system")}],
        "inferenceConfig": {"maxTokens": 50, "stopSequences": [_canary(f"{where}-stop")]},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "lookup",
                        "description": _canary(f"{where}-tool"),
                        "inputSchema": {"json": {"type": "object", "description": _canary(f"{where}-schema")}},
                    }
                }
            ]
        },
    }


CASES: list[tuple[str, str, Any, int]] = [
    # (name, feature, backend behaviour or a request mutation, expected status)
    ("served", "summarize-thread", _echo, 200),
    ("served_sagemaker", "redact-escrow", _echo, 200),
    ("model_client_error", "summarize-thread", _quoting("ValidationException", 400), 400),
    # Every Bedrock model overflows; the hierarchy's last model (Gemini, another cloud) gets no token from this fake
    # pool (ours), so the answer is 503 and, as everywhere here, quotes nothing.
    ("context_overflow", "summarize-thread", _overflowing, 503),
    ("all_throttled", "summarize-thread", _quoting("ThrottlingException", 429), 503),
    ("all_failing", "nightly-recap", _quoting("InternalServerException", 500), 503),
    ("access_denied", "summarize-thread", _quoting("AccessDeniedException", 403), 503),
    ("sagemaker_model_error", "redact-escrow", _quoting("ModelError", 424), 503),
    ("timeouts", "summarize-thread", _raise(ReadTimeoutError(endpoint_url=f"https://{CANARY}.example")), 503),
    ("backend_bug", "summarize-thread", _raise(RuntimeError(CANARY)), 503),
    ("malformed_answer", "summarize-thread", lambda params: {"output": json.dumps(params)}, 503),
]


@pytest.mark.parametrize(("name", "feature", "behave", "status"), CASES, ids=[c[0] for c in CASES])
def test_routed_paths_leak_nothing(
    *,
    zk: tuple[Harness, list[Any]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    xray: XRayDaemon,
    name: str,
    feature: str,
    behave: Any,
    status: int,
) -> None:
    h, behaviour = zk
    behaviour[0] = behave
    caplog.set_level(logging.DEBUG)
    responses = [h.converse(feature, body=_request(f"{name}{i}"), request_id=f"zk-{name}-{i}") for i in range(4)]
    responses.append(h.call(api_event("GET", "/v1/health", content_type=None)))
    assert responses[0]["statusCode"] == status
    out, err = capsys.readouterr()
    out += h.logs.getvalue()  # type: ignore[attr-defined]
    traces = b"".join(xray.received()).decode()
    emitted = out + err + caplog.text + repr([r.__dict__ for r in caplog.records]) + traces
    assert '"_aws"' in out, "metrics were captured"
    assert '"routed"' in out, "log lines were captured"
    spans = xray.documents()
    assert [doc["annotations"].get("feature") for doc in spans] == [feature] * 4 + [None], "spans were captured"
    assert CANARY not in emitted
    for response in responses:
        headers = json.dumps(response.get("headers")) + json.dumps(response.get("multiValueHeaders"))
        assert CANARY not in headers
        if response["statusCode"] != 200 or "/v1/health" in json.dumps(response.get("multiValueHeaders")):
            assert CANARY not in response["body"]
    if status == 200:
        assert CANARY in responses[0]["body"], "the canary did travel to the model and back"


REJECTED: list[tuple[str, dict[str, Any], int]] = [
    ("bad_shape", {"body": {"messages": [{"role": CANARY, "content": [{"text": CANARY}]}]}}, 400),
    ("unknown_key", {"body": {CANARY: CANARY, "messages": [{"role": "user", "content": [{"text": "x"}]}]}}, 400),
    ("bad_block", {"body": {"messages": [{"role": "user", "content": [{CANARY: {"text": CANARY}}]}]}}, 400),
    ("bad_json", {"raw_body": '{"messages": "' + CANARY}, 400),
    (
        "too_big",
        {
            "body": {
                "messages": [{"role": "user", "content": [{"text": CANARY * (MAX_REQUEST_BYTES // len(CANARY) + 1)}]}]
            }
        },
        413,
    ),
    ("wrong_type", {"raw_body": CANARY, "content_type": "text/plain"}, 415),
    ("unknown_feature", {"feature": CANARY, "body": {"messages": [{"role": "user", "content": [{"text": "x"}]}]}}, 404),
    ("wrong_path", {"path": f"/v1/{CANARY}", "body": {"x": CANARY}}, 404),
]


@pytest.mark.parametrize(("name", "spec", "status"), REJECTED, ids=[r[0] for r in REJECTED])
def test_rejected_requests_leak_nothing(
    *,
    zk: tuple[Harness, list[Any]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    xray: XRayDaemon,
    name: str,
    spec: dict[str, Any],
    status: int,
) -> None:
    h, _ = zk
    spec = dict(spec)
    caplog.set_level(logging.DEBUG)
    feature = spec.pop("feature", "summarize-thread")
    path = spec.pop("path", f"/v1/features/{feature}/converse")
    response = h.call(api_event("POST", path, **spec))
    assert response["statusCode"] == status
    out, err = capsys.readouterr()
    out += h.logs.getvalue()  # type: ignore[attr-defined]
    assert '"_aws"' in out
    assert [doc["http"]["response"]["status"] for doc in xray.documents()] == [status], "the span was captured"
    assert CANARY not in out + err + caplog.text + b"".join(xray.received()).decode()
    assert CANARY not in response["body"]
    assert CANARY not in json.dumps(response.get("multiValueHeaders"))
    assert h.bedrock.calls == []


def test_unexpected_router_failure_leaks_nothing(
    zk: tuple[Harness, list[Any]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    xray: XRayDaemon,
) -> None:
    h, _ = zk
    caplog.set_level(logging.DEBUG)

    def broken(*args: Any, **kw: Any) -> Any:
        raise ValueError(f"could not route {args!r} {CANARY}")

    monkeypatch.setattr(h.router.shadower, "mirror", broken)  # its arguments hold the prompt
    response = h.converse(body=_request("bug"))
    assert response["statusCode"] == 502
    out, err = capsys.readouterr()
    out += h.logs.getvalue()  # type: ignore[attr-defined]
    assert '"exception_type":"ValueError"' in out
    assert [doc.get("fault") for doc in xray.documents()] == [True], "the span was captured"
    assert CANARY not in out + err + caplog.text + response["body"] + b"".join(xray.received()).decode()


def test_breaker_and_store_telemetry_leak_nothing(
    zk: tuple[Harness, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    h, behaviour = zk
    behaviour[0] = _quoting("ServiceUnavailableException", 503)
    for i in range(5):
        h.converse(body=_request(f"breaker{i}"), request_id=f"b{i}")
    out, _ = capsys.readouterr()
    out += h.logs.getvalue()  # type: ignore[attr-defined]
    assert "BreakerOpens" in out
    assert '"breaker"' in out
    assert CANARY not in out


def _stream_failing(code: str) -> Callable[[dict[str, Any]], Any]:
    """The first token echoes the prompt, then a stream exception whose message quotes it again."""

    def fail(params: dict[str, Any]) -> Any:
        text = json.dumps(params.get("messages") or params.get("Body") or "")
        error = _client_error(code, 200, f"stream failed on {text}", "ConverseStream")
        return MidStream("echo " + text, error)

    return fail


def _streamed_without_leaks(
    h: Harness,
    event: dict[str, Any],
    status: int,
    *,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    xray: XRayDaemon,
) -> bytes:
    """The streaming entry's body after its prelude, once the prelude, logs, metrics and traces are proven free of
    the canary (and the status is `status`)."""
    caplog.set_level(logging.DEBUG)
    prelude, rest = sse.split_prelude(b"".join(h.handler.lambda_stream_handler(event, LambdaContext()))) or ({}, b"")
    assert prelude["statusCode"] == status
    assert CANARY not in json.dumps(prelude)
    out, err = capsys.readouterr()
    out += h.logs.getvalue()  # type: ignore[attr-defined]
    emitted = out + err + caplog.text + repr([r.__dict__ for r in caplog.records]) + b"".join(xray.received()).decode()
    assert '"routed"' in out, "log lines were captured"
    assert CANARY not in emitted
    return rest


STREAM_CASES: list[tuple[str, str, Any, int, bool]] = [
    # (name, feature, backend behaviour, status, complete)
    ("stream_served", "summarize-thread", _echo, 200, True),
    ("stream_served_sagemaker", "redact-escrow", _echo, 200, True),
    ("stream_error_mid_stream", "summarize-thread", _stream_failing("modelStreamErrorException"), 200, False),
    ("stream_error_sagemaker", "redact-escrow", _stream_failing("ModelStreamError"), 200, False),
    ("stream_refused_before", "summarize-thread", _quoting("ValidationException", 400), 400, False),
    ("stream_all_failing", "nightly-recap", _quoting("InternalServerException", 500), 503, False),
]


@pytest.mark.parametrize(
    ("name", "feature", "behave", "status", "complete"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES]
)
def test_streamed_paths_leak_nothing(
    *,
    zk: tuple[Harness, list[Any]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    xray: XRayDaemon,
    name: str,
    feature: str,
    behave: Any,
    status: int,
    complete: bool,
) -> None:
    """The canary may travel in the relayed events only: never in the headers, the last event, an error answer, a
    log line, a metric or a trace, whether the stream completes, fails mid-stream or never starts."""
    h, behaviour = zk
    behaviour[0] = behave
    event = api_event("POST", f"/v1/features/{feature}/converse-stream", body=_request(name))
    rest = _streamed_without_leaks(h, event, status, capsys=capsys, caplog=caplog, xray=xray)
    if status != 200:
        assert CANARY not in rest.decode()
        return
    blocks = rest.decode().split("\n\n")
    trailer = [b for b in blocks if b.startswith("event: spillway")]
    assert len(trailer) == 1
    assert CANARY not in trailer[0]
    assert json.loads(trailer[0].split("data: ", 1)[1])["complete"] is complete
    assert CANARY in rest.decode(), "the canary did travel to the model and back"


def test_a_router_failure_mid_stream_ends_incomplete_and_leaks_nothing(
    zk: tuple[Harness, list[Any]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug after the prelude cannot change the status: the stream still ends with an explicit incomplete event,
    and the exception's text (which here quotes the canary) reaches nothing."""
    h, _ = zk
    render = sse.event

    def broken(name: str, data: Any) -> bytes:
        if name == "contentBlockDelta":
            raise RuntimeError(CANARY)
        return render(name, data)

    monkeypatch.setattr(sse, "event", broken)
    event = api_event("POST", "/v1/features/summarize-thread/converse-stream", body=_request("bug"))
    prelude, rest = sse.split_prelude(b"".join(h.handler.lambda_stream_handler(event, LambdaContext()))) or ({}, b"")
    assert prelude["statusCode"] == 200
    out, err = capsys.readouterr()
    assert CANARY not in out + err + h.logs.getvalue() + rest.decode()  # type: ignore[attr-defined]
    assert (
        rest.decode()
        .rstrip()
        .endswith('"complete":false,"error":{"code":"RouterError","message":"' + sse.INCOMPLETE_MESSAGE + '"}}')
    )


def test_a_continued_stream_leaks_nothing(
    zk: tuple[Harness, list[Any]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    xray: XRayDaemon,
) -> None:
    """A stream cut after its first token and continued with its partial answer as the prefix (which quotes the
    canary): the canary travels to the continuing model and back to the caller only; the seam event, the last event,
    the logs, metrics and traces carry none of it."""
    h, behaviour = zk
    h.doc["features"]["summarize-thread"]["continue_with_prefix"] = True  # the harness serves this document
    failing = _stream_failing("modelStreamErrorException")

    def cut_then_continue(params: dict[str, Any]) -> Any:
        prefilled = params["messages"][-1]["role"] == "assistant" and params["messages"][-2]["role"] == "user"
        return _echo(params) if prefilled and len(params["messages"]) == 4 else failing(params)

    behaviour[0] = cut_then_continue
    caplog.set_level(logging.DEBUG)
    event = api_event("POST", "/v1/features/summarize-thread/converse-stream", body=_request("continued"))
    prelude, rest = sse.split_prelude(b"".join(h.handler.lambda_stream_handler(event, LambdaContext()))) or ({}, b"")
    assert prelude["statusCode"] == 200
    blocks = rest.decode().split("\n\n")
    seams = [b for b in blocks if b.startswith(f"event: {SEAM_EVENT}\n")]
    trailer = [b for b in blocks if b.startswith(f"event: {sse.TRAILER_EVENT}\n")]
    assert len(seams) == 1
    assert len(trailer) == 1
    assert json.loads(trailer[0].split("data: ", 1)[1])["complete"] is True
    assert CANARY not in seams[0] + trailer[0]
    out, err = capsys.readouterr()
    out += h.logs.getvalue()  # type: ignore[attr-defined]
    emitted = out + err + caplog.text + repr([r.__dict__ for r in caplog.records]) + b"".join(xray.received()).decode()
    assert '"routed"' in out, "log lines were captured"
    assert CANARY not in emitted
    assert rest.decode().count(CANARY) >= 2, "the canary went out before the seam and came back after it"


def _chat_request(where: str) -> dict[str, Any]:
    """A streamed chat completions body with the canary in every place a caller puts text."""
    return {
        "model": "summarize-thread",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": _canary(f"{where}-system")},
            {"role": "user", "content": _canary(f"{where}-user")},
            {"role": "assistant", "content": _canary(f"{where}-assistant")},
            {"role": "user", "content": _canary(f"{where}-again")},
        ],
        "stop": [_canary(f"{where}-stop")],
        "metadata": {"note": _canary(f"{where}-metadata")},
    }


CHAT_STREAM_CASES: list[tuple[str, Any, int, bool]] = [
    # (name, backend behaviour, status, complete)
    ("chat_stream_served", _echo, 200, True),
    ("chat_stream_error_mid_stream", _stream_failing("modelStreamErrorException"), 200, False),
    ("chat_stream_refused_before", _quoting("ValidationException", 400), 400, False),
]


@pytest.mark.parametrize(
    ("name", "behave", "status", "complete"), CHAT_STREAM_CASES, ids=[c[0] for c in CHAT_STREAM_CASES]
)
def test_the_openai_doors_stream_leaks_nothing(
    *,
    zk: tuple[Harness, list[Any]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    xray: XRayDaemon,
    name: str,
    behave: Any,
    status: int,
    complete: bool,
) -> None:
    """The OpenAI door's chunks may carry the canary back (the caller's own answer); its headers, its error line,
    an error answer, the logs, metrics and traces never do."""
    h, behaviour = zk
    behaviour[0] = behave
    event = api_event("POST", "/v1/chat/completions", body=_chat_request(name))
    rest = _streamed_without_leaks(h, event, status, capsys=capsys, caplog=caplog, xray=xray)
    if status != 200:
        assert CANARY not in rest.decode()
        return
    lines = [block.removeprefix("data: ") for block in rest.decode().split("\n\n") if block]
    assert (lines[-1] == "[DONE]") is complete
    if not complete:
        assert CANARY not in lines[-1]
        assert json.loads(lines[-1])["error"]["code"] == "ModelStreamErrorException"
    assert CANARY in rest.decode(), "the canary did travel to the model and back"

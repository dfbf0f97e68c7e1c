"""The regional runtime endpoint: Bedrock Converse, SageMaker InvokeEndpoint and OpenAI-compatible chat completions
(buffered, or streamed when the body says ``stream: true``) on one listener."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from local.emulator import eventstream_replies as replies
from local.emulator import openai_compat, wire
from local.emulator.faults import MID_STREAM, ActiveFault, Fault, FaultKind
from local.emulator.judge import judge_reply
from local.emulator.listener import Listener, RequestHandler
from local.emulator.targets import Kind, TargetSpec, TargetState

__all__ = ["RegionEndpoint"]

FaultLookup = Callable[[str, Kind, str], ActiveFault | None]


def _request_id() -> str:
    return str(uuid.uuid4())


_OPERATIONS = {
    ("model", "converse"): (Kind.BEDROCK, False),
    ("model", "converse-stream"): (Kind.BEDROCK, True),
    ("endpoints", "invocations"): (Kind.SAGEMAKER, False),
    ("endpoints", "invocations-response-stream"): (Kind.SAGEMAKER, True),
}


def _route(raw_path: str) -> tuple[Kind, str, bool] | None:
    """(kind, decoded id, streamed) for a runtime path, matched on the raw (still percent-encoded) segments."""
    parts = urlsplit(raw_path).path.split("/")
    # "/model/{modelId}/converse" -> ["", "model", id, "converse"]
    operation = _OPERATIONS.get((parts[1], parts[3])) if len(parts) == 4 and parts[0] == "" else None
    if operation is not None:
        kind, streamed = operation
        return kind, unquote(parts[2]), streamed
    target = openai_compat.target_of(parts)
    return (Kind.OPENAI, target, False) if target is not None else None


def _asks_stream(raw: bytes) -> bool:
    """Whether a chat completions body says ``stream: true`` (a body that is not JSON is refused later, whole)."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("stream") is True


class _Admitted(NamedTuple):
    prompt: wire.Prompt
    style: str
    fault: Fault | None
    started: float
    tokens: tuple[int, int, bool]  # input tokens, output tokens, capped by the request


class RegionEndpoint:
    """All targets of one region behind one loopback listener."""

    def __init__(
        self,
        region: str,
        clock: Callable[[], float],
        find_fault: FaultLookup,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.region = region
        self.clock = clock
        self.find_fault = find_fault
        self.listener = Listener(self.handle, host=host, port=port, name=region)
        self._lock = threading.Lock()
        self.states: dict[tuple[Kind, str], TargetState] = {}
        self._by_wire_id: dict[tuple[Kind, str], TargetState] = {}
        self.unrouted = 0
        self._bearer_checks: dict[tuple[Kind, str], Callable[[str], bool]] = {}

    # Targets ------------------------------------------------------------------------------
    def add(self, spec: TargetSpec) -> TargetState:
        with self._lock:
            ids = (spec.id, *spec.aliases)
            for wire_id in ids:
                if (spec.kind, wire_id) in self._by_wire_id:
                    raise ValueError(f"{self.region}/{spec.kind.value}/{wire_id} is already a target")
            state = TargetState(spec, self.clock)
            self.states[(spec.kind, spec.id)] = state
            for wire_id in ids:
                self._by_wire_id[(spec.kind, wire_id)] = state
            return state

    def update(self, spec: TargetSpec) -> None:
        with self._lock:
            state = self.states[(spec.kind, spec.id)]
            for wire_id in state.spec.aliases:
                self._by_wire_id.pop((spec.kind, wire_id), None)
            for wire_id in spec.aliases:
                other = self._by_wire_id.get((spec.kind, wire_id))
                if other is not None and other is not state:
                    raise ValueError(f"alias {wire_id} belongs to another target")
            for wire_id in spec.aliases:
                self._by_wire_id[(spec.kind, wire_id)] = state
            state.update(spec)

    def set_bearer_check(self, kind: Kind, target_id: str, check: Callable[[str], bool] | None) -> None:
        with self._lock:
            if check is None:
                self._bearer_checks.pop((kind, target_id), None)
            else:
                self._bearer_checks[(kind, target_id)] = check

    def _authorized(self, h: RequestHandler, state: TargetState) -> bool:
        check = self._bearer_checks.get((state.spec.kind, state.spec.id))
        if check is None:
            return True
        scheme, _, token = (h.headers.get("Authorization") or "").partition(" ")
        return scheme == "Bearer" and bool(token) and check(token)

    def remove(self, kind: Kind, target_id: str) -> None:
        with self._lock:
            state = self.states.pop((kind, target_id))
            for wire_id in (state.spec.id, *state.spec.aliases):
                self._by_wire_id.pop((kind, wire_id), None)

    def lookup(self, kind: Kind, wire_id: str) -> TargetState | None:
        with self._lock:
            state = self._by_wire_id.get((kind, wire_id))
            if state is None and kind is Kind.BEDROCK and ":foundation-model/" in wire_id:
                # A foundation-model ARN reaches the model id it names.
                state = self._by_wire_id.get((kind, wire_id.rsplit("/", 1)[-1]))
            return state

    # Requests -----------------------------------------------------------------------------
    def handle(self, h: RequestHandler) -> None:
        route = _route(h.path)
        body = h.read_body()
        if h.command != "POST" or route is None:
            self._unrouted()
            unknown = wire.WireError(404, "UnknownOperationException", {"message": "Unknown operation"})
            self._send_error(h, Kind.BEDROCK, unknown)
            return
        kind, wire_id, streamed = route
        if kind is Kind.OPENAI:
            streamed = _asks_stream(body)  # one path for both: the body's ``stream`` decides
        state = self.lookup(kind, wire_id)
        if state is None:
            self._unrouted()
            self._send_error(h, kind, self._not_found(kind, wire_id))
            return
        if not self._authorized(h, state):
            self._send_error(h, kind, wire.WireError(401, "invalid_api_key", openai_compat.unauthorized_body()))
            return
        if streamed:
            self._serve_stream(h, kind, state, body)
        else:
            self._serve(h, kind, state, body)

    def _unrouted(self) -> None:
        with self._lock:
            self.unrouted += 1

    def reset_unrouted(self) -> None:
        with self._lock:
            self.unrouted = 0

    def _not_found(self, kind: Kind, wire_id: str) -> wire.WireError:
        if kind is Kind.OPENAI:
            return wire.openai_error("ResourceNotFoundException", "The model does not exist.")
        if kind is Kind.SAGEMAKER:
            return wire.sagemaker_error("ValidationError", f"Endpoint {wire_id} of account 111122223333 not found.")
        if wire_id.startswith("arn:"):
            return wire.bedrock_error("ResourceNotFoundException", "The requested resource could not be found.")
        return wire.bedrock_error("ValidationException", "The provided model identifier is invalid.")

    def _send_error(self, h: RequestHandler, kind: Kind, err: wire.WireError) -> None:
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": _request_id()}
        headers.update(err.headers(kind))
        h.reply(err.status, wire.dumps(err.body), headers)

    def _error(
        self,
        h: RequestHandler,
        state: TargetState,
        code: str,
        message: str | None = None,
        original_status: int | None = None,
    ) -> None:
        spec = state.spec
        state.count("throttled" if code == "ThrottlingException" else "errors")
        state.outcome(code)
        err = wire.error_for(spec.kind, code, message, spec.id, self.region, original_status=original_status)
        self._send_error(h, spec.kind, err)

    def _parse(self, kind: Kind, raw: bytes) -> tuple[wire.Prompt, str]:
        """Read the request as the service would; ValueError carries the service's complaint."""
        if kind is Kind.BEDROCK:
            try:
                payload = json.loads(raw or b"{}")
            except ValueError as exc:
                raise ValueError("The request body is not valid JSON.") from exc
            if not isinstance(payload, dict):
                raise ValueError("The request body must be a JSON object.")
            return wire.converse_prompt(payload), "converse"
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise ValueError("the payload is not JSON") from exc
        prompt, style = wire.sagemaker_prompt(payload)
        if kind is Kind.OPENAI and style != "messages":
            raise ValueError("expected a chat completions body with 'messages'")
        return prompt, style

    def _bad_request(self, h: RequestHandler, state: TargetState, problem: str) -> None:
        spec = state.spec
        if spec.kind is not Kind.SAGEMAKER:
            self._error(h, state, "ValidationException", problem)
            return
        # The container answers 4xx; SageMaker wraps that as ModelError (424).
        state.count("errors")
        state.outcome("ModelError")
        err = wire.sagemaker_error("ModelError", endpoint=spec.id, region=self.region)
        body = dict(err.body)
        body.update(
            ErrorCode="CLIENT_ERROR_FROM_MODEL",
            OriginalStatusCode=400,
            OriginalMessage=problem,
            Message=f'Received client error (400) from primary with message "{problem}".',
        )
        self._send_error(h, spec.kind, wire.WireError(err.status, err.code, body))

    def _answer_fault_now(self, h: RequestHandler, state: TargetState, fault: Fault, streamed: bool = False) -> bool:
        """Faults that answer before any capacity is used; True when the request is answered."""
        if fault.kind is FaultKind.THROTTLE:
            self._error(h, state, "ThrottlingException", fault.message)
        elif fault.kind is FaultKind.ERROR:
            code = wire.resolve_error(fault.error, state.spec.kind)
            self._error(h, state, code, fault.message, fault.status if code in wire.WRAPPING_CODES else None)
        elif fault.kind is FaultKind.STREAM_ERROR and not streamed:
            alias = fault.error if fault.error in wire.ERROR_ALIASES else "model_error"
            self._error(h, state, wire.resolve_error(alias, state.spec.kind), fault.message)
        elif fault.kind is FaultKind.RESET or (fault.kind is FaultKind.DROP and not streamed):
            state.outcome("reset")
            h.abort()
        else:
            return False
        return True

    def _admit_request(
        self, h: RequestHandler, kind: Kind, state: TargetState, raw: bytes, streamed: bool
    ) -> _Admitted | None:
        """Count, parse, apply the faults that answer at once and take capacity; None when already answered."""
        state.count("requests")
        state.record(raw)
        started = time.monotonic()
        try:
            prompt, style = self._parse(kind, raw)
        except ValueError as exc:
            self._bad_request(h, state, str(exc))
            return None
        spec = state.spec
        active = self.find_fault(self.region, kind, spec.id)
        fault = active.fault if active is not None else None
        if fault is not None:
            state.count("faulted")
            if self._answer_fault_now(h, state, fault, streamed=streamed):
                return None
        # A judge asked to judge answers one number: one token, whatever the target's usual length.
        judging = spec.judge and judge_reply(prompt.last_user_text) is not None
        out_tokens, capped = wire.output_tokens_for(prompt, 1 if judging else spec.output_tokens)
        in_tokens = wire.estimate_tokens(prompt.input_text)
        if state.admit(in_tokens + out_tokens) is not None:
            self._error(h, state, "ThrottlingException")
            return None
        return _Admitted(prompt, style, fault, started, (in_tokens, out_tokens, capped))

    def _serve(self, h: RequestHandler, kind: Kind, state: TargetState, raw: bytes) -> None:
        admitted = self._admit_request(h, kind, state, raw, streamed=False)
        if admitted is None:
            return
        prompt, style, fault, started, (in_tokens, out_tokens, capped) = admitted
        try:
            send = self._work(
                h, state, fault, prompt, style=style, started=started, tokens=(in_tokens, out_tokens, capped)
            )
        finally:
            # Capacity frees before the answer leaves: a client that calls again at once finds the slot free.
            state.release()
        send()

    def _work(
        self,
        h: RequestHandler,
        state: TargetState,
        fault: Fault | None,
        prompt: wire.Prompt,
        *,
        style: str,
        started: float,
        tokens: tuple[int, int, bool],
    ) -> Callable[[], None]:
        """Spend the request's time; return what to send (called once its capacity is released)."""
        spec, kind = state.spec, state.spec.kind
        in_tokens, out_tokens, capped = tokens
        if fault is not None and fault.kind is FaultKind.HANG:
            return self._hang(h, state, fault)
        delay = (spec.ttft_ms + spec.ms_per_token * out_tokens) / 1000.0
        if fault is not None and fault.kind in (FaultKind.SLOW_FIRST_TOKEN, FaultKind.STALL):
            delay += fault.delay_s
        if delay > 0 and h.closing.wait(delay):
            return h.abort
        latency_ms = int((time.monotonic() - started) * 1000)
        good: Any
        if kind is Kind.BEDROCK:
            good = wire.converse_reply(prompt, out_tokens, capped, spec.echo, latency_ms, judge=spec.judge)
        else:
            good = wire.sagemaker_reply(
                prompt, style, spec.id, out_tokens, capped=capped, echo=spec.echo, judge=spec.judge
            )
        headers = {"x-amzn-RequestId": _request_id()}
        if kind is Kind.SAGEMAKER:
            headers["x-Amzn-Invoked-Production-Variant"] = "AllTraffic"
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            broken, content_type = wire.malformed_body(fault.malformed, good)
            headers["Content-Type"] = content_type
            state.outcome("malformed")
            return lambda: h.reply(200, broken, headers)
        headers["Content-Type"] = "application/json"
        state.count("served")
        state.count("input_tokens", in_tokens)
        state.count("output_tokens", out_tokens)
        state.outcome("ok")
        body = wire.dumps(good)
        return lambda: h.reply(200, body, headers)

    def _hang(self, h: RequestHandler, state: TargetState, fault: Fault) -> Callable[[], None]:
        """Say nothing for the fault's time (a close or stop cuts it short and drops the connection)."""
        state.outcome("hang")
        if h.closing.wait(fault.delay_s):
            return h.abort
        err = wire.timeout_error(state.spec.kind, state.spec.id, self.region)
        state.count("errors")
        return lambda: self._send_error(h, state.spec.kind, err)

    # Streams (ConverseStream, InvokeEndpointWithResponseStream) ----------------------------------
    def _serve_stream(self, h: RequestHandler, kind: Kind, state: TargetState, raw: bytes) -> None:
        admitted = self._admit_request(h, kind, state, raw, streamed=True)
        if admitted is None:
            return
        prompt, style, fault, started, (_in_tokens, out_tokens, capped) = admitted
        spec = state.spec
        try:
            if fault is not None and fault.kind is FaultKind.HANG:
                self._hang(h, state, fault)()
                return
            plan = replies.stream_plan(prompt, out_tokens, capped, spec.echo, spec.judge)
            self._stream(h, state, fault, self._framed(kind, state, plan, style, raw), started)
        except (BrokenPipeError, ConnectionResetError):
            state.outcome("client_closed")  # the caller abandoned the stream
            h.close_connection = True
        finally:
            state.release()

    def _framed(
        self, kind: Kind, state: TargetState, plan: replies.StreamPlan, style: str, raw: bytes
    ) -> replies.Framed:
        if kind is Kind.BEDROCK:
            return replies.bedrock_framed(plan)
        payload = json.loads(raw)
        options = payload.get("stream_options") if isinstance(payload, dict) else None
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        if kind is Kind.OPENAI:
            model = payload.get("model")
            return replies.chat_framed(plan, model if isinstance(model, str) else state.spec.id, include_usage)
        return replies.sagemaker_framed(plan, style, state.spec.id, include_usage)

    def _stream(
        self, h: RequestHandler, state: TargetState, fault: Fault | None, framed: replies.Framed, started: float
    ) -> None:
        """Headers and opening events at once; tokens after the time to first token, one per ms_per_token."""
        spec, kind = state.spec, state.spec.kind
        headers = {"Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": _request_id()}
        if kind is Kind.OPENAI:  # plain server-sent events over chunked HTTP, as OpenAI-compatible servers send
            headers = {"Content-Type": "text/event-stream", "x-request-id": _request_id()}
        if kind is Kind.SAGEMAKER:
            headers["X-Amzn-SageMaker-Content-Type"] = "text/event-stream"
            headers["x-Amzn-Invoked-Production-Variant"] = "AllTraffic"
        h.start_chunked(200, headers)
        for message in framed.opening:
            h.send_chunk(message)
        first = spec.ttft_ms / 1000.0
        if fault is not None and fault.kind is FaultKind.SLOW_FIRST_TOKEN:
            first += fault.delay_s
        if first > 0 and h.pause(first):
            h.abort()
            return
        mid = fault if fault is not None and fault.kind in MID_STREAM else None
        for index, message in enumerate([*framed.tokens, b""]):
            strikes = mid is not None and index == min(mid.after_tokens, len(framed.tokens))
            if mid is not None and strikes and not self._mid_stream_fault(h, state, mid):
                return
            if message == b"":
                break
            if index > 0 and spec.ms_per_token > 0 and h.pause(spec.ms_per_token / 1000.0):
                h.abort()
                return
            if fault is not None and fault.kind is FaultKind.MALFORMED and index == 0:
                h.send_chunk(_broken(kind, message))
            else:
                h.send_chunk(message)
        for message in framed.closing(int((time.monotonic() - started) * 1000)):
            h.send_chunk(message)
        # Counted before the terminating chunk: a client that has read the whole stream sees the count.
        state.count("served")
        state.count("output_tokens", len(framed.tokens))
        state.outcome("malformed" if fault is not None and fault.kind is FaultKind.MALFORMED else "ok")
        h.send_chunk(b"")

    def _mid_stream_fault(self, h: RequestHandler, state: TargetState, fault: Fault) -> bool:
        """Strike a mid-stream fault; True when the stream goes on afterwards (a stall that ended)."""
        if fault.kind is FaultKind.STALL:
            state.outcome("stall")
            if h.pause(fault.delay_s):
                h.abort()
                return False
            return True
        state.count("errors")
        if fault.kind is FaultKind.DROP:
            state.outcome("dropped")
            h.abort()
            return False
        state.outcome("stream_error")
        if state.spec.kind is Kind.OPENAI:
            h.send_chunk(replies.chat_stream_error(fault.error, fault.message) + replies.DONE)
        else:
            h.send_chunk(replies.stream_exception(state.spec.kind is Kind.BEDROCK, fault.error, fault.message))
        h.send_chunk(b"")
        return False


def _broken(kind: Kind, message: bytes) -> bytes:
    """A first token that its reader cannot read: a chat chunk whose JSON is cut, or an event-stream message whose
    CRC no longer matches."""
    if kind is Kind.OPENAI:
        return message.rstrip(b"\n")[:-1] + b"\n\n"
    return message[:-1] + bytes([message[-1] ^ 0xFF])

"""The Lambda Runtime API on loopback: the Lambda service's side of the router's runtime loop (runtime_loop.py).

Each execution environment of the fleet world (local/localrun/fleet.py) gets one, as each Lambda sandbox gets its
own ``AWS_LAMBDA_RUNTIME_API``; tests/router/test_runtime_loop.py tests the loop against it.

It implements the documented endpoints of version 2018-06-01 (docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)
over real HTTP/1.1 with keep-alive, and checks what a runtime sends as the service would have to read it:

- ``GET /runtime/invocation/next``: the next queued event with ``Lambda-Runtime-Aws-Request-Id``,
  ``-Deadline-Ms``, ``-Invoked-Function-Arn`` and ``-Trace-Id``; blocks while none is queued; answers 500 ("container
  error": the runtime must exit) once :meth:`RuntimeApiStandIn.shut_down` is called;
- ``POST /runtime/invocation/{id}/response``: a whole body (``Content-Length``), or a streamed one
  (``Lambda-Runtime-Function-Response-Mode: streaming``, ``Transfer-Encoding: chunked``), parsed strictly by RFC 9112's
  chunked grammar, each chunk recorded as it arrives, trailers only if declared in ``Trailer``
  (docs: runtimes-custom.html, "Implementing response streaming in a custom runtime");
- ``POST /runtime/invocation/{id}/error`` and ``POST /runtime/init/error``: a JSON error document and the
  ``Lambda-Runtime-Function-Error-Type`` header.

Anything off the contract (an unknown or already answered id, a bad chunk size, a missing CRLF, an undeclared
trailer, a streamed response without its mode header) is answered 400 and recorded in ``violations`` (and, for
an invocation, as its answer of kind ``invalid``: Lambda fails such an invocation).

The service's view of the environment: :meth:`RuntimeApiStandIn.progress` gives a streamed answer's chunks as they
arrive, then the answer; :meth:`RuntimeApiStandIn.wait_parked` waits until the runtime asks for its next event (the
end of its init, or of an invocation: Lambda freezes the environment then). Both take ``alive``, the process's
liveness, as Lambda knows its runtime has exited.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:111122223333:function:spillway-router-us-east-1"
ERROR_TYPE = "lambda-runtime-function-error-type"
POLL_S = 0.05  # how often a wait looks at the process's liveness (an answer or a chunk wakes it at once)


@dataclass
class Answer:
    """What the runtime posted for one invocation."""

    kind: str  # "response", "error" or "invalid" (the runtime broke the contract answering it)
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    streamed: bool = False
    chunks: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each chunk's arrival
    trailers: dict[str, str] = field(default_factory=dict)  # lower-cased names


@dataclass
class _Pending:
    request_id: str
    event: bytes
    deadline_ms: int
    trace_id: str | None


class ContractViolation(Exception):
    pass


class Disconnected(Exception):
    """The runtime's connection closed in the middle of a request (its process ended): no answer, no violation."""


class NoAnswer(Exception):
    """The runtime did not answer: its process ended (``timed_out`` False) or the deadline passed (True)."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "the runtime exited")
        self.timed_out = timed_out


def _always() -> bool:
    return True


class RuntimeApiStandIn:
    """The stand-in: queue invocations with :meth:`invoke`, read what came back with :meth:`answer`."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._answers: dict[str, Answer] = {}
        self._issued: set[str] = set()
        self._chunks: dict[str, list[bytes]] = {}  # a streamed answer's chunks so far
        self._done = threading.Condition()
        self.nexts = 0  # `next` requests received
        self.parked = False  # a `next` is waiting for an event
        self.first_next_at: float | None = None  # time.monotonic() of the first `next`: the init's end
        self.init_errors: list[Answer] = []
        self.violations: list[str] = []
        self.on_chunk: Callable[[str, bytes], None] | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RuntimeApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shut_down()
        self._server.shutdown()
        self._server.server_close()

    def close_soon(self) -> None:
        """:meth:`__exit__` on a thread of its own: the server's loop notices within its poll interval (0.5 s),
        which a caller ending many environments, or answering for a dead one, need not wait for."""
        threading.Thread(target=self.__exit__, name="runtime-api-close", daemon=True).start()

    def shut_down(self) -> None:
        """Every later ``next`` answers 500: the environment is going away."""
        self._queue.put(None)

    def invoke(
        self, event: Any, *, timeout_s: float = 60.0, trace_id: str | None = None, request_id: str | None = None
    ) -> str:
        rid = request_id or str(uuid.uuid4())
        deadline_ms = int((time.time() + timeout_s) * 1000)
        self._queue.put(_Pending(rid, json.dumps(event).encode(), deadline_ms, trace_id))
        return rid

    def answer(self, request_id: str, timeout_s: float = 60.0) -> Answer:
        """The runtime's answer to one invocation, once complete (a streamed one after its last chunk)."""
        with self._done:
            if not self._done.wait_for(lambda: request_id in self._answers, timeout=timeout_s):
                raise TimeoutError(f"no answer to {request_id} within {timeout_s} s")
            return self._answers[request_id]

    def progress(
        self, request_id: str, *, deadline: float, alive: Callable[[], bool] = _always
    ) -> Iterator[bytes | Answer]:
        """A streamed answer's chunks as they arrive, then the complete answer (forgotten once given: a request id
        may be used again). Raises :class:`NoAnswer` when ``alive()`` turns false or ``deadline`` (monotonic)
        passes first."""
        given = 0
        while True:
            with self._done:
                self._done.wait_for(
                    lambda seen=given: request_id in self._answers or len(self._chunks.get(request_id, ())) > seen,
                    timeout=max(0.0, min(POLL_S, deadline - time.monotonic())),
                )
                fresh = self._chunks.get(request_id, [])[given:]
                answer = self._answers.pop(request_id, None) if not fresh else None
                if answer is not None:
                    self._chunks.pop(request_id, None)
            given += len(fresh)
            yield from fresh
            if answer is not None:
                yield answer
                return
            if not fresh and not alive():
                raise NoAnswer(timed_out=False)
            if not fresh and time.monotonic() >= deadline:
                raise NoAnswer(timed_out=True)

    def wait_parked(self, *, deadline: float, alive: Callable[[], bool] = _always) -> bool:
        """Wait until the runtime asks for its next event; False after an init error. Raises :class:`NoAnswer`."""
        while True:
            with self._done:
                if self._done.wait_for(
                    lambda: self.parked or bool(self.init_errors),
                    timeout=max(0.0, min(POLL_S, deadline - time.monotonic())),
                ):
                    return self.parked
            if not alive():
                raise NoAnswer(timed_out=False)
            if time.monotonic() >= deadline:
                raise NoAnswer(timed_out=True)

    def wait_init_error(self, timeout_s: float = 60.0) -> Answer:
        with self._done:
            if not self._done.wait_for(lambda: bool(self.init_errors), timeout=timeout_s):
                raise TimeoutError("no init error")
            return self.init_errors[0]

    # -- the server side ----------------------------------------------------------------------------------------

    def _next(self) -> _Pending | None:
        with self._done:
            self.nexts += 1
            if self.first_next_at is None:
                self.first_next_at = time.monotonic()
            self.parked = True
            self._done.notify_all()
        pending = self._queue.get()
        with self._done:
            self.parked = False
        if pending is None:
            self._queue.put(None)  # every later `next` sees it too
            return None
        self._issued.add(pending.request_id)
        return pending

    def _chunk(self, request_id: str, data: bytes) -> None:
        with self._done:
            self._chunks.setdefault(request_id, []).append(data)
            self._done.notify_all()
        if self.on_chunk is not None:
            self.on_chunk(request_id, data)

    def _claim(self, request_id: str) -> None:
        """An id may be answered once, and only after `next` handed it out."""
        if request_id not in self._issued:
            raise ContractViolation(f"{request_id}: unknown or already answered")
        self._issued.discard(request_id)

    def _record(self, request_id: str | None, answer: Answer) -> None:
        with self._done:
            if request_id is None:
                self.init_errors.append(answer)
            else:
                self._answers[request_id] = answer
            self._done.notify_all()

    def _violation(self, text: str, request_id: str | None) -> None:
        with self._done:
            self.violations.append(text)
            if request_id is not None:
                self._answers[request_id] = Answer("invalid", {})
            self._done.notify_all()


def _handler_class(stand_in: RuntimeApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, chunked requests
        disable_nagle_algorithm = True  # a reply's segments leave at once: no 40 ms delayed-ACK stall per call

        def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 (quiet)
            return

        def _reply(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self._headers_buffer.append(b"\r\n" + body)  # status line, headers and body in one write
            try:
                self.flush_headers()
            except OSError:  # the runtime's process ended (killed, or gone while `next` waited): nobody to tell
                self.close_connection = True

        def do_GET(self) -> None:
            if self.path != f"{PREFIX}/invocation/next":
                self._reply(404, {"errorType": "NotFound"})
                return
            pending = stand_in._next()
            if pending is None:
                self._reply(500, {"errorMessage": "container error", "errorType": "Runtime.ExitError"})
                return
            headers = {
                "Lambda-Runtime-Aws-Request-Id": pending.request_id,
                "Lambda-Runtime-Deadline-Ms": str(pending.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
            }
            if pending.trace_id:
                headers["Lambda-Runtime-Trace-Id"] = pending.trace_id
            self._reply(200, pending.event, headers)  # the event, as the function's trigger sent it

        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            parts = self.path.removeprefix(PREFIX).strip("/").split("/")
            claimed: str | None = None
            try:
                if parts == ["init", "error"]:
                    stand_in._record(None, Answer("error", headers, self._whole_body(headers)))
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    stand_in._claim(parts[1])
                    claimed = parts[1]
                    answer = self._answer(parts[2], headers)
                    stand_in._record(parts[1], answer)
                else:
                    self._reply(404, {"errorType": "NotFound"})
                    return
            except Disconnected:
                self.close_connection = True
                return
            except ContractViolation as exc:
                stand_in._violation(f"{self.path}: {exc}", claimed)
                self._reply(400, {"errorMessage": str(exc), "errorType": "InvalidRequest"})
                self.close_connection = True
                return
            self._reply(202, {"status": "OK"})

        def _answer(self, kind: str, headers: dict[str, str]) -> Answer:
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            if kind == "error" or not chunked:
                if headers.get("lambda-runtime-function-response-mode"):
                    raise ContractViolation("a response mode on a whole body")
                return Answer(kind, headers, self._whole_body(headers))
            if headers.get("lambda-runtime-function-response-mode") != "streaming":
                raise ContractViolation("a chunked response without Lambda-Runtime-Function-Response-Mode: streaming")
            answer = Answer(kind, headers, streamed=True)
            declared = {name.strip().lower() for name in headers.get("trailer", "").split(",") if name.strip()}
            rid = self.path.removeprefix(PREFIX).strip("/").split("/")[1]
            while True:
                size = self._chunk_size()
                if size == 0:
                    break
                data = self.rfile.read(size)
                if not data:
                    raise Disconnected
                if len(data) != size or self.rfile.read(2) != b"\r\n":
                    raise ContractViolation("a chunk shorter than its size, or without its CRLF")
                answer.chunks.append(data)
                answer.arrivals.append(time.monotonic())
                stand_in._chunk(rid, data)
            while (line := self.rfile.readline(65537)) != b"\r\n":
                if not line.endswith(b"\r\n"):
                    raise ContractViolation("the trailer section does not end with an empty line")
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep or name.strip().lower() not in declared:
                    raise ContractViolation(f"trailer {name.strip()!r} not declared in Trailer: {sorted(declared)}")
                answer.trailers[name.strip().lower()] = value.strip()
            answer.body = b"".join(answer.chunks)
            return answer

        def _chunk_size(self) -> int:
            line = self.rfile.readline(65537)
            if not line:
                raise Disconnected
            if not line.endswith(b"\r\n"):
                raise ContractViolation(f"chunk size line {line!r} without CRLF")
            size = line[:-2].split(b";", 1)[0]
            if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
                raise ContractViolation(f"chunk size {size!r} is not hexadecimal")
            return int(size, 16)

        def _whole_body(self, headers: dict[str, str]) -> bytes:
            if "content-length" not in headers:
                raise ContractViolation("a whole body without Content-Length")
            return self.rfile.read(int(headers["content-length"]))

    return Handler

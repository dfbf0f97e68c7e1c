"""A stand-in for the Lambda Runtime API on loopback, for testing the router's runtime loop (runtime_loop.py).

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
trailer, a streamed response without its mode header) is answered 400 and recorded in ``violations``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:111122223333:function:spillway-router-us-east-1"
ERROR_TYPE = "lambda-runtime-function-error-type"


@dataclass
class Answer:
    """What the runtime posted for one invocation."""

    kind: str  # "response" or "error"
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


class RuntimeApiStandIn:
    """The stand-in: queue invocations with :meth:`invoke`, read what came back with :meth:`answer`."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._answers: dict[str, Answer] = {}
        self._issued: set[str] = set()
        self._done = threading.Condition()
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

    def wait_init_error(self, timeout_s: float = 60.0) -> Answer:
        with self._done:
            if not self._done.wait_for(lambda: bool(self.init_errors), timeout=timeout_s):
                raise TimeoutError("no init error")
            return self.init_errors[0]

    # -- the server side ----------------------------------------------------------------------------------------

    def _next(self) -> _Pending | None:
        pending = self._queue.get()
        if pending is None:
            self._queue.put(None)  # every later `next` sees it too
            return None
        self._issued.add(pending.request_id)
        return pending

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

    def _violation(self, text: str) -> None:
        with self._done:
            self.violations.append(text)
            self._done.notify_all()


def _handler_class(stand_in: RuntimeApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, chunked requests

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _reply(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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
            try:
                if parts == ["init", "error"]:
                    stand_in._record(None, Answer("error", headers, self._whole_body(headers)))
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    stand_in._claim(parts[1])
                    answer = self._answer(parts[2], headers)
                    stand_in._record(parts[1], answer)
                else:
                    self._reply(404, {"errorType": "NotFound"})
                    return
            except ContractViolation as exc:
                stand_in._violation(f"{self.path}: {exc}")
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
                if len(data) != size or self.rfile.read(2) != b"\r\n":
                    raise ContractViolation("a chunk shorter than its size, or without its CRLF")
                answer.chunks.append(data)
                answer.arrivals.append(time.monotonic())
                if stand_in.on_chunk is not None:
                    stand_in.on_chunk(rid, data)
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

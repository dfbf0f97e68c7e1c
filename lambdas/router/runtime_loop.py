"""The router's Lambda runtime loop: the Runtime API spoken directly, so the function can answer in streaming mode.

Python's managed runtime calls a handler and buffers what it returns; it has no streaming handler. This loop replaces
its bootstrap (through ``AWS_LAMBDA_EXEC_WRAPPER``, see ``runtime-wrapper``) and speaks the Lambda Runtime API
(version 2018-06-01, docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) itself:

- init: import the handler module named by ``_HANDLER`` (the router builds and warms itself at import); a failure is
  posted to ``/runtime/init/error`` and the process exits, as the custom-runtime contract asks;
- ``GET /runtime/invocation/next`` without a timeout (the environment may be frozen while it waits), the context from
  its ``Lambda-Runtime-*`` headers, ``_X_AMZN_TRACE_ID`` from ``Lambda-Runtime-Trace-Id``;
- a buffered answer: ``POST /runtime/invocation/{id}/response`` with the handler's JSON, as the managed runtime does;
- a streamed answer, for the methods in ``SPILLWAY_STREAM_ROUTES`` (the ones API Gateway integrates with
  ``responseTransferMode: STREAM``): the same path with ``Lambda-Runtime-Function-Response-Mode: streaming``,
  ``Transfer-Encoding: chunked`` and ``Content-Type: application/vnd.awslambda.http-integration-response``, one HTTP
  chunk per chunk the stream handler yields (its first is the JSON prelude and the eight NUL bytes, spillway/sse.py),
  and the declared trailers ``Lambda-Runtime-Function-Error-Type`` / ``-Error-Body`` (base64 JSON) when the handler
  raises after the answer has started (docs: runtimes-custom.html, "Implementing response streaming");
- a handler that raises before answering: ``POST /runtime/invocation/{id}/error``;
- a 500 from the Runtime API ("container error, non-recoverable"): exit.

Standard library only, imported before anything of the router's, so even a router that cannot import is reported as an
init error. ``http.client`` and the rest come with botocore and Powertools anyway: the loop adds no module to the cold
start, only its own lines (tests/router/test_runtime_loop.py holds it to that). Error reports carry exception class
names, never exception text: the router's exceptions may quote a caller's request (init errors, before any request,
carry their message: a bad setting names itself).
"""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "2018-06-01"
WRAPPER = "runtime-wrapper"  # this folder's AWS_LAMBDA_EXEC_WRAPPER script
WRAPPER_VAR = "AWS_LAMBDA_EXEC_WRAPPER"
RUNTIME_API_VAR = "AWS_LAMBDA_RUNTIME_API"
HANDLER_VAR = "_HANDLER"
STREAM_HANDLER_VAR = "SPILLWAY_STREAM_HANDLER"
STREAM_ROUTES_VAR = "SPILLWAY_STREAM_ROUTES"
TRACE_ID_VAR = "_X_AMZN_TRACE_ID"

RESPONSE_MODE_HEADER = "Lambda-Runtime-Function-Response-Mode"
STREAMING = "streaming"
HTTP_INTEGRATION_RESPONSE = "application/vnd.awslambda.http-integration-response"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_TRAILER = "Lambda-Runtime-Function-Error-Body"

# Error types, in the Runtime API's recommended <category.reason> form.
INIT_ERROR = "Runtime.InitError"
NO_SUCH_HANDLER = "Runtime.NoSuchHandler"
INVALID_EVENT = "Runtime.InvalidEvent"
UNHANDLED = "Runtime.Unhandled"

Handler = Callable[[Any, Any], Any]
StreamHandler = Callable[[Any, Any], Iterable[bytes]]


class ContainerError(Exception):
    """The Runtime API answered 500: a non-recoverable state in which the runtime must exit."""


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """The Runtime API's error document: ``{"errorMessage", "errorType", "stackTrace"}``, and the header's type."""

    error_type: str
    message: str
    category: str = UNHANDLED

    def body(self) -> bytes:
        return json.dumps({"errorMessage": self.message, "errorType": self.error_type, "stackTrace": []}).encode()

    @classmethod
    def of(cls, exc: BaseException, category: str = UNHANDLED) -> ErrorReport:
        """An invocation's failure: the class only (its text may quote the request)."""
        name = type(exc).__name__
        return cls(name, f"the handler raised {name}; its log lines carry the request id", category)


@dataclass(frozen=True, slots=True)
class LambdaContext:
    """The context object handlers get (the managed runtime's attributes the router and Powertools read)."""

    aws_request_id: str
    invoked_function_arn: str
    deadline_ms: int
    function_name: str = ""
    function_version: str = ""
    memory_limit_in_mb: int = 0
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


@dataclass(frozen=True, slots=True)
class Invocation:
    request_id: str
    event: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Handlers:
    """What the loop calls: the buffered handler, and the stream handler for the methods API Gateway streams."""

    buffered: Handler
    stream: StreamHandler | None = None
    stream_routes: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def streams(self, event: Any) -> bool:
        """Whether API Gateway integrates this event's method with ``responseTransferMode: STREAM`` (its resource
        template and method, as the integration is attached: never the concrete path)."""
        if self.stream is None or not isinstance(event, Mapping):
            return False
        return (str(event.get("httpMethod")), str(event.get("resource"))) in self.stream_routes


def parse_routes(value: str | None) -> frozenset[tuple[str, str]]:
    """``"POST /v1/features/{feature}/converse-stream, ..."`` -> {(method, resource template)}."""
    routes = set()
    for item in (value or "").split(","):
        method, _, resource = item.strip().partition(" ")
        if method and resource.startswith("/"):
            routes.add((method.upper(), resource.strip()))
        elif item.strip():
            raise ValueError(f"{STREAM_ROUTES_VAR}: {item.strip()!r} is not 'METHOD /resource'")
    return frozenset(routes)


def render_routes(routes: Iterable[tuple[str, str]]) -> str:
    """The inverse of :func:`parse_routes`: what the stack writes into the function's environment."""
    return ",".join(f"{method} {resource}" for method, resource in routes)


class RuntimeApi:
    """A client of the Runtime API on one keep-alive connection (the API serves one invocation at a time)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        # No timeout: `next` blocks until an invocation arrives, across freezes of the environment.
        self._connection = http.client.HTTPConnection(host, int(port))

    def _path(self, *parts: str) -> str:
        return "/".join((f"/{API_VERSION}/runtime", *parts))

    def _finish(self, what: str) -> tuple[int, bytes, http.client.HTTPMessage]:
        response = self._connection.getresponse()
        body = response.read()  # drained, so the connection can carry the next request
        if response.status >= 500:
            raise ContainerError(f"{what}: {response.status}")
        return response.status, body, response.headers

    def _post(self, what: str, path: str, body: bytes, headers: Mapping[str, str]) -> int:
        self._connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        status, _, _ = self._finish(what)
        return status

    def next(self) -> Invocation:
        self._connection.request("GET", self._path("invocation", "next"))
        status, body, headers = self._finish("next")
        request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
        if status != 200 or not request_id:
            raise ContainerError(f"next: {status} without a request id")
        return Invocation(request_id, body, {k.lower(): v for k, v in headers.items()})

    def respond(self, request_id: str, body: bytes) -> int:
        return self._post("response", self._path("invocation", request_id, "response"), body, {})

    def fail(self, request_id: str, report: ErrorReport) -> int:
        path = self._path("invocation", request_id, "error")
        return self._post("error", path, report.body(), {ERROR_TYPE_HEADER: report.category})

    def init_error(self, report: ErrorReport) -> int:
        return self._post(
            "init error", self._path("init", "error"), report.body(), {ERROR_TYPE_HEADER: report.category}
        )

    def stream(self, request_id: str, chunks: Iterator[bytes]) -> tuple[int, ErrorReport | None]:
        """Send ``chunks`` as a streamed response, each in its own HTTP chunk as it comes. An exception from
        ``chunks`` ends the body with the error trailers (Lambda then reports the invocation as failed)."""
        connection = self._connection
        connection.putrequest("POST", self._path("invocation", request_id, "response"), skip_accept_encoding=True)
        connection.putheader(RESPONSE_MODE_HEADER, STREAMING)
        connection.putheader("Content-Type", HTTP_INTEGRATION_RESPONSE)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.putheader("Trailer", f"{ERROR_TYPE_HEADER}, {ERROR_BODY_TRAILER}")
        connection.endheaders()
        failure: ErrorReport | None = None
        try:
            for chunk in chunks:
                if chunk:  # a zero-length chunk would end the body
                    connection.send(b"%X\r\n%s\r\n" % (len(chunk), chunk))
        except Exception as exc:
            failure = ErrorReport.of(exc)
        if failure is None:
            connection.send(b"0\r\n\r\n")
        else:
            encoded = base64.b64encode(failure.body())
            trailers = b"%s: %s\r\n%s: %s\r\n" % (
                ERROR_TYPE_HEADER.encode(),
                failure.category.encode(),
                ERROR_BODY_TRAILER.encode(),
                encoded,
            )
            connection.send(b"0\r\n" + trailers + b"\r\n")
        status, _, _ = self._finish("streamed response")
        return status, failure


def context_of(invocation: Invocation, environ: Mapping[str, str]) -> LambdaContext:
    headers = invocation.headers
    memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0")
    return LambdaContext(
        aws_request_id=invocation.request_id,
        invoked_function_arn=headers.get("lambda-runtime-invoked-function-arn", ""),
        deadline_ms=int(headers.get("lambda-runtime-deadline-ms") or 0),
        function_name=environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
        function_version=environ.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
        memory_limit_in_mb=int(memory) if memory.isdigit() else 0,
        log_group_name=environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
        log_stream_name=environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        identity=_json_header(headers.get("lambda-runtime-cognito-identity")),
        client_context=_json_header(headers.get("lambda-runtime-client-context")),
    )


def _json_header(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _log(message: str, **fields: Any) -> None:
    """One JSON line on stderr (Lambda ships it to the function's log group): names, codes and ids only."""
    sys.stderr.write(json.dumps({"level": "ERROR", "message": message, **fields}) + "\n")
    sys.stderr.flush()


def handle(api: RuntimeApi, handlers: Handlers, invocation: Invocation, environ: Mapping[str, str]) -> None:
    """One invocation, answered buffered or streamed; every outcome is reported to the Runtime API."""
    rid = invocation.request_id
    trace = invocation.headers.get("lambda-runtime-trace-id")
    if trace:
        os.environ[TRACE_ID_VAR] = trace
    else:
        os.environ.pop(TRACE_ID_VAR, None)
    try:
        event = json.loads(invocation.event)
    except ValueError as exc:
        _log("invalid_event", request_id=rid, error_type=type(exc).__name__)
        api.fail(rid, ErrorReport(type(exc).__name__, "the invocation's event is not JSON", INVALID_EVENT))
        return
    context = context_of(invocation, environ)
    if handlers.streams(event):
        assert handlers.stream is not None  # streams() is False without one
        _stream(api, rid, handlers.stream, event, context)
        return
    try:
        body = json.dumps(handlers.buffered(event, context)).encode()
    except Exception as exc:
        _log("handler_error", request_id=rid, error_type=type(exc).__name__)
        api.fail(rid, ErrorReport.of(exc))
        return
    status = api.respond(rid, body)
    if status != 202:  # 413: over Lambda's 6 MB payload; Lambda fails the invocation itself
        _log("response_refused", request_id=rid, status=status, bytes=len(body))


def _stream(api: RuntimeApi, rid: str, handler: StreamHandler, event: Any, context: LambdaContext) -> None:
    """The response opens with the handler's first chunk: a handler that fails before it is reported through
    the error path (a whole, ordinary function error), one that fails later through the trailers."""
    chunks: Iterator[bytes] = iter(())
    try:
        chunks = iter(handler(event, context))
        first = next(chunks, b"")
    except Exception as exc:
        _log("handler_error", request_id=rid, error_type=type(exc).__name__, streamed=False)
        api.fail(rid, ErrorReport.of(exc))
        _close(chunks)
        return

    def rest() -> Iterator[bytes]:
        yield first
        yield from chunks

    try:
        status, failure = api.stream(rid, rest())
    finally:
        _close(chunks)
    if failure is not None:
        _log("handler_error", request_id=rid, error_type=failure.error_type, streamed=True)
    if status != 202:
        _log("response_refused", request_id=rid, status=status, streamed=True)


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


class HandlerNotFound(LookupError):
    """``_HANDLER`` (or the stream handler's setting) names no attribute of an importable module."""


def resolve(name: str) -> Any:
    """``module.attribute`` -> the attribute, importing the module (running its init: whatever that raises, it
    raises as it is)."""
    module_name, _, attribute = name.rpartition(".")
    if not module_name or not attribute:
        raise HandlerNotFound(name)
    module = importlib.import_module(module_name)
    if not hasattr(module, attribute):
        raise HandlerNotFound(name)
    return getattr(module, attribute)


def load_handlers(environ: Mapping[str, str]) -> Handlers:
    """The handlers the environment names, the stream handler only when some route streams."""
    routes = parse_routes(environ.get(STREAM_ROUTES_VAR))
    buffered = resolve(environ.get(HANDLER_VAR, ""))
    stream = resolve(environ.get(STREAM_HANDLER_VAR, "")) if routes else None
    return Handlers(buffered, stream, routes)


def layer_paths() -> list[str]:
    """Where the managed Python runtime looks for layer code, in its order (docs: "Working with layers for Python
    Lambda functions"): /opt/python/lib/pythonX.Y/site-packages, then /opt/python."""
    return [f"/opt/python/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages", "/opt/python"]


def initialise(api: RuntimeApi, environ: Mapping[str, str]) -> Handlers | None:
    """The init phase: the search path as the managed runtime sets it, then the handlers. None after a reported
    init error."""
    task_root = environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    for index, path in enumerate([task_root, *layer_paths()]):
        if path not in sys.path:
            sys.path.insert(index, path)
    try:
        return load_handlers(environ)
    except HandlerNotFound as exc:
        report = ErrorReport(NO_SUCH_HANDLER, f"no handler {exc.args[0]!r}", NO_SUCH_HANDLER)
    except Exception as exc:  # the module's init failed (a bad setting names itself): before any request, no content
        report = ErrorReport(type(exc).__name__, str(exc), INIT_ERROR)
    _log("init_error", error_type=report.error_type, category=report.category)
    api.init_error(report)
    return None


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run until the Runtime API says the environment is gone: the process's exit status."""
    environ = os.environ if environ is None else environ
    api = RuntimeApi(environ[RUNTIME_API_VAR])
    handlers = initialise(api, environ)
    if handlers is None:
        return 1
    try:
        while True:
            handle(api, handlers, api.next(), environ)
    except (ContainerError, OSError, http.client.HTTPException) as exc:  # the environment is going away
        _log("runtime_api_error", error_type=type(exc).__name__, detail=str(exc))
        return 1
    except Exception as exc:  # a fault of the loop itself: its class only, no traceback (the text may quote a request)
        _log("runtime_fault", error_type=type(exc).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())

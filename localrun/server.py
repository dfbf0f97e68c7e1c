"""A local HTTP endpoint in front of the router: each request becomes an API Gateway REST proxy event, the handler
runs in-process, and its statusCode/headers/body go back on the wire. Loopback only."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from localrun.apigw import DEFAULT_REMAINING_MS, REMAINING_HEADER, LocalContext, response_parts, to_event
from localrun.sink import RouterOutput

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    lambda_handler: LambdaHandler
    output: RouterOutput | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 (the base signature)
        return  # quiet: the demo prints its own progress

    def _handle(self) -> None:
        length_raw = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_raw)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(
                413 if length > MAX_BODY else 400,
                [("content-type", "application/json")],
                b'{"message":"Request Too Long"}' if length > MAX_BODY else b'{"message":"Bad Request"}',
            )
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        headers = dict(self.headers.items())
        remaining = DEFAULT_REMAINING_MS
        raw_remaining = self.headers.get(REMAINING_HEADER)
        if raw_remaining:
            try:
                remaining = max(0.0, min(DEFAULT_REMAINING_MS, float(raw_remaining)))
            except ValueError:
                remaining = DEFAULT_REMAINING_MS
        request_id = str(uuid.uuid4())
        event = to_event(
            self.command, self.path, headers, body, request_id=request_id, source_ip=self.client_address[0]
        )
        try:
            with self.server.output.capture() if self.server.output is not None else nullcontext():
                result = self.server.lambda_handler(event, LocalContext(request_id, remaining))
            status, pairs, out = response_parts(result)
        except Exception:  # API Gateway answers a failed Lambda invocation with 502 and this body
            status, pairs, out = 502, [("content-type", "application/json")], b'{"message":"Internal server error"}'
        self._send(status, pairs, out)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        # One write for status line, headers and body (end_headers would flush them on their own).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.wfile.write(b"".join(self._headers_buffer))
        self._headers_buffer = []

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = _handle

    def __getattr__(self, name: str) -> Any:
        # Any other method (QUERY, PROPFIND...) reaches the router too, which answers 404/405 in its own shape.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


class LocalEndpoint:
    """``with LocalEndpoint(handler.lambda_handler) as ep: ep.url`` -> http://127.0.0.1:<port>."""

    def __init__(
        self, lambda_handler: LambdaHandler, host: str = "127.0.0.1", port: int = 0, output: RouterOutput | None = None
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the local endpoint listens on loopback only")
        self._server = _Server((host, port), _Handler)
        self._server.lambda_handler = lambda_handler
        self._server.output = output
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="local-endpoint", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def error_body_ok(body: bytes) -> bool:
    """True when `body` is the router's documented error shape: {"error": {"code", "message", "request_id"}}."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    if not isinstance(doc, dict) or set(doc) != {"error"} or not isinstance(doc["error"], dict):
        return False
    err = doc["error"]
    return set(err) == {"code", "message", "request_id"} and all(isinstance(err[k], str) for k in err)

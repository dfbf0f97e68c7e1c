"""A local HTTP endpoint in front of the router: each request becomes an API Gateway REST proxy event, the handler
runs in-process, and its statusCode/headers/body go back on the wire. Loopback only.

As API Gateway does, the endpoint answers for itself what never reaches the function: a request line it cannot
parse (garbage, or HTTP/0.9, which API Gateway does not speak) is a 400, a body over API Gateway's 10 MB payload
limit a 413, each in HTTP/1.1 with a fixed JSON message (never a word of what the caller sent), and the connection
is then closed cleanly: the rest of an oversized body is read and discarded, so the caller reads the answer instead
of a reset.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from local.localrun.apigw import DEFAULT_REMAINING_MS, REMAINING_HEADER, LocalContext, response_parts, to_event
from local.localrun.sink import RouterOutput

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
# A streaming function: Lambda's streaming HTTP integration format (a JSON prelude, eight NUL bytes, the body).
StreamHandler = Callable[[dict[str, Any], Any], Iterator[bytes]]
PRELUDE_END = b"\x00" * 8
# The paths API Gateway integrates in streaming mode: converse-stream, and chat completions (whose answer streams when
# the body says `stream: true` and comes whole otherwise, from the same entry).
STREAMED = re.compile(r"^/v1/(features/[^/]+/converse-stream|chat/completions)/?$")
MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
# An oversized body is drained (read and discarded) up to this much, within DRAIN_S, before the connection closes.
DRAIN_MAX = 64 * 1024 * 1024
DRAIN_S = 10.0
# API Gateway's own error messages (fixed: nothing of the request is quoted back).
GATEWAY_MESSAGES = {400: "Bad Request", 413: "Request Too Long", 505: "HTTP Version Not Supported"}


class InvocationError(Exception):
    """The function could not answer (throttled, crashed, timed out): API Gateway answers for it with this."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or [("content-type", "application/json")]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    lambda_handler: LambdaHandler
    stream_handler: StreamHandler | None = None
    output: RouterOutput | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that hung up between requests (the `openai` package closes a stream at `[DONE]`, before the
        # chunked body's last bytes) is normal for a gateway: stay quiet about it, report anything else.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 (the base signature)
        return  # quiet: the demo prints its own progress

    def parse_request(self) -> bool:
        # "GET /" alone is HTTP/0.9, which API Gateway does not speak: answer before the base class waits for
        # headers that an HTTP/0.9 client never sends.
        if len(str(self.raw_requestline, "iso-8859-1").split()) == 2:
            self.command = None  # type: ignore[assignment]
            self.request_version, self.requestline = "HTTP/1.1", ""
            self.send_error(400)
            return False
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:  # noqa: ARG002
        """The gateway's own error, always with an HTTP/1.1 status line (a request line that failed to parse leaves
        the version at 0.9, which would send a bare body) and a fixed JSON message."""
        if not getattr(self, "request_version", "").startswith("HTTP/1."):
            self.request_version = "HTTP/1.1"
        self.close_connection = True
        text = GATEWAY_MESSAGES.get(code) or self.responses.get(code, ("Error",))[0]
        body = json.dumps({"message": text}).encode()
        self._send(code, [("content-type", "application/json"), ("connection", "close")], body)

    def _drain(self, length: int) -> None:
        """Read and discard what is left of a body we will not use, bounded in size and time."""
        left = min(length, DRAIN_MAX)
        deadline = time.monotonic() + DRAIN_S
        try:
            while left > 0 and time.monotonic() < deadline:
                self.connection.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:
            return

    def _handle(self) -> None:
        length_raw = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_raw)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400)
            return
        if length > MAX_BODY:
            self.send_error(413)
            self.wfile.flush()
            self._drain(length)
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
        context = LocalContext(request_id, remaining)
        if self.server.stream_handler is not None and STREAMED.match(urlsplit(self.path).path):
            self._stream(self.server.stream_handler(event, context))
            return
        try:
            with self.server.output.capture() if self.server.output is not None else nullcontext():
                result = self.server.lambda_handler(event, context)
            status, pairs, out = response_parts(result)
        except InvocationError as failed:
            status, pairs, out = failed.status, failed.headers, failed.body
        except Exception:  # API Gateway answers a failed Lambda invocation with 502 and this body
            status, pairs, out = 502, [("content-type", "application/json")], b'{"message":"Internal server error"}'
        self._send(status, pairs, out)

    def _stream(self, chunks: Iterator[bytes]) -> None:
        """A streaming integration's answer, as API Gateway's STREAM transfer mode passes it on: the status and
        headers once the prelude is complete, then each chunk as it comes (HTTP/1.1 chunked). A caller that hangs up
        closes the function's stream; a function that fails before its prelude is a 502, after it a dropped
        connection (the body's own last event says whether it was complete)."""
        pending = b""
        started = False
        try:
            with self.server.output.capture() if self.server.output is not None else nullcontext():
                for chunk in chunks:
                    if not started:
                        pending += chunk
                        at = pending.find(PRELUDE_END)
                        if at < 0:
                            continue
                        head = json.loads(pending[:at])
                        self.send_response(int(head.get("statusCode", 502)))
                        for key, value in (head.get("headers") or {}).items():
                            if str(key).lower() not in ("content-length", "transfer-encoding"):
                                self.send_header(str(key), str(value))
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        started = True
                        chunk = pending[at + len(PRELUDE_END) :]  # noqa: PLW2901 (what follows the prelude)
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
            if started:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
        except OSError:  # the caller hung up: the stream is closed below, which abandons the attempt
            self.close_connection = True
            return
        except Exception:  # a failed function: API Gateway answers for it, or drops the stream
            if started:
                self.close_connection = True
                return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self._send(502, [("content-type", "application/json")], b'{"message":"Internal server error"}')

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "transfer-encoding"):
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
        self,
        lambda_handler: LambdaHandler,
        host: str = "127.0.0.1",
        port: int = 0,
        output: RouterOutput | None = None,
        stream_handler: StreamHandler | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the local endpoint listens on loopback only")
        self._server = _Server((host, port), _Handler)
        self._server.lambda_handler = lambda_handler
        self._server.output = output
        self._server.stream_handler = stream_handler
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

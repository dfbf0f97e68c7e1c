"""X-Ray trace segments the router emits itself, with the standard library only (no X-Ray SDK, no OpenTelemetry).

With active tracing on, Lambda creates the function's segment and hands each invocation its trace context in
``_X_AMZN_TRACE_ID`` (``Root=1-...;Parent=<16 hex>;Sampled=1``) and runs an X-Ray daemon at
``AWS_XRAY_DAEMON_ADDRESS`` (``host:port``, or ``tcp:host:port udp:host:port``). For a sampled invocation the router
sends one subsegment document under that parent, as JSON over UDP behind the daemon's header
``{"format":"json","version":1}\\n``: the public segment document format, which is what the SDKs send too.

Why not the SDKs: aws-xray-sdk (through Powertools' Tracer) cost about 0.25 s of every cold start and reaches end of
support on 25 February 2027; an OpenTelemetry SDK or the ADOT layer costs more than this module's one span needs
(docs/design-notes.md). Unsampled, malformed or absent context: nothing is sent. A send never fails a request.

A span carries annotations only (string, number or boolean values, keys of letters, digits and underscores) from
the router's closed vocabulary, and an HTTP status: never metadata, never exception text, never request content.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

TRACE_ID_VAR = "_X_AMZN_TRACE_ID"
DAEMON_ADDRESS_VAR = "AWS_XRAY_DAEMON_ADDRESS"
DEFAULT_DAEMON = ("127.0.0.1", 2000)
DAEMON_HEADER = b'{"format":"json","version":1}\n'

_ROOT = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")
_SEGMENT_ID = re.compile(r"^[0-9a-f]{16}$")
_ANNOTATION_KEY = re.compile(r"^[A-Za-z0-9_]{1,500}$")

Annotation = str | int | float | bool


@dataclass(frozen=True)
class TraceContext:
    """One invocation's place in a trace: the trace id, the parent segment's id and the sampling decision."""

    root: str
    parent: str
    sampled: bool


def parse_trace_header(value: str | None) -> TraceContext | None:
    """``Root=...;Parent=...;Sampled=0|1`` (any order, other fields ignored); None when a part is missing or
    malformed, so a bad header costs a trace, never a request."""
    if not value:
        return None
    fields: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, item = part.partition("=")
        if sep:
            fields[key.strip()] = item.strip()
    root, parent = fields.get("Root", ""), fields.get("Parent", "")
    if not _ROOT.match(root) or not _SEGMENT_ID.match(parent):
        return None
    return TraceContext(root=root, parent=parent, sampled=fields.get("Sampled") == "1")


def parse_daemon_address(value: str | None) -> tuple[str, int]:
    """``host:port`` or ``tcp:host:port udp:host:port`` (the UDP one is used); the default when unset or bad."""
    if not value:
        return DEFAULT_DAEMON
    candidates = value.split()
    chosen = next((c[len("udp:") :] for c in candidates if c.startswith("udp:")), candidates[0])
    host, sep, port = chosen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return DEFAULT_DAEMON
    return host, int(port)


@dataclass
class Span:
    """The router's subsegment of one invocation, sent when it ends."""

    name: str
    context: TraceContext
    start_time: float
    id: str = field(default_factory=lambda: os.urandom(8).hex())
    annotations: dict[str, Annotation] = field(default_factory=dict)
    http_status: int | None = None

    def annotate(self, key: str, value: Annotation) -> None:
        if _ANNOTATION_KEY.match(key):
            self.annotations[key] = value

    def document(self, end_time: float) -> dict[str, object]:
        doc: dict[str, object] = {
            "name": self.name,
            "id": self.id,
            "trace_id": self.context.root,
            "parent_id": self.context.parent,
            "type": "subsegment",
            "start_time": self.start_time,
            "end_time": end_time,
            "annotations": dict(self.annotations),
        }
        status = self.http_status
        if status is not None:
            doc["http"] = {"response": {"status": status}}
            if status == 429:
                doc["throttle"] = True
            if 400 <= status < 500:
                doc["error"] = True
            elif status >= 500:
                doc["fault"] = True
        return doc


_current: ContextVar[Span | None] = ContextVar("spillway_span", default=None)


def annotate(key: str, value: Annotation) -> None:
    """Annotate the current invocation's span; nothing when the invocation is not traced."""
    span = _current.get()
    if span is not None:
        span.annotate(key, value)


class Tracer:
    """Opens one span per invocation and sends it to the daemon. Reads Lambda's variables per invocation (they are
    set per invocation and cost a dictionary lookup); the socket is opened on the first send and kept."""

    def __init__(
        self,
        name: str,
        *,
        environ: Callable[[str], str | None] = os.environ.get,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._environ = environ
        self._clock = clock
        self._socket: socket.socket | None = None
        self.sent = 0
        self.send_errors = 0

    @contextmanager
    def invocation(self) -> Iterator[Span | None]:
        context = parse_trace_header(self._environ(TRACE_ID_VAR))
        if context is None or not context.sampled:
            yield None
            return
        span = Span(self.name, context, self._clock())
        token = _current.set(span)
        try:
            yield span
        finally:
            _current.reset(token)
            self._send(span.document(self._clock()))

    def _send(self, document: dict[str, object]) -> None:
        payload = DAEMON_HEADER + json.dumps(document, separators=(",", ":")).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(payload, parse_daemon_address(self._environ(DAEMON_ADDRESS_VAR)))
            self.sent += 1
        except OSError:  # no daemon, a full buffer, a bad address: the trace is lost, the request is not
            self.send_errors += 1

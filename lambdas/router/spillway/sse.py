"""The streaming route's wire: the engine's stream as server-sent events, in Lambda's streaming response format.

One event per ConverseStream event (``event: contentBlockDelta`` / ``data: {...}``, the members as the backend sent
them), then a last ``event: spillway`` whose data is the route trace, the usage and how the stream ended::

    {"complete": true, "target": "...", "attempts": 1, "route": [{"target", "outcome", "code"}], "usage": {...},
     "ttft_ms": 120}
    {"complete": false, "error": {"code": "ModelStreamErrorException", "message": "..."}, "target": ..., ...}

A stream that fails after its first token always ends with ``complete: false``: never a clean end with half an
answer. The route headers (``x-spillway-target``, ``x-spillway-attempts``, ``x-spillway-route``) go out with the
first event: they are known once a target has sent its first token, and not before.

Lambda's streaming HTTP integration (InvokeWithResponseStream behind API Gateway, ``responseTransferMode: STREAM``)
takes a JSON prelude ``{"statusCode", "headers"}``, eight NUL bytes, then the body: :func:`prelude` writes it.
Zero knowledge: events pass through unread; the last event holds ids, codes, counts and timings only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

EVENT_STREAM = "text/event-stream"
STREAM_HEADERS = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"}
# A comment line (the SSE grammar's ":"), which every SSE client ignores: sent so a stream is never idle for long.
KEEP_ALIVE = b": keep-alive\n\n"
DELIMITER = b"\x00" * 8  # ends the prelude of Lambda's streaming HTTP integration response
TRAILER_EVENT = "spillway"
STREAM_INCOMPLETE = "StreamIncomplete"
INCOMPLETE_MESSAGE = "The stream ended before the answer was complete; the partial answer must not be used as whole."


def event(name: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def prelude(status: int, headers: Mapping[str, str]) -> bytes:
    return json.dumps({"statusCode": status, "headers": dict(headers)}, separators=(",", ":")).encode() + DELIMITER


def split_prelude(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(the prelude, the body bytes after it) once ``data`` holds the whole prelude; None before."""
    at = data.find(DELIMITER)
    if at < 0:
        return None
    return json.loads(data[:at]), data[at + len(DELIMITER) :]

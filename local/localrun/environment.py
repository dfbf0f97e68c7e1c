"""One execution environment of the fleet world: ``python -m local.localrun.environment FD_IN FD_OUT``.

A fresh Python process, as Lambda starts one: it imports the router's handler (its init: the routing table, the
runtime clients and the shared state are warmed there, as ``AWS_LAMBDA_FUNCTION_NAME`` is set), says how long that
took, then serves one event at a time from its dispatcher (local/localrun/fleet.py) over a pipe. Between events the
dispatcher freezes it (SIGSTOP), so nothing of it runs until the next event, as in Lambda.

Frames both ways: a 4-byte big-endian length, then JSON. In: ``{"op": "invoke", "event", "request_id",
"remaining_ms"}``, ``{"op": "stats"}`` or ``{"op": "rebuild"}`` (a fresh router in this process, for the
world's reset). Out: ``{"ready": true, "init_ms", "pid"}`` once, then one answer per
frame in: ``{"result": ...}`` or ``{"stats": ...}``. The router's stdout (EMF metric lines and logs, CloudWatch's in
Lambda) goes wherever the dispatcher pointed stdout; the pipe carries nothing but frames.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUTER_ROOT = ROOT / "lambdas" / "router"
HEADER = struct.Struct(">I")


def read_frame(fd: int) -> Any:
    """The next frame from `fd`, or None at end of file."""
    head = _read_exactly(fd, HEADER.size)
    if head is None:
        return None
    body = _read_exactly(fd, HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, doc: Any) -> None:
    data = json.dumps(doc, separators=(",", ":")).encode()
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def store_stats(handler: Any) -> dict[str, Any]:
    """What the router's shared-state clients say about themselves (round trips among it), where they say it."""
    router = getattr(handler, "_router", None)
    out: dict[str, Any] = {}
    for name in ("fleet", "fleet_store", "store"):
        part = getattr(router, name, None)
        for method in ("stats", "status"):
            read = getattr(part, method, None)
            if callable(read):
                try:
                    value = read()
                except Exception as exc:  # a store that cannot say is reported as such, not fatal
                    value = {"error": type(exc).__name__}
                out[f"{name}.{method}"] = value
                break
    return out


def main(argv: list[str]) -> int:
    fd_in, fd_out = int(argv[1]), int(argv[2])
    started = time.perf_counter()
    for path in (str(ROUTER_ROOT), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import handler  # noqa: PLC0415 (the import is the measured init)
    from local.localrun.apigw import LocalContext  # noqa: PLC0415

    init_ms = (time.perf_counter() - started) * 1000.0
    write_frame(fd_out, {"ready": True, "init_ms": round(init_ms, 1), "pid": os.getpid()})
    while True:
        frame = read_frame(fd_in)
        if frame is None:
            return 0
        if frame.get("op") == "stats":
            write_frame(fd_out, {"stats": store_stats(handler)})
            continue
        if frame.get("op") == "rebuild":  # the world's reset: fresh router state without a new cold start
            handler.set_router(None)
            handler.get_router().warm()
            write_frame(fd_out, {"rebuilt": True})
            continue
        context = LocalContext(frame["request_id"], float(frame["remaining_ms"]))
        if frame.get("op") == "stream":  # the streaming integration: each chunk leaves as the function yields it
            try:
                for chunk in handler.lambda_stream_handler(frame["event"], context):
                    write_frame(fd_out, {"chunk": base64.b64encode(chunk).decode()})
            finally:
                sys.stdout.flush()
                write_frame(fd_out, {"end": True})
            continue
        result = handler.lambda_handler(frame["event"], context)
        sys.stdout.flush()
        write_frame(fd_out, {"result": result})


if __name__ == "__main__":
    sys.exit(main(sys.argv))

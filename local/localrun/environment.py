"""One execution environment of the fleet world: ``python -m local.localrun.environment FD_IN FD_OUT``.

A fresh Python process, as Lambda starts one, that runs the router's own runtime loop (lambdas/router/runtime_loop.py,
the entry ``runtime-wrapper`` starts in AWS) as a script, against the Runtime API its dispatcher serves for it
(``AWS_LAMBDA_RUNTIME_API``, local/localrun/runtime_api.py): the loop imports ``_HANDLER``'s module (the router's
init: routing table, runtime clients and shared state are warmed there, as ``AWS_LAMBDA_FUNCTION_NAME`` is set), then
takes one event at a time from ``next`` and answers it buffered or streamed, exactly as in Lambda. The dispatcher
(local/localrun/fleet.py) freezes the process (SIGSTOP) once it asks for its next event.

Beside the loop, a control thread serves the world's own look inside over a pipe (never traffic, never during an
event: the dispatcher sends a frame only to an idle environment): ``{"op": "stats"}`` (what the shared-state
clients report) and ``{"op": "rebuild"}`` (a fresh router in this process, for the world's reset). Frames both ways:
a 4-byte big-endian length, then JSON. Out first, once: ``{"pid", "started"}`` (``time.monotonic()`` before the
init, so the dispatcher can tell the init's own time from the process start). The router's stdout and stderr
(EMF metric lines and logs, CloudWatch's in Lambda) go wherever the dispatcher pointed them.
"""

from __future__ import annotations

import json
import os
import runpy
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUTER_ROOT = ROOT / "lambdas" / "router"
RUNTIME_LOOP = ROUTER_ROOT / "runtime_loop.py"
HANDLER = "handler.lambda_handler"
STREAM_HANDLER = "handler.lambda_stream_handler"
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


def control(fd_in: int, fd_out: int) -> None:
    """The world's look inside, between events (the handler module is the one the loop imported)."""
    while (frame := read_frame(fd_in)) is not None:
        handler = sys.modules.get(HANDLER.partition(".")[0])
        if handler is None:
            write_frame(fd_out, {"error": "the handler is not loaded"})
        elif frame.get("op") == "stats":
            write_frame(fd_out, {"stats": store_stats(handler)})
        elif frame.get("op") == "rebuild":  # the world's reset: fresh router state without a new cold start
            handler.set_router(None)
            handler.get_router().warm()
            write_frame(fd_out, {"rebuilt": True})
        else:
            write_frame(fd_out, {"error": f"unknown op {frame.get('op')!r}"})


def main(argv: list[str]) -> int:
    fd_in, fd_out = int(argv[1]), int(argv[2])
    write_frame(fd_out, {"pid": os.getpid(), "started": time.monotonic()})
    threading.Thread(target=control, args=(fd_in, fd_out), name="local-control", daemon=True).start()
    sys.argv = [str(RUNTIME_LOOP)]
    runpy.run_path(str(RUNTIME_LOOP), run_name="__main__")  # exits with the loop's status (sys.exit)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

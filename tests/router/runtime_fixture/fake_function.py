"""Handlers for the runtime loop's tests, run by runtime_loop.py in its own process
(``_HANDLER=fake_function.buffered``, ``SPILLWAY_STREAM_HANDLER=fake_function.stream``). Each event says what to do;
SECRET stands for a caller's words, which no error report may carry."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SECRET = "caller-words-7f3a"  # a canary
DELIMITER = b"\x00" * 8


def _seen(context: Any) -> dict[str, Any]:
    return {
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "function_name": context.function_name,
        "memory_mb": context.memory_limit_in_mb,
    }


def buffered(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("do") == "raise":
        raise RuntimeError(SECRET)
    if event.get("do") == "sleep":
        time.sleep(float(event["seconds"]))
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(_seen(context))}


def _prelude(status: int) -> bytes:
    return json.dumps({"statusCode": status, "headers": {"Content-Type": "text/event-stream"}}).encode() + DELIMITER


def stream(event: dict[str, Any], context: Any) -> Iterator[bytes]:
    do = event.get("do")
    if do == "raise_before":
        raise RuntimeError(SECRET)
    yield _prelude(200)
    yield b"event: seen\ndata: " + json.dumps(_seen(context)).encode() + b"\n\n"
    if do == "gate":  # the next chunk only once the Runtime API has received this one: streamed, not buffered
        gate = Path(event["gate"])
        for _ in range(1000):
            if gate.exists():
                break
            time.sleep(0.01)
        yield b"event: gate\ndata: " + (b"opened" if gate.exists() else b"closed") + b"\n\n"
    if do == "empty_chunk":
        yield b""
    if do == "raise_mid_stream":
        raise RuntimeError(SECRET)
    yield b"event: end\ndata: {}\n\n"


def stream_that_is_no_generator(event: dict[str, Any], context: Any) -> Iterator[bytes]:
    """A stream handler that fails when called, before it returns anything to iterate."""
    raise RuntimeError(SECRET)

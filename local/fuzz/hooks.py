"""Schemathesis checks of our own, loaded through SCHEMATHESIS_HOOKS=fuzz.hooks."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:  # noqa: ARG001 (the check signature)
    """No 5xx at all: with every emulated target healthy, even 502/503/504 would be a router bug."""
    if response.status_code >= 500:
        raise AssertionError(f"{response.status_code} from the router")
    return None


@schemathesis.check
def documented_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:  # noqa: ARG001
    """Every error body is exactly {"error": {"code", "message", "request_id"}} (strings), as docs/openapi.json says."""
    if response.status_code < 400:
        return None
    try:
        doc = json.loads(response.content)
    except ValueError:
        raise AssertionError("an error body that is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"error"} or not isinstance(doc["error"], dict):
        raise AssertionError("an error body not shaped {error: {...}}")
    err = doc["error"]
    if set(err) != {"code", "message", "request_id"} or not all(isinstance(v, str) for v in err.values()):
        raise AssertionError("an error without exactly code, message and request_id strings")
    if response.headers.get("x-spillway-request-id", [None])[0] != err["request_id"]:
        raise AssertionError("the error's request_id differs from the x-spillway-request-id header")
    return None

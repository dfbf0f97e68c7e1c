"""API Gateway's own answers (before or instead of the router), in the router's error shape: one definition, rendered
twice. The router's API (stacks/constructs/router_api.py) writes each as an AWS::ApiGateway::GatewayResponse; the
local fleet world (local/localrun/fleet.py) answers a throttled or timed-out Lambda with what API Gateway sends from
that same resource (:func:`render`), so a caller sees locally what it sees in AWS. No CDK import: the local world
loads this without the CDK.

`$context.error.responseType` names the gateway's reason without quoting anything the caller sent.

A throttled router Lambda (reserved concurrency exhausted): Lambda refuses the invoke with 429
TooManyRequestsException before the router runs, so the proxy integration gets no answer to pass on, and API Gateway
REST answers "Internal server error" (AWS Knowledge Center, "How do I troubleshoot issues for API Gateway endpoints
that integrate with Lambda?", Throttling occurs). That Lambda 429 is the INTEGRATION_FAILURE gateway response
(default 504; if unset it falls back to DEFAULT_5XX; API Gateway developer guide, "Gateway response types for API
Gateway"). Both answer 503 with Retry-After in the router's error shape, the code the router itself uses when no
capacity is left, so a caller backs off the same way whichever layer ran out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

RETRY_AFTER_THROTTLED_S = 1
REQUEST_ID_HEADER = "x-spillway-request-id"
_CONTEXT_VARIABLE = re.compile(r"\$context\.([A-Za-z.]+)")


@dataclass(frozen=True)
class GatewayResponse:
    """One gateway response: its type (API Gateway's ResponseType name), HTTP status (None keeps the type's
    default), the router-shaped error code and fixed message, and Retry-After seconds (None: no header)."""

    response_type: str
    status: str | None
    code: str
    message: str
    retry_after_s: int | None = None

    def body_template(self) -> str:
        """The application/json mapping template (API Gateway substitutes the $context variables)."""
        return json.dumps({"error": {"code": self.code, "message": self.message, "request_id": "$context.requestId"}})

    def header_parameters(self) -> dict[str, str]:
        """Response header mappings as API Gateway takes them: a context path, or a quoted static value."""
        headers = {REQUEST_ID_HEADER: "context.requestId"}
        if self.retry_after_s is not None:
            headers["Retry-After"] = f"'{self.retry_after_s}'"
        return headers


GATEWAY_RESPONSES: dict[str, GatewayResponse] = {
    "BadRequestBody": GatewayResponse(
        "BAD_REQUEST_BODY", "400", "BadRequest", "the body does not match the Converse request schema"
    ),
    "BadRequestParameters": GatewayResponse(
        "BAD_REQUEST_PARAMETERS", "400", "BadRequest", "a required path parameter is missing"
    ),
    "Throttled": GatewayResponse(
        "THROTTLED", "429", "TooManyRequests", "the calling service is over its rate limit", RETRY_AFTER_THROTTLED_S
    ),
    "QuotaExceeded": GatewayResponse(
        "QUOTA_EXCEEDED", "429", "QuotaExceeded", "the calling service is over its daily quota"
    ),
    "IntegrationTimeout": GatewayResponse(
        "INTEGRATION_TIMEOUT", "504", "DeadlineExceeded", "the router did not answer within the integration timeout"
    ),
    "IntegrationFailure": GatewayResponse(
        "INTEGRATION_FAILURE",
        "503",
        "NoCapacity",
        "the router is at its concurrency limit; retry after the Retry-After seconds",
        RETRY_AFTER_THROTTLED_S,
    ),
    "Default4xx": GatewayResponse("DEFAULT_4XX", None, "$context.error.responseType", "request refused by the gateway"),
    "Default5xx": GatewayResponse(
        "DEFAULT_5XX",
        "503",
        "$context.error.responseType",
        "the gateway could not reach the router; retry after the Retry-After seconds",
        RETRY_AFTER_THROTTLED_S,
    ),
}


def by_type(response_type: str) -> GatewayResponse:
    """The gateway response of `response_type` (for example INTEGRATION_FAILURE)."""
    for response in GATEWAY_RESPONSES.values():
        if response.response_type == response_type:
            return response
    raise KeyError(f"no gateway response of type {response_type}")


def render(response: GatewayResponse, context: Mapping[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) as API Gateway sends this response: each ``$context.x`` in the template and each
    ``context.x`` header mapping replaced by ``context["x"]``, each quoted static header value unquoted. JSON
    escaping of the substituted values is API Gateway's too (it substitutes raw text; the values here are ids and
    type names, which need none)."""
    if response.status is None:
        raise ValueError(f"{response.response_type} keeps API Gateway's default status: not rendered locally")

    def variable(name: str) -> str:
        if name not in context:
            raise KeyError(f"no value for $context.{name}")
        return context[name]

    body = _CONTEXT_VARIABLE.sub(lambda m: variable(m.group(1)), response.body_template()).encode()
    headers = [("content-type", "application/json")]
    for name, mapping in response.header_parameters().items():
        static = re.fullmatch(r"'(.*)'", mapping)
        headers.append((name.lower(), static.group(1) if static else variable(mapping.removeprefix("context."))))
    return int(response.status), headers, body

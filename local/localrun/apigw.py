"""HTTP request <-> API Gateway REST (v1) proxy event, as API Gateway sends it to the router with IAM auth."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

STAGE = "prod"
API_ID = "local00001"
ACCOUNT = "111122223333"
CONVERSE_RESOURCE = "/v1/features/{feature}/converse"
STREAM_RESOURCE = "/v1/features/{feature}/converse-stream"  # integrated with responseTransferMode: STREAM
FEATURE_RESOURCES = {"converse": CONVERSE_RESOURCE, "converse-stream": STREAM_RESOURCE}
CHAT_RESOURCE = "/v1/chat/completions"  # the OpenAI door: integrated with responseTransferMode: STREAM too
# Test-only header: the Lambda's remaining time for this request (deadline pressure). API Gateway never sends it.
REMAINING_HEADER = "x-local-remaining-ms"
DEFAULT_REMAINING_MS = 29_000.0  # API Gateway's integration timeout: what a Lambda has left at most


def _resource(path: str) -> tuple[str, dict[str, str] | None]:
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[0] == "v1" and parts[1] == "features" and parts[3] in FEATURE_RESOURCES:
        return FEATURE_RESOURCES[parts[3]], {"feature": unquote(parts[2])}
    return path, None


def to_event(
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_id: str | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The REST proxy event for one HTTP request: resource, path parameters, requestContext with requestId and
    an IAM identity. A body that is not UTF-8 arrives base64-encoded, as API Gateway does for binary media."""
    split = urlsplit(raw_path)
    path = split.path or "/"
    resource, params = _resource(path)
    query = parse_qs(split.query, keep_blank_values=True)
    single = {k: v[-1] for k, v in query.items()} or None
    multi = dict(query) or None
    hdrs = {k: v for k, v in headers.items() if k.lower() != REMAINING_HEADER}
    text: str | None
    encoded = False
    if not body:
        text = None
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = base64.b64encode(body).decode()
            encoded = True
    rid = request_id or str(uuid.uuid4())
    now = time.time()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": single,
        "multiValueQueryStringParameters": multi,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": rid,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{STAGE}{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": API_ID,
            "requestTimeEpoch": int(now * 1000),
            "requestId": rid,
            "identity": {
                "sourceIp": source_ip,
                "caller": "AROAEXAMPLELOCAL:local-caller",
                "user": "AROAEXAMPLELOCAL:local-caller",
                "userArn": f"arn:aws:sts::{ACCOUNT}:assumed-role/local-caller/local",
                "accountId": ACCOUNT,
                "accessKey": "ASIAEXAMPLELOCAL",
                "userAgent": hdrs.get("User-Agent") or hdrs.get("user-agent") or "",
                "cognitoIdentityPoolId": None,
                "cognitoIdentityId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "apiKey": None,
                "principalOrgId": None,
            },
            "domainName": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
            "apiId": API_ID,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def response_parts(result: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body bytes) of a Lambda proxy response, as API Gateway would return it."""
    status = int(result.get("statusCode", 502))
    headers: dict[str, list[str]] = {}
    for key, value in (result.get("headers") or {}).items():
        headers.setdefault(key.lower(), []).append(str(value))
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = [str(v) for v in values]
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
    pairs = [(k, v) for k, values in headers.items() for v in values]
    return status, pairs, body


class LocalContext:
    """A stand-in for the Lambda context: its clock starts when the request arrives."""

    function_name = "spillway-router-local"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:spillway-router-local"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/spillway-router-local"
    log_stream_name = "local"

    def __init__(self, request_id: str, remaining_ms: float = DEFAULT_REMAINING_MS) -> None:
        self.aws_request_id = request_id
        self._deadline = time.monotonic() + remaining_ms / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

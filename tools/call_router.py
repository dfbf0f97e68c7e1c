"""Call the router like a service does: a SigV4-signed (IAM) request to API Gateway's `execute-api`.

    python -m tools.call_router URL FEATURE "your prompt" [--region us-east-1] [--max-tokens 256] [--api-key KEY]

URL is the stage's base URL (https://<api-id>.execute-api.<region>.amazonaws.com/prod) or a local router's
address (the local demo). Credentials come from the usual botocore chain (environment, profile, role). Prints the
route headers and the answer's text; exits 1 on an error answer. See docs/calling-the-router.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest


def signed_request(
    url: str, body: Mapping[str, Any], region: str, credentials: Any | None = None, api_key: str | None = None
) -> urllib.request.Request:
    """A urllib request for POST `url` with `body` as JSON, signed for execute-api in `region`. `api_key` is the
    calling service's usage-plan key (x-api-key), when the deployment names calling services."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    aws_request = AWSRequest(method="POST", url=url, data=data, headers=headers)
    creds = credentials or botocore.session.get_session().get_credentials()
    if creds is None:
        raise SystemExit("no AWS credentials found (environment, profile or role)")
    SigV4Auth(creds.get_frozen_credentials(), "execute-api", region).add_auth(aws_request)
    if not url.startswith(("https://", "http://")):
        raise SystemExit("the URL must be http(s)://")
    headers = dict(aws_request.headers.items())
    return urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310 (scheme checked)


def converse(
    base_url: str,
    feature: str,
    request: Mapping[str, Any],
    region: str,
    *,
    credentials: Any | None = None,
    api_key: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one call to POST {base_url}/v1/features/{feature}/converse."""
    url = f"{base_url.rstrip('/')}/v1/features/{feature}/converse"
    req = signed_request(url, request, region, credentials, api_key)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as answer:  # noqa: S310 (the caller's own URL)
            return answer.status, dict(answer.headers.items()), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        return error.code, dict(error.headers.items()), body


def command_line(description: str | None, argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The callers' shared command line: (arguments, the Converse request of the prompt)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the API's base URL, e.g. https://abc123.execute-api.us-east-1.amazonaws.com/prod")
    parser.add_argument("feature", help="a feature the deployment serves (GET /v1/features lists them)")
    parser.add_argument("prompt")
    parser.add_argument("--region", default="us-east-1", help="the region the API lives in (signing scope)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--api-key", default=os.environ.get("SPILLWAY_API_KEY"), help="x-api-key (or SPILLWAY_API_KEY)")
    args = parser.parse_args(argv)
    request = {
        "messages": [{"role": "user", "content": [{"text": args.prompt}]}],
        "inferenceConfig": {"maxTokens": args.max_tokens},
    }
    return args, request


def main(argv: list[str] | None = None) -> int:
    args, request = command_line(__doc__, argv)
    status, headers, body = converse(args.url, args.feature, request, args.region, api_key=args.api_key)
    lower = {k.lower(): v for k, v in headers.items()}
    print(f"HTTP {status}")
    for name in (
        "x-spillway-target",
        "x-spillway-attempts",
        "x-spillway-route",
        "x-spillway-request-id",
        "retry-after",
    ):
        if name in lower:
            print(f"{name}: {lower[name]}")
    if status != 200:
        print(json.dumps(body, indent=2))
        return 1
    for block in body["output"]["message"]["content"]:
        if "text" in block:
            print(block["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Call the router's OpenAI-compatible front door with the official `openai` package, signed with SigV4.

    python -m tools.openai_client URL FEATURE "your prompt" [--region us-east-1] [--max-tokens 256] [--stream]

URL is the stage's base URL (https://<api-id>.execute-api.<region>.amazonaws.com/prod) or a local router's address
(localrun). The feature is the request's ``model``. The `openai` client sends ``Authorization: Bearer <api_key>``;
the SigV4 hook below replaces it with an IAM signature for execute-api (credentials from botocore's usual chain:
environment, profile, role), so no key exists anywhere. With --stream the answer is printed as it arrives
(``stream=True``); the exit status is 1 when the stream fails or is cut before its ``finish_reason``.
See docs/calling-the-router.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Generator
from typing import Any

import botocore.session
import httpx2
import openai
from botocore.auth import SigV4Auth as BotocoreSigV4
from botocore.awsrequest import AWSRequest

# Headers that go into the signature: the ones no proxy or client layer rewrites after signing.
_SIGNED = ("host", "content-type")
_SET_BY_SIGNING = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


class SigV4(httpx2.Auth):
    """An httpx auth hook: sign each request for `service` in `region` with botocore's SigV4Auth."""

    requires_request_body = True

    def __init__(self, region: str, *, service: str = "execute-api", credentials: Any | None = None) -> None:
        self.region = region
        self.service = service
        self.credentials = credentials or botocore.session.get_session().get_credentials()
        if self.credentials is None:
            raise SystemExit("no AWS credentials found (environment, profile or role)")

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        headers = {k: v for k, v in request.headers.items() if k.lower() in _SIGNED}
        aws_request = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
        BotocoreSigV4(self.credentials.get_frozen_credentials(), self.service, self.region).add_auth(aws_request)
        for name, value in aws_request.headers.items():
            if name.lower() in _SET_BY_SIGNING:
                request.headers[name] = value
        yield request


def client(url: str, region: str, *, credentials: Any | None = None, **http: Any) -> openai.OpenAI:
    """An `openai` client for the router at `url` (its stage's base URL), signing every request."""
    http_client = httpx2.Client(auth=SigV4(region, credentials=credentials), **http)
    # The api key is required by the package and never used: the hook replaces the Authorization header.
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="sigv4", http_client=http_client, max_retries=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("feature")
    parser.add_argument("prompt")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    args = parser.parse_args(argv)
    request: dict[str, Any] = {
        "model": args.feature,
        "messages": [{"role": "user", "content": args.prompt}],
        "max_completion_tokens": args.max_tokens,
    }
    completions = client(args.url, args.region).chat.completions
    if not args.stream:
        print(completions.create(**request).choices[0].message.content)
        return 0
    finish = None
    try:
        with completions.create(**request, stream=True) as stream:
            for chunk in stream:
                for choice in chunk.choices:
                    print(choice.delta.content or "", end="", flush=True)
                    finish = choice.finish_reason or finish
    except openai.APIStatusError as error:  # no target sent a first token: an ordinary error answer
        print(f"refused: {error.status_code} {error.code}")
        return 1
    except openai.APIError as error:  # the router's error line: the stream failed after its first token
        print(f"\nthe stream failed: {error.code}")
        return 1
    print()
    if finish is None:
        print("the stream was cut before its finish_reason")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

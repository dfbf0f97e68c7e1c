"""Stream from the router like a chat service does: a SigV4-signed POST to the converse-stream route, read as
server-sent events while they arrive.

    python -m tools.stream_router URL FEATURE "your prompt" [--region us-east-1] [--max-tokens 256] [--api-key KEY]

Prints the route headers, the answer's text as it streams, and the last ``spillway`` event (route, usage, and
whether the stream was complete). Exits 1 on an error answer or an incomplete stream: a stream whose last event
says ``"complete": false`` (or that has no last event) was cut, and its partial answer must not be used as whole.
See docs/calling-the-router.md.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import IO, Any

from tools.call_router import command_line, signed_request


def events(answer: IO[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) per server-sent event, as each arrives (lines end with LF; a blank line ends an event)."""
    name, data = "message", ""
    for raw in answer:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data += line[len("data:") :].strip()
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


def converse_stream(
    base_url: str,
    feature: str,
    request: Mapping[str, Any],
    region: str,
    *,
    credentials: Any | None = None,
    api_key: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[int, dict[str, str], Iterator[tuple[str, dict[str, Any]]]]:
    """(status, headers, events) of POST {base_url}/v1/features/{feature}/converse-stream. On an error answer the
    events are one ("error", body)."""
    url = f"{base_url.rstrip('/')}/v1/features/{feature}/converse-stream"
    req = signed_request(url, request, region, credentials, api_key)
    try:
        answer = urllib.request.urlopen(req, timeout=timeout_s)  # noqa: S310 (the caller's own URL)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), iter([("error", json.loads(error.read()))])

    def read() -> Iterator[tuple[str, dict[str, Any]]]:
        with answer:
            yield from events(answer)

    return answer.status, dict(answer.headers.items()), read()


def main(argv: list[str] | None = None) -> int:
    args, request = command_line(__doc__, argv)
    status, headers, stream = converse_stream(args.url, args.feature, request, args.region, api_key=args.api_key)
    lower = {k.lower(): v for k, v in headers.items()}
    print(f"HTTP {status}")
    for name in ("x-spillway-target", "x-spillway-attempts", "x-spillway-route", "x-spillway-request-id"):
        if name in lower:
            print(f"{name}: {lower[name]}")
    last: dict[str, Any] | None = None
    for name, data in stream:
        if name == "contentBlockDelta" and "text" in data["delta"]:
            print(data["delta"]["text"], end="", flush=True)
        elif name == "spillwayContinuation":  # the answer goes on at another target: say so beside the text
            print(f"[continued: {data['from']} -> {data['to']} after {data['code']}]", file=sys.stderr, flush=True)
        elif name in ("spillway", "error"):
            last = data
    print()
    print(json.dumps(last, indent=2))
    return 0 if status == 200 and last is not None and last.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())

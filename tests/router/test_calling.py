"""tools/call_router.py, the example in docs/calling-the-router.md: a SigV4-signed call reaches the handler."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.credentials import Credentials

from tests.router.conftest import Harness, LambdaContext, api_event
from tools import call_router

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


@pytest.fixture
def local_api(harness: Harness) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback stand-in for API Gateway: records the headers, turns the request into a proxy event."""
    seen: list[dict[str, str]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(dict(self.headers.items()))
            body = self.rfile.read(int(self.headers["Content-Length"]))
            event = api_event("POST", self.path, raw_body=base64.b64encode(body).decode())
            event["isBase64Encoded"] = True
            answer: dict[str, Any] = harness.call(event, LambdaContext())
            payload = answer["body"].encode()
            self.send_response(answer["statusCode"])
            for name, values in (answer.get("multiValueHeaders") or {}).items():
                for value in values:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_signed_call_is_served(local_api: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = local_api
    request = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}
    status, headers, body = call_router.converse(
        url, "summarize-thread", request, "us-east-1", credentials=CREDS, api_key="svc-key"
    )
    assert status == 200
    assert body["output"]["message"]["content"] == [{"text": "fine answer"}]
    assert {k.lower(): v for k, v in headers.items()}["x-spillway-target"] == "claude-sonnet/provisioned/us-east-1"
    auth = seen[0]["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/execute-api/aws4_request" in auth
    assert "X-Amz-Date" in seen[0]
    assert {k.lower(): v for k, v in seen[0].items()}["x-api-key"] == "svc-key"
    assert "x-api-key" in auth  # signed along with the body


def test_error_answers_come_back_as_json(local_api: tuple[str, list[dict[str, str]]]) -> None:
    url, _ = local_api
    status, _, body = call_router.converse(url, "no-such-feature", {"messages": []}, "us-east-1", credentials=CREDS)
    assert status == 404
    assert body["error"]["code"] == "UnknownFeature"


def test_the_signature_covers_the_body() -> None:
    a = call_router.signed_request("https://x.example/v1/features/f/converse", {"messages": [1]}, "us-west-2", CREDS)
    b = call_router.signed_request("https://x.example/v1/features/f/converse", {"messages": [2]}, "us-west-2", CREDS)
    assert a.get_header("Authorization") != b.get_header("Authorization")
    assert json.loads(a.data or b"") == {"messages": [1]}  # type: ignore[arg-type]

"""The local endpoint answers what API Gateway answers for itself before the function runs: 400 for a request line it
cannot parse (HTTP/0.9, garbage, a TLS hello on the plain port), 413 for a body over API Gateway's 10 MB limit, each
as HTTP/1.1 with a fixed JSON message, and the caller reads that answer instead of a reset."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from local.localrun.server import MAX_BODY, LocalEndpoint

CANARY = "CANARY-7f3e"  # must never come back in an answer


def _echo(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": str(len(event.get("body") or ""))}


@pytest.fixture
def endpoint() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(_echo) as ep:
        yield ep


def _port(ep: LocalEndpoint) -> int:
    return int(ep.url.rsplit(":", 1)[1])


def _raw(ep: LocalEndpoint, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", _port(ep)), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _status_and_body(raw: bytes) -> tuple[str, int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode()
    version, code = status_line.split(" ")[:2]
    return version, int(code), json.loads(body)


@pytest.mark.parametrize(
    "line",
    [
        b"GET /v1/health\r\n\r\n",  # HTTP/0.9: no version
        b"GET /\r\n",
        f"{CANARY}\r\n\r\n".encode(),
        f"POST /v1/features/{CANARY}/converse HTTP/1.1 extra\r\n\r\n".encode(),
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # a TLS ClientHello on the plain port
        b"GET / HTTP/one\r\n\r\n",
    ],
)
def test_unparseable_request_lines_answer_400_in_http_1_1_with_a_fixed_message(
    endpoint: LocalEndpoint, line: bytes
) -> None:
    raw = _raw(endpoint, line)
    version, status, body = _status_and_body(raw)
    assert version == "HTTP/1.1"
    assert status == 400
    assert body == {"message": "Bad Request"}
    assert CANARY.encode() not in raw


def test_a_bad_content_length_answers_400(endpoint: LocalEndpoint) -> None:
    raw = _raw(endpoint, b"POST /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
    assert _status_and_body(raw)[1:] == (400, {"message": "Bad Request"})


def test_a_body_over_the_api_gateway_limit_answers_413_and_the_caller_reads_it(endpoint: LocalEndpoint) -> None:
    body = b"x" * (11 * 1024 * 1024)  # the size that used to end in a connection reset
    conn = http.client.HTTPConnection("127.0.0.1", _port(endpoint), timeout=30)
    try:
        conn.request("POST", "/v1/features/summarize-thread/converse", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 413
        assert json.loads(answer.read()) == {"message": "Request Too Long"}
        assert answer.getheader("connection") == "close"
    finally:
        conn.close()


def test_a_body_at_the_limit_still_reaches_the_function(endpoint: LocalEndpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", _port(endpoint), timeout=30)
    try:
        conn.request("POST", "/v1/health", b"y" * MAX_BODY, {"Content-Type": "text/plain"})
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, str(MAX_BODY).encode())
    finally:
        conn.close()


def test_the_connection_stays_usable_after_a_normal_request(endpoint: LocalEndpoint) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", _port(endpoint), timeout=5)
    try:
        for size in (0, 3):
            conn.request("POST", "/v1/health", b"z" * size)
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, str(size).encode())
    finally:
        conn.close()

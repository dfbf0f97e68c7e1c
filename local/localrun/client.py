"""A small keep-alive HTTP client for the local endpoint (one connection per thread), standard library only."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from local.localrun.apigw import REMAINING_HEADER


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)
    elapsed_ms: float
    sent_at: float  # time.monotonic() when the request left

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def target(self) -> str | None:
        return self.header("x-spillway-target")

    @property
    def route(self) -> list[tuple[str, str]]:
        raw = self.header("x-spillway-route") or ""
        return [tuple(part.rsplit("=", 1)) for part in raw.split(",") if "=" in part]  # type: ignore[misc]


def converse_body(text: str = "Summarize the thread, please.", max_tokens: int = 64) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": text}]}], "inferenceConfig": {"maxTokens": max_tokens}}


class Client:
    def __init__(self, base_url: str, timeout_s: float = 35.0) -> None:
        split = urlsplit(base_url)
        if split.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("the local client talks to loopback only")
        self.host = split.hostname
        self.port = split.port or 80
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host or "127.0.0.1", self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        hdrs = dict(headers or {})
        sent = time.monotonic()
        for attempt in range(2):  # a keep-alive connection the server closed: reconnect once
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=hdrs)
                answer = conn.getresponse()
                data = answer.read()
                out = {k.lower(): v for k, v in answer.getheaders()}
                if answer.will_close:
                    self.close()
                return Reply(answer.status, out, data, (time.monotonic() - sent) * 1000.0, sent)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def converse(
        self,
        feature: str,
        body: Any = None,
        *,
        remaining_ms: float | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(converse_body() if body is None else body).encode()
        headers = {"Content-Type": content_type}
        if remaining_ms is not None:
            headers[REMAINING_HEADER] = str(remaining_ms)
        return self.request("POST", f"/v1/features/{feature}/converse", raw, headers)

    def get_json(self, path: str) -> Any:
        return self.request("GET", path).json()

"""Router service tests: API Gateway events into handler.lambda_handler, scripted backends, no AWS, no sleeps."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest

# Before anything imports Powertools: fake credentials, a fixed region.
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Spillway")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "spillway-router")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import handler
from local.emulator import Emulator, TargetSpec
from local.localrun.providers import LocalProviders
from spillway import telemetry
from spillway.backends.contract import BackendReply, Usage
from spillway.backends.kinds import KINDS
from spillway.config import Target
from spillway.errors import BackendError
from spillway.health import HealthBoard
from spillway.routing_source import RoutingSource
from stacks.platform import load_platform
from stacks.routing import render_routing_table
from tests.fakes import FakeClock

ROOT = Path(__file__).resolve().parents[2]
# What a fake runtime client needs of a real one: the service model the Bedrock backend walks (client.meta).
BEDROCK_META = SimpleNamespace(service_model=botocore.session.get_session().get_service_model("bedrock-runtime"))
PLATFORM = ROOT / "config" / "platform.yaml"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for key in list(os.environ):
        if key.startswith("SPILLWAY_"):
            monkeypatch.delenv(key)


def rendered_table(region: str = "us-east-1") -> dict[str, Any]:
    """The routing table CDK renders for `region` from config/platform.yaml (the real round trip)."""
    return render_routing_table(load_platform(PLATFORM), region)


@pytest.fixture(scope="session")
def table_doc() -> dict[str, Any]:
    return rendered_table()


Script = Callable[[Target, Mapping[str, Any], float], BackendReply]


class ScriptedBackend:
    """Answers per target id: a BackendError to raise, a reply, or a callable. Records every call."""

    def __init__(self, clock: FakeClock | None = None, default: Any = None) -> None:
        self.plan: dict[str, Any] = {}
        self.calls: list[tuple[str, Mapping[str, Any], float]] = []
        self.clock = clock
        self.default = default

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        self.calls.append((target.id, request, timeout_s))
        action = self.plan.get(target.id, self.default)
        if isinstance(action, list):
            action = action.pop(0) if action else self.default
        if callable(action) and not isinstance(action, BackendError):
            return action(target, request, timeout_s)  # type: ignore[no-any-return]
        if isinstance(action, BaseException):
            raise action
        if action is None:
            return ok_reply()
        return action  # type: ignore[no-any-return]

    @property
    def targets(self) -> list[str]:
        return [c[0] for c in self.calls]


def ok_reply(text: str = "fine answer", input_tokens: int = 11, output_tokens: int = 7) -> BackendReply:
    response = {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": 42},
    }
    return BackendReply(response=response, latency_ms=42.0, usage=Usage(input_tokens, output_tokens))


def converse_body(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": text}]}], **extra}


def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str | None = "application/json",
    request_id: str = "req-0001",
    base64_body: bool = False,
    raw_body: bytes | str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as API Gateway sends it with IAM auth."""
    if raw_body is not None:
        text: str | None = raw_body.decode("utf-8", "replace") if isinstance(raw_body, bytes) else raw_body
    elif body is None:
        text = None
    else:
        text = json.dumps(body)
    if base64_body and text is not None:
        text = base64.b64encode(text.encode() if raw_body is None or isinstance(raw_body, str) else raw_body).decode()
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    parts = path.strip("/").split("/")
    resource = path
    params = None
    if len(parts) == 4 and parts[:2] == ["v1", "features"]:
        resource = "/v1/features/{feature}/converse"
        params = {"feature": parts[2]}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": request_id,
            "identity": {"caller": "AROAEXAMPLE:svc", "userArn": "arn:aws:sts::111122223333:assumed-role/svc/x"},
            "accountId": "111122223333",
            "apiId": "abc123",
        },
        "body": text,
        "isBase64Encoded": base64_body,
    }


class LambdaContext:
    function_name = "spillway-router"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:111122223333:function:spillway-router"
    memory_limit_in_mb = 1024
    aws_request_id = "lambda-req-1"
    log_group_name = "/aws/lambda/spillway-router"
    log_stream_name = "2026/11/23/[$LATEST]abc"

    def __init__(self, remaining_ms: float = 29_000.0) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_ms)


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Harness:
    """handler.lambda_handler wired to a routing table document, scripted backends and fake clocks."""

    def __init__(self, doc: dict[str, Any], flags: dict[str, Any] | None = None) -> None:
        self.handler = handler
        self.clock = FakeClock()
        self.epoch = FakeClock(1_800_000_000.0)
        self.doc = doc
        self.flags = flags
        self.fetches = 0
        self.bedrock = ScriptedBackend(self.clock)
        self.sagemaker = ScriptedBackend(self.clock)
        self.source = RoutingSource(
            application="spillway",
            environment="us-east-1",
            profile="routing",
            flags_profile="flags",
            ttl_s=5.0,
            fetch=self._fetch,
            clock=self.clock,
        )
        self.health = HealthBoard(clock=self.epoch)
        self.router = handler.Router(
            self.source,
            # The example's models in other clouds (kind openai) answer as the Bedrock script says: a test that
            # throttles every managed model throttles them too.
            {"bedrock": self.bedrock, "sagemaker": self.sagemaker, "openai": self.bedrock},
            region="us-east-1",
            health=self.health,
            clock=self.clock,
        )
        handler.set_router(self.router)

    def _fetch(self, url: str, timeout_s: float) -> tuple[int, bytes, str | None]:
        self.fetches += 1
        if url.endswith("/flags"):
            return (200, json.dumps(self.flags).encode(), "f1") if self.flags is not None else (404, b"", None)
        return 200, json.dumps(self.doc).encode(), "7"

    def call(self, event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
        return self.handler.lambda_handler(event, context or LambdaContext())

    def converse(self, feature: str = "summarize-thread", body: Any = None, **kw: Any) -> dict[str, Any]:
        path = f"/v1/features/{feature}/converse"
        return self.call(api_event("POST", path, body=converse_body() if body is None else body, **kw))


@pytest.fixture
def harness(table_doc: dict[str, Any]) -> Iterator[Harness]:
    h = Harness(table_doc)
    yield h
    h.handler.set_router(None)


TRACE_ROOT = "1-67a1b2c3-0123456789abcdef01234567"
TRACE_PARENT = "53995c3f42cd8ad8"


class XRayDaemon:
    """A UDP socket on loopback where the router's spans arrive, as Lambda's X-Ray daemon would receive them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.raw: list[bytes] = []

    def received(self) -> list[bytes]:
        """Every datagram sent so far (UDP on loopback: a sent datagram is already queued here)."""
        while True:
            try:
                self.raw.append(self.sock.recv(65535))
            except BlockingIOError:
                return self.raw

    def documents(self) -> list[dict[str, Any]]:
        docs = []
        for datagram in self.received():
            header_line, _, document = datagram.partition(b"\n")
            assert json.loads(header_line) == {"format": "json", "version": 1}
            docs.append(json.loads(document))
        return docs


@pytest.fixture
def xray(monkeypatch: pytest.MonkeyPatch) -> Iterator[XRayDaemon]:
    """Lambda's tracing environment for a sampled invocation: the trace header and the daemon's address."""
    daemon = XRayDaemon()
    monkeypatch.setenv("AWS_XRAY_DAEMON_ADDRESS", daemon.address)
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={TRACE_ROOT};Parent={TRACE_PARENT};Sampled=1")
    yield daemon
    daemon.sock.close()


def body_of(response: Mapping[str, Any]) -> Any:
    return json.loads(response["body"])


def header(response: Mapping[str, Any], name: str) -> str | None:
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    multi = {k.lower(): v for k, v in (response.get("multiValueHeaders") or {}).items()}
    if name.lower() in headers:
        return str(headers[name.lower()])
    values = multi.get(name.lower())
    return str(values[0]) if values else None


# -- the router as deployed, against the loopback emulator ---------------------------------------------------

APP, ENV, PROFILE = "spillway", "us-east-1", "routing"


def _specs(table: dict[str, Any]) -> list[TargetSpec]:
    specs = {}
    for target in table["targets"].values():
        backend = target["backend"]
        kind = backend["kind"]
        wire_id = backend[KINDS[kind].ref_field]  # what the kind invokes (model id, endpoint name, model name)
        specs[(target["region"], kind, wire_id)] = TargetSpec(target["region"], kind, wire_id, echo=True)
    return list(specs.values())


def emulator_environment(emu: Emulator) -> dict[str, str]:
    """What the router reads to reach the emulator's runtimes and AppConfig stand-in."""
    env = {"SPILLWAY_ENDPOINT_URL_" + r.upper().replace("-", "_"): url for r, url in emu.endpoint_urls().items()}
    env.update(
        SPILLWAY_APPCONFIG_URL=emu.appconfig_url,
        SPILLWAY_APPCONFIG_APPLICATION=APP,
        SPILLWAY_APPCONFIG_ENVIRONMENT=ENV,
        SPILLWAY_APPCONFIG_PROFILE=PROFILE,
    )
    return env


@contextmanager
def emulated_router(table: dict[str, Any], patch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator serving every target of `table` and its AppConfig stand-in, the router's environment pointing
    at them (the router is built from the environment on its next use)."""
    providers = LocalProviders(table)  # other clouds' targets: the emulator's, their token exchange on loopback
    with Emulator(_specs(table)) as emu:
        providers.start(emu, table, with_secrets=False)
        emu.set_configuration(APP, ENV, PROFILE, providers.localize(table, emu))
        for name, value in {**emulator_environment(emu), **providers.env()}.items():
            patch.setenv(name, value)
        handler.set_router(None)
        try:
            yield emu
        finally:
            handler.set_router(None)
            providers.stop()


@pytest.fixture
def emulated(table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with emulated_router(table_doc, monkeypatch) as emu:
        yield emu


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Everything the Powertools Logger writes (its handler holds the stdout of import time: swap its stream)."""
    handler = telemetry.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    # The logger is process-wide: another suite (the local world) may have quieted it. Every level is checked here.
    level = telemetry.logger.log_level
    telemetry.logger.setLevel("DEBUG")
    yield buffer
    telemetry.logger.setLevel(level)
    handler.setStream(previous)

"""The openai backend kind against a scripted loopback server: the wire request, auth, and the error taxonomy."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from spillway.backends import ClientPool
from spillway.backends.kinds import OpenAIRef, make_backends
from spillway.backends.openai_compat import (
    OpenAICompatBackend,
    SecretsManagerKeys,
    StaticKeys,
    retry_after_s,
    sigv4_signer,
)
from spillway.config import RoutingConfigError, Target, parse_routing_table
from spillway.errors import BackendError, ErrorClass
from tests.fakes import FakeClock

OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


class Scripted:
    """A loopback Chat Completions server answering each POST with the next (status, headers, body)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw)))
                status, headers, body = owner.answers.pop(0) if owner.answers else (200, {}, OK)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Scripted]:
    scripted = Scripted()
    yield scripted
    scripted.server.shutdown()
    scripted.server.server_close()


def _target(ref: OpenAIRef) -> Target:
    return Target("gpt-oss/on_demand/us-east-1", "gpt-oss", "on_demand", "us-east-1", ref)


def _request(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": "hello"}]}], **extra}


def test_a_keyed_call_sends_chat_completions_with_the_bearer_key(server: Scripted) -> None:
    ref = OpenAIRef(server.url, "gpt-oss-120b", "secret", secret_id="azure-key")
    backend = OpenAICompatBackend(keys=StaticKeys({"azure-key": "k-123"}))
    reply = backend.invoke(_target(ref), _request(inferenceConfig={"maxTokens": 9}), 5.0)
    assert reply.response["output"]["message"]["content"] == [{"text": "hi"}]
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 2)
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == "Bearer k-123"
    assert body == {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 9}


def test_sigv4_signs_for_the_targets_region_and_service(server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    ref = OpenAIRef(server.url, "openai.gpt-oss-120b-1:0", "sigv4")
    OpenAICompatBackend(signer=sigv4_signer()).invoke(_target(ref), _request(), 5.0)
    headers = server.requests[0][1]
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/bedrock/aws4_request" in headers["authorization"]
    assert "x-amz-date" in headers


def test_images_structured_output_and_tools_are_rendered(server: Scripted) -> None:
    ref = OpenAIRef(server.url, "m", "secret", secret_id="s", images=True)
    request = {
        "messages": [
            {"role": "user", "content": [{"text": "see"}, {"image": {"format": "png", "source": {"bytes": "AAAA"}}}]}
        ],
        "outputConfig": {
            "textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {"schema": '{"type":"object"}', "name": "r"}},
            }
        },
        "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]},
    }
    OpenAICompatBackend(keys=StaticKeys({"s": "k"})).invoke(_target(ref), request, 5.0)
    body = server.requests[0][2]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": {"type": "object"}},
    }
    assert body["tools"][0]["function"]["name"] == "f"


def test_what_the_target_cannot_express_is_a_client_error_before_any_call(server: Scripted) -> None:
    text_only = OpenAIRef(server.url, "m", "secret", secret_id="s")
    backend = OpenAICompatBackend(keys=StaticKeys({"s": "k"}))
    image = {"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "AAAA"}}}]}
    for request in (_request(guardrailConfig={"guardrailIdentifier": "g"}), {"messages": [image]}):
        with pytest.raises(BackendError) as caught:
            backend.invoke(_target(text_only), request, 5.0)
        assert caught.value.error_class is ErrorClass.CLIENT
    assert server.requests == []


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry"),
    [
        (429, {"Retry-After": "7"}, {"error": {"message": "slow down"}}, ErrorClass.CAPACITY, 7.0),
        (429, {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, {}, ErrorClass.CAPACITY, 360.0),
        (500, {}, {}, ErrorClass.UNAVAILABLE, None),
        (503, {}, {}, ErrorClass.UNAVAILABLE, None),
        (408, {}, {}, ErrorClass.UNAVAILABLE, None),
        (401, {}, {}, ErrorClass.OURS, None),
        (403, {}, {}, ErrorClass.OURS, None),
        (404, {}, {}, ErrorClass.OURS, None),
        (400, {}, {"error": {"message": "bad"}}, ErrorClass.CLIENT, None),
        (422, {}, {}, ErrorClass.CLIENT, None),
    ],
)
@pytest.mark.parametrize("call", ["invoke", "open_stream"])
def test_each_status_has_its_class(  # noqa: PLR0917 (pytest passes parameters by position)
    server: Scripted,
    status: int,
    headers: dict[str, str],
    body: Any,
    expected: ErrorClass,
    retry: float | None,
    call: str,
) -> None:
    """The same taxonomy whether the request is whole or streamed (a stream refused before it starts)."""
    server.answers.append((status, headers, body))
    if status == 401:
        server.answers.append((status, headers, body))  # the key is refused again after a fresh read
    ref = OpenAIRef(server.url, "m", "secret", secret_id="s")
    with pytest.raises(BackendError) as caught:
        getattr(OpenAICompatBackend(keys=StaticKeys({"s": "k"})), call)(_target(ref), _request(), 5.0)
    assert caught.value.error_class is expected
    assert caught.value.retry_after_s == retry
    assert "slow down" not in repr(caught.value)


def test_a_context_overflow_is_a_client_error_that_says_so(server: Scripted) -> None:
    server.answers.append((400, {}, {"error": {"code": "context_length_exceeded", "message": "x"}}))
    ref = OpenAIRef(server.url, "m", "secret", secret_id="s")
    with pytest.raises(BackendError) as caught:
        OpenAICompatBackend(keys=StaticKeys({"s": "k"})).invoke(_target(ref), _request(), 5.0)
    assert caught.value.error_class is ErrorClass.CLIENT
    assert caught.value.context_overflow


def test_a_malformed_200_and_a_timeout_are_unavailable(server: Scripted) -> None:
    ref = OpenAIRef(server.url, "m", "secret", secret_id="s")
    backend = OpenAICompatBackend(keys=StaticKeys({"s": "k"}))
    server.answers.append((200, {}, b"not json"))
    with pytest.raises(BackendError) as caught:
        backend.invoke(_target(ref), _request(), 5.0)
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.UNAVAILABLE, "MalformedOpenAIResponse")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever answers
        silent_ref = OpenAIRef(f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "m", "secret", secret_id="s")
        with pytest.raises(BackendError) as caught:
            backend.invoke(_target(silent_ref), _request(), 0.3)
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.UNAVAILABLE, "ReadTimeout")


def test_kept_connections_are_reused(server: Scripted) -> None:
    ref = OpenAIRef(server.url, "m", "secret", secret_id="s")
    backend = OpenAICompatBackend(keys=StaticKeys({"s": "k"}))
    for _ in range(3):
        backend.invoke(_target(ref), _request(), 5.0)
    assert len(server.requests) == 3
    assert len(backend._local.pool) == 1  # one connection for the host


class _Secrets:
    def __init__(self) -> None:
        self.value = "v1"
        self.reads = 0

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        self.reads += 1
        return {"SecretString": f"{SecretId}:{self.value}"}


def test_secrets_are_cached_then_reread_after_their_ttl_or_a_401() -> None:
    clock = FakeClock()
    secrets = _Secrets()
    keys = SecretsManagerKeys(lambda region: secrets, ttl_s=300.0, clock=clock)
    assert keys.key("s", "us-east-1") == "s:v1"
    secrets.value = "v2"  # rotated
    assert keys.key("s", "us-east-1") == "s:v1"
    clock.advance(301.0)
    assert keys.key("s", "us-east-1") == "s:v2"
    secrets.value = "v3"
    keys.forget("s")
    assert keys.key("s", "us-east-1") == "s:v3"
    assert secrets.reads == 3


def test_a_rotated_key_costs_no_request_one_fresh_read_and_resend(server: Scripted) -> None:
    secrets = _Secrets()
    backend = OpenAICompatBackend(keys=SecretsManagerKeys(lambda region: secrets, clock=FakeClock()))
    ref = OpenAIRef(server.url, "m", "secret", secret_id="s")
    backend.invoke(_target(ref), _request(), 5.0)
    secrets.value = "v2"  # rotated: the provider takes only the new key
    server.answers.append((401, {}, {"error": {"code": "invalid_api_key"}}))
    reply = backend.invoke(_target(ref), _request(), 5.0)
    assert reply.response["output"]["message"]["content"] == [{"text": "hi"}]
    assert [h["authorization"] for _, h, _ in server.requests] == ["Bearer s:v1", "Bearer s:v1", "Bearer s:v2"]
    assert secrets.reads == 2


def test_a_rotated_key_costs_no_stream_either(server: Scripted) -> None:
    """open_stream as invoke: a 401 on the cached key drops it, reads the new one and asks for the stream again."""
    secrets = _Secrets()
    backend = OpenAICompatBackend(keys=SecretsManagerKeys(lambda region: secrets, clock=FakeClock()))
    ref = OpenAIRef(server.url, "m", "secret", secret_id="s")
    backend.open_stream(_target(ref), _request(), 5.0).close()
    secrets.value = "v2"
    server.answers.append((401, {}, {"error": {"code": "invalid_api_key"}}))
    backend.open_stream(_target(ref), _request(), 5.0).close()  # 200: the stream opened with the new key
    assert [h["authorization"] for _, h, _ in server.requests] == ["Bearer s:v1", "Bearer s:v1", "Bearer s:v2"]
    assert all(body["stream"] is True for _, _, body in server.requests)
    assert secrets.reads == 2


def test_sigv4_does_not_resend_on_a_401(server: Scripted) -> None:
    server.answers.append((401, {}, {}))
    ref = OpenAIRef(server.url, "m", "sigv4")
    backend = OpenAICompatBackend(keys=StaticKeys({}), signer=lambda url, body, headers, region, service: headers)
    with pytest.raises(BackendError):
        backend.invoke(_target(ref), _request(), 5.0)
    assert len(server.requests) == 1


def test_retry_after_headers() -> None:
    assert retry_after_s({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_s({"x-ratelimit-reset-tokens": "20ms"}) == 0.02
    assert retry_after_s({"x-ratelimit-reset-requests": "1h2m3.5s"}) == 3723.5
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_s({"x-ratelimit-reset-requests": "soon"}) is None


def _table(backend: dict[str, Any]) -> dict[str, Any]:
    target = {"model": "gpt-oss", "capacity": "on_demand", "region": "us-east-1", "backend": backend}
    feature = {
        "first_capacity": "on_demand",
        "models": ["gpt-oss"],
        "home_region": "us-east-1",
        "deadline_ms": 10000,
        "attempt_timeout_ms": {"min": 300, "max": 5000},
        "max_attempts": 2,
    }
    return {"version": 1, "targets": {"gpt-oss/on_demand/us-east-1": target}, "features": {"f": feature}}


@pytest.mark.parametrize(
    ("backend", "path", "problem"),
    [
        ({"auth": "workload_identity"}, "audience", "required"),
        ({"auth": "sigv4", "audience": "a"}, "audience", "only with it"),
        ({"auth": "apikey"}, "auth", "must be one of"),
        ({"auth": "secret"}, "secret_id", "required"),
        ({"auth": "sigv4", "secret_id": "s"}, "secret_id", "only with it"),
        ({"base_url": "http://models.example.com/v1"}, "base_url", "https"),
        ({"images": "yes"}, "images", "true or false"),
    ],
)
def test_bad_openai_backends_are_refused_by_key(backend: dict[str, Any], path: str, problem: str) -> None:
    base = {"kind": "openai", "base_url": "https://bedrock-mantle.us-east-1.api.aws/v1", "model": "m", "auth": "sigv4"}
    with pytest.raises(RoutingConfigError) as caught:
        parse_routing_table(_table({**base, **backend}))
    assert caught.value.path.endswith(f"backend.{path}")
    assert problem in caught.value.problem


def test_a_good_openai_backend_parses() -> None:
    backend = {"kind": "openai", "base_url": "https://h/v1/", "model": "m", "auth": "secret", "secret_id": "s"}
    table = parse_routing_table(_table(backend))
    assert table.targets["gpt-oss/on_demand/us-east-1"].backend == OpenAIRef("https://h/v1", "m", "secret", "s")


def test_the_registrys_default_reads_the_key_from_secrets_manager(server: Scripted) -> None:
    """Built as the registry builds it (with the shared client pool), the key comes from Secrets Manager (moto)."""
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        import boto3  # noqa: PLC0415

        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        secrets.create_secret(Name="azure-openai-key", SecretString="sk-from-secrets-manager")
        backend = make_backends(ClientPool())["openai"]
        ref = OpenAIRef(server.url, "m", "secret", secret_id="azure-openai-key")
        backend.invoke(_target(ref), _request(), 5.0)
        with pytest.raises(BackendError) as caught:  # a secret that does not exist is ours, never the caller's
            backend.invoke(_target(OpenAIRef(server.url, "m", "secret", secret_id="missing")), _request(), 5.0)
    assert server.requests[0][1]["authorization"] == "Bearer sk-from-secrets-manager"
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.OURS, "SecretUnavailable")
    assert len(server.requests) == 1

"""OpenAI-compatible Chat Completions endpoints: Bedrock's OpenAI-compatible endpoints, vLLM and the like.

One POST to ``<base_url>/chat/completions`` per attempt over the standard library's http.client (no new Lambda
dependency), its socket timeout the attempt's budget. Keep-alive connections are kept per thread and host; a kept
connection the server closed meanwhile is reopened once before anything was sent back.

Auth (``OpenAIRef.auth``): ``sigv4`` signs with the function's role through botocore's SigV4Auth (imported on first
use, like boto3 elsewhere); ``secret`` sends ``Authorization: Bearer <key>``, the key read through a KeySource
(Secrets Manager in AWS, cached for KEY_TTL_S so a rotation is picked up; a 401 drops the cached key at once; a
static mapping locally); ``workload_identity`` sends ``Authorization: Bearer <access token>`` from the provider's
token exchange (workload_identity.py). A 401 on a cached key or token drops it and sends once more with a fresh one
within the attempt's budget, so a rotation or a revocation costs no request; a second 401 is ours.

Translation: the Converse request is rendered as chat completions JSON as for SageMaker (sagemaker.to_chat's
rules) plus what this kind adds: image blocks as base64 data URLs (when the target says ``images``), Converse's
structured output (``outputConfig``) as ``response_format`` json_schema, ``requestMetadata`` as ``metadata``.
Any other member is this target's client error, never a silent drop.

Streaming (``open_stream``): the same request with ``stream: true`` and ``stream_options.include_usage``, on a
connection of its own; the server-sent chunks become ConverseStream events by chat_stream's rules (SageMaker's
containers speak the same chunks), so Engine.stream serves and fails over openai targets as any other.

Error taxonomy, by status: 429 is capacity (Retry-After, retry-after-ms or the x-ratelimit-reset-* headers give the
cooldown); 408, 5xx, timeouts and connection failures are unavailable; 401/403/404 are ours (a deployment bug);
other 4xx are the caller's (a context-window overflow said so). The endpoint's message is read for that one
boolean and dropped.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit

from ..config import Target
from ..errors import _OVERFLOW, BackendError, ErrorClass
from ..streaming import BackendStream, StreamEvent
from . import MAX_CONNECT_TIMEOUT_S, ClientPool, malformed
from .chat import from_chat, to_chat
from .chat_stream import translate
from .contract import BackendReply
from .kinds import KINDS, OpenAIRef
from .workload_identity import FederatedTokens

KEY_TTL_S = 300.0
SECRET_TIMEOUT_S = 2.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
READ_CHUNK = 64 * 1024
IDLE_PER_HOST = 4  # streams' idle connections kept per host
SOURCE = "OpenAI"  # names this kind's stream errors: MalformedOpenAIStream, IncompleteOpenAIStream
# Converse members this kind renders; any other is refused (UnsupportedRequestMember).
_RENDERED = frozenset({"messages", "system", "inferenceConfig", "toolConfig", "outputConfig", "requestMetadata"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class KeySource(Protocol):
    """Where a bearer key comes from. ``forget`` drops a cached key (the endpoint refused it: maybe rotated)."""

    def key(self, secret_id: str, region: str, /) -> str: ...

    def forget(self, secret_id: str, /) -> None: ...


class StaticKeys:
    """Keys from a mapping: the local stand-in for Secrets Manager (tests, the local worlds)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def key(self, secret_id: str, _region: str, /) -> str:
        try:
            return self._keys[secret_id]
        except KeyError:
            raise BackendError(ErrorClass.OURS, "SecretNotFound") from None

    def forget(self, _secret_id: str, /) -> None:
        return None  # nothing cached


class SecretsManagerKeys:
    """GetSecretValue through boto3 (its PrivateLink endpoint in the VPC), each key cached for ``ttl_s``."""

    def __init__(
        self,
        make_client: Callable[[str], Any],
        *,
        ttl_s: float = KEY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_client = make_client
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}

    def key(self, secret_id: str, region: str, /) -> str:
        cached = self._cache.get(secret_id)
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        try:
            value = self._make_client(region).get_secret_value(SecretId=secret_id)["SecretString"]
        except Exception:  # the secret's own error is ours to fix, never the caller's; its message is dropped
            raise BackendError(ErrorClass.OURS, "SecretUnavailable") from None
        with self._lock:
            self._cache[secret_id] = (value, self._clock() + self._ttl_s)
        return str(value)

    def forget(self, secret_id: str, /) -> None:
        with self._lock:
            self._cache.pop(secret_id, None)


# (url, body, headers, region, service) -> the headers of the signed POST
Signer = Callable[[str, bytes, dict[str, str], str, str], dict[str, str]]


def sigv4_signer() -> Signer:
    """Signs with the function's role: botocore's credential chain and SigV4Auth, loaded on first use."""
    holder: list[Any] = []

    def sign(url: str, body: bytes, headers: dict[str, str], region: str, service: str) -> dict[str, str]:
        auth: Any = importlib.import_module("botocore.auth")
        awsrequest: Any = importlib.import_module("botocore.awsrequest")
        if not holder:
            session: Any = importlib.import_module("botocore.session")
            holder.append(session.get_session().get_credentials())
        credentials = holder[0]
        if credentials is None:
            raise BackendError(ErrorClass.OURS, "NoCredentials")
        request = awsrequest.AWSRequest(method="POST", url=url, data=body, headers=headers)
        auth.SigV4Auth(credentials.get_frozen_credentials(), service, region).add_auth(request)
        return dict(request.headers.items())

    return sign


class OpenAICompatBackend:
    """The ``openai`` backend kind. Built by the registry with the shared client pool, whose Secrets Manager client
    (endpoint URL overrides included) reads the keys; tests pass ``keys`` and ``signer`` stand-ins."""

    SERVICE = KINDS["openai"].service

    def __init__(
        self,
        pool: ClientPool | None = None,
        *,
        keys: KeySource | None = None,
        signer: Signer | None = None,
        tokens: FederatedTokens | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        shared = pool if pool is not None else ClientPool()
        if keys is None:
            keys = SecretsManagerKeys(lambda region: shared.client("secretsmanager", region, SECRET_TIMEOUT_S)[0])
        if tokens is None:
            tokens = FederatedTokens(lambda region: shared.client("sts", region, SECRET_TIMEOUT_S)[0])
        self._keys = keys
        self._tokens = tokens
        self._signer = signer
        self._clock = clock
        self._local = threading.local()
        self._idle = IdleConnections()

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        ref, url, body, headers = self._chat_request(target, request, stream=False)
        t0 = self._clock()
        status, response_headers, raw = self._post(
            url, body, self._authorize(ref, target.region, url, body, headers), timeout_s
        )
        if status == 401 and self._forget_credential(ref):
            # A cached key or token the provider no longer takes (rotated, revoked): fetch a fresh one and send
            # once more, within the attempt's budget, so a rotation costs no request.
            remaining_s = timeout_s - (self._clock() - t0)
            if remaining_s > 0:
                fresh = self._authorize(ref, target.region, url, body, headers)
                status, response_headers, raw = self._post(url, body, fresh, remaining_s)
                if status == 401:
                    self._forget_credential(ref)
        elapsed_ms = (self._clock() - t0) * 1000.0
        if status != 200:
            raise error_for(status, response_headers, raw)
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise malformed("OpenAI") from None
        try:
            return from_chat(answer, elapsed_ms)
        except BackendError as error:
            if error.error_class is ErrorClass.UNAVAILABLE:
                raise malformed("OpenAI") from None
            raise

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendStream:
        """The same request with ``stream: true`` (and the usage chunk asked for). The engine's pump reads it on
        another thread, and abandoning it must cut a blocked read: so a stream has a connection to itself, taken
        from the connections whose last stream was read to its end (no new handshake) or opened, and given back only
        when this stream too ends cleanly. A non-200 answer is the same taxonomy as :meth:`invoke`'s; the chunks
        become ConverseStream events (chat_stream.translate)."""
        ref, url, body, headers = self._chat_request(target, request, stream=True)
        parts = urlsplit(url)
        t0 = self._clock()
        conn, response = self._start_stream(
            parts, body, self._authorize(ref, target.region, url, body, headers), timeout_s
        )
        if response.status == 401 and self._forget_credential(ref):
            # As invoke does: a cached key or token the provider no longer takes is fetched afresh and the stream
            # asked for once more, within the attempt's budget.
            remaining_s = timeout_s - (self._clock() - t0)
            if remaining_s > 0:
                _read_and_close(conn, response)
                fresh = self._authorize(ref, target.region, url, body, headers)
                conn, response = self._start_stream(parts, body, fresh, remaining_s)
                if response.status == 401:
                    self._forget_credential(ref)
        if response.status != 200:
            raw = _read_and_close(conn, response)
            raise error_for(response.status, {k.lower(): v for k, v in response.getheaders()}, raw)
        keep = None if response.will_close else (lambda c: self._idle.give(parts.netloc, c))
        return ChatHttpStream(conn, response, self._clock, keep=keep)

    def _start_stream(
        self, parts: SplitResult, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The stream's connection and its response's head; a kept connection the server closed meanwhile is
        replaced once, before anything was sent back."""
        for attempt in (0, 1):
            conn = self._idle.take(parts.netloc, timeout_s)
            reused = conn is not None
            if conn is None:
                conn = _open(parts.scheme, parts.netloc, timeout_s)
            try:
                conn.request("POST", parts.path or "/", body=body, headers=headers)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__) from None
            except TimeoutError:
                conn.close()
                raise BackendError(ErrorClass.UNAVAILABLE, "ReadTimeout") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__) from None
        raise BackendError(ErrorClass.UNAVAILABLE, "ConnectionClosed")  # pragma: no cover (the loop returns)

    def _chat_request(
        self, target: Target, request: Mapping[str, Any], *, stream: bool
    ) -> tuple[OpenAIRef, str, bytes, dict[str, str]]:
        """(the reference, the URL, the body, the headers before authorization) of one chat completions POST; a
        streamed one asks for the stream and its usage chunk."""
        ref = target.backend
        if not isinstance(ref, OpenAIRef):
            raise BackendError(ErrorClass.OURS, "WrongBackendKind")
        try:
            payload = to_openai(request, ref)
        except BackendError:
            raise
        except (TypeError, AttributeError, ValueError, KeyError):
            raise BackendError(ErrorClass.CLIENT, "InvalidRequestForTarget", 400) from None
        if stream:
            payload.update(stream=True, stream_options={"include_usage": True})
        body = json.dumps(payload, separators=(",", ":")).encode()
        accept = "text/event-stream" if stream else "application/json"
        return ref, ref.base_url + "/chat/completions", body, {"Content-Type": "application/json", "Accept": accept}

    def _forget_credential(self, ref: OpenAIRef) -> bool:
        """Drop a cached bearer credential (a key or an access token); False when the auth has none (SigV4)."""
        if ref.secret_id is not None:
            self._keys.forget(ref.secret_id)
            return True
        if ref.auth == "workload_identity":
            self._tokens.forget(ref)
            return True
        return False

    def _authorize(self, ref: OpenAIRef, region: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        if ref.auth == "secret":
            if ref.secret_id is None:
                raise BackendError(ErrorClass.OURS, "NoSecretId")
            return {**headers, "Authorization": "Bearer " + self._keys.key(ref.secret_id, region)}
        if ref.auth == "workload_identity":
            return {**headers, "Authorization": "Bearer " + self._tokens.token(ref, region)}
        if self._signer is None:
            self._signer = sigv4_signer()
        return self._signer(url, body, headers, region, ref.signing_service)

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        parts = urlsplit(url)
        path = parts.path or "/"
        for attempt in (0, 1):
            conn, reused = self._connection(parts.scheme, parts.netloc, timeout_s)
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read(MAX_RESPONSE_BYTES + 1)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(parts.netloc)
                if reused and attempt == 0:
                    continue  # the server closed a kept connection: reopen once
                raise BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__) from None
            except TimeoutError:
                self._drop(parts.netloc)
                raise BackendError(ErrorClass.UNAVAILABLE, "ReadTimeout") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(parts.netloc)
                raise BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__) from None
            if len(raw) > MAX_RESPONSE_BYTES:
                self._drop(parts.netloc)
                raise malformed("OpenAI")
            if response.will_close:
                self._drop(parts.netloc)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, raw
        raise BackendError(ErrorClass.UNAVAILABLE, "ConnectionClosed")  # pragma: no cover (the loop returns)

    def _connection(self, scheme: str, netloc: str, timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get(netloc)
        if conn is not None:
            conn.timeout = timeout_s
            if conn.sock is not None:
                conn.sock.settimeout(timeout_s)
            return conn, conn.sock is not None
        conn = _open(scheme, netloc, timeout_s)
        pool[netloc] = conn
        return conn, False

    def _drop(self, netloc: str) -> None:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.pop(netloc, None)
        if conn is not None:
            conn.close()


def _read_and_close(conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> bytes:
    """A refused stream's body (for its error's class), and its connection closed: it is not kept."""
    try:
        return response.read(MAX_RESPONSE_BYTES)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        conn.close()


def _open(scheme: str, netloc: str, timeout_s: float) -> http.client.HTTPConnection:
    """A new connection: connected within the connect bound, its socket timeout the attempt's budget."""
    make = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = make(netloc, timeout=min(MAX_CONNECT_TIMEOUT_S, timeout_s))
    try:
        conn.connect()
    except TimeoutError:
        raise BackendError(ErrorClass.UNAVAILABLE, "ConnectTimeout") from None
    except OSError as exc:
        raise BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__) from None
    assert conn.sock is not None
    conn.sock.settimeout(timeout_s)
    return conn


class IdleConnections:
    """Connections whose last stream was read to its end, per host, for the next stream (no handshake): a few only,
    as a Lambda environment serves one request at a time."""

    def __init__(self, per_host: int = IDLE_PER_HOST) -> None:
        self._per_host = per_host
        self._lock = threading.Lock()
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}

    def take(self, netloc: str, timeout_s: float) -> http.client.HTTPConnection | None:
        with self._lock:
            kept = self._idle.get(netloc)
            conn = kept.pop() if kept else None
        if conn is not None and conn.sock is not None:
            conn.timeout = timeout_s
            conn.sock.settimeout(timeout_s)
            return conn
        return None

    def give(self, netloc: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            kept = self._idle.setdefault(netloc, [])
            if len(kept) < self._per_host and conn.sock is not None:
                kept.append(conn)
                return
        conn.close()

    def count(self, netloc: str) -> int:
        with self._lock:
            return len(self._idle.get(netloc, ()))


class ChatHttpStream:
    """An open chat completions stream read as ConverseStream events. close() gives the connection back (``keep``)
    when the stream was read to its end, and otherwise cuts it, which also ends a read blocked in another thread."""

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        clock: Callable[[], float],
        keep: Callable[[http.client.HTTPConnection], None] | None = None,
    ) -> None:
        self._conn = conn
        self._response = response
        self._clock = clock
        self._keep = keep
        self._read_whole = False

    def _parts(self) -> Iterator[bytes]:
        try:
            while True:
                data = self._response.read1(READ_CHUNK)  # what has arrived, as soon as it has (chunked or not)
                if not data:
                    return
                yield data
        except TimeoutError:
            raise BackendError(ErrorClass.UNAVAILABLE, "ReadTimeout") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: read after close
            raise BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__) from None

    def __iter__(self) -> Iterator[StreamEvent]:
        yield from translate(self._parts(), self._clock, source=SOURCE)
        self._read_whole = self._response.isclosed()  # [DONE] and the body's end: the connection is reusable

    def close(self) -> None:
        if self._read_whole and self._keep is not None:
            keep, self._keep = self._keep, None
            keep(self._conn)
            return
        # Closing the response does not wake a read blocked on the socket in the pump's thread: shut the socket
        # down first, so that read ends now.
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()


def error_for(status: int, headers: Mapping[str, str], raw: bytes) -> BackendError:
    """A non-200 answer as a BackendError (code ``OpenAIHttp<status>``), by the taxonomy above."""
    code = f"OpenAIHttp{status}"
    if status == 429:
        return BackendError(ErrorClass.CAPACITY, code, 429, retry_after_s(headers))
    if status == 408 or status >= 500:
        return BackendError(ErrorClass.UNAVAILABLE, code, status)
    if status in (401, 403, 404):
        return BackendError(ErrorClass.OURS, code, status)
    if 400 <= status < 500:
        return BackendError(ErrorClass.CLIENT, code, 400, context_overflow=_overflow(raw))
    return BackendError(ErrorClass.UNAVAILABLE, code, status)  # 1xx/3xx: not an answer this client can use


def _overflow(raw: bytes) -> bool:
    try:
        error = json.loads(raw).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False
    if not isinstance(error, Mapping):
        return False
    if error.get("code") == "context_length_exceeded":
        return True
    message = error.get("message")
    return isinstance(message, str) and bool(_OVERFLOW.search(message))


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Retry-After (seconds), retry-after-ms, else the later of OpenAI's x-ratelimit-reset-requests/-tokens."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue  # an HTTP date: the reset headers or the capacity cooldown apply
            if seconds >= 0:
                return seconds
    resets = [_duration(headers.get(name)) for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


def _duration(value: str | None) -> float | None:
    """OpenAI's reset durations: "20ms", "1s", "6m0s", "1h2m3.5s"."""
    if not value:
        return None
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


# -- translation -------------------------------------------------------------------------------------------------


def to_openai(request: Mapping[str, Any], ref: OpenAIRef) -> dict[str, Any]:
    for key in request:
        if key not in _RENDERED:
            raise BackendError(ErrorClass.CLIENT, "UnsupportedRequestMember", 400)
    payload: dict[str, Any] = {"model": ref.model, **to_chat(request, images=ref.images)}  # SageMaker's rules too
    if "outputConfig" in request:
        payload["response_format"] = _response_format(request["outputConfig"])
    if request.get("requestMetadata"):
        payload["metadata"] = dict(request["requestMetadata"])
    return payload


def _response_format(output: Mapping[str, Any]) -> dict[str, Any]:
    if set(output) - {"textFormat"}:
        raise BackendError(ErrorClass.CLIENT, "UnsupportedRequestMember", 400)
    text_format = output["textFormat"]
    definition = text_format["structure"]["jsonSchema"]
    if text_format.get("type") != "json_schema":
        raise BackendError(ErrorClass.CLIENT, "UnsupportedRequestMember", 400)
    spec: dict[str, Any] = {"name": definition.get("name") or "output", "schema": json.loads(definition["schema"])}
    if definition.get("description"):
        spec["description"] = definition["description"]
    return {"type": "json_schema", "json_schema": spec}

"""The router Lambda: API Gateway (REST, IAM auth) -> validation -> engine -> Converse-shaped answer.

Routes (docs/openapi.json is generated from spillway/api.py, which these follow):

- ``POST /v1/features/{feature}/converse``: a Converse request (every ConverseRequest member but modelId and
  promptVariables; spillway/api.py);
  answers Converse's response (output, stopReason, usage, metrics) with the headers ``x-spillway-target``
  (model/capacity/region), ``x-spillway-attempts``, ``x-spillway-route`` and ``x-spillway-request-id``.
- ``GET /v1/features``: the features this deployment serves. ``GET /v1/health``: this instance's view of its
  targets (no ARNs, no secrets).
- ``POST /v1/features/{feature}/converse-stream``: the same request, answered as server-sent events
  (spillway/sse.py). ``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI-compatible door
  (spillway/openai_api.py; ``stream: true`` answers chat.completion.chunk events, spillway/openai_stream.py), errors
  in OpenAI's shape. Both streaming routes run through :func:`lambda_stream_handler` in Lambda's streaming mode, and
  through :func:`lambda_handler` (the chunks delivered at the end) behind a buffered integration.

Statuses: 200; 400 BadRequest / InvalidJson / a model's client-error code (its message withheld); 404
UnknownFeature / NotFound; 405 MethodNotAllowed; 413 PayloadTooLarge; 415 UnsupportedMediaType; 503 NoCapacity
(with Retry-After) or ConfigUnavailable; 504 DeadlineExceeded; 502 RouterError for anything unexpected. Never a
500; never the caller's content in an error. Every error body is ``{"error": {"code", "message", "request_id"}}``.

Settings: spillway/settings.py reads every environment variable once, when the router is built (at Lambda init),
and refuses a bad value with an error naming it.

This module is the composition root: it builds the router from the settings (a function per dependency) and
adapts API Gateway events to the engine. Request validation lives in spillway/api.py, the informational bodies in
spillway/views.py, metrics, logs and traces in spillway/telemetry.py.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from spillway import api, openai_api, openai_stream, sse, telemetry, views
from spillway.backends import ClientPool
from spillway.backends.contract import Backend
from spillway.backends.kinds import make_backends
from spillway.capacity import InflightTracker
from spillway.engine import Engine, RouteResult, Status
from spillway.fleet import Fleet, TargetState
from spillway.fleet_store import ValkeyFleetStore, iam_credentials
from spillway.health import HealthBoard
from spillway.routing_source import CANARY_SUFFIX, RoutingSource, Snapshot
from spillway.settings import Settings
from spillway.shadow import Shadower
from spillway.stream_route import KeepAlive, StreamHead, StreamItem, StreamTail
from spillway.telemetry import logger, tracer

JSON = "application/json"


class Router:
    """The wiring of one Lambda instance: live config, engine, breakers, shared store. Built once, reused."""

    def __init__(
        self,
        source: RoutingSource,
        backends: Mapping[str, Backend],
        *,
        region: str,
        health: HealthBoard | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline_margin_ms: float = 500.0,
        tracker: InflightTracker | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.source = source
        self.backends = dict(backends)
        self.region = region
        self.health = health if health is not None else HealthBoard()
        self.clock = clock
        self.tracker = tracker if tracker is not None else InflightTracker(clock)
        self.fleet = fleet
        self.deadline_margin_ms = deadline_margin_ms
        self._engine: Engine | None = None
        self._generation = -1
        self._lock = threading.Lock()
        self.health.add_listener(telemetry.breaker_event)
        self.shadower = Shadower(self.backends, clock=clock, region=region)  # each feature's shadow share (shadow.py)

    def current(self) -> tuple[Snapshot, Engine | None]:
        snapshot = self.source.get()
        if snapshot.table is None:
            return snapshot, None
        with self._lock:
            if self._engine is None:
                self._engine = Engine(
                    snapshot.table,
                    self.backends,
                    health=self.health,
                    clock=self.clock,
                    tracker=self.tracker,
                    fleet=self.fleet,
                )
            elif snapshot.generation != self._generation:
                self._engine.update_table(snapshot.table)
            self._generation = snapshot.generation
            return snapshot, self._engine

    def warm(self) -> int:
        """Do at init what a first request would otherwise pay inside its deadline: load the routing table, build
        each runtime client a first attempt uses (one per service, region and the tier of each feature's attempt
        maximum; the first client of a service costs ~100 ms), and open the fleet store (one read). Returns the
        number of (target, budget) pairs warmed. Failures are left for the requests to meet: init never fails on
        them."""
        snapshot, engine = self.current()
        if snapshot.table is None or engine is None:
            return 0
        budgets = {feature.attempt_max_ms / 1000.0 for feature in snapshot.table.features.values()}
        warmed = 0
        for target in snapshot.table.targets.values():
            warm = getattr(self.backends.get(target.backend.kind), "warm", None)
            if warm is None:
                continue
            for budget in sorted(budgets):
                warm(target, budget)
                warmed += 1
        if self.fleet is not None:
            self.fleet.warm(snapshot.table.targets.keys())
        return warmed

    def store_status(self, snapshot: Snapshot | None = None) -> dict[str, Any]:
        if self.fleet is not None:
            targets = snapshot.table.targets.keys() if snapshot is not None and snapshot.table is not None else ()
            return self.fleet.status(targets)
        return {"enabled": False}


_router: Router | None = None
_router_lock = threading.Lock()


def build_router(settings: Settings | None = None) -> Router:
    """The router of this process, from `settings` (default: the environment, see spillway/settings.py)."""
    settings = settings if settings is not None else Settings.from_environ()
    health = HealthBoard()
    tracker = InflightTracker(time.monotonic)
    fleet = build_fleet(settings, health, tracker)
    return Router(
        routing_source(settings),
        backends(settings),
        region=settings.region,
        health=health,
        deadline_margin_ms=settings.deadline_margin_ms,
        tracker=tracker,
        fleet=fleet,
    )


def routing_source(settings: Settings) -> RoutingSource:
    return RoutingSource(
        application=settings.appconfig_application,
        environment=settings.appconfig_environment,
        profile=settings.appconfig_profile,
        flags_profile=settings.appconfig_flags_profile,
        bundled_path=settings.bundled_table,
        base_url=settings.appconfig_url,
        ttl_s=settings.config_ttl_s,
        timeout_s=settings.config_timeout_s,
        on_event=telemetry.config_event,
    )


def backends(settings: Settings) -> dict[str, Backend]:
    pool = ClientPool(environ=settings.endpoint_urls, home_region=settings.region)
    return make_backends(pool)  # one per kind of the registry


def build_fleet(settings: Settings, health: HealthBoard, tracker: InflightTracker) -> Fleet | None:
    """The fleet link from the SPILLWAY_FLEET_STORE_* settings (None when the URL is unset). No I/O here: the
    connection opens on the first request (or at warm)."""
    if settings.fleet_store_url is None:
        return None
    user, cache = settings.fleet_store_user, settings.fleet_store_cache
    store = ValkeyFleetStore.from_url(
        settings.fleet_store_url,
        connect_timeout_s=settings.fleet_store_timeout_s,
        read_timeout_s=settings.fleet_store_timeout_s,
        backoff_s=settings.fleet_store_backoff_s,
        credentials=iam_credentials(user_id=user, cache_name=cache, region=settings.region) if user and cache else None,
        on_error=telemetry.store_error,
    )
    return Fleet(store, health, tracker, on_change=_fleet_change)


def _fleet_change(target: str, change: str, before: TargetState) -> None:
    """A fleet-wide breaker transition this environment decided (open, ramp, close): one log line."""
    logger.info("fleet_breaker", extra={"target": target, "change": change, "epoch": before.epoch + 1})


def get_router() -> Router:
    global _router  # noqa: PLW0603 (one router per Lambda instance, built on first use)
    if _router is None:
        with _router_lock:
            if _router is None:
                _router = build_router()
    return _router


def init_in_lambda(environ: Mapping[str, str] | None = None) -> None:
    """In Lambda (not in tests or local runs), build the router while the instance initialises, so a bad setting
    fails the init with its name, and warm it (unless SPILLWAY_WARM_AT_INIT=0)."""
    settings = Settings.from_environ(environ)
    if not settings.in_lambda:
        return
    router = build_router(settings)
    set_router(router)
    if not settings.warm_at_init:
        return
    try:
        router.warm()
    except Exception as exc:  # a cold first request is slower, never broken
        telemetry.unexpected("warm", exc)


def set_router(router: Router | None) -> None:
    """Tests and local runs: use this router (None: build from the environment on next use)."""
    global _router  # noqa: PLW0603
    _router = router


# -- HTTP ---------------------------------------------------------------------------------------------------------

# Powertools keeps the current event on the resolver class: right for Lambda, where an environment serves one
# invocation at a time; the local worlds call the handler the same way (one call at a time per environment).
app = APIGatewayRestResolver(debug=False)


def _request_id() -> str:
    """This request's id, parsed once per invocation by :func:`lambda_handler` into the resolver's context."""
    rid = app.context.get("request_id")
    return rid if isinstance(rid, str) else str(uuid.uuid4())


def request_id_of(event: Any, context: Any) -> str:
    """API Gateway's request id, else the Lambda request id, else a fresh one."""
    request_context = event.get("requestContext") if isinstance(event, Mapping) else None
    rid = request_context.get("requestId") if isinstance(request_context, Mapping) else None
    if isinstance(rid, str) and rid:
        return rid
    aws_id = getattr(context, "aws_request_id", None)
    return aws_id if isinstance(aws_id, str) and aws_id else str(uuid.uuid4())


def _json(status: int, body: Any, request_id: str, headers: Mapping[str, str] | None = None) -> Response[str]:
    all_headers = {"x-spillway-request-id": request_id, **(headers or {})}
    text = json.dumps(body, separators=(",", ":"), default=_json_default)
    return Response(status_code=status, content_type=JSON, body=text, headers=all_headers)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _error(error: api.ApiError, request_id: str, headers: Mapping[str, str] | None = None) -> Response[str]:
    extra = dict(headers or {})
    if error.retry_after_s is not None:
        extra["Retry-After"] = str(error.retry_after_s)
    return _json(error.status, api.error_body(error.code, error.message, request_id), request_id, extra)


def _route_headers(result: RouteResult) -> dict[str, str]:
    headers = {
        "x-spillway-attempts": str(result.attempts_sent),
        "x-spillway-route": ",".join(f"{a.target}={a.outcome.value}" for a in result.attempts),
    }
    if result.target is not None:
        headers["x-spillway-target"] = result.target
    if result.service_tier is not None:
        headers["x-spillway-service-tier"] = result.service_tier
    if result.store_round_trips:  # with a fleet store: what sharing cost this request
        headers["x-spillway-store-round-trips"] = str(result.store_round_trips)
        headers["x-spillway-store-ms"] = f"{result.store_ms:.3f}"
    return headers


def _body_bytes() -> bytes:
    event = app.current_event
    body = event.body
    if body is None:
        return b""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            raise api.ApiError(400, api.INVALID_JSON) from None
    return body.encode("utf-8", "surrogatepass")


def _remaining_ms() -> float | None:
    context = getattr(app, "lambda_context", None)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    try:
        return float(remaining())
    except Exception:  # a context without a clock: the feature's deadline alone applies
        return None


@app.post("/v1/features/<feature>/converse")
def converse(feature: str) -> Response[str]:
    request_id = _request_id()
    event = app.current_event
    admitted = _admit(feature, event.headers.get("content-type"), _body_bytes, bool(event.is_base64_encoded))
    if isinstance(admitted, api.ApiError):
        return _error(admitted, request_id)
    router, snapshot, engine, request = admitted
    result = _route_request(router, snapshot, engine, feature=feature, request=request, request_id=request_id)
    headers = _route_headers(result)
    if result.status is Status.SERVED and result.response is not None:
        return _json(200, result.response, request_id, headers)
    return _failure(result, request_id, headers)


Admitted = tuple[Router, Snapshot, Engine, dict[str, Any]]


def _admit(
    feature: str, content_type: str | None, body: Callable[[], bytes], base64_encoded: bool
) -> Admitted | api.ApiError:
    """The checks both Converse routes make before routing (the same pass-through contract), or the refusal."""
    router = get_router()
    snapshot, engine = router.current()
    known = _is_feature(snapshot, feature)
    try:
        if engine is None or snapshot.table is None:
            raise api.ApiError(503, api.CONFIG_UNAVAILABLE, retry_after_s=5)
        if not known and snapshot.source == "bundled":
            # The bundle leaves out guarded features (their guardrail's id exists only once deployed): a feature it
            # does not know may be one the hosted table serves, never to be served unguarded (stacks/routing.py).
            raise api.ApiError(503, api.CONFIG_UNAVAILABLE, retry_after_s=5)
        if not known:
            raise api.ApiError(404, api.UNKNOWN_FEATURE)
        if not api.is_json_content_type(content_type):
            raise api.ApiError(415, api.UNSUPPORTED_MEDIA_TYPE)
        request = api.parse_body(body(), snapshot.table.limits.max_request_bytes, base64_encoded=base64_encoded)
        settings = snapshot.table.features[feature]
        api.refuse_platform_members(
            request, (member for member, _ in settings.converse_defaults), settings.caller_may_override
        )
    except api.ApiError as error:
        telemetry.record_rejected(feature if known else None, error.status, error.code)
        return error
    return router, snapshot, engine, request


def _deadline_ms(router: Router, remaining: float | None) -> float | None:
    return None if remaining is None else max(0.0, remaining - router.deadline_margin_ms)


def _record(feature: str, result: RouteResult, *, canary: bool) -> None:
    telemetry.record_route(feature, result, canary=canary)
    telemetry.annotate(feature, result, canary=canary)
    logger.info("routed", extra=telemetry.route_fields(feature, result, canary=canary))


def _route_request(
    router: Router,
    snapshot: Snapshot,
    engine: Engine,
    *,
    feature: str,
    request: Mapping[str, Any],
    request_id: str,
    remaining_ms: float | None = None,
) -> RouteResult:
    """Route one admitted Converse request of a known feature (either front door), shadow and telemetry included;
    ``remaining_ms`` is the invocation's time left (default: the resolver's Lambda context)."""
    route_name = snapshot.route_name(feature, request_id)
    canary = route_name != feature
    deadline_ms = _deadline_ms(router, _remaining_ms() if remaining_ms is None else remaining_ms)
    serve = lambda: engine.handle(route_name, request, deadline_ms=deadline_ms)  # noqa: E731
    result = router.shadower.mirror(engine.table, feature, request, request_id, serve)  # the snapshot's table
    _record(feature, result, canary=canary)
    return result


def _failure(result: RouteResult, request_id: str, headers: Mapping[str, str]) -> Response[str]:
    """The answer to a request no target served, in the router's error shape."""
    return _error(_route_error(result), request_id, headers)


def _route_error(result: RouteResult) -> api.ApiError:
    """The answer to a request the engine did not serve: a client error, 504, or 503 with Retry-After; the same
    statuses and Retry-After for every front door."""
    if result.status is Status.CLIENT_ERROR:
        code = result.code or api.BAD_REQUEST
        status = result.http_status if 400 <= result.http_status < 500 else 400
        message = (
            api.unsupported_message(result.unsupported)
            if result.unsupported
            else api.MESSAGES.get(code, api.MODEL_REJECTED)  # the router's own finding, or the model's (withheld)
        )
        return api.ApiError(status, code, message)
    if result.status is Status.DEADLINE:
        return api.ApiError(504, api.DEADLINE_EXCEEDED)
    retry = result.retry_after_s if result.retry_after_s is not None else 1
    return api.ApiError(503, api.NO_CAPACITY, retry_after_s=retry)


def _is_feature(snapshot: Snapshot, feature: str) -> bool:
    return bool(
        snapshot.table is not None
        and api.FEATURE_NAME.match(feature)
        and CANARY_SUFFIX not in feature
        and feature in snapshot.table.features
    )


# -- the OpenAI-compatible front door (spillway/openai_api.py) ----------------------------------------------------


def _openai_error(error: api.ApiError, request_id: str, headers: Mapping[str, str] | None = None) -> Response[str]:
    extra = dict(headers or {})
    if error.retry_after_s is not None:
        extra["Retry-After"] = str(error.retry_after_s)
    return _json(error.status, openai_api.error_body(error), request_id, extra)


@app.post(openai_api.CHAT_PATH)
def chat_completions() -> Response[str]:
    """The OpenAI door behind a buffered integration: a whole completion, or (``stream: true``) the same chunks a
    streaming integration sends, delivered at the end."""
    event = app.current_event
    return _collapse(
        chat_chunks(
            event.headers.get("content-type"),
            _body_bytes,
            bool(event.is_base64_encoded),
            request_id=_request_id(),
            remaining_ms=_remaining_ms(),
        )
    )


def _admit_chat(
    content_type: str | None, body: Callable[[], bytes], base64_encoded: bool
) -> tuple[Router, Snapshot, Engine, openai_api.ChatRequest] | api.ApiError:
    """The checks of the OpenAI door before routing, or the refusal (answered in OpenAI's error shape)."""
    router = get_router()
    snapshot, engine = router.current()
    feature: str | None = None
    try:
        if engine is None or snapshot.table is None:
            raise api.ApiError(503, api.CONFIG_UNAVAILABLE, retry_after_s=5)
        if not api.is_json_content_type(content_type):
            raise api.ApiError(415, api.UNSUPPORTED_MEDIA_TYPE)
        chat = openai_api.parse(body(), snapshot.table.limits.max_request_bytes, base64_encoded=base64_encoded)
        if not _is_feature(snapshot, chat.feature):
            raise openai_api.ChatError("model", api.MESSAGES[api.UNKNOWN_FEATURE], 404, api.UNKNOWN_FEATURE)
        feature = chat.feature
    except api.ApiError as error:
        telemetry.record_rejected(feature, error.status, error.code)
        return error
    return router, snapshot, engine, chat


def chat_chunks(
    content_type: str | None,
    body: Callable[[], bytes],
    base64_encoded: bool,
    *,
    request_id: str,
    remaining_ms: float | None,
) -> Generator[bytes, None, None]:
    """``POST /v1/chat/completions`` in Lambda's streaming response format: a whole answer (or refusal) after its
    prelude, or with ``stream: true`` the chunks of spillway/openai_stream.py as the engine's stream goes."""
    admitted = _admit_chat(content_type, body, base64_encoded)
    if isinstance(admitted, api.ApiError):
        yield from _buffered(_openai_error(admitted, request_id))
        return
    router, snapshot, engine, chat = admitted
    if chat.stream:
        yield from _relay(
            router, snapshot, engine, _ChatChunks(chat, request_id), feature=chat.feature, request=chat.request,
            request_id=request_id, remaining_ms=remaining_ms,
        )  # fmt: skip
        return
    result = _route_request(
        router, snapshot, engine, feature=chat.feature, request=chat.request, request_id=request_id,
        remaining_ms=remaining_ms,
    )  # fmt: skip
    headers = _route_headers(result)
    if result.status is Status.SERVED and result.response is not None:
        body_out = openai_api.completion(result.response, chat.feature, request_id)
        yield from _buffered(_json(200, body_out, request_id, headers))
    else:
        yield from _buffered(_openai_error(_route_error(result), request_id, headers))


@app.get(openai_api.MODELS_PATH)
def list_models() -> Response[str]:
    request_id = _request_id()
    snapshot, _ = get_router().current()
    telemetry.record_info()
    if snapshot.table is None:
        return _openai_error(api.ApiError(503, api.CONFIG_UNAVAILABLE, retry_after_s=5), request_id)
    names = [name for name in snapshot.table.features if CANARY_SUFFIX not in name]
    return _json(200, openai_api.models_body(names), request_id)


@app.post("/v1/features/<feature>/converse-stream")
def converse_stream(feature: str) -> Response[str]:
    """The streaming route behind a buffered integration: the same server-sent events, delivered at the end."""
    event = app.current_event
    return _collapse(
        stream_chunks(
            feature,
            event.headers.get("content-type"),
            _body_bytes,
            bool(event.is_base64_encoded),
            request_id=_request_id(),
            remaining_ms=_remaining_ms(),
        )
    )


def _collapse(chunks: Iterator[bytes]) -> Response[str]:
    """A streaming-format answer (prelude, then body chunks) as one buffered response."""
    split = sse.split_prelude(next(chunks))
    assert split is not None  # every streaming-format answer yields its whole prelude first
    head, first = split
    body = first + b"".join(chunks)
    headers = {str(k): str(v) for k, v in head["headers"].items()}
    content_type = headers.pop("Content-Type", JSON)
    return Response(status_code=int(head["statusCode"]), content_type=content_type, body=body.decode(), headers=headers)


def stream_chunks(
    feature: str,
    content_type: str | None,
    body: Callable[[], bytes],
    base64_encoded: bool,
    *,
    request_id: str,
    remaining_ms: float | None,
) -> Generator[bytes, None, None]:
    """The streaming route in Lambda's streaming response format: a prelude (status, headers) once a target has
    sent its first token (or the error answer when none does), then one server-sent event per ConverseStream
    event, then the ``spillway`` event (spillway/sse.py). Closing it early abandons the served attempt."""
    admitted = _admit(feature, content_type, body, base64_encoded)
    if isinstance(admitted, api.ApiError):
        yield from _buffered(_error(admitted, request_id))
        return
    router, snapshot, engine, request = admitted
    yield from _relay(
        router, snapshot, engine, _ConverseEvents(request_id), feature=feature, request=request,
        request_id=request_id, remaining_ms=remaining_ms,
    )  # fmt: skip


class _ConverseEvents:
    """How the converse-stream route writes a stream: ConverseStream events by name, then the ``spillway`` event."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def event(self, name: str, members: Mapping[str, Any]) -> bytes:
        return sse.event(name, members)

    def tail(self, tail: StreamTail) -> bytes:
        return sse.event(sse.TRAILER_EVENT, _trailer(tail))

    def failure(self, result: RouteResult) -> Response[str]:
        return _failure(result, self.request_id, _route_headers(result))

    def unserved(self, result: RouteResult) -> bytes:
        return sse.event(sse.TRAILER_EVENT, _unserved_trailer(result, self.request_id))


class _ChatChunks:
    """How the OpenAI door writes a stream: chat.completion.chunk lines, then [DONE]; an error line if it broke."""

    def __init__(self, chat: openai_api.ChatRequest, request_id: str) -> None:
        self.request_id = request_id
        self.writer = openai_stream.ChunkWriter(
            request_id=request_id, feature=chat.feature, include_usage=chat.include_usage
        )

    def event(self, name: str, members: Mapping[str, Any]) -> bytes:
        return b"".join(openai_stream.line(chunk) for chunk in self.writer.event(name, members))

    def tail(self, tail: StreamTail) -> bytes:
        if tail.incomplete:
            return openai_stream.line(openai_stream.error(tail.result.code or sse.STREAM_INCOMPLETE))
        chunks = self.writer.end(tail.result.usage)
        return b"".join(openai_stream.line(chunk) for chunk in chunks) + openai_stream.DONE

    def failure(self, result: RouteResult) -> Response[str]:
        return _openai_error(_route_error(result), self.request_id, _route_headers(result))

    def unserved(self, result: RouteResult) -> bytes:
        """After a keep-alive opened the answer: the error answer it would have been, as OpenAI's error line."""
        return openai_stream.line(openai_api.error_body(_route_error(result)))


StreamRender = _ConverseEvents | _ChatChunks


def _relay(
    router: Router, snapshot: Snapshot, engine: Engine, render: StreamRender, *, feature: str,
    request: Mapping[str, Any], request_id: str, remaining_ms: float | None,
) -> Generator[bytes, None, None]:  # fmt: skip
    """An admitted request's stream, written by ``render``: the prelude once a target sent its first token (or the
    error answer when none does), its events, its tail. Closing it early abandons the served attempt."""
    route_name = snapshot.route_name(feature, request_id)
    canary = route_name != feature
    shadow = router.shadower.begin(engine.table, feature, request, request_id)  # before the primary sends
    stream = engine.stream(route_name, request, deadline_ms=_deadline_ms(router, remaining_ms))

    tails: list[StreamTail] = []

    def tail_seen(tail: StreamTail) -> None:
        _record(feature, tail.result, canary=canary)
        telemetry.record_stream(feature, tail)
        tails.append(tail)

    try:
        yield from stream_answer(stream, request_id, tail_seen, render)
        # The caller has the whole answer: the shadow gets at most its grace (a caller that leaves early gets no
        # record of it; the shadow still ends on its own).
        for tail in tails:
            router.shadower.end(shadow, tail.result, incumbent_ttft_ms=tail.ttft_ms)
    finally:
        stream.close()


def stream_answer(
    items: Iterator[StreamItem],
    request_id: str,
    tail_seen: Callable[[StreamTail], None],
    render: StreamRender | None = None,
) -> Iterator[bytes]:
    """The engine's stream on the wire, written by ``render`` (default: converse-stream's events). The prelude goes
    out with the first token, or with the first keep-alive when none has come within ``KEEP_ALIVE_S`` (an SSE
    comment, which clients ignore: API Gateway closes a stream idle for 5 minutes). A request no target served is
    then an ordinary error answer if nothing has gone out yet, else the render's in-band end with the error it would
    have been (converse-stream: the ``spillway`` event, complete false, its status among it)."""
    render = _ConverseEvents(request_id) if render is None else render
    opened = False
    for item in items:
        if isinstance(item, KeepAlive):
            if not opened:
                yield sse.prelude(200, {**sse.STREAM_HEADERS, "x-spillway-request-id": request_id})
                opened = True
            yield sse.KEEP_ALIVE
        elif isinstance(item, StreamHead):
            if not opened:  # once the prelude is out, the route is told by the last event only
                yield sse.prelude(200, {**_stream_headers(item), "x-spillway-request-id": request_id})
                opened = True
        elif isinstance(item, StreamTail):
            tail_seen(item)
            if item.result.target is not None:
                yield render.tail(item)
            elif not opened:  # no first token anywhere, nothing sent: an ordinary error answer
                yield from _buffered(render.failure(item.result))
            else:
                yield render.unserved(item.result)
        else:
            data = render.event(*item)
            if data:
                yield data


def _unserved_trailer(result: RouteResult, request_id: str) -> dict[str, Any]:
    """The last event of a stream opened by a keep-alive that no target then served: the error answer's code,
    message and status, in the trailer's shape."""
    error = _route_error(result)
    trailer: dict[str, Any] = {
        "complete": False,
        "target": None,
        "attempts": result.attempts_sent,
        "route": [{"target": a.target, "outcome": a.outcome.value, "code": a.code} for a in result.attempts],
        "ttft_ms": None,
        "error": {"code": error.code, "message": error.message, "request_id": request_id},
        "status": error.status,
    }
    if error.retry_after_s is not None:
        trailer["retry_after_s"] = error.retry_after_s
    return trailer


def _stream_headers(head: StreamHead) -> dict[str, str]:
    route = [f"{a.target}={a.outcome.value}" for a in head.attempts] + [f"{head.target}=first_token"]
    return {
        **sse.STREAM_HEADERS,
        "x-spillway-target": head.target,
        "x-spillway-attempts": str(sum(1 for a in head.attempts if a.sent) + 1),
        "x-spillway-route": ",".join(route),
    }


def _trailer(tail: StreamTail) -> dict[str, Any]:
    result = tail.result
    trailer: dict[str, Any] = {
        "complete": not tail.incomplete,
        "target": result.target,
        "attempts": result.attempts_sent,
        "route": [{"target": a.target, "outcome": a.outcome.value, "code": a.code} for a in result.attempts],
        "ttft_ms": None if tail.ttft_ms is None else round(tail.ttft_ms, 1),
    }
    if result.usage is not None:
        usage = result.usage
        trailer["usage"] = {
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "totalTokens": usage.input_tokens + usage.output_tokens,
        }
    if tail.seams:
        trailer["continuations"] = [seam.data() for seam in tail.seams]
    if tail.incomplete:
        trailer["error"] = {"code": result.code or sse.STREAM_INCOMPLETE, "message": sse.INCOMPLETE_MESSAGE}
    return trailer


def _buffered(response: Response[str]) -> Iterator[bytes]:
    headers = {str(k): str(v) for k, v in (response.headers or {}).items()}
    headers["Content-Type"] = response.content_type or JSON
    body = response.body if isinstance(response.body, bytes) else str(response.body or "").encode()
    yield sse.prelude(response.status_code, headers)
    yield body


@app.get("/v1/features")
def list_features() -> Response[str]:
    request_id = _request_id()
    snapshot, _ = get_router().current()
    telemetry.record_info()
    if snapshot.table is None:
        return _error(api.ApiError(503, api.CONFIG_UNAVAILABLE, retry_after_s=5), request_id)
    return _json(200, views.features_body(snapshot), request_id)


@app.get("/v1/health")
def health() -> Response[str]:
    request_id = _request_id()
    router = get_router()
    snapshot, engine = router.current()
    telemetry.record_info()
    body = views.health_body(
        region=router.region,
        snapshot=snapshot,
        board=router.health,
        in_flight=engine.tracker.in_flight if engine is not None else lambda _: 0,
        store_status=router.store_status(snapshot),
    )
    return _json(200, body, request_id)


_KNOWN_PATHS = re.compile(r"^/v1/(features(/[^/]+/converse(-stream)?)?|health)/?$")


@app.not_found
def not_found(_: NotFoundError) -> Response[str]:
    request_id = _request_id()
    path = app.current_event.path or ""
    known = _KNOWN_PATHS.match(path)
    error = api.ApiError(405, api.METHOD_NOT_ALLOWED) if known else api.ApiError(404, api.NOT_FOUND)
    telemetry.record_rejected(None, error.status, error.code)
    return _error(error, request_id)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def unexpected(exc: Exception) -> Response[str]:
    telemetry.unexpected("route", exc)
    telemetry.record_rejected(None, 502, api.ROUTER_ERROR)
    return _error(api.ApiError(502, api.ROUTER_ERROR), _request_id())


def _last_resort(request_id: str) -> dict[str, Any]:
    body = json.dumps(api.error_body(api.ROUTER_ERROR, api.MESSAGES[api.ROUTER_ERROR], request_id))
    return {
        "statusCode": 502,
        "headers": {"Content-Type": JSON, "x-spillway-request-id": request_id},
        "body": body,
        "isBase64Encoded": False,
    }


@logger.inject_lambda_context(log_event=False, clear_state=True)
def _instrumented(event: dict[str, Any], context: Any, request_id: str) -> dict[str, Any]:
    try:
        # The correlation id is the request id (Powertools' correlation_paths.API_GATEWAY_REST), parsed once: a
        # correlation_id_path would run a JMESPath search on every invocation.
        logger.set_correlation_id(request_id)
        if not is_proxy_event(event):  # not a request API Gateway sent: nothing to route, still never a 500
            telemetry.record_rejected(None, 502, api.ROUTER_ERROR)
            return _last_resort(request_id)
        app.context["request_id"] = request_id
        return app.resolve(event, context)
    except Exception as exc:  # the resolver itself failed (a malformed event): still never a 500
        telemetry.unexpected("resolve", exc)
        telemetry.record_rejected(None, 502, api.ROUTER_ERROR)
        return _last_resort(request_id)


_cold = True


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point, in one trace span (annotations only: no response, no error text)."""
    global _cold  # noqa: PLW0603 (the first invocation of this instance)
    with tracer.invocation() as span:
        if span is not None:
            span.annotate("ColdStart", _cold)
            span.annotate("Service", telemetry.SERVICE)
        _cold = False
        answer = _answer(event, context, request_id_of(event, context))
        status = answer.get("statusCode")
        if span is not None and isinstance(status, int):
            span.http_status = status
    return answer


def is_proxy_event(event: Any) -> bool:
    """The fields the resolver routes by, which API Gateway's proxy integration always sends."""
    return isinstance(event, Mapping) and all(isinstance(event.get(k), str) for k in ("httpMethod", "path"))


def _answer(event: dict[str, Any], context: Any, request_id: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = _instrumented(event, context, request_id)
    except Exception as exc:  # the instrumentation itself failed: answer anyway
        telemetry.unexpected("instrumentation", exc)
        answer = _last_resort(request_id)
    return answer


_STREAM_PATH = re.compile(r"^/v1/features/(?P<feature>[^/]+)/converse-stream/?$")
_CHAT_PATH = re.compile(r"^" + re.escape(openai_api.CHAT_PATH) + r"/?$")


def lambda_stream_handler(event: dict[str, Any], context: Any) -> Iterator[bytes]:
    """The entry point for a streaming integration (InvokeWithResponseStream): the streaming routes' chunks as they
    come (spillway/sse.py's prelude first): converse-stream, and chat completions (streamed when the body says
    ``stream: true``, else answered whole); any other request answered whole, in the same format."""
    request_id = request_id_of(event, context)
    path = str(event.get("path") or "") if is_proxy_event(event) else ""
    match = _STREAM_PATH.match(path)
    chat = _CHAT_PATH.match(path) is not None
    if (match is None and not chat) or event.get("httpMethod") != "POST":
        answer = lambda_handler(event, context)
        headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
        yield sse.prelude(int(answer.get("statusCode", 502)), headers)
        text = str(answer.get("body") or "")
        yield base64.b64decode(text) if answer.get("isBase64Encoded") else text.encode()
        return
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    base64_encoded = bool(event.get("isBase64Encoded"))

    def read_body() -> bytes:
        raw = event.get("body") or ""
        if not base64_encoded:
            return str(raw).encode("utf-8", "surrogatepass")
        try:
            return base64.b64decode(str(raw), validate=True)
        except ValueError:
            raise api.ApiError(400, api.INVALID_JSON) from None

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    remaining_ms = float(remaining()) if callable(remaining) else None
    content_type = headers.get("content-type")
    if match is not None:
        chunks = stream_chunks(
            match["feature"], content_type, read_body, base64_encoded, request_id=request_id, remaining_ms=remaining_ms
        )
        refuse, broken = _error, _broken_converse_stream
    else:
        chunks = chat_chunks(content_type, read_body, base64_encoded, request_id=request_id, remaining_ms=remaining_ms)
        refuse, broken = _openai_error, _broken_chat_stream
    with tracer.invocation() as span:  # one span per invocation, as lambda_handler (annotations only)
        if span is not None:
            span.annotate("Service", telemetry.SERVICE)
        logger.set_correlation_id(request_id)
        started = False
        try:
            for chunk in chunks:
                started = True
                yield chunk
        except Exception as exc:  # never a 500, and never a clean end: a 502 before the prelude, else an error event
            telemetry.unexpected("stream", exc)
            if not started:
                yield from _buffered(refuse(api.ApiError(502, api.ROUTER_ERROR), request_id))
            else:
                yield broken()
        finally:
            chunks.close()


def _broken_converse_stream() -> bytes:
    error = {"code": api.ROUTER_ERROR, "message": sse.INCOMPLETE_MESSAGE}
    return sse.event(sse.TRAILER_EVENT, {"complete": False, "error": error})


def _broken_chat_stream() -> bytes:
    return openai_stream.line(openai_stream.error(api.ROUTER_ERROR))


init_in_lambda()

"""The router Lambda: API Gateway (REST, IAM auth) -> validation -> engine -> Converse-shaped answer.

Routes (docs/openapi.json is generated from spillway/api.py, which these follow):

- ``POST /v1/features/{feature}/converse``: a Converse request (every ConverseRequest member but modelId and
  promptVariables; spillway/api.py);
  answers Converse's response (output, stopReason, usage, metrics) with the headers ``x-spillway-target``
  (model/capacity/region), ``x-spillway-attempts``, ``x-spillway-route`` and ``x-spillway-request-id``.
- ``GET /v1/features``: the features this deployment serves. ``GET /v1/health``: this instance's view of its
  targets (no ARNs, no secrets).

Statuses: 200; 400 BadRequest / InvalidJson / a model's client-error code (its message withheld); 404
UnknownFeature / NotFound; 405 MethodNotAllowed; 413 PayloadTooLarge; 415 UnsupportedMediaType; 503 NoCapacity
(with Retry-After) or ConfigUnavailable; 504 DeadlineExceeded; 502 RouterError for anything unexpected. Never a
500; never the caller's content in an error. Every error body is ``{"error": {"code", "message", "request_id"}}``.

Environment variables:

- ``AWS_REGION``: this cell's region (set by Lambda).
- ``SPILLWAY_APPCONFIG_APPLICATION``, ``SPILLWAY_APPCONFIG_ENVIRONMENT``, ``SPILLWAY_APPCONFIG_PROFILE``: where the
  AppConfig extension finds the routing table. Unset: the bundled table only.
- ``SPILLWAY_APPCONFIG_FLAGS_PROFILE``: optional profile of flags (canary), ``{"canary": {feature: {model, share}}}``.
- ``SPILLWAY_APPCONFIG_URL``: the extension's base URL (default ``http://localhost:<AWS_APPCONFIG_EXTENSION_HTTP_PORT
  or 2772>``); the local emulator's address in tests and demos.
- ``SPILLWAY_CONFIG_TTL_S`` (default 5): the in-process config cache; a canary moves within about this long.
- ``SPILLWAY_CONFIG_TIMEOUT_S`` (default 0.5): one fetch from the extension.
- ``SPILLWAY_BUNDLED_TABLE``: the routing table bundled in the asset (default ``routing.json`` beside this file).
- ``SPILLWAY_HEALTH_TABLE``: the DynamoDB table of shared breaker state. Unset: breakers stay local.
- ``SPILLWAY_HEALTH_TABLE_ENDPOINT_URL``: a DynamoDB endpoint override (local testing only).
- ``SPILLWAY_HEALTH_CACHE_TTL_S`` (default 2): how often an instance reads the shared breakers.
- ``SPILLWAY_STORE_BACKOFF_S`` (default 5): how long the store stays quiet after a DynamoDB error.
- ``SPILLWAY_ENDPOINT_URL_<REGION>`` (e.g. ``SPILLWAY_ENDPOINT_URL_US_EAST_1``) and ``SPILLWAY_ENDPOINT_URL``: model
  runtime endpoint overrides (the local emulator). Unset in AWS.
- ``SPILLWAY_DEADLINE_MARGIN_MS`` (default 500): kept back from the Lambda's remaining time to answer in. Keep the
  Lambda timeout at or under API Gateway's integration timeout (29 s by default), so the router answers 504 itself.
- ``AWS_LAMBDA_LOG_STREAM_NAME`` (set by Lambda): this instance's ``writer`` in the health table.
- ``AWS_LAMBDA_FUNCTION_NAME`` (set by Lambda): when present, the router warms at init (routing table, runtime
  clients, shared breakers) so the first request does not pay for it; ``SPILLWAY_WARM_AT_INIT=0`` turns that off.
- ``POWERTOOLS_SERVICE_NAME`` (default spillway-router), ``POWERTOOLS_METRICS_NAMESPACE`` (default Spillway),
  ``POWERTOOLS_LOG_LEVEL`` (default INFO), ``POWERTOOLS_TRACE_DISABLED``: Powertools' own settings.
  ``POWERTOOLS_LOGGER_LOG_EVENT`` and ``POWERTOOLS_DEV`` are ignored on purpose: the event holds the prompt.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from spillway import api, telemetry
from spillway.backends import ClientPool
from spillway.backends.contract import Backend
from spillway.backends.kinds import make_backends
from spillway.engine import Engine, RouteResult, Status
from spillway.health import HealthBoard
from spillway.routing_source import CANARY_SUFFIX, RoutingSource, Snapshot
from spillway.store import HealthStore, default_client_factory
from spillway.telemetry import logger, tracer

JSON = "application/json"
HERE = Path(__file__).resolve().parent


class Router:
    """The wiring of one Lambda instance: live config, engine, breakers, shared store. Built once, reused."""

    def __init__(
        self,
        source: RoutingSource,
        backends: Mapping[str, Backend],
        *,
        region: str,
        health: HealthBoard | None = None,
        store: HealthStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline_margin_ms: float = 500.0,
    ) -> None:
        self.source = source
        self.backends = dict(backends)
        self.region = region
        self.health = health if health is not None else HealthBoard()
        self.store = store
        self.clock = clock
        self.deadline_margin_ms = deadline_margin_ms
        self._engine: Engine | None = None
        self._generation = -1
        self._lock = threading.Lock()
        self.health.add_listener(telemetry.breaker_event)

    def current(self) -> tuple[Snapshot, Engine | None]:
        snapshot = self.source.get()
        if snapshot.table is None:
            return snapshot, None
        with self._lock:
            if self._engine is None:
                self._engine = Engine(snapshot.table, self.backends, health=self.health, clock=self.clock)
            elif snapshot.generation != self._generation:
                self._engine.update_table(snapshot.table)
            self._generation = snapshot.generation
            return snapshot, self._engine

    def warm(self) -> int:
        """Do at init what a first request would otherwise pay inside its deadline: load the routing table, build
        each runtime client a first attempt uses (one per service, region and the tier of each feature's attempt
        maximum; the first client of a service costs ~100 ms), and read the shared breakers. Returns the number of
        (target, budget) pairs warmed. Failures are left for the requests to meet: init never fails on them."""
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
        self.sync_health(snapshot)
        return warmed

    def sync_health(self, snapshot: Snapshot) -> None:
        if self.store is not None and snapshot.table is not None:
            self.store.sync(snapshot.table.targets.keys())


_router: Router | None = None
_router_lock = threading.Lock()


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def build_router() -> Router:
    """The router of this process, from the environment (see the module docstring)."""
    env = os.environ
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    port = env.get("AWS_APPCONFIG_EXTENSION_HTTP_PORT", "2772")
    source = RoutingSource(
        application=env.get("SPILLWAY_APPCONFIG_APPLICATION"),
        environment=env.get("SPILLWAY_APPCONFIG_ENVIRONMENT"),
        profile=env.get("SPILLWAY_APPCONFIG_PROFILE"),
        flags_profile=env.get("SPILLWAY_APPCONFIG_FLAGS_PROFILE"),
        bundled_path=env.get("SPILLWAY_BUNDLED_TABLE") or HERE / "routing.json",
        base_url=env.get("SPILLWAY_APPCONFIG_URL") or f"http://localhost:{port}",
        ttl_s=_env_float("SPILLWAY_CONFIG_TTL_S", 5.0),
        timeout_s=_env_float("SPILLWAY_CONFIG_TIMEOUT_S", 0.5),
        on_event=telemetry.config_event,
    )
    pool = ClientPool()
    health = HealthBoard()
    store = None
    table_name = env.get("SPILLWAY_HEALTH_TABLE")
    if table_name:
        store = HealthStore(
            table_name,
            health,
            default_client_factory(region, env.get("SPILLWAY_HEALTH_TABLE_ENDPOINT_URL") or None),
            cache_ttl_s=_env_float("SPILLWAY_HEALTH_CACHE_TTL_S", 2.0),
            backoff_s=_env_float("SPILLWAY_STORE_BACKOFF_S", 5.0),
            writer=env.get("AWS_LAMBDA_LOG_STREAM_NAME") or None,
            on_error=telemetry.store_error,
            on_write=telemetry.store_write,
        )
    return Router(
        source,
        make_backends(pool),
        region=region,
        health=health,
        store=store,
        deadline_margin_ms=_env_float("SPILLWAY_DEADLINE_MARGIN_MS", 500.0),
    )


def get_router() -> Router:
    global _router  # noqa: PLW0603 (one router per Lambda instance, built on first use)
    if _router is None:
        with _router_lock:
            if _router is None:
                _router = build_router()
    return _router


def warm_at_init(environ: Mapping[str, str] = os.environ) -> None:
    """In Lambda (not in tests or local runs), warm the router while the instance initialises."""
    if not environ.get("AWS_LAMBDA_FUNCTION_NAME") or environ.get("SPILLWAY_WARM_AT_INIT", "1") == "0":
        return
    try:
        get_router().warm()
    except Exception as exc:  # a cold first request is slower, never broken
        telemetry.unexpected("warm", exc)


def set_router(router: Router | None) -> None:
    """Tests and local runs: use this router (None: build from the environment on next use)."""
    global _router  # noqa: PLW0603
    _router = router


# -- HTTP ---------------------------------------------------------------------------------------------------------


class _PerThreadResolver(APIGatewayRestResolver):
    """Powertools keeps the current event and context on a class attribute: right for Lambda, where an instance
    serves one event at a time, wrong for the local endpoint, which calls this handler from many threads (one
    caller could read another's body and get its answer). Each thread reads its own here."""

    _calls = threading.local()

    @property
    def current_event(self) -> BaseProxyEvent:  # type: ignore[override]
        event: BaseProxyEvent = self._calls.event
        return event

    @property
    def lambda_context(self) -> Any:  # type: ignore[override]
        return self._calls.context

    @property
    def context(self) -> dict[str, Any]:
        """The resolver's per-request context (route arguments among it), per thread too."""
        values: dict[str, Any] | None = getattr(self._calls, "values", None)
        if values is None:
            values = self._calls.values = {}
        return values

    @context.setter
    def context(self, values: dict[str, Any]) -> None:
        self._calls.values = values

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self._calls.event = self._to_proxy_event(dict(event))
        self._calls.context = context
        try:
            return super().resolve(event, context)
        finally:
            self._calls.event = self._calls.context = None


app = _PerThreadResolver(debug=False)


def _request_id() -> str:
    event = app.current_event
    context = event.get("requestContext") or {}
    rid = context.get("requestId") if isinstance(context, Mapping) else None
    if isinstance(rid, str) and rid:
        return rid
    lambda_context = getattr(app, "lambda_context", None)
    aws_id = getattr(lambda_context, "aws_request_id", None)
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
    router = get_router()
    snapshot, engine = router.current()
    known = bool(
        snapshot.table is not None
        and api.FEATURE_NAME.match(feature)
        and CANARY_SUFFIX not in feature
        and feature in snapshot.table.features
    )
    try:
        if engine is None or snapshot.table is None:
            raise api.ApiError(503, api.CONFIG_UNAVAILABLE, retry_after_s=5)
        if not known:
            raise api.ApiError(404, api.UNKNOWN_FEATURE)
        if not api.is_json_content_type(app.current_event.headers.get("content-type")):
            raise api.ApiError(415, api.UNSUPPORTED_MEDIA_TYPE)
        request = api.parse_body(
            _body_bytes(),
            snapshot.table.limits.max_request_bytes,
            base64_encoded=bool(app.current_event.is_base64_encoded),
        )
        settings = snapshot.table.features[feature]
        api.refuse_platform_members(
            request, (member for member, _ in settings.converse_defaults), settings.caller_may_override
        )
    except api.ApiError as error:
        telemetry.record_rejected(feature if known else None, error.status, error.code)
        return _error(error, request_id)
    router.sync_health(snapshot)
    route_name = snapshot.route_name(feature, request_id)
    canary = route_name != feature
    remaining = _remaining_ms()
    deadline_ms = None if remaining is None else max(0.0, remaining - router.deadline_margin_ms)
    result = engine.handle(route_name, request, deadline_ms=deadline_ms)
    telemetry.record_route(feature, result, canary=canary)
    telemetry.annotate(feature, result, canary=canary)
    logger.info("routed", extra=telemetry.route_fields(feature, result, canary=canary))
    headers = _route_headers(result)
    if result.status is Status.SERVED and result.response is not None:
        return _json(200, result.response, request_id, headers)
    if result.status is Status.CLIENT_ERROR:
        code = result.code or api.BAD_REQUEST
        status = result.http_status if 400 <= result.http_status < 500 else 400
        message = (
            api.unsupported_message(result.unsupported)
            if result.unsupported
            else api.MESSAGES.get(code, api.MODEL_REJECTED)  # the router's own finding, or the model's (withheld)
        )
        return _error(api.ApiError(status, code, message), request_id, headers)
    if result.status is Status.DEADLINE:
        return _error(api.ApiError(504, api.DEADLINE_EXCEEDED), request_id, headers)
    retry = result.retry_after_s if result.retry_after_s is not None else 1
    return _error(api.ApiError(503, api.NO_CAPACITY, retry_after_s=retry), request_id, headers)


@app.get("/v1/features")
def list_features() -> Response[str]:
    request_id = _request_id()
    snapshot, _ = get_router().current()
    telemetry.record_info()
    if snapshot.table is None:
        return _error(api.ApiError(503, api.CONFIG_UNAVAILABLE, retry_after_s=5), request_id)
    features = [
        api.public_feature(f, snapshot.canaries[name].to_dict() if name in snapshot.canaries else None)
        for name, f in sorted(snapshot.table.features.items())
        if CANARY_SUFFIX not in name
    ]
    return _json(200, {"features": features}, request_id)


@app.get("/v1/health")
def health() -> Response[str]:
    request_id = _request_id()
    router = get_router()
    snapshot, engine = router.current()
    telemetry.record_info()
    router.sync_health(snapshot)
    board = router.health
    now = board.clock()
    targets = []
    if snapshot.table is not None:
        for tid in sorted(snapshot.table.targets):
            state = board.state(tid)
            record = board.record_of(tid)
            targets.append(
                {
                    "id": tid,
                    "state": state.value,
                    "cooldown_remaining_s": round(max(0.0, record.cooldown_until - now), 3)
                    if state.value == "open"
                    else 0.0,
                    "capacity_cooldown_remaining_s": round(max(0.0, record.capacity_until - now), 3),
                    "trips": record.trips,
                    "in_flight": engine.tracker.in_flight(tid) if engine is not None else 0,
                }
            )
    body = {
        "region": router.region,
        "config": {
            "source": snapshot.source,
            "version": snapshot.version,
            "flags_version": snapshot.flags_version,
            "canaries": {name: c.to_dict() for name, c in snapshot.canaries.items()},
        },
        "store": router.store.status() if router.store is not None else {"enabled": False},
        "targets": targets,
    }
    return _json(200, body, request_id)


_KNOWN_PATHS = re.compile(r"^/v1/(features(/[^/]+/converse)?|health)/?$")


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
    return _error(api.ApiError(502, api.ROUTER_ERROR), _safe_request_id())


def _safe_request_id() -> str:
    try:
        return _request_id()
    except Exception:
        return str(uuid.uuid4())


def _event_request_id(event: Any) -> str | None:
    context = event.get("requestContext") if isinstance(event, Mapping) else None
    rid = context.get("requestId") if isinstance(context, Mapping) else None
    return rid if isinstance(rid, str) else None


def _last_resort(event: Any) -> dict[str, Any]:
    context = event.get("requestContext") if isinstance(event, Mapping) else None
    rid = context.get("requestId") if isinstance(context, Mapping) else None
    rid = rid if isinstance(rid, str) else str(uuid.uuid4())
    body = json.dumps(api.error_body(api.ROUTER_ERROR, api.MESSAGES[api.ROUTER_ERROR], rid))
    return {
        "statusCode": 502,
        "headers": {"Content-Type": JSON, "x-spillway-request-id": rid},
        "body": body,
        "isBase64Encoded": False,
    }


@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@logger.inject_lambda_context(log_event=False, clear_state=True)
def _instrumented(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        # The correlation id is API Gateway's request id (Powertools' correlation_paths.API_GATEWAY_REST), read
        # directly: a correlation_id_path would run a JMESPath search on every invocation.
        logger.set_correlation_id(_event_request_id(event))
        return app.resolve(event, context)
    except Exception as exc:  # the resolver itself failed (a malformed event): still never a 500
        telemetry.unexpected("resolve", exc)
        telemetry.record_rejected(None, 502, api.ROUTER_ERROR)
        return _last_resort(event)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point. Capture of the response and of errors is off: both can carry text."""
    try:
        answer: dict[str, Any] = _instrumented(event, context)
    except Exception as exc:  # the instrumentation itself failed: answer anyway
        telemetry.unexpected("instrumentation", exc)
        return _last_resort(event)
    return answer


warm_at_init()

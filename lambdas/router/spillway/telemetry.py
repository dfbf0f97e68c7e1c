"""Metrics (EMF), log fields and trace annotations (spillway.tracing). Never prompt or completion text.

Everything recorded here is drawn from a closed vocabulary: feature and target names from the routing table,
outcome classes, error codes, counts and timings. Nothing takes a request or a response. The tests send canary
strings through every path and look for them in every line this module and the handler emit.

Metrics (namespace ``POWERTOOLS_METRICS_NAMESPACE``, default ``Spillway``; every metric also has ``service``):

- per request, dimension ``feature``: Requests, Served, ClientErrors, Rejected (the router's own 4xx), Exhausted,
  DeadlineExceeded, RouterErrors, Spills, Fallbacks, Failovers, PredictedSpills, CanaryRequests, Latency (ms),
  Attempts, InputTokens, OutputTokens;
- per attempt, dimensions ``feature`` and ``target``: TargetAttempts, TargetServed, Throttles, TargetFailures,
  DeploymentFaults ("ours": a missing or misnamed target, denied access, bad credentials; alarmed),
  TargetClientErrors, TargetRefused, TargetUnsupported (passed over: the backend cannot express the request),
  AttemptLatency (ms), InputTokens, OutputTokens (of the target that served); TimeToFirstToken (ms, one value per
  attempt that got a first token, streamed or buffered: buffered requests are served through the streaming APIs),
  InterTokenGap (ms, the served answer's gaps between deltas: all of them, or 100 evenly spaced order statistics of
  a longer answer, its largest included) and InterTokenMax (ms). EMF carries them as value lists, so CloudWatch
  gives their p50, p90 and p99 (``TimeToFirstToken`` at p90 is what the breakers hold to ``ttft_ms``);
- per streamed request, dimensions ``feature`` and ``target``: Streams, StreamsIncomplete (ended after its first
  token without a clean end), and the stream's InterTokenGap and InterTokenMax;
- dimensions ``feature`` and ``service_tier``: ServedByTier (the Bedrock tier the answer says served);
- dimension ``target``: BreakerOpens, BreakerCloses, BreakerRemoteOpens (learned from the shared store);
- dimension ``operation``: StoreErrors; dimension ``event``: ConfigEvents.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from . import tracing
from .engine import Outcome, RouteResult, Status
from .health import BreakerState, Transition
from .stream_route import StreamTail

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "spillway-router")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Spillway")
UNKNOWN_FEATURE = "(unknown)"

# Libraries that log request parameters or routes at DEBUG (botocore logs whole request bodies) are held at
# WARNING, whatever the root level: a debug setting must not turn into a prompt leak.
for _name in ("botocore", "boto3", "urllib3", "aws_lambda_powertools"):
    logging.getLogger(_name).setLevel(logging.WARNING)

logger = Logger(service=SERVICE)
# One subsegment per invocation, no botocore subsegments (a failed call's exception message can quote the prompt):
# the annotations below are the whole trace content.
tracer = tracing.Tracer(SERVICE)

_COUNT = MetricUnit.Count
_MS = MetricUnit.Milliseconds
MAX_VALUES = 100  # EMF's limit of values per metric in one line
Value = float | Sequence[float]
_STATUS_METRIC = {
    Status.SERVED: "Served",
    Status.CLIENT_ERROR: "ClientErrors",
    Status.EXHAUSTED: "Exhausted",
    Status.DEADLINE: "DeadlineExceeded",
    Status.INCOMPLETE: "StreamsIncomplete",  # a stream that failed after its first token
}
_OUTCOME_METRIC = {
    Outcome.OK: "TargetServed",
    Outcome.SLOW: "TargetServed",
    Outcome.CAPACITY: "Throttles",
    Outcome.UNAVAILABLE: "TargetFailures",
    Outcome.OURS: "DeploymentFaults",
    Outcome.CLIENT: "TargetClientErrors",
    Outcome.PREDICTED_FULL: "TargetRefused",
    Outcome.REFUSED: "TargetRefused",
    Outcome.UNSUPPORTED: "TargetUnsupported",
    Outcome.UNREACHABLE: "TargetRefused",  # not sent: the request's own connect to its endpoint had failed
}


_providers = threading.local()


def _group_provider() -> AmazonCloudWatchEMFProvider:
    """This thread's provider for :func:`_group` lines. Built once per thread, not per line: building one walks the
    unit and resolution enums (~10 us); each line leaves it empty (metrics, dimensions and metadata cleared).
    Per thread because a local run serves requests on several threads; a Lambda instance has one."""
    provider: AmazonCloudWatchEMFProvider | None = getattr(_providers, "provider", None)
    if provider is None:
        provider = AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service=SERVICE)
        _providers.provider = provider
    return provider


def _group(dimensions: Mapping[str, str], values: Mapping[str, tuple[MetricUnit, Value]]) -> None:
    """One EMF line with its own dimensions (Powertools' Metrics shares one dimension set per flush). A metric given
    a list of values carries them all (EMF's value list: CloudWatch computes percentiles over them)."""
    provider = _group_provider()
    try:
        for name, value in dimensions.items():
            provider.add_dimension(name, value)
        for name, (unit, number) in values.items():
            for one in [number] if isinstance(number, int | float) else number:
                provider.add_metric(name=name, unit=unit, value=one)
        provider.flush_metrics()
    finally:
        # Empty for the next line, also when the flush did not clear it (POWERTOOLS_METRICS_DISABLED) or a line
        # failed half-way.
        provider.clear_metrics()


def record_route(feature: str, result: RouteResult, *, canary: bool) -> None:
    """Request and per-target metrics of one routed request, each an EMF line of its own: nothing is held in
    Powertools' shared metric set between calls, so concurrent calls (the local world) cannot mix or break it."""
    request: dict[str, tuple[MetricUnit, Value]] = {
        "Requests": (_COUNT, 1),
        _STATUS_METRIC[result.status]: (_COUNT, 1),
        "Latency": (_MS, round(result.elapsed_ms, 3)),
        "Attempts": (_COUNT, result.attempts_sent),
    }
    for flag, name in (
        (result.spilled, "Spills"),
        (result.fell_back, "Fallbacks"),
        (result.failed_over, "Failovers"),
        (result.predicted_spill, "PredictedSpills"),
        (canary, "CanaryRequests"),
    ):
        if flag:
            request[name] = (_COUNT, 1)
    if result.usage is not None:
        request["InputTokens"] = (_COUNT, result.usage.input_tokens)
        request["OutputTokens"] = (_COUNT, result.usage.output_tokens)
    _group({"feature": feature}, request)
    if result.service_tier is not None:  # which Bedrock tier served (priority, default, flex, reserved)
        _group({"feature": feature, "service_tier": result.service_tier}, {"ServedByTier": (_COUNT, 1)})
    per_target: dict[str, dict[str, tuple[MetricUnit, Value]]] = {}
    first_tokens: dict[str, list[float]] = {}
    for attempt in result.attempts:
        values = per_target.setdefault(attempt.target, {})
        name = _OUTCOME_METRIC[attempt.outcome]
        values[name] = (_COUNT, _count(values, name) + 1)
        if attempt.sent:
            values["TargetAttempts"] = (_COUNT, _count(values, "TargetAttempts") + 1)
            values["AttemptLatency"] = (_MS, round(attempt.latency_ms, 3))
        if attempt.ttft_ms is not None:
            first_tokens.setdefault(attempt.target, []).append(round(attempt.ttft_ms, 3))
    for target, ttfts in first_tokens.items():
        per_target[target]["TimeToFirstToken"] = (_MS, ttfts)
    if result.target is not None and result.usage is not None:
        served = per_target.setdefault(result.target, {})
        served["InputTokens"] = (_COUNT, result.usage.input_tokens)
        served["OutputTokens"] = (_COUNT, result.usage.output_tokens)
    if result.target is not None and result.gaps_ms:
        per_target.setdefault(result.target, {}).update(gap_values(result.gaps_ms))
    for target, values in per_target.items():
        _group({"feature": feature, "target": target}, values)


def record_rejected(feature: str | None, status: int, code: str) -> None:
    """The router's own 4xx/5xx (validation, config, bugs): counted under the feature only when it is known."""
    name = "RouterErrors" if status >= 500 else "Rejected"
    _group({"feature": feature or UNKNOWN_FEATURE}, {"Requests": (_COUNT, 1), name: (_COUNT, 1)})
    logger.info("rejected", extra={"status": status, "code": code, "feature": feature or UNKNOWN_FEATURE})


def record_info() -> None:
    """A call of an informational route (features, health)."""
    _group({}, {"InfoRequests": (_COUNT, 1)})


def route_fields(feature: str, result: RouteResult, *, canary: bool) -> dict[str, Any]:
    """The log line of one routed request: route, outcome, timings and token counts."""
    fields: dict[str, Any] = {
        "feature": feature,
        "status": result.status.value,
        "http_status": result.http_status,
        "target": result.target,
        "code": result.code,
        "attempts": result.attempts_sent,
        "route": [
            {
                "target": a.target,
                "outcome": a.outcome.value,
                "code": a.code,
                "ms": round(a.latency_ms, 1),
                **({} if a.ttft_ms is None else {"ttft_ms": round(a.ttft_ms, 1)}),
            }
            for a in result.attempts
        ],
        "elapsed_ms": round(result.elapsed_ms, 1),
        "spilled": result.spilled,
        "service_tier": result.service_tier,
        "fell_back": result.fell_back,
        "failed_over": result.failed_over,
        "canary": canary,
    }
    if result.usage is not None:
        fields["input_tokens"] = result.usage.input_tokens
        fields["output_tokens"] = result.usage.output_tokens
    return fields


def annotate(feature: str, result: RouteResult, *, canary: bool) -> None:
    """The routed request's trace annotations: names from the routing table, outcome classes and counts."""
    tracing.annotate("feature", feature)
    tracing.annotate("outcome", result.status.value)
    tracing.annotate("attempts", result.attempts_sent)
    tracing.annotate("canary", canary)
    tracing.annotate("route", ",".join(f"{a.target}={a.outcome.value}" for a in result.attempts))
    if result.target is not None:
        tracing.annotate("target", result.target)
    if result.code is not None:
        tracing.annotate("code", result.code)


def breaker_event(event: Transition) -> None:
    """HealthBoard listener: a breaker transition as a metric and a log line."""
    record = event.record
    if record.state is BreakerState.OPEN and event.previous is not BreakerState.OPEN:
        name = "BreakerRemoteOpens" if event.remote else "BreakerOpens"
    elif record.state is BreakerState.CLOSED and event.previous is not BreakerState.CLOSED:
        name = "BreakerCloses"
    else:
        name = ""
    if name:
        _group({"target": record.target}, {name: (_COUNT, 1)})
    logger.info(
        "breaker",
        extra={
            "target": record.target,
            "state": record.state.value,
            "previous": event.previous.value,
            "cause": event.cause,
            "cooldown_s": record.cooldown_s,
            "remote": event.remote,
        },
    )


def store_error(operation: str, code: str) -> None:
    _group({"operation": operation}, {"StoreErrors": (_COUNT, 1)})
    logger.warning("store_error", extra={"operation": operation, "code": code})


def config_event(kind: str, detail: str) -> None:
    _group({"event": kind}, {"ConfigEvents": (_COUNT, 1)})
    logger.warning("config", extra={"event": kind, "detail": detail})


def unexpected(where: str, exc: BaseException) -> None:
    """An exception the router did not expect: its type only (its message may quote the request)."""
    logger.error("unexpected_exception", extra={"where": where, "exception_type": type(exc).__name__})


def _count(values: Mapping[str, tuple[MetricUnit, Value]], name: str) -> float:
    number = values.get(name, (_COUNT, 0.0))[1]
    return float(number) if isinstance(number, int | float) else float(len(number))


def gap_values(gaps_ms: Sequence[float]) -> dict[str, tuple[MetricUnit, Value]]:
    """InterTokenGap as EMF values (every gap, or MAX_VALUES evenly spaced order statistics from the smallest to
    the largest: the distribution's shape within one line) and InterTokenMax."""
    ordered = sorted(gaps_ms)
    n = len(ordered)
    if n > MAX_VALUES:
        ordered = [ordered[round(i * (n - 1) / (MAX_VALUES - 1))] for i in range(MAX_VALUES)]
    return {
        "InterTokenGap": (_MS, [round(g, 3) for g in ordered]),
        "InterTokenMax": (_MS, round(ordered[-1], 3)),
    }


def record_stream(feature: str, tail: StreamTail) -> None:
    """A streamed request's own figures, per served target: streams, incomplete ends, inter-token gaps (its time to
    first token is its served attempt's, in record_route)."""
    target = tail.result.target
    if target is None:
        return
    values: dict[str, tuple[MetricUnit, Value]] = {"Streams": (_COUNT, 1)}
    if tail.gaps_ms:
        values.update(gap_values(tail.gaps_ms))
    if tail.incomplete:
        values["StreamsIncomplete"] = (_COUNT, 1)
    _group({"feature": feature, "target": target}, values)

"""Execution: walk a plan under one deadline and return the answer with its route trace.

Each attempt's timeout is the time left, capped by the feature's attempt maximum; no attempt starts with less than
the attempt minimum left. Capacity errors spill to the next step at once; unavailable and "ours" errors move on and
feed the breaker; a client error returns at once (a context-window overflow may fall back to the next model). A
provisioned target estimated full is skipped before sending (predictive spillover). The engine never raises for a
backend's failure: an unexpected exception from a backend is that attempt's "unavailable". Whatever happens between
admitting an attempt and judging it (even an exception), its breaker ticket and its in-flight count are given back.
A request whose every sent attempt was throttled answers 503 with Retry-After, even when the deadline ran out: a
throttle never reaches the caller as something it cannot back off from.

A buffered attempt goes through its backend's streaming API and is assembled into Converse's answer
(spillway.assemble; the feature's buffered_via_stream), so its time to first token feeds the breaker as a stream's does.

With a fleet (spillway.fleet), breakers and provisioned occupancy are decided on the fleet's shared state instead:
read once before planning, reported after each attempt, each request through its own RequestHealth.

Thread-safe: per-request state lives on the stack; shared state (breakers, requests in flight) has its own locks.
Zero knowledge: the request is handed to backends and nothing else; the response is excluded from reprs; the
trace holds target ids, classes, codes and timings only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from .assemble import collect
from .backends.contract import Backend, BackendReply, Usage
from .backends.kinds import endpoint_of, request_needs
from .capacity import InflightTracker
from .config import Feature, RoutingTable, Target
from .errors import NO_CONNECTION, BackendError, ErrorClass, from_exception
from .fleet import Fleet, LocalHealth, RequestHealth
from .health import Admission, Clock, HealthBoard, Ticket, Verdict
from .policy import Plan, Planner, PlanStep, StepKind
from .streaming import StreamingBackend

if TYPE_CHECKING:
    from .stream_route import StreamItem


class Outcome(StrEnum):
    """One trace entry's outcome: an attempt's class, or why a step was passed over without sending."""

    OK = "ok"
    SLOW = "slow"
    CAPACITY = "capacity"
    UNAVAILABLE = "unavailable"
    CLIENT = "client"
    OURS = "ours"
    PREDICTED_FULL = "predicted_full"  # not sent: provisioned target estimated full
    REFUSED = "refused"  # not sent: its breaker turned it away (half-open slot taken, ramp share, cooldown)
    UNSUPPORTED = "unsupported"  # not sent: its backend cannot express the request (no health signal)
    UNREACHABLE = "unreachable"  # not sent: this request could not connect to its endpoint (no health signal)


class Status(StrEnum):
    SERVED = "served"
    CLIENT_ERROR = "client_error"
    EXHAUSTED = "exhausted"  # 503 with Retry-After
    DEADLINE = "deadline"  # 504
    INCOMPLETE = "incomplete"  # streamed: the stream failed after its first token (spillway/stream_route.py)


@dataclass(frozen=True, slots=True)
class Attempt:
    target: str
    outcome: Outcome
    code: str | None = None
    latency_ms: float = 0.0
    kind: StepKind = StepKind.PRIMARY
    ttft_ms: float | None = None  # time to first token, when the attempt streamed and got one

    @property
    def sent(self) -> bool:
        return self.outcome not in _UNSENT


_UNSENT = (Outcome.PREDICTED_FULL, Outcome.REFUSED, Outcome.UNSUPPORTED, Outcome.UNREACHABLE)


class Unreachable:
    """The endpoints one request could not connect to. A connect that was refused or timed out says the endpoint
    is down for every target behind it (Bedrock's provisioned and on-demand targets of a region share one), so the
    rest of the request passes over them instead of waiting out the same connect timeout again: an outage costs a
    request one connect timeout per dead endpoint, not one per dead target. Per request: the breakers, not this,
    decide for the next ones."""

    def __init__(self) -> None:
        self._endpoints: set[str] = set()

    def passes_over(self, step: PlanStep, trace: list[Attempt]) -> bool:
        """True (and traced) when `step`'s endpoint already failed to connect in this request."""
        if endpoint_of(step.target.backend, step.target.region) not in self._endpoints:
            return False
        trace.append(Attempt(step.target.id, Outcome.UNREACHABLE, kind=step.kind))
        return True

    def note(self, step: PlanStep, error: BackendError) -> None:
        if error.code in NO_CONNECTION:
            self._endpoints.add(endpoint_of(step.target.backend, step.target.region))


UNSUPPORTED_CONTENT = "UnsupportedContent"  # no target of the feature can express the request: 400


@dataclass(frozen=True, slots=True)
class RouteResult:
    status: Status
    http_status: int
    attempts: tuple[Attempt, ...]
    elapsed_ms: float
    response: Mapping[str, Any] | None = field(default=None, repr=False)
    target: str | None = None  # the target that served
    code: str | None = None  # the error code of a client error, or of the last failure
    retry_after_s: int | None = None
    usage: Usage | None = None
    service_tier: str | None = None  # the Bedrock service tier that served, as the answer says
    spilled: bool = False  # served by on-demand where the feature starts on provisioned
    fell_back: bool = False  # served by a model after the first of the hierarchy
    failed_over: bool = False  # served outside the home region
    predicted_spill: bool = False  # some provisioned target was skipped as full before sending
    unsupported: tuple[str, ...] = ()  # with UnsupportedContent: what no target could express (names, no content)
    store_round_trips: int = 0  # round trips to the fleet store this request made (0 without a store)
    store_ms: float = 0.0  # the time they took
    gaps_ms: tuple[float, ...] = field(default=(), repr=False)  # the served attempt's inter-token gaps (metrics)

    @property
    def attempts_sent(self) -> int:
        return sum(1 for a in self.attempts if a.outcome not in _UNSENT)


_ERROR_OUTCOME = {
    ErrorClass.CAPACITY: Outcome.CAPACITY,
    ErrorClass.UNAVAILABLE: Outcome.UNAVAILABLE,
    ErrorClass.CLIENT: Outcome.CLIENT,
    ErrorClass.OURS: Outcome.OURS,
}
_VERDICT = {
    Outcome.CAPACITY: Verdict.CAPACITY,
    Outcome.UNAVAILABLE: Verdict.FAILURE,
    Outcome.OURS: Verdict.FAILURE,  # a misconfigured target is unusable: keep requests off it, and alarm
    Outcome.CLIENT: Verdict.NEUTRAL,
}


class Engine:
    def __init__(
        self,
        table: RoutingTable,
        backends: Mapping[str, Backend],
        *,
        health: HealthBoard | None = None,
        clock: Clock = time.monotonic,
        tracker: InflightTracker | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        """`backends` maps a backend kind ("bedrock", "sagemaker") to its implementation. `clock` measures the
        deadline and latencies (seconds); the health board keeps its own clock (epoch seconds, shareable).
        `fleet`: decide breakers and provisioned occupancy on the fleet's shared state (spillway.fleet); its
        board and tracker are the fallback and must be this engine's."""
        self._planner = Planner(table)
        self._backends = dict(backends)
        self.health = health if health is not None else HealthBoard()
        self._clock = clock
        self.tracker = tracker if tracker is not None else InflightTracker(clock)
        self.fleet = fleet
        self._local = LocalHealth(self.health, self.tracker)

    @property
    def table(self) -> RoutingTable:
        return self._planner.table

    def update_table(self, table: RoutingTable) -> None:
        """Swap in a new routing table (AppConfig refresh). Breakers are per target id and carry over."""
        self._planner = Planner(table)

    def plan(self, feature: str) -> Plan:
        return self._planner.plan(feature, self.health)

    def handle(self, feature: str, request: Mapping[str, Any], *, deadline_ms: float | None = None) -> RouteResult:
        """Serve one request for `feature`. `deadline_ms` can only shorten the feature's deadline (e.g. to the
        Lambda's remaining time). Never raises for a backend's failure. With a fleet, the request's store writes
        are all made before this returns."""
        start = self._clock()
        planner = self._planner
        f = planner.table.features.get(feature)
        if f is None:
            return RouteResult(Status.CLIENT_ERROR, 404, (), 0.0, code="UnknownFeature")
        fleet = self.fleet
        if fleet is None:
            return self._handle(
                planner=planner, f=f, request=request, health=self._local, start=start, deadline_ms=deadline_ms
            )
        try:
            health: RequestHealth = fleet.request(f, [step.target.id for step in planner.candidates(feature)])
        except Exception:  # a fleet bug costs this request the fleet's view, never its answer
            health = self._local
        try:
            result = self._handle(
                planner=planner, f=f, request=request, health=health, start=start, deadline_ms=deadline_ms
            )
        finally:
            round_trips, store_s = health.close()
        return replace(result, store_round_trips=round_trips, store_ms=store_s * 1000.0)

    def stream(
        self, feature: str, request: Mapping[str, Any], *, deadline_ms: float | None = None
    ) -> Generator[StreamItem, None, None]:
        """Serve one request for `feature` as a stream (spillway/stream_route.py): a head, events, a tail; or only a
        tail when no target sent a first token. Never raises for a backend's failure; close it to abandon it."""
        from .stream_route import StreamTail, run  # noqa: PLC0415 (stream_route imports this module)

        start = self._clock()
        planner = self._planner
        f = planner.table.features.get(feature)
        if f is None:
            yield StreamTail(RouteResult(Status.CLIENT_ERROR, 404, (), 0.0, code="UnknownFeature"))
            return
        health: RequestHealth = self._local
        if self.fleet is not None:
            try:
                health = self.fleet.request(f, [step.target.id for step in planner.candidates(feature)])
            except Exception:  # a fleet bug costs this request the fleet's view, never its answer
                health = self._local

        def conclude(
            trace: list[Attempt], last_code: str | None, *, out_of_time: bool, client: BackendError | None
        ) -> RouteResult:
            elapsed_s = self._clock() - start
            if client is not None:
                return _client_error(client, trace, elapsed_s)
            sent = [a for a in trace if a.sent]
            throttled_only = bool(sent) and all(a.outcome is Outcome.CAPACITY for a in sent)
            if out_of_time and not throttled_only:
                return RouteResult(Status.DEADLINE, 504, tuple(trace), elapsed_s * 1000.0, code=last_code)
            retry = self._retry_after(planner, feature, health)
            return RouteResult(
                Status.EXHAUSTED, 503, tuple(trace), elapsed_s * 1000.0, code=last_code, retry_after_s=retry
            )

        try:
            yield from run(
                planner=planner, f=f, request=request, health=health, backends=self._backends, admit=self._admit,
                conclude=conclude, clock=self._clock, start=start, deadline_ms=deadline_ms,
            )  # fmt: skip
        finally:
            health.close()

    def _handle(
        self,
        *,
        planner: Planner,
        f: Feature,
        request: Mapping[str, Any],
        health: RequestHealth,
        start: float,
        deadline_ms: float | None,
    ) -> RouteResult:
        clock = self._clock
        feature = f.name
        budget_ms = f.deadline_ms if deadline_ms is None else min(f.deadline_ms, deadline_ms)
        deadline = start + budget_ms / 1000.0
        min_s = f.attempt_min_ms / 1000.0
        max_s = f.attempt_max_ms / 1000.0
        steps = planner.plan(feature, health, request_needs(request)).steps
        last_capable = max((i for i, step in enumerate(steps) if not step.unsupported), default=-1)
        if last_capable < 0 < len(steps):
            return _unsupported(steps)
        trace: list[Attempt] = []
        sent = 0
        last_code: str | None = None
        skip_model: str | None = None  # after a context-window overflow: a model too small for this request
        unreachable = Unreachable()
        out_of_time = False
        overflow: BackendError | None = None
        for i, step in enumerate(steps):
            if step.unsupported:
                trace.append(Attempt(step.target.id, Outcome.UNSUPPORTED, kind=step.kind))
                continue
            if step.target.model == skip_model or unreachable.passes_over(step, trace):
                continue
            if sent >= f.max_attempts:
                break
            remaining = deadline - clock()
            if remaining < min_s:
                out_of_time = True
                break
            # Never fail without sending at least once: the last step is forced if nothing was sent yet.
            timeout_s = min(remaining, max_s)
            force = step.probe or (sent == 0 and i == last_capable)
            ticket, level = self._admit(health, f, step, force=force, timeout_s=timeout_s, trace=trace)
            if not ticket.admitted:
                continue
            sent += 1
            answer = self._attempt(
                health, f, step, request, timeout_s=timeout_s, ticket=ticket, level=level, trace=trace, start=start
            )
            if isinstance(answer, RouteResult):
                return answer
            error = answer
            last_code = error.code
            unreachable.note(step, error)
            overflow = error if error.context_overflow and f.fallback_on_context_overflow else None
            if overflow is not None:
                skip_model = step.target.model
            elif error.error_class is ErrorClass.CLIENT:
                return _client_error(error, trace, clock() - start)
        elapsed_s = clock() - start
        if overflow is not None:  # every larger model overflowed too, or none was left: the request is too big
            return _client_error(overflow, trace, elapsed_s)
        throttled_only = sent > 0 and all(a.outcome is Outcome.CAPACITY for a in trace if a.sent)
        if (out_of_time or (sent and deadline - (start + elapsed_s) < min_s)) and not throttled_only:
            return RouteResult(Status.DEADLINE, 504, tuple(trace), elapsed_s * 1000.0, code=last_code)
        return RouteResult(
            Status.EXHAUSTED,
            503,
            tuple(trace),
            elapsed_s * 1000.0,
            code=last_code,
            retry_after_s=self._retry_after(planner, feature, health),
        )

    def _admit(
        self,
        health: RequestHealth,
        f: Feature,
        step: PlanStep,
        *,
        force: bool,
        timeout_s: float,
        trace: list[Attempt],
    ) -> tuple[Ticket, int]:
        """Ask the breaker, then (provisioned targets) the in-flight estimate. Returns the breaker ticket and the
        concurrency level this request holds on the target (0 when untracked). A ticket that is not admitted
        holds nothing; an admitted one (and its level) is the caller's to give back."""
        target = step.target
        ticket = health.begin(target.id, f.breaker, force=force, timeout_s=timeout_s)
        if not ticket.admitted:
            trace.append(Attempt(target.id, Outcome.REFUSED, kind=step.kind))
            return ticket, 0
        if target.capacity != "provisioned":
            return ticket, 0
        level: int | None = None
        try:
            level = health.try_start(target, force=force, timeout_s=timeout_s)
        finally:
            if level is None:  # estimated full (or the tracker failed): give back a probe slot
                health.finish(target.id, f.breaker, Verdict.NEUTRAL, ticket)
        if level is None:
            trace.append(Attempt(target.id, Outcome.PREDICTED_FULL, kind=step.kind))
            return Ticket(Admission.REFUSED, ticket.epoch), 0
        return ticket, level

    def _attempt(
        self,
        health: RequestHealth,
        f: Feature,
        step: PlanStep,
        request: Mapping[str, Any],
        *,
        timeout_s: float,
        ticket: Ticket,
        level: int,
        trace: list[Attempt],
        start: float,
    ) -> RouteResult | BackendError:
        """Send one admitted attempt and judge it: the served result, or the attempt's error (traced either way).
        Whatever happens, even an exception, the breaker ticket and the in-flight level are given back; until the
        attempt is judged, what the breaker hears is NEUTRAL (its probe slot comes back, no verdict)."""
        target = step.target
        verdict = Verdict.NEUTRAL
        retry_after_s: float | None = None
        throttled = False
        ttft_over: bool | None = None
        try:
            reply, error, latency_ms = self._send(f, target, request, timeout_s)
            if reply is not None:
                slow = _is_slow(f, latency_ms, reply)
                ttft_over = ttft_verdict(f, reply.ttft_ms)
                outcome = Outcome.SLOW if slow else Outcome.OK
                trace.append(Attempt(target.id, outcome, None, latency_ms, step.kind, reply.ttft_ms))
                served = self._served(f, target, reply, trace, self._clock() - start)
                verdict = Verdict.SLOW if slow else Verdict.OK
                return served
            assert error is not None  # _send returns exactly one of reply and error
            outcome = _ERROR_OUTCOME.get(error.error_class, Outcome.UNAVAILABLE)
            trace.append(Attempt(target.id, outcome, error.code, latency_ms, step.kind))
            verdict, retry_after_s = _VERDICT[outcome], error.retry_after_s
            throttled = outcome is Outcome.CAPACITY
            return error
        finally:
            if level:
                health.end(target.id, level, throttled=throttled)
            health.finish(target.id, f.breaker, verdict, ticket, retry_after_s=retry_after_s, ttft_over=ttft_over)

    def _send(
        self, f: Feature, target: Target, request: Mapping[str, Any], timeout_s: float
    ) -> tuple[BackendReply, None, float] | tuple[None, BackendError, float]:
        """One buffered attempt: through the backend's streaming API, assembled (the feature's default, so its time to
        first token is measured), or through its buffered API (the feature opts out, or the kind does not stream)."""
        clock = self._clock
        t0 = clock()
        try:
            backend = self._backends.get(target.backend.kind)
            if backend is None:
                return None, BackendError(ErrorClass.OURS, "NoBackendForKind"), 0.0
            if f.buffered_via_stream and callable(getattr(backend, "open_stream", None)):
                first_token_s = None if f.first_token_ms is None else f.first_token_ms / 1000.0
                reply = collect(
                    cast(StreamingBackend, backend),  # it streams: checked just above
                    target,
                    request,
                    timeout_s,
                    first_token_s=first_token_s,
                    inter_token_s=f.inter_token_ms / 1000.0,
                    clock=clock,
                )
            else:
                reply = backend.invoke(target, request, timeout_s)
            return reply, None, (clock() - t0) * 1000.0
        except Exception as exc:  # a backend's bug is that attempt's failure, never the caller's
            return None, from_exception(exc), (clock() - t0) * 1000.0

    @staticmethod
    def _served(f: Feature, target: Target, reply: BackendReply, trace: list[Attempt], elapsed_s: float) -> RouteResult:
        return RouteResult(
            Status.SERVED,
            200,
            tuple(trace),
            elapsed_s * 1000.0,
            response=reply.response,
            target=target.id,
            usage=reply.usage,
            service_tier=reply.service_tier,
            spilled=target.capacity != f.first_capacity,
            fell_back=target.model != f.models[0],
            failed_over=target.region != f.home_region,
            predicted_spill=any(a.outcome is Outcome.PREDICTED_FULL for a in trace),
            gaps_ms=reply.gaps_ms,
        )

    @staticmethod
    def _retry_after(planner: Planner, feature: str, health: RequestHealth) -> int:
        """Seconds until the feature's first candidate may take traffic again, 1 to 60."""
        now = health.now()
        soonest = 60.0
        for step in planner.candidates(feature):
            severity, ready_at = health.standing(step.target.id)
            soonest = min(soonest, ready_at - now if severity else 1.0)
        return int(min(60, max(1, math.ceil(soonest))))


def _unsupported(steps: tuple[PlanStep, ...]) -> RouteResult:
    """No target of the feature can express the request: 400 UnsupportedContent, naming what no target takes (every
    target traced as unsupported, none sent)."""
    trace = tuple(Attempt(step.target.id, Outcome.UNSUPPORTED, kind=step.kind) for step in steps)
    missing = sorted(frozenset().union(*(step.unsupported for step in steps)))
    return RouteResult(Status.CLIENT_ERROR, 400, trace, 0.0, code=UNSUPPORTED_CONTENT, unsupported=tuple(missing))


def _client_error(error: BackendError, trace: list[Attempt], elapsed_s: float) -> RouteResult:
    status = error.http_status
    http = status if status is not None and 400 <= status < 500 and status != 429 else 400
    return RouteResult(Status.CLIENT_ERROR, http, tuple(trace), elapsed_s * 1000.0, code=error.code)


def ttft_verdict(f: Feature, ttft_ms: float | None) -> bool | None:
    """What one first token tells the breaker's time-to-first-token percentile: later than the feature's ttft_ms, or
    not; None when none was measured or the feature sets no limit (nothing to count)."""
    limit = f.breaker.ttft_ms
    return None if limit is None or ttft_ms is None else ttft_ms > limit


def _is_slow(f: Feature, latency_ms: float, reply: BackendReply) -> bool:
    limit = f.breaker.latency_ms
    if limit is not None and max(latency_ms, reply.latency_ms) > limit:
        return True
    ttft = f.breaker.ttft_ms
    return ttft is not None and reply.ttft_ms is not None and reply.ttft_ms > ttft

"""Streaming execution: walk a plan until one target sends its first token, then relay that target's stream.

Before the first token nothing reaches the caller, so any failure is the buffered engine's failure: an attempt that
fails, or sends no first token within its first-token deadline (the feature's ``first_token_ms``, within the
attempt's timeout and the request's deadline), is abandoned (its connection closed, its breaker told: no first token
is ``unavailable``) and the plan goes on. Events that come before the first token (``messageStart``) are held and
sent with it. After the first token the caller has part of an answer: a backend error, a gap longer than the
feature's ``inter_token_ms`` or the request's deadline ends the stream with an explicit incomplete tail (the code,
the route), never a clean end. Time to first token is measured on every streamed attempt; over the breaker's
``ttft_ms`` the attempt counts as slow.

Silence is bounded: API Gateway closes a response stream idle for 5 minutes, so after ``KEEP_ALIVE_S`` with nothing
yielded (before the first token, across the plan's attempts, or in a gap between tokens) the run yields
:data:`KEEP_ALIVE`, which the wire renders as an SSE comment (docs/design-notes.md, "Keep-alive").

What the run yields, in order: a :class:`StreamHead` (the target and the attempts before it: the route headers),
the served target's ConverseStream events, and a :class:`StreamTail`; or, when no target sends a first token, only
a tail whose result is the buffered engine's 4xx/503/504. Closing the generator early (the caller left) closes the
backend's stream and tells its breaker nothing (neutral). Zero knowledge: events pass through untouched and unread
but for their names; the trace holds ids, codes and timings.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .backends.contract import Usage
from .backends.kinds import request_needs
from .config import Feature
from .engine import _ERROR_OUTCOME as ERROR_OUTCOME
from .engine import _VERDICT as VERDICT
from .engine import Attempt, Outcome, RouteResult, Status, Unreachable, _unsupported, ttft_verdict
from .errors import BackendError, ErrorClass
from .fleet import RequestHealth
from .health import Ticket, Verdict
from .policy import Planner, PlanStep
from .streaming import (
    NO_FIRST_TOKEN,
    STREAM_STALLED,
    TOKEN_EVENTS,
    Pump,
    StreamEvent,
    StreamTimeout,
    stream_backend_for,
)

DEADLINE_EXCEEDED = "DeadlineExceeded"
API_GATEWAY_IDLE_S = 300.0  # API Gateway closes a response stream with no bytes for this long
KEEP_ALIVE_S = 60.0  # the longest silence the run allows itself: a fifth of API Gateway's idle limit


@dataclass(frozen=True, slots=True)
class StreamHead:
    """The served target, sent with the first event (the attempts before it were abandoned unseen)."""

    target: str
    attempts: tuple[Attempt, ...]
    ttft_ms: float


@dataclass(frozen=True, slots=True)
class StreamTail:
    """The end: the route and usage, or why the stream stopped (``incomplete`` after the first token)."""

    result: RouteResult
    incomplete: bool = False
    ttft_ms: float | None = None
    gaps_ms: tuple[float, ...] = field(default=(), repr=False)  # inter-token gaps, for the metrics


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Nothing to send for ``KEEP_ALIVE_S``: the wire sends a comment so that the stream is not idle."""


KEEP_ALIVE = KeepAlive()


class _Silence:
    """When the caller last got something (clock seconds), across the run's attempts; when a keep-alive is due."""

    def __init__(self, clock: Callable[[], float], interval_s: float) -> None:
        self.clock, self.interval_s = clock, interval_s
        self.due = clock() + interval_s

    def broken(self) -> None:
        self.due = self.clock() + self.interval_s


StreamItem = StreamHead | StreamEvent | StreamTail | KeepAlive
Admit = Callable[..., tuple[Ticket, int]]
Finish = Callable[..., RouteResult]


def run(
    *,
    planner: Planner,
    f: Feature,
    request: Mapping[str, Any],
    health: RequestHealth,
    backends: Mapping[str, Any],
    admit: Admit,
    conclude: Finish,
    clock: Callable[[], float],
    start: float,
    deadline_ms: float | None,
    keep_alive_s: float | None = None,
) -> Iterator[StreamItem]:
    """The streaming twin of the engine's buffered walk; ``conclude`` builds the result when no target served.
    ``keep_alive_s``: the longest silence (``KEEP_ALIVE_S`` unless given)."""
    silence = _Silence(clock, KEEP_ALIVE_S if keep_alive_s is None else keep_alive_s)
    budget_ms = f.deadline_ms if deadline_ms is None else min(f.deadline_ms, deadline_ms)
    deadline = start + budget_ms / 1000.0
    min_s, max_s = f.attempt_min_ms / 1000.0, f.attempt_max_ms / 1000.0
    steps = planner.plan(f.name, health, request_needs(request)).steps
    last_capable = max((i for i, step in enumerate(steps) if not step.unsupported), default=-1)
    if last_capable < 0 < len(steps):
        yield StreamTail(_unsupported(steps))
        return
    trace: list[Attempt] = []
    sent = 0
    last_code: str | None = None
    unreachable = Unreachable()
    out_of_time = False
    for i, step in enumerate(steps):
        if step.unsupported:  # its backend cannot express the request: passed over, no health signal
            trace.append(Attempt(step.target.id, Outcome.UNSUPPORTED, kind=step.kind))
            continue
        if unreachable.passes_over(step, trace):
            continue
        if sent >= f.max_attempts:
            break
        remaining = deadline - clock()
        if remaining < min_s:
            out_of_time = True
            break
        timeout_s = min(remaining, max_s)
        force = step.probe or (sent == 0 and i == last_capable)
        ticket, level = admit(health, f, step, force=force, timeout_s=timeout_s, trace=trace)
        if not ticket.admitted:
            continue
        sent += 1
        attempt = _Attempt(health, f, step, ticket, level=level, clock=clock, silence=silence)
        try:
            first = yield from attempt.open(backends, request, timeout_s, deadline)
            if first is None:  # abandoned before its first token: judged, closed, the plan goes on
                trace.append(attempt.traced)
                last_code = attempt.traced.code
                if attempt.error is not None:
                    unreachable.note(step, attempt.error)
                if attempt.error is not None and attempt.error.error_class is ErrorClass.CLIENT:
                    yield StreamTail(conclude(trace, last_code, out_of_time=False, client=attempt.error))
                    return
                continue
            yield StreamHead(step.target.id, tuple(trace), attempt.ttft_ms)
            yield from first
            yield from attempt.relay(f, trace, deadline, start)
            return
        finally:
            attempt.close()
    yield StreamTail(conclude(trace, last_code, out_of_time=out_of_time, client=None))


class _Attempt:
    """One streamed attempt: its pump, its breaker ticket and in-flight level, given back exactly once."""

    def __init__(
        self,
        health: RequestHealth,
        f: Feature,
        step: PlanStep,
        ticket: Ticket,
        *,
        level: int,
        clock: Callable[[], float],
        silence: _Silence,
    ) -> None:
        self.health, self.f, self.step, self.ticket, self.level, self.clock = health, f, step, ticket, level, clock
        self.silence = silence
        self.pump: Pump | None = None
        self.sent_at = clock()
        self.ttft_ms = 0.0
        self.first_token = False  # the breaker hears its time to first token (even if the stream fails later)
        self.error: BackendError | None = None
        self.traced = Attempt(step.target.id, Outcome.UNAVAILABLE, kind=step.kind)
        self.verdict = Verdict.NEUTRAL
        self.retry_after_s: float | None = None
        self.throttled = False
        self._done = False

    def _elapsed_ms(self) -> float:
        return (self.clock() - self.sent_at) * 1000.0

    def _fail(self, error: BackendError) -> None:
        outcome = ERROR_OUTCOME.get(error.error_class, Outcome.UNAVAILABLE)
        self.error = error
        self.traced = Attempt(self.step.target.id, outcome, error.code, self._elapsed_ms(), self.step.kind)
        self.verdict, self.retry_after_s = VERDICT[outcome], error.retry_after_s
        self.throttled = outcome is Outcome.CAPACITY

    def open(
        self, backends: Mapping[str, Any], request: Mapping[str, Any], timeout_s: float, deadline: float
    ) -> Generator[KeepAlive, None, list[StreamEvent] | None]:
        """Keep-alives while it waits; returns the events up to and including the first token, or None when the
        attempt was abandoned before it."""
        target = self.step.target
        try:
            backend = stream_backend_for(backends, target.backend.kind)
            self.pump = Pump(backend.open_stream(target, request, timeout_s))
        except Exception as exc:  # a backend's bug is that attempt's failure, never the caller's
            self._fail(
                exc if isinstance(exc, BackendError) else BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__)
            )
            return None
        first_s = timeout_s if self.f.first_token_ms is None else min(timeout_s, self.f.first_token_ms / 1000.0)
        first_by = min(self.sent_at + first_s, deadline)
        held: list[StreamEvent] = []
        while True:
            try:
                event = self._wait(first_by)
            except StreamTimeout:
                self._fail(BackendError(ErrorClass.UNAVAILABLE, NO_FIRST_TOKEN))
                return None
            except BackendError as error:
                self._fail(error)
                return None
            if isinstance(event, KeepAlive):
                yield event
                continue
            if event is None or event[0] in TOKEN_EVENTS:  # an empty answer (a clean end) is still an answer
                self.ttft_ms, self.first_token = self._elapsed_ms(), True
                if event is not None:
                    held.append(event)
                return held
            held.append(event)

    def _wait(self, until: float) -> StreamEvent | KeepAlive | None:
        """The pump's next event (None at its end) by ``until``, or KEEP_ALIVE if the silence is due first.
        Raises BackendError, or StreamTimeout at ``until``."""
        assert self.pump is not None
        try:
            return self.pump.next(min(until, self.silence.due) - self.clock())
        except StreamTimeout:
            if self.clock() < until:
                self.silence.broken()  # the keep-alive goes out now
                return KEEP_ALIVE
            raise

    def _sent(self, gap_s: float) -> float:
        """An event has gone out: the silence starts again; the next event is due by the returned time."""
        self.silence.broken()
        return self.clock() + gap_s

    def relay(self, f: Feature, trace: list[Attempt], deadline: float, start: float) -> Iterator[StreamItem]:
        """The served stream's remaining events, then its tail (complete or incomplete)."""
        assert self.pump is not None
        slow = f.breaker.ttft_ms is not None and self.ttft_ms > f.breaker.ttft_ms
        usage: Usage | None = None
        gaps: list[float] = []
        last = self.sent_at + self.ttft_ms / 1000.0  # gaps count from the first token
        gap_s = f.inter_token_ms / 1000.0
        error: BackendError | None = None
        gap_by = self._sent(gap_s)  # the first token has just gone out
        while True:
            try:
                event = self._wait(min(gap_by, deadline))
            except StreamTimeout:
                code = STREAM_STALLED if gap_by <= deadline else DEADLINE_EXCEEDED
                error = BackendError(ErrorClass.UNAVAILABLE, code)
                break
            except BackendError as failure:
                error = failure
                break
            if isinstance(event, KeepAlive):
                yield event
                continue
            if event is None:
                break
            now = self.clock()
            if event[0] == "contentBlockDelta":
                gaps.append((now - last) * 1000.0)
                last = now
            if event[0] == "metadata":
                usage = _usage(event[1])
            yield event
            gap_by = self._sent(gap_s)
        elapsed_ms = (self.clock() - start) * 1000.0
        target = self.step.target
        if error is None:
            outcome = Outcome.SLOW if slow else Outcome.OK
            trace.append(Attempt(target.id, outcome, None, self._elapsed_ms(), self.step.kind, self.ttft_ms))
            self.verdict = Verdict.SLOW if slow else Verdict.OK
            result = RouteResult(
                Status.SERVED, 200, tuple(trace), elapsed_ms, target=target.id, usage=usage,
                spilled=target.capacity != f.first_capacity, fell_back=target.model != f.models[0],
                failed_over=target.region != f.home_region,
                predicted_spill=any(a.outcome is Outcome.PREDICTED_FULL for a in trace),
            )  # fmt: skip
            yield StreamTail(result, incomplete=False, ttft_ms=self.ttft_ms, gaps_ms=tuple(gaps))
            return
        if error.code == DEADLINE_EXCEEDED:
            self.error = error  # the request ran out of time: not the target's fault
            self.traced = Attempt(target.id, Outcome.UNAVAILABLE, error.code, self._elapsed_ms(), self.step.kind)
        else:
            self._fail(error)
        self.traced = replace(self.traced, ttft_ms=self.ttft_ms)  # it got a first token: the metrics count it
        trace.append(self.traced)
        result = RouteResult(Status.INCOMPLETE, 200, tuple(trace), elapsed_ms, target=target.id, code=error.code)
        yield StreamTail(result, incomplete=True, ttft_ms=self.ttft_ms, gaps_ms=tuple(gaps))

    def close(self) -> None:
        """Close the stream and give the breaker ticket and in-flight level back (once)."""
        if self._done:
            return
        self._done = True
        try:
            if self.pump is not None:
                self.pump.close()
        finally:
            target_id = self.step.target.id
            if self.level:
                self.health.end(target_id, self.level, throttled=self.throttled)
            first_token = ttft_verdict(self.f, self.ttft_ms) if self.first_token else None
            self.health.finish(
                target_id,
                self.f.breaker,
                self.verdict,
                self.ticket,
                retry_after_s=self.retry_after_s,
                ttft_over=first_token,
            )


def _usage(metadata: Mapping[str, Any]) -> Usage | None:
    raw = metadata.get("usage")
    if not isinstance(raw, Mapping):
        return None
    values = [raw.get("inputTokens"), raw.get("outputTokens")]
    ints = [v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0 for v in values]
    return Usage(ints[0], ints[1])

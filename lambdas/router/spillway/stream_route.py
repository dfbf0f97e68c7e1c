"""Streaming execution: walk a plan until one target sends its first token, then relay that target's stream.

Before the first token nothing reaches the caller, so any failure is the buffered engine's failure: an attempt that
fails, or sends no first token within its first-token deadline (the feature's ``first_token_ms``, within the
attempt's timeout and the request's deadline), is abandoned (its connection closed, its breaker told: no first token
is ``unavailable``) and the plan goes on. Events that come before the first token (``messageStart``) are held and
sent with it. After the first token the caller has part of an answer: a backend error, a gap longer than the
feature's ``inter_token_ms`` or the request's deadline ends the stream with an explicit incomplete tail (the code,
the route), never a clean end. Time to first token is measured on every streamed attempt; over the breaker's
``ttft_ms`` the attempt counts as slow.

Where the feature opts in (``continue_with_prefix``), a stream cut after its first token (an error or a stall, not
the request's deadline) goes on at the plan's next target that can take the partial answer as the assistant's
prefix (spillway/continuation.py): targets that cannot are passed over (``unsupported``, code NoAssistantPrefix),
the continuing target is walked like any attempt (first-token deadline, breaker, abandoned unseen if it fails), and
a seam event (``spillwayContinuation``, :class:`StreamSeam`) marks where its events begin. Without a continuing
target the stream ends incomplete as before.

Silence is bounded: API Gateway closes a response stream idle for 5 minutes, so after ``KEEP_ALIVE_S`` with nothing
yielded (before the first token, across the plan's attempts, or in a gap between tokens) the run yields
:data:`KEEP_ALIVE`, which the wire renders as an SSE comment (docs/design-notes.md, "Keep-alive").

What the run yields, in order: a :class:`StreamHead` (the target and the attempts before it: the route headers),
the served target's ConverseStream events (with a seam event and the next target's events after each continued cut),
and a :class:`StreamTail`; or, when no target sends a first token, only a tail whose result is the buffered engine's
4xx/503/504. Closing the generator early (the caller left) closes the backend's stream and tells its breaker nothing
(neutral). Zero knowledge: events pass through untouched and unread but for their names (and, for a continuation,
the text the caller was sent, held for the next request only); the trace holds ids, codes and timings.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .backends.contract import Usage
from .backends.kinds import request_needs
from .config import Feature
from .continuation import NO_PREFIX, Partial, Splice, StreamSeam, prefix_targets, total_usage, with_prefix
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
    seams: tuple[StreamSeam, ...] = ()  # where the stream went on at another target, in order


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


class _Served:
    """The caller's stream once a target has sent its first token: what was sent, each segment's usage, and, while
    a cut stream waits for a target to continue it (``continue_with_prefix``), the cut and the request that
    continues it."""

    def __init__(self, f: Feature, request: Mapping[str, Any], able: Callable[[], frozenset[str]]) -> None:
        self.f, self.request = f, request
        self._able = able  # the targets that can take a prefix, asked for only once a stream is cut
        self._able_ids: frozenset[str] | None = None
        self.partial = Partial()
        self.usages: list[Usage | None] = []  # each segment's usage, as its backend reported it
        self.seams: list[StreamSeam] = []
        self.started = False
        self.cut: tuple[str, str] | None = None  # (target, code) of the cut awaiting a continuation
        self.cut_timing: tuple[float, tuple[float, ...]] = (0.0, ())  # the cut segment's ttft and gaps (metrics)
        self.splice: Splice | None = None
        self.next_request: Mapping[str, Any] = request

    def passes_over(self, step: PlanStep) -> bool:
        """While continuing, a target that cannot take the prefix is passed over."""
        if self.cut is None:
            return False
        if self._able_ids is None:
            self._able_ids = self._able()
        return step.target.id not in self._able_ids

    def begin(self, target: str, trace: list[Attempt], ttft_ms: float) -> StreamItem:
        """The head (route headers) for the first segment; a seam for each continuation."""
        if self.cut is None:
            self.started = True
            return StreamHead(target, tuple(trace), ttft_ms)
        assert self.splice is not None
        self.seams.append(StreamSeam(self.cut[0], self.cut[1], target, self.splice.offset))
        self.cut = None
        return self.seams[-1].event()

    def cut_off(self, target: str, ending: _Ending, ttft_ms: float) -> bool:
        """Record a segment's end; True when it was cut and the feature continues it on the next able target."""
        self.usages.append(ending.usage)
        self.cut_timing = (ttft_ms, ending.gaps_ms)
        error = ending.error
        if error is None or error.code == DEADLINE_EXCEEDED or not self.f.continue_with_prefix:
            return False
        if not self.partial.continuable():
            return False
        text = self.partial.text
        prefix = text.rstrip()
        self.splice = Splice(self.partial.resume_index(), trim=prefix != text, earlier=self.usage())
        self.next_request = with_prefix(self.request, prefix)
        self.cut = (target, error.code)
        return True

    def usage(self) -> Usage | None:
        return total_usage(self.usages)

    def incomplete(self, trace: list[Attempt], elapsed_ms: float) -> StreamTail:
        """No target continued the cut stream: it ends incomplete where it was cut."""
        assert self.cut is not None
        target, code = self.cut
        result = RouteResult(
            Status.INCOMPLETE, 200, tuple(trace), elapsed_ms, target=target, code=code, usage=self.usage()
        )
        ttft_ms, gaps_ms = self.cut_timing
        return StreamTail(result, incomplete=True, ttft_ms=ttft_ms, gaps_ms=gaps_ms, seams=tuple(self.seams))


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
    served = _Served(f, request, lambda: prefix_targets(planner.table.targets))
    for i, step in enumerate(steps):
        if step.unsupported or served.passes_over(step):  # it cannot express the request: no health signal
            trace.append(
                Attempt(step.target.id, Outcome.UNSUPPORTED, None if step.unsupported else NO_PREFIX, kind=step.kind)
            )
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
            first = yield from attempt.open(backends, served.next_request, timeout_s, deadline)
            if first is None:  # abandoned before its first token: judged, closed, the plan goes on
                last_code = attempt.traced.code
                client = attempt.abandoned(trace, unreachable)
                if client is not None and not served.started:  # (a refused continuation is that target's)
                    yield StreamTail(conclude(trace, last_code, out_of_time=False, client=client))
                    return
                continue
            yield served.begin(step.target.id, trace, attempt.ttft_ms)
            ending = yield from attempt.relay(
                first, f=f, trace=trace, deadline=deadline, partial=served.partial, splice=served.splice
            )
            if served.cut_off(step.target.id, ending, attempt.ttft_ms):
                continue
            yield attempt.tail(f=f, trace=trace, start=start, ending=ending, served=served)
            return
        finally:
            attempt.close()
    # A cut stream no target continued ends incomplete where it was cut; else no target served.
    yield (
        served.incomplete(trace, (clock() - start) * 1000.0)
        if served.cut is not None
        else StreamTail(conclude(trace, last_code, out_of_time=out_of_time, client=None))
    )


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a relayed stream ended: cleanly (error None) or cut, with what its backend reported."""

    error: BackendError | None
    usage: Usage | None
    gaps_ms: tuple[float, ...]


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

    def abandoned(self, trace: list[Attempt], unreachable: Unreachable) -> BackendError | None:
        """Trace an attempt abandoned before its first token and note an unreachable endpoint; its error when it is
        the caller's (a client error)."""
        trace.append(self.traced)
        error = self.error
        if error is not None:
            unreachable.note(self.step, error)
        return error if error is not None and error.error_class is ErrorClass.CLIENT else None

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

    def _read(self, gap_by: float, deadline: float) -> StreamEvent | KeepAlive | None:
        """The next event after the first token, by the gap's end and the deadline: past them, BackendError
        StreamStalled (the target's failure) or DeadlineExceeded (the request's end)."""
        try:
            return self._wait(min(gap_by, deadline))
        except StreamTimeout:
            code = STREAM_STALLED if gap_by <= deadline else DEADLINE_EXCEEDED
            raise BackendError(ErrorClass.UNAVAILABLE, code) from None

    def _sent(self, gap_s: float) -> float:
        """An event has gone out: the silence starts again; the next event is due by the returned time."""
        self.silence.broken()
        return self.clock() + gap_s

    def relay(
        self,
        first: list[StreamEvent],
        *,
        f: Feature,
        trace: list[Attempt],
        deadline: float,
        partial: Partial,
        splice: Splice | None,
    ) -> Generator[StreamEvent | KeepAlive, None, _Ending]:
        """The served stream's events (its first ones included), spliced when it continues a cut stream, each one
        seen by ``partial``, with keep-alives in long gaps; returns how it ended, the attempt judged and traced."""
        assert self.pump is not None
        slow = f.breaker.ttft_ms is not None and self.ttft_ms > f.breaker.ttft_ms
        usage: Usage | None = None
        gaps: list[float] = []
        last = self.sent_at + self.ttft_ms / 1000.0  # gaps count from the first token
        gap_s = f.inter_token_ms / 1000.0
        error: BackendError | None = None
        pending = list(first)
        gap_by = self._sent(gap_s)  # the first token is going out
        while True:
            if pending:
                event = pending.pop(0)
            else:
                try:
                    read = self._read(gap_by, deadline)
                except BackendError as failure:
                    error = failure
                    break
                if isinstance(read, KeepAlive):
                    yield read
                    continue
                if read is None:
                    break
                event = read
                now = self.clock()
                if event[0] == "contentBlockDelta":
                    gaps.append((now - last) * 1000.0)
                    last = now
            if event[0] == "metadata":
                usage = _usage(event[1])
            out = event if splice is None else splice(event)
            if out is not None:
                partial.observe(out)
                yield out
            gap_by = self._sent(gap_s)
        target = self.step.target
        if error is None:
            outcome = Outcome.SLOW if slow else Outcome.OK
            trace.append(Attempt(target.id, outcome, None, self._elapsed_ms(), self.step.kind, self.ttft_ms))
            self.verdict = Verdict.SLOW if slow else Verdict.OK
            return _Ending(None, usage, tuple(gaps))
        if error.code == DEADLINE_EXCEEDED:
            self.error = error  # the request ran out of time: not the target's fault
            self.traced = Attempt(target.id, Outcome.UNAVAILABLE, error.code, self._elapsed_ms(), self.step.kind)
        else:
            self._fail(error)
        self.traced = replace(self.traced, ttft_ms=self.ttft_ms)  # it got a first token: the metrics count it
        trace.append(self.traced)
        return _Ending(error, usage, tuple(gaps))

    def tail(self, *, f: Feature, trace: list[Attempt], start: float, ending: _Ending, served: _Served) -> StreamTail:
        """The end of a stream this attempt served last: complete, or incomplete with the code that cut it."""
        elapsed_ms = (self.clock() - start) * 1000.0
        target = self.step.target
        usage, seams = served.usage(), tuple(served.seams)
        if ending.error is not None:
            result = RouteResult(
                Status.INCOMPLETE, 200, tuple(trace), elapsed_ms, target=target.id, code=ending.error.code, usage=usage
            )
            return StreamTail(result, incomplete=True, ttft_ms=self.ttft_ms, gaps_ms=ending.gaps_ms, seams=seams)
        result = RouteResult(
            Status.SERVED, 200, tuple(trace), elapsed_ms, target=target.id, usage=usage,
            spilled=target.capacity != f.first_capacity, fell_back=target.model != f.models[0],
            failed_over=target.region != f.home_region,
            predicted_spill=any(a.outcome is Outcome.PREDICTED_FULL for a in trace),
        )  # fmt: skip
        return StreamTail(result, incomplete=False, ttft_ms=self.ttft_ms, gaps_ms=ending.gaps_ms, seams=seams)

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

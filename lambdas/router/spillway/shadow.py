"""Shadow traffic: mirror a share of a feature's requests to a candidate target and record numbers, never content.

How a shadow runs in Lambda, where nothing runs after the handler returns: it is handed to one of the instance's
shadow worker threads (started once, kept) alongside the primary route, before the engine sends anything, and the
caller waits for it at most the feature's ``shadow.grace_ms`` past the primary's answer. A shadow not done by then
is recorded ``abandoned``; it is left to finish (or time out) on its own, frozen with the instance between
invocations, and its late result is dropped (its latency, measured across a freeze, would be false). So the caller
is delayed by at most the grace, and only when the candidate is slower than the incumbent.

The shadow is sent through the backend's streaming call where its kind streams (ConverseStream, SageMaker's response
stream), so its time to first token is measured as ``Engine.stream`` measures it: from sending to the first event
that carries the answer (``contentBlockStart`` or ``contentBlockDelta``), or the clean end of an empty answer. The
incumbent's is the caller's own: a streamed request's first token (the streamed route calls :meth:`Shadower.begin`
and :meth:`Shadower.end` around its stream), a buffered request's served attempt's (the engine measures it).

What a shadow never does: change the caller's answer, status or headers (:meth:`Shadower.mirror` returns the
primary's result object itself); reach the caller when it fails (every error of the shadow ends in its record);
take a breaker ticket, a provisioned lease or an in-flight slot (it calls the backend directly, not through the
engine, so the feature's own targets' breakers and capacity never hear of it). A candidate that throttles is left
alone for a local cooldown (1 s, doubling on each throttle in a row, at most 5 min); a served shadow resets it.
At most ``max_running`` shadows are in flight per instance (abandoned ones included): more are not started.

The record (one structured log line, ``"message": "shadow"``, and EMF metrics per shadow request) holds the
feature, the incumbent and candidate target ids, latencies, times to first token, token counts, the incumbent's
throttled attempts, stop reasons from Converse's closed vocabulary, error class and code, and ``abandoned``:
tools/shadow_report.py compares candidate and incumbent from these lines.

The optional judge (spillway/judge.py, the feature's ``shadow.judge``): for its share of the shadows that served
(of buffered requests: a streamed answer is relayed, never kept whole), after the caller's answer is final, both
answers' texts go to one judge call on the instance's judge thread (one in flight at most, ``max_per_minute`` per
instance) and are dropped when it returns; the caller never waits for it. Its record (``"message": "shadow_judge"``)
holds the score, the judge's target id, latency and error code.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from . import judge as judging
from . import telemetry
from .backends.contract import Backend, BackendReply, Usage
from .backends.kinds import BedrockRef, kind_of, request_needs
from .config import Feature, JudgePolicy, RoutingTable, ShadowPolicy, Target
from .engine import Outcome, RouteResult, Status
from .errors import BackendError, ErrorClass, from_exception
from .routing_source import bucket
from .stream_route import _usage as stream_usage
from .streaming import TOKEN_EVENTS
from .telemetry import logger

# Converse's stop reasons; anything else a backend puts there is recorded as "other" (never its text).
STOP_REASONS = frozenset(
    {"end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened", "content_filtered"}
)
FIRST_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 300.0
MAX_RUNNING = 2
THREAD_NAME = "spillway-shadow"
JUDGE_THREAD_NAME = "spillway-judge"
SALT = "shadow:"  # its own buckets: a shadow's sample is independent of the canary's
JUDGE_SALT = "judge:"  # and the judge's of both
STREAM_OVERRUN = "ShadowDeadlineExceeded"  # a streamed shadow still running at its timeout


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """One shadow request, in numbers and names from the routing table only."""

    feature: str
    incumbent: str | None  # the target that answered the caller (None when nothing served)
    candidate: str
    incumbent_status: int
    incumbent_ms: float
    incumbent_input_tokens: int | None
    incumbent_output_tokens: int | None
    incumbent_stop: str | None
    outcome: str  # ok | error | abandoned
    candidate_ms: float | None  # None when abandoned
    candidate_input_tokens: int | None = None
    candidate_output_tokens: int | None = None
    candidate_stop: str | None = None
    error_class: str | None = None
    error_code: str | None = None
    incumbent_ttft_ms: float | None = None  # the served attempt's, when the engine measured one
    incumbent_throttles: int = 0  # throttled attempts on the caller's route
    candidate_ttft_ms: float | None = None  # None when abandoned, failed before a first token, or not streamed


@dataclass(frozen=True, slots=True)
class JudgeRecord:
    """One judge call: the score of a candidate's answer against the incumbent's (0..1), never the answers."""

    feature: str
    incumbent: str
    candidate: str
    judge: str  # the judge's target id
    outcome: str  # scored | unparsed (the reply was not a score) | error
    score: float | None
    judge_ms: float
    error_class: str | None = None
    error_code: str | None = None


Emit = Callable[[ShadowRecord], None]
EmitJudge = Callable[[JudgeRecord], None]


def log_record(record: ShadowRecord) -> None:
    """The default sink: one structured log line and the EMF metrics per shadow request."""
    logger.info("shadow", extra=asdict(record))
    telemetry.record_shadow(record)


def log_judge(record: JudgeRecord) -> None:
    """The default judge sink: one structured log line and the EMF metrics per judge call."""
    logger.info("shadow_judge", extra=asdict(record))
    telemetry.record_judge(record)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a shadow's call brought back: numbers, and its text only when a judge may read it."""

    ttft_ms: float | None
    usage: Usage | None
    stop: str | None
    text: str | None = field(default=None, repr=False)


class _Run:
    """One shadow in flight: written by its thread, read by the request's thread once `done` is set."""

    __slots__ = ("answer", "done", "error", "keep_text", "latency_ms")

    def __init__(self, keep_text: bool) -> None:
        self.done = threading.Event()
        self.keep_text = keep_text  # sampled for the judge: keep the answer's text for it
        self.answer: _Answer | None = None
        self.error: BackendError | None = None
        self.latency_ms = 0.0


class Pending(NamedTuple):
    """A shadow under way, between :meth:`Shadower.begin` and :meth:`Shadower.end`."""

    table: RoutingTable
    feature: str
    target: Target  # the candidate, as the feature sends to it
    policy: ShadowPolicy
    run: _Run


@dataclass(frozen=True, slots=True)
class _JudgeJob:
    feature: str
    incumbent: str
    candidate: str
    target: Target  # the judge, as the feature sends to it
    timeout_s: float
    request: Mapping[str, Any] = field(repr=False)  # the two answers in the template: dropped once sent


class Shadower:
    """Starts, bounds and records the shadows (and their judges) of one router instance. Thread-safe."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        *,
        emit: Emit = log_record,
        emit_judge: EmitJudge = log_judge,
        clock: Callable[[], float] = time.monotonic,
        max_running: int = MAX_RUNNING,
        region: str | None = None,
    ) -> None:
        self._backends = backends  # the router's own mapping: a backend swapped in later is seen
        self.emit = emit  # where records go (a test may tee them)
        self.emit_judge = emit_judge
        self._clock = clock
        self._max_running = max_running
        self._region = region  # the router's own region: a judge elsewhere is refused (the answers stay in the cell)
        self._running = 0  # shadows sent and not yet ended (abandoned ones included)
        self._workers = 0
        self._idle = threading.Condition()
        self._jobs: queue.SimpleQueue[tuple[Backend, Target, Mapping[str, Any], float, _Run]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._cooldown: dict[str, tuple[float, float]] = {}  # target -> (until, last cooldown length)
        self._judging = False  # a judge call queued or in flight (one at most)
        self._judge_worker = False
        self._judge_jobs: queue.SimpleQueue[_JudgeJob] = queue.SimpleQueue()
        self._bounds: dict[tuple[str, int], judging.RateBound] = {}  # (feature, per minute) -> its bound

    def mirror(
        self,
        table: RoutingTable,
        feature: str,
        request: Mapping[str, Any],
        request_id: str,
        serve: Callable[[], RouteResult],
    ) -> RouteResult:
        """Serve the caller with `serve()` and, for the feature's shadow share, mirror `request` to its candidate.
        Returns exactly what `serve()` returned. Nothing about the shadow (or its judge) raises here."""
        pending = self.begin(table, feature, request, request_id)
        result = serve()
        self.end(pending, result)
        return result

    def begin(self, table: RoutingTable, feature: str, request: Mapping[str, Any], request_id: str) -> Pending | None:
        """Start the request's shadow, if the feature's share samples it, before the primary sends anything (a
        streamed request's route calls this and :meth:`end`; a buffered one, :meth:`mirror`). Never raises."""
        try:
            policy = self._policy(table, feature, request_id)
            if policy is None:
                return None
            f = table.features[feature]
            target = as_sent_for(f, table.targets[policy.target], request)
            if target is None:
                return None
            run = self._start(target, request, f.attempt_max_ms, keep_text=_sampled(policy.judge, request_id))
            return None if run is None else Pending(table, feature, target, policy, run)
        except Exception:  # a shadow's bug costs the shadow, never the caller
            return None

    def end(self, pending: Pending | None, result: RouteResult, *, incumbent_ttft_ms: float | None = None) -> None:
        """Wait at most the grace for the shadow and record it against the caller's `result` (a streamed request's
        time to first token given apart, since its result carries none). Never raises."""
        if pending is None:
            return
        with contextlib.suppress(Exception):  # a lost record; the caller is answered regardless
            self._finish(pending, result, served_ttft(result) if incumbent_ttft_ms is None else incumbent_ttft_ms)

    def cooling(self, target_id: str) -> bool:
        """Whether `target_id` (a candidate or a judge) is in its throttle cooldown (nothing is sent to it)."""
        with self._lock:
            until = self._cooldown.get(target_id, (0.0, 0.0))[0]
        return self._clock() < until

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no shadow or judge is in flight (abandoned ones included); False if `timeout_s` ran out."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0 and not self._judging, timeout_s)

    # -- shadows ------------------------------------------------------------------------------------------------

    @staticmethod
    def _policy(table: RoutingTable, feature: str, request_id: str) -> ShadowPolicy | None:
        f = table.features.get(feature)
        policy = f.shadow if f is not None else None
        if policy is None or policy.share <= 0 or bucket(SALT + request_id) >= policy.share:
            return None
        return policy

    def _start(self, target: Target, request: Mapping[str, Any], timeout_ms: float, *, keep_text: bool) -> _Run | None:
        backend = self._backends.get(target.backend.kind)
        if backend is None or self.cooling(target.id):
            return None
        with self._idle:
            if self._running >= self._max_running:
                return None
            self._running += 1
            if self._workers < self._max_running:  # started once, kept: no thread start on the caller's path
                self._workers += 1
                try:
                    threading.Thread(target=self._work, name=THREAD_NAME, daemon=True).start()
                except BaseException:
                    self._workers -= 1
                    self._running -= 1
                    raise
        run = _Run(keep_text)
        self._jobs.put((backend, target, request, timeout_ms / 1000.0, run))
        return run

    def _work(self) -> None:
        while True:
            self._send(*self._jobs.get())

    def _send(self, backend: Backend, target: Target, request: Mapping[str, Any], timeout_s: float, run: _Run) -> None:
        t0 = self._clock()
        try:
            run.answer = self._call(backend, target, request, timeout_s, keep_text=run.keep_text)
        except Exception as exc:  # the shadow's failure: recorded by class and code, seen by no one
            run.error = exc if isinstance(exc, BackendError) else from_exception(exc)
        finally:
            run.latency_ms = (self._clock() - t0) * 1000.0
            self._cool(target.id, throttled=run.error is not None and run.error.error_class is ErrorClass.CAPACITY)
            run.done.set()
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _call(
        self, backend: Backend, target: Target, request: Mapping[str, Any], timeout_s: float, *, keep_text: bool
    ) -> _Answer:
        """One shadow call: streamed where the backend streams (time to first token measured), else buffered."""
        open_stream = getattr(backend, "open_stream", None)
        if not callable(open_stream):
            reply: BackendReply = backend.invoke(target, request, timeout_s)
            text = judging.answer_text(reply.response) if keep_text else None
            return _Answer(reply.ttft_ms, reply.usage, stop_reason(reply.response), text)
        t0 = self._clock()
        ttft_ms: float | None = None
        usage: Usage | None = None
        stop: str | None = None
        parts: list[str] = []
        stream = open_stream(target, request, timeout_s)
        try:
            for name, members in stream:
                elapsed_s = self._clock() - t0
                if ttft_ms is None and name in TOKEN_EVENTS:
                    ttft_ms = elapsed_s * 1000.0
                if name == "contentBlockDelta" and keep_text:
                    delta = members.get("delta")
                    piece = delta.get("text") if isinstance(delta, Mapping) else None
                    if isinstance(piece, str):
                        parts.append(piece)
                elif name == "messageStop":
                    stop = stop_reason(members)
                elif name == "metadata":
                    usage = stream_usage(members)
                if elapsed_s > timeout_s:  # each read is bounded by the client; the whole call by the timeout
                    raise BackendError(ErrorClass.UNAVAILABLE, STREAM_OVERRUN)
        finally:
            stream.close()
        if ttft_ms is None:  # a clean end with no content block: its first token is its end (as Engine.stream)
            ttft_ms = (self._clock() - t0) * 1000.0
        return _Answer(ttft_ms, usage, stop, "".join(parts) if keep_text else None)

    def _cool(self, target_id: str, *, throttled: bool) -> None:
        with self._lock:
            if not throttled:
                self._cooldown.pop(target_id, None)
                return
            _, last = self._cooldown.get(target_id, (0.0, 0.0))
            length = min(MAX_COOLDOWN_S, last * 2 if last else FIRST_COOLDOWN_S)
            self._cooldown[target_id] = (self._clock() + length, length)

    def _finish(self, pending: Pending, result: RouteResult, incumbent_ttft_ms: float | None) -> None:
        table, feature, target, policy, run = pending
        finished = run.done.wait(policy.grace_ms / 1000.0)
        usage = result.usage
        abandoned = ShadowRecord(
            feature=feature,
            incumbent=result.target,
            candidate=target.id,
            incumbent_status=result.http_status,
            incumbent_ms=round(result.elapsed_ms, 3),
            incumbent_input_tokens=usage.input_tokens if usage else None,
            incumbent_output_tokens=usage.output_tokens if usage else None,
            incumbent_stop=stop_reason(result.response),
            outcome="abandoned",
            candidate_ms=None,
            incumbent_ttft_ms=_ms(incumbent_ttft_ms),
            incumbent_throttles=sum(1 for a in result.attempts if a.outcome is Outcome.CAPACITY),
        )
        if not finished:
            self.emit(abandoned)
            return
        latency_ms = round(run.latency_ms, 3)
        answer = run.answer
        if run.error is not None or answer is None:
            error = run.error or BackendError(ErrorClass.OURS, "NoReply")
            self.emit(
                replace(
                    abandoned,
                    outcome="error",
                    candidate_ms=latency_ms,
                    error_class=error.error_class.value,
                    error_code=error.code,
                )
            )
            return
        record = replace(
            abandoned,
            outcome="ok",
            candidate_ms=latency_ms,
            candidate_input_tokens=answer.usage.input_tokens if answer.usage else None,
            candidate_output_tokens=answer.usage.output_tokens if answer.usage else None,
            candidate_stop=answer.stop,
            candidate_ttft_ms=_ms(answer.ttft_ms),
        )
        self.emit(record)
        if policy.judge is not None and run.keep_text and answer.text is not None:
            self._judge(table, policy.judge, record, result, answer.text)

    # -- the judge ----------------------------------------------------------------------------------------------

    def _judge(
        self, table: RoutingTable, policy: JudgePolicy, record: ShadowRecord, result: RouteResult, candidate: str
    ) -> None:
        """Queue one judge call for a served pair, unless its bounds say no (then nothing is sent or kept)."""
        reference = judging.answer_text(result.response)
        if result.status is not Status.SERVED or result.target is None or reference is None:
            return
        f = table.features[record.feature]
        used = judging.tokens_of(reference, record.incumbent_output_tokens) + judging.tokens_of(
            candidate, record.candidate_output_tokens
        )
        judge = table.targets.get(policy.target)
        if judge is None or used > policy.max_answer_tokens or self.cooling(judge.id):
            return
        if self._region is not None and judge.region != self._region:  # never outside the router's own cell
            return
        request = judging.judge_request(reference, candidate)
        sent_as = as_sent_for(f, judge, request)
        backend = self._backends.get(judge.backend.kind)
        if sent_as is None or backend is None:
            return
        with self._idle:
            if self._judging or not self._bound(record.feature, policy.max_per_minute).take():
                return
            self._judging = True
            if not self._judge_worker:
                self._judge_worker = True
                try:
                    threading.Thread(target=self._judge_work, name=JUDGE_THREAD_NAME, daemon=True).start()
                except BaseException:
                    self._judge_worker = self._judging = False
                    raise
        timeout_s = f.attempt_max_ms / 1000.0
        self._judge_jobs.put(_JudgeJob(record.feature, result.target, record.candidate, sent_as, timeout_s, request))

    def _bound(self, feature: str, per_minute: int) -> judging.RateBound:
        """The feature's judge rate bound (a new one when its rate changes). Called under the idle lock."""
        key = (feature, per_minute)
        bound = self._bounds.get(key)
        if bound is None:
            bound = self._bounds[key] = judging.RateBound(per_minute, self._clock)
        return bound

    def _judge_work(self) -> None:
        while True:
            job = self._judge_jobs.get()
            try:
                with contextlib.suppress(Exception):  # a judge's bug costs its score, never the thread
                    self._run_judge(job)
            finally:
                del job  # the answers go with it
                with self._idle:
                    self._judging = False
                    self._idle.notify_all()

    def _run_judge(self, job: _JudgeJob) -> None:
        record = JudgeRecord(job.feature, job.incumbent, job.candidate, job.target.id, "error", None, 0.0)
        backend = self._backends.get(job.target.backend.kind)
        t0 = self._clock()
        error: BackendError | None = None
        score: float | None = None
        try:
            if backend is None:
                raise BackendError(ErrorClass.OURS, "NoBackendForKind")
            score = judging.parse_score(backend.invoke(job.target, job.request, job.timeout_s).response)
        except Exception as exc:  # the judge's failure: by class and code, never its message (it may quote answers)
            error = exc if isinstance(exc, BackendError) else from_exception(exc)
        judge_ms = round((self._clock() - t0) * 1000.0, 3)
        self._cool(job.target.id, throttled=error is not None and error.error_class is ErrorClass.CAPACITY)
        with contextlib.suppress(Exception):
            if error is not None:
                self.emit_judge(
                    replace(record, judge_ms=judge_ms, error_class=error.error_class.value, error_code=error.code)
                )
            else:
                outcome = "scored" if score is not None else "unparsed"
                self.emit_judge(replace(record, outcome=outcome, score=score, judge_ms=judge_ms))


def served_ttft(result: RouteResult) -> float | None:
    """The time to first token of the attempt that served `result`, when the engine measured one."""
    for attempt in reversed(result.attempts):
        if attempt.target == result.target and attempt.outcome in (Outcome.OK, Outcome.SLOW):
            return attempt.ttft_ms
    return None


def _sampled(policy: JudgePolicy | None, request_id: str) -> bool:
    return policy is not None and policy.share > 0 and bucket(JUDGE_SALT + request_id) < policy.share


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def as_sent_for(feature: Feature, candidate: Target, request: Mapping[str, Any]) -> Target | None:
    """The candidate as the feature would send to it: its invoke id for this feature and the feature's platform
    Converse members (a guardrail, a service tier) on a Bedrock target, so a shadow never goes out unguarded; None
    when its kind cannot express the request (the planner would pass it over too)."""
    if kind_of(candidate.backend.kind).missing(request_needs(request)):
        return None
    invoke_id = dict(feature.invoke_ids).get(candidate.id)
    backend = BedrockRef(invoke_id) if invoke_id is not None else candidate.backend
    if isinstance(backend, BedrockRef) and feature.converse_defaults:
        backend = replace(backend, defaults=feature.converse_defaults)
    return candidate if backend == candidate.backend else replace(candidate, backend=backend)


def stop_reason(response: Mapping[str, Any] | None) -> str | None:
    """A Converse answer's stop reason from the closed vocabulary, "other" for anything else, None without one."""
    if response is None:
        return None
    reason = response.get("stopReason")
    if reason is None:
        return None
    return reason if reason in STOP_REASONS else "other"

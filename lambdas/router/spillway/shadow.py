"""Shadow traffic: mirror a share of a feature's requests to a candidate target and record numbers, never content.

How a shadow runs in Lambda, where nothing runs after the handler returns: it is handed to one of the instance's
shadow worker threads (started once, kept) alongside the primary route, before the engine sends anything, and the
caller waits for it at most the feature's ``shadow.grace_ms`` past the primary's answer. A shadow not done by then
is recorded ``abandoned``; it is left to finish (or time out) on its own, frozen with the instance between
invocations, and its late result is dropped (its latency, measured across a freeze, would be false). So the caller
is delayed by at most the grace, and only when the candidate is slower than the incumbent.

What a shadow never does: change the caller's answer, status or headers (:meth:`Shadower.mirror` returns the
primary's result object itself); reach the caller when it fails (every error of the shadow ends in its record);
take a breaker ticket, a provisioned lease or an in-flight slot (it calls the backend directly, not through the
engine, so the feature's own targets' breakers and capacity never hear of it). A candidate that throttles is left
alone for a local cooldown (1 s, doubling on each throttle in a row, at most 5 min); a served shadow resets it.
At most ``max_running`` shadows are in flight per instance (abandoned ones included): more are not started.

The record (one structured log line, ``"message": "shadow"``, per shadow request) holds the feature, the incumbent
and candidate target ids, latencies, token counts, stop reasons from Converse's closed vocabulary, error class and
code, and ``abandoned``: tools/shadow_report.py compares candidate and incumbent from these lines.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from .backends.contract import Backend, BackendReply
from .backends.kinds import BedrockRef, kind_of, request_needs
from .config import Feature, RoutingTable, ShadowPolicy, Target
from .engine import RouteResult
from .errors import BackendError, ErrorClass, from_exception
from .routing_source import bucket
from .telemetry import logger

# Converse's stop reasons; anything else a backend puts there is recorded as "other" (never its text).
STOP_REASONS = frozenset(
    {"end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened", "content_filtered"}
)
FIRST_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 300.0
MAX_RUNNING = 2
THREAD_NAME = "spillway-shadow"
SALT = "shadow:"  # its own buckets: a shadow's sample is independent of the canary's


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


Emit = Callable[[ShadowRecord], None]


def log_record(record: ShadowRecord) -> None:
    """The default sink: one structured log line per shadow request."""
    logger.info("shadow", extra=asdict(record))


class _Run:
    """One shadow in flight: written by its thread, read by the request's thread once `done` is set."""

    __slots__ = ("done", "error", "latency_ms", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: BackendReply | None = None
        self.error: BackendError | None = None
        self.latency_ms = 0.0


class Shadower:
    """Starts, bounds and records the shadows of one router instance. Thread-safe."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        *,
        emit: Emit = log_record,
        clock: Callable[[], float] = time.monotonic,
        max_running: int = MAX_RUNNING,
    ) -> None:
        self._backends = backends  # the router's own mapping: a backend swapped in later is seen
        self.emit = emit  # where records go (a test may tee them)
        self._clock = clock
        self._max_running = max_running
        self._running = 0  # shadows sent and not yet ended (abandoned ones included)
        self._workers = 0
        self._idle = threading.Condition()
        self._jobs: queue.SimpleQueue[tuple[Backend, Target, Mapping[str, Any], float, _Run]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._cooldown: dict[str, tuple[float, float]] = {}  # candidate -> (until, last cooldown length)

    def mirror(
        self,
        table: RoutingTable,
        feature: str,
        request: Mapping[str, Any],
        request_id: str,
        serve: Callable[[], RouteResult],
    ) -> RouteResult:
        """Serve the caller with `serve()` and, for the feature's shadow share, mirror `request` to its candidate.
        Returns exactly what `serve()` returned. Nothing about the shadow raises here."""
        policy, target, run = None, None, None
        try:
            policy = self._policy(table, feature, request_id)
            f = table.features[feature]
            target = as_sent_for(f, table.targets[policy.target], request) if policy is not None else None
            run = self._start(target, request, f.attempt_max_ms) if target is not None else None
        except Exception:  # a shadow's bug costs the shadow, never the caller
            run = None
        result = serve()
        if run is not None and policy is not None and target is not None:
            with contextlib.suppress(Exception):  # a lost record; the caller is answered regardless
                self._finish(feature, target, policy, run, result)
        return result

    def cooling(self, candidate: str) -> bool:
        """Whether `candidate` is in its throttle cooldown (no shadow is sent to it)."""
        with self._lock:
            until = self._cooldown.get(candidate, (0.0, 0.0))[0]
        return self._clock() < until

    # -- internals ----------------------------------------------------------------------------------------------

    @staticmethod
    def _policy(table: RoutingTable, feature: str, request_id: str) -> ShadowPolicy | None:
        f = table.features.get(feature)
        policy = f.shadow if f is not None else None
        if policy is None or policy.share <= 0 or bucket(SALT + request_id) >= policy.share:
            return None
        return policy

    def _start(self, target: Target, request: Mapping[str, Any], timeout_ms: float) -> _Run | None:
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
        run = _Run()
        self._jobs.put((backend, target, request, timeout_ms / 1000.0, run))
        return run

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no shadow is in flight (abandoned ones included); False if `timeout_s` ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout_s)

    def _work(self) -> None:
        while True:
            self._send(*self._jobs.get())

    def _send(self, backend: Backend, target: Target, request: Mapping[str, Any], timeout_s: float, run: _Run) -> None:
        t0 = self._clock()
        try:
            run.reply = backend.invoke(target, request, timeout_s)
        except Exception as exc:  # the shadow's failure: recorded by class and code, seen by no one
            run.error = exc if isinstance(exc, BackendError) else from_exception(exc)
        finally:
            run.latency_ms = (self._clock() - t0) * 1000.0
            self._judge(target.id, throttled=run.error is not None and run.error.error_class is ErrorClass.CAPACITY)
            run.done.set()
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _judge(self, candidate: str, *, throttled: bool) -> None:
        with self._lock:
            if not throttled:
                self._cooldown.pop(candidate, None)
                return
            _, last = self._cooldown.get(candidate, (0.0, 0.0))
            length = min(MAX_COOLDOWN_S, last * 2 if last else FIRST_COOLDOWN_S)
            self._cooldown[candidate] = (self._clock() + length, length)

    def _finish(self, feature: str, target: Target, policy: ShadowPolicy, run: _Run, result: RouteResult) -> None:
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
        )
        if not finished:
            self.emit(abandoned)
            return
        latency_ms = round(run.latency_ms, 3)
        reply = run.reply
        if run.error is not None or reply is None:
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
        self.emit(
            replace(
                abandoned,
                outcome="ok",
                candidate_ms=latency_ms,
                candidate_input_tokens=reply.usage.input_tokens if reply.usage else None,
                candidate_output_tokens=reply.usage.output_tokens if reply.usage else None,
                candidate_stop=stop_reason(reply.response),
            )
        )


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

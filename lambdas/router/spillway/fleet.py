"""Fleet-wide breakers and Provisioned Throughput occupancy: the decisions, on the fleet's evidence.

Lambda runs every concurrent request in its own process, frozen between invocations, so what one process remembers
(the HealthBoard's breakers, the InflightTracker's counts) is one environment's view. Here every request reads the
fleet's state of its feature's candidate targets from a shared store in one round trip before planning, and reports
each attempt's outcome before the handler returns. What the store keeps per target (see FleetStore):

- the breaker: state (closed, open, ramping; half-open is "open and its cooldown over"), the server time its
  cooldown ends, the cooldown's length (it doubles on each failed recovery), trips, the ramp step and its
  successes, an epoch bumped on every transition;
- the evidence of the current epoch: one-second buckets of outcomes (total, failures, slow; and first tokens
  measured, with how many came after the reporting feature's ttft_ms) and the run of consecutive failures, so the
  rules of BreakerPolicy, the time-to-first-token percentile included, are applied to the whole fleet's window;
- the capacity cooldown after a throttle;
- the half-open probe: a key one environment sets (NX, expiring with its attempt) while it probes;
- the leases of requests in flight on a provisioned target, each expiring with its attempt.

The rules are health.py's, applied by whichever environment holds the deciding evidence: a trip, a re-open, a
successful probe, a ramp step and the close are each a conditional write on the epoch the decision was made from
(so one environment wins, and a decision made on stale evidence is dropped), and no write ever shortens a running
cooldown. Every shared deadline is the store server's clock; an environment turns one into its own clock as
"its clock now plus the time left on the server's", so environments whose clocks disagree still agree.

Fail-open: any store error (or a backoff after one) turns the rest of the request over to the local HealthBoard
and InflightTracker, which behave as they do without a store; the local board also keeps every open breaker and
capacity cooldown the fleet showed it (HealthBoard.merge), so a store outage does not forget a dead region.
Nothing here raises to the engine, and no work is left for after the request: every write is made before
`close()`.

Pure logic: no I/O of its own (the store does it), no AWS SDK; the clock and the random source are injected.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Protocol, TypeVar

from .capacity import InflightTracker
from .config import BreakerPolicy, Feature, Target
from .health import (
    AVAILABLE,
    BUSY,
    COOLING,
    OPEN,
    Admission,
    BreakerRecord,
    BreakerState,
    Clock,
    HealthBoard,
    Ticket,
    Verdict,
    ttft_percentile_over,
)

LEASE_MARGIN_S = 1.0  # a lease outlives its attempt's timeout by this much (the answer may arrive just at it)
PROBE_MARGIN_S = 1.0
_T = TypeVar("_T")


class FleetUnavailable(Exception):
    """The store did not answer (or is backing off after an error). `sent`: whether a round trip was spent."""

    def __init__(self, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class FleetState(IntEnum):
    CLOSED = 0
    OPEN = 1  # half-open once `until` has passed
    RAMPING = 2


@dataclass(frozen=True, slots=True)
class TargetState:
    """One target as the fleet sees it. Times are the store server's seconds."""

    epoch: int = 0
    state: FleetState = FleetState.CLOSED
    until: float = 0.0  # the open breaker's cooldown ends
    cooldown_s: float = 0.0  # the last trip's cooldown; 0 once closed again
    trips: int = 0
    ramp_step: int = 0
    ramp_ok: int = 0  # successes at the current ramp step
    run: int = 0  # consecutive failures in the current epoch
    capacity_until: float = 0.0
    total: int = 0  # the window of the current epoch
    failures: int = 0
    slow: int = 0
    ttft: int = 0  # first tokens measured in the window
    ttft_over: int = 0  # of them, later than the reporting feature's ttft_ms
    probe_held: bool = False
    leases: int = 0  # live leases (provisioned targets)
    learned_limit: int = 0  # a lower concurrency learned from throttles, while fresh (0: none)
    probes: int = 0  # half-open probes taken so far (kept while the target's record lives)

    def half_open(self, now: float) -> bool:
        return self.state is FleetState.OPEN and now >= self.until


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float  # the server's clock when it read
    targets: Mapping[str, TargetState]


@dataclass(frozen=True, slots=True)
class Report:
    """One attempt's outcome, as the store is told it (FleetStore.report)."""

    epoch: int  # the breaker epoch the attempt was admitted in
    verdict: Verdict
    window_s: float  # the reporting feature's window, for the state returned
    capacity_pause_s: float = 0.0  # a throttle: the capacity cooldown it asks for
    lease: str | None = None  # the PT lease to release
    probe: str | None = None  # the half-open probe to release
    level: int = 0  # the live leases when the lease was taken (0: no lease)
    ttft_over: bool | None = None  # a first token measured: after ttft_ms (True) or within it; None: not measured


@dataclass(frozen=True, slots=True)
class Change:
    """A conditional breaker transition: applied only if the stored epoch is still `epoch`."""

    kind: str  # open | ramp | close
    cooldown_s: float = 0.0  # open: the cooldown (the stored end is never moved earlier)
    ramp_step: int = 0  # ramp: the step to stand on


class FleetStore(Protocol):
    """The shared store's operations, each one round trip, each atomic on the server. Every method raises
    FleetUnavailable when the store cannot answer (and never anything else)."""

    def read(self, targets: Sequence[str], window_s: float) -> Snapshot: ...

    def report(self, target: str, outcome: Report) -> tuple[float, TargetState]:
        """Count the outcome in the target's window and run if `epoch` is current and the breaker closed (a
        success while ramping counts a ramp success); a capacity verdict moves the capacity cooldown to at least
        now + pause; release the lease and the probe; with `level` (the live leases when this attempt's lease was
        taken), learn the target's concurrency as InflightTracker does (a throttle at n: fewer than n; a success at
        the learned limit: one more), fleet-wide, forgotten 30 s after the last throttle. Returns (server now, the
        target's state after)."""
        ...

    def transition(self, target: str, *, epoch: int, change: Change) -> bool:
        """Apply `change` if the target's epoch is still `epoch` (then the epoch is bumped). True if applied."""
        ...

    def acquire_probe(self, target: str, token: str, ttl_s: float) -> bool: ...

    def acquire_lease(self, target: str, token: str, limit: int, ttl_s: float, *, force: bool) -> int | None:
        """Drop expired leases; add this one if fewer than `limit` (or the learned limit, if lower) are live, or
        if `force`. Returns the number live including this one, or None when full."""
        ...

    def status(self) -> dict[str, Any]:
        """What /v1/health shows of the store (no secrets)."""
        ...

    def prepare(self) -> None:
        """At init: connect and make the server ready for the request path (FleetUnavailable if it cannot)."""
        ...


# -- the rules (pure) -----------------------------------------------------------------------------------------


def should_trip(state: TargetState, policy: BreakerPolicy) -> bool:
    """health.py's closed-state rules on the fleet's window: a run of consecutive failures, an error or slow rate
    over the window once it holds at least min_requests outcomes, or the window's time-to-first-token percentile
    over ttft_ms once it holds at least min_requests first tokens."""
    if state.state is not FleetState.CLOSED:
        return False
    if state.run >= policy.consecutive_failures:
        return True
    total = state.total
    if total < policy.min_requests:
        return False
    return (
        state.failures >= policy.error_rate * total
        or state.slow >= policy.slow_rate * total
        or ttft_percentile_over(state.ttft, state.ttft_over, policy)
    )


def cooldown_for(state: TargetState, policy: BreakerPolicy, *, escalate: bool) -> float:
    """A fresh trip starts from the base cooldown (cooldown_s is 0 once closed); a failed recovery doubles it;
    capped by max_cooldown_s (as HealthBoard._open)."""
    previous = state.cooldown_s * 2 if escalate else state.cooldown_s
    return min(max(policy.cooldown_s, previous), policy.max_cooldown_s)


def standing(state: TargetState, now: float) -> tuple[int, float]:
    """(severity, ready_at in server seconds), as HealthBoard.standing."""
    if state.state is FleetState.OPEN:
        if now < state.until:
            return (OPEN, state.until)
        if state.probe_held:
            return (BUSY, now)
    if state.capacity_until > now:
        return (COOLING, state.capacity_until)
    return (AVAILABLE, 0.0)


def ramp_share(state: TargetState, policy: BreakerPolicy) -> float:
    steps = policy.ramp_steps
    return steps[min(state.ramp_step, len(steps) - 1)] if steps else 1.0


def after_outcome(  # noqa: PLR0911 (one return per rule of the state machine)
    state: TargetState, now: float, policy: BreakerPolicy, verdict: Verdict, *, probe: bool
) -> Change | None:
    """What an attempt's outcome (already counted in `state`, which is the state after the report) decides."""
    if verdict in (Verdict.NEUTRAL, Verdict.CAPACITY):
        return None
    ok = verdict is Verdict.OK
    if state.state is FleetState.CLOSED:
        if not ok and should_trip(state, policy):
            return Change("open", cooldown_for(state, policy, escalate=False))
        return None
    if state.state is FleetState.RAMPING:
        if not ok:
            return Change("open", cooldown_for(state, policy, escalate=True))
        if state.ramp_ok >= policy.ramp_successes:
            step = state.ramp_step + 1
            return Change("close") if step >= len(policy.ramp_steps) else Change("ramp", ramp_step=step)
        return None
    if probe and state.half_open(now):
        if ok:
            return Change("ramp") if policy.ramp_steps else Change("close")
        return Change("open", cooldown_for(state, policy, escalate=True))
    return None  # open: only this epoch's probe speaks for the breaker


# -- per request ----------------------------------------------------------------------------------------------


class RequestHealth(Protocol):
    """What the engine asks about health and capacity while serving one request."""

    def now(self) -> float: ...

    def standing(self, target_id: str) -> tuple[int, float]: ...

    def begin(self, target_id: str, policy: BreakerPolicy, *, force: bool, timeout_s: float) -> Ticket: ...

    def finish(
        self,
        target_id: str,
        policy: BreakerPolicy,
        verdict: Verdict,
        ticket: Ticket | None,
        *,
        retry_after_s: float | None = None,
        ttft_over: bool | None = None,
    ) -> None: ...

    def try_start(self, target: Target, *, force: bool, timeout_s: float) -> int | None: ...

    def end(self, target_id: str, level: int, *, throttled: bool) -> None: ...

    def close(self) -> tuple[int, float]:
        """End of the request: (store round trips, seconds spent in the store)."""
        ...


class LocalHealth:
    """This process's own breakers and in-flight counts: the behaviour without a store, and the fallback."""

    __slots__ = ("board", "tracker")

    def __init__(self, board: HealthBoard, tracker: InflightTracker) -> None:
        self.board = board
        self.tracker = tracker

    def now(self) -> float:
        return self.board.clock()

    def standing(self, target_id: str) -> tuple[int, float]:
        return self.board.standing(target_id)

    def begin(self, target_id: str, policy: BreakerPolicy, *, force: bool, timeout_s: float) -> Ticket:  # noqa: ARG002
        return self.board.begin(target_id, policy, force=force)

    def finish(
        self,
        target_id: str,
        policy: BreakerPolicy,
        verdict: Verdict,
        ticket: Ticket | None,
        *,
        retry_after_s: float | None = None,
        ttft_over: bool | None = None,
    ) -> None:
        self.board.finish(target_id, policy, verdict, ticket, retry_after_s=retry_after_s, ttft_over=ttft_over)

    def try_start(self, target: Target, *, force: bool, timeout_s: float) -> int | None:  # noqa: ARG002
        return self.tracker.try_start(target.id, target.max_in_flight, force=force)

    def end(self, target_id: str, level: int, *, throttled: bool) -> None:
        self.tracker.finish(target_id, level, throttled=throttled)

    def close(self) -> tuple[int, float]:
        return (0, 0.0)


class FleetTicket(Ticket):
    """A ticket granted on the fleet's state: its epoch is the fleet's; `probe_token` names a held probe."""

    __slots__ = ("probe_token",)

    def __init__(self, admission: Admission, epoch: int, probe_token: str | None = None) -> None:
        super().__init__(admission, epoch)
        self.probe_token = probe_token


@dataclass(slots=True)
class _Usage:
    requests: int = 0
    round_trips: int = 0
    store_s: float = 0.0
    degraded: int = 0  # requests that fell back to local state for some or all of their decisions


@dataclass(slots=True)
class _Counters:
    by_kind: dict[str, _Usage] = field(default_factory=lambda: {"provisioned": _Usage(), "on_demand": _Usage()})


Listener = Callable[[str, str, TargetState], None]  # (target, change kind, state before)


class Fleet:
    """The process's link to the fleet: builds one FleetRequest per request. Thread-safe (counters under a lock;
    the store serialises its own I/O)."""

    def __init__(
        self,
        store: FleetStore,
        board: HealthBoard,
        tracker: InflightTracker,
        *,
        perf_clock: Clock = time.perf_counter,
        rng: Callable[[], float] = random.random,
        token: Callable[[], str] = lambda: secrets.token_hex(8),
        on_change: Listener | None = None,
    ) -> None:
        self.store = store
        self.local = LocalHealth(board, tracker)
        self._perf = perf_clock
        self._rng = rng
        self._token = token
        self._on_change = on_change
        self._lock = threading.Lock()
        self._counters = _Counters()

    def request(self, feature: Feature, target_ids: Sequence[str]) -> FleetRequest:
        return FleetRequest(self, feature, target_ids)

    def warm(self, target_ids: Iterable[str]) -> bool:
        """At init: connect, load the scripts, read once. False if the store did not answer."""
        try:
            self.store.prepare()
            self.store.read(sorted(target_ids), 0.0)
        except Exception:  # FleetUnavailable, or a store's bug: the first request meets it, init never fails
            return False
        return True

    def status(self, target_ids: Iterable[str] = ()) -> dict[str, Any]:
        """The store's state, the cost of sharing so far (round trips and store time per request, by the kind of
        capacity the request's feature starts on) and, for `target_ids`, the fleet's view of each target (one read,
        its 30 s window; "targets" is absent when the store does not answer)."""
        status: dict[str, Any] = {"enabled": True, **self.store.status(), "usage": self.usage()}
        ids = sorted(target_ids)
        if ids:
            try:
                snapshot = self.store.read(ids, 30.0)
            except Exception:  # FleetUnavailable (or a store's bug): the status says what it can
                return status
            status["targets"] = {tid: _target_view(state, snapshot.now) for tid, state in snapshot.targets.items()}
        return status

    def _account(self, kind: str, round_trips: int, store_s: float, degraded: bool) -> None:
        with self._lock:
            usage = self._counters.by_kind[kind]
            usage.requests += 1
            usage.round_trips += round_trips
            usage.store_s += store_s
            usage.degraded += int(degraded)

    def usage(self) -> dict[str, dict[str, float]]:
        """Per kind of request (its feature starts on provisioned or on on-demand capacity): requests, store
        round trips, round trips per request, mean store milliseconds per request, requests degraded to local."""
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for kind, u in self._counters.by_kind.items():
                out[kind] = {
                    "requests": u.requests,
                    "round_trips": u.round_trips,
                    "round_trips_per_request": round(u.round_trips / u.requests, 3) if u.requests else 0.0,
                    "store_ms_per_request": round(1000.0 * u.store_s / u.requests, 3) if u.requests else 0.0,
                    "degraded": u.degraded,
                }
            return out


class FleetRequest:
    """One request's view of the fleet (RequestHealth). Reads the candidates' state at construction (one round
    trip), then decides from it; falls back to the local board and tracker for the rest of the request on any
    store failure. Not shared between threads."""

    def __init__(self, fleet: Fleet, feature: Feature, target_ids: Sequence[str]) -> None:
        self._fleet = fleet
        self._local = fleet.local
        self._kind = "provisioned" if feature.first_capacity == "provisioned" else "on_demand"
        self._round_trips = 0
        self._store_s = 0.0
        self._degraded = False
        self._leases: dict[str, tuple[str, int]] = {}  # target -> (lease token, level)
        self._local_loads: set[str] = set()
        self._states: dict[str, TargetState] = {}
        self._server_at_read = 0.0
        self._local_at_read = 0.0
        ids = list(dict.fromkeys(target_ids))
        snapshot = self._call(lambda: fleet.store.read(ids, feature.breaker.window_s)) if ids else None
        if snapshot is None:
            return
        self._server_at_read = snapshot.now
        self._local_at_read = fleet._perf()
        self._states = dict(snapshot.targets)
        for tid, state in snapshot.targets.items():
            if should_trip(state, feature.breaker):  # another feature's report filled a window ours judges stricter
                self._change(tid, state, Change("open", cooldown_for(state, feature.breaker, escalate=False)))
            self._remember(tid, self._states[tid])

    # -- RequestHealth ------------------------------------------------------------------------------------------

    def now(self) -> float:
        return self._local.now()

    def standing(self, target_id: str) -> tuple[int, float]:
        state = self._state(target_id)
        if state is None:
            return self._local.standing(target_id)
        now = self._server_now()
        severity, ready_at = standing(state, now)
        return (severity, self._to_local(ready_at, now) if severity else 0.0)

    def begin(  # noqa: PLR0911 (one return per breaker state)
        self, target_id: str, policy: BreakerPolicy, *, force: bool, timeout_s: float
    ) -> Ticket:
        state = self._state(target_id)
        if state is None:
            return self._local.begin(target_id, policy, force=force, timeout_s=timeout_s)
        now = self._server_now()
        refused = FleetTicket(Admission.REFUSED, state.epoch)
        plain = FleetTicket(Admission.ADMITTED, state.epoch)
        cooling = state.capacity_until > now
        if state.state is FleetState.CLOSED:
            return plain if force or not cooling else refused
        if state.state is FleetState.RAMPING:
            if force:
                return plain
            if cooling:
                return refused
            return plain if self._fleet._rng() < ramp_share(state, policy) else refused
        if not state.half_open(now) or (cooling and not force):
            return plain if force else refused  # forced onto an open target: sent, but no verdict for the fleet
        if state.probe_held:
            return plain if force else refused
        token = self._fleet._token()
        got = self._call(lambda: self._fleet.store.acquire_probe(target_id, token, timeout_s + PROBE_MARGIN_S))
        if got is None:  # the store failed just now: decide locally
            return self._local.begin(target_id, policy, force=force, timeout_s=timeout_s)
        if got:
            return FleetTicket(Admission.PROBE, state.epoch, token)
        self._states[target_id] = _replace_probe(state)
        return plain if force else refused

    def finish(
        self,
        target_id: str,
        policy: BreakerPolicy,
        verdict: Verdict,
        ticket: Ticket | None,
        *,
        retry_after_s: float | None = None,
        ttft_over: bool | None = None,
    ) -> None:
        lease, level = self._leases.pop(target_id, (None, 0))
        if not isinstance(ticket, FleetTicket):
            self._local.finish(target_id, policy, verdict, ticket, retry_after_s=retry_after_s, ttft_over=ttft_over)
            return
        if ticket._spent or not ticket.admitted:
            return
        ticket._spent = True
        probe = ticket.probe_token
        if verdict is Verdict.NEUTRAL and lease is None and probe is None:
            return  # nothing to tell and nothing to give back: no round trip
        pause = 0.0
        if verdict is Verdict.CAPACITY:
            pause = policy.capacity_cooldown_s
            if retry_after_s is not None:
                pause = max(pause, min(retry_after_s, policy.max_cooldown_s))
        if self._degraded:
            self._local.finish(target_id, policy, verdict, None, retry_after_s=retry_after_s, ttft_over=ttft_over)
            return
        answer = self._call(
            lambda: self._fleet.store.report(
                target_id, Report(ticket.epoch, verdict, policy.window_s, pause, lease, probe, level, ttft_over)
            )
        )
        if answer is None:  # the lease and the probe expire by themselves
            self._local.finish(target_id, policy, verdict, None, retry_after_s=retry_after_s, ttft_over=ttft_over)
            return
        now, state = answer
        self._server_at_read, self._local_at_read = now, self._fleet._perf()
        self._states[target_id] = state
        if state.epoch == ticket.epoch:
            change = after_outcome(state, now, policy, verdict, probe=probe is not None)
            if change is not None:
                self._change(target_id, state, change)
        self._remember(target_id, self._states[target_id])

    def try_start(self, target: Target, *, force: bool, timeout_s: float) -> int | None:
        limit = target.max_in_flight
        state = self._state(target.id)
        if state is None or limit is None:  # no size to share: the local estimate (and its learned limit)
            return self._local_start(target, force=force, timeout_s=timeout_s)
        if state.learned_limit:
            limit = min(limit, state.learned_limit)
        if not force and state.leases >= limit:
            return None  # full as of this request's read: spill without a round trip
        token = self._fleet._token()
        ttl = timeout_s + LEASE_MARGIN_S
        answer = self._call(lambda: self._fleet.store.acquire_lease(target.id, token, limit, ttl, force=force))
        if self._degraded:
            return self._local_start(target, force=force, timeout_s=timeout_s)
        if answer is None:
            return None
        self._leases[target.id] = (token, answer)
        return answer

    def end(self, target_id: str, level: int, *, throttled: bool) -> None:
        if target_id in self._local_loads:
            self._local_loads.discard(target_id)
            self._local.end(target_id, level, throttled=throttled)
        # A fleet lease is released with the attempt's report (finish): one round trip for both.

    def close(self) -> tuple[int, float]:
        self._fleet._account(self._kind, self._round_trips, self._store_s, self._degraded)
        return (self._round_trips, self._store_s)

    # -- internals ----------------------------------------------------------------------------------------------

    def _local_start(self, target: Target, *, force: bool, timeout_s: float) -> int | None:
        level = self._local.try_start(target, force=force, timeout_s=timeout_s)
        if level is not None:
            self._local_loads.add(target.id)
        return level

    def _state(self, target_id: str) -> TargetState | None:
        if self._degraded:
            return None
        return self._states.get(target_id)

    def _server_now(self) -> float:
        return self._server_at_read + (self._fleet._perf() - self._local_at_read)

    def _to_local(self, server_time: float, server_now: float) -> float:
        return self._local.now() + (server_time - server_now)

    def _call(self, fn: Callable[[], _T]) -> _T | None:
        """One store operation: counted, timed, and on failure the end of the fleet for this request."""
        if self._degraded:
            return None
        start = self._fleet._perf()
        try:
            result = fn()
            self._round_trips += 1
            return result
        except FleetUnavailable as exc:
            if exc.sent:
                self._round_trips += 1
            self._degraded = True
            return None
        except Exception:  # a bug in a store must cost a request its fleet view, never its answer
            self._round_trips += 1
            self._degraded = True
            return None
        finally:
            self._store_s += self._fleet._perf() - start

    def _change(self, target_id: str, state: TargetState, change: Change) -> None:
        applied = self._call(lambda: self._fleet.store.transition(target_id, epoch=state.epoch, change=change))
        if not applied:
            return  # another environment decided first (or the store failed): its decision stands
        now = self._server_now()
        if change.kind == "open":
            until = max(state.until, now + change.cooldown_s)
            new = TargetState(
                epoch=state.epoch + 1,
                state=FleetState.OPEN,
                until=until,
                cooldown_s=change.cooldown_s,
                trips=state.trips + (0 if state.state is FleetState.OPEN and now < state.until else 1),
                capacity_until=state.capacity_until,
                leases=state.leases,
            )
        elif change.kind == "ramp":
            new = TargetState(
                epoch=state.epoch + 1,
                state=FleetState.RAMPING,
                cooldown_s=state.cooldown_s,
                trips=state.trips,
                ramp_step=change.ramp_step,
                capacity_until=state.capacity_until,
                leases=state.leases,
            )
        else:
            new = TargetState(
                epoch=state.epoch + 1, trips=state.trips, capacity_until=state.capacity_until, leases=state.leases
            )
        self._states[target_id] = new
        if self._fleet._on_change is not None:
            with contextlib.suppress(Exception):  # a metrics hook never breaks routing
                self._fleet._on_change(target_id, change.kind, state)

    def _remember(self, target_id: str, state: TargetState) -> None:
        """Keep the fleet's open breaker and capacity cooldown in the local board: the fallback's memory."""
        now = self._server_now()
        open_now = state.state is FleetState.OPEN and state.until > now
        if not open_now and state.capacity_until <= now:
            return
        local_now = self._local.now()
        record = BreakerRecord(
            target=target_id,
            state=BreakerState.OPEN if open_now else BreakerState.CLOSED,
            opened_at=local_now,
            cooldown_until=self._to_local(state.until, now) if open_now else 0.0,
            cooldown_s=state.cooldown_s,
            capacity_until=self._to_local(state.capacity_until, now),
            trips=state.trips,
            updated_at=local_now,
        )
        self._local.board.merge(record)


def _target_view(state: TargetState, now: float) -> dict[str, Any]:
    """One target as /v1/health shows the fleet's view of it (numbers and names only)."""
    half_open = state.half_open(now)
    name = "half_open" if half_open else state.state.name.lower()
    return {
        "state": name,
        "cooldown_remaining_s": round(max(0.0, state.until - now), 3) if state.state is FleetState.OPEN else 0.0,
        "capacity_cooldown_remaining_s": round(max(0.0, state.capacity_until - now), 3),
        "trips": state.trips,
        "probes": state.probes,
        "probe_out": state.probe_held,
        "ramp_step": state.ramp_step,
        "window": {
            "total": state.total,
            "failures": state.failures,
            "slow": state.slow,
            "first_tokens": state.ttft,
            "first_tokens_over_limit": state.ttft_over,
        },
        "consecutive_failures": state.run,
        "leases": state.leases,
        "learned_limit": state.learned_limit,
    }


def _replace_probe(state: TargetState) -> TargetState:
    return replace(state, probe_held=True)

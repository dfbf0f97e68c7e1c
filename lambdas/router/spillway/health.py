"""Circuit breakers, one per target, fed by attempt outcomes. The clock is injected.

States: closed -> open (tripped) -> half_open (cooldown over: a trickle of probes) -> ramping (a probe succeeded:
a growing share of traffic, step by step) -> closed. A failed probe or a failure while ramping re-opens the breaker
with a doubled cooldown (capped by max_cooldown_s, so no breaker stays open forever), and no trip, local or
remote, ever shortens a running cooldown.

Signals: unavailable (and "ours") outcomes count as failures, both consecutively and in the error rate of a sliding
window; slow answers count in the window's slow rate; and every first token measured counts in the window's time to
first token, whose `ttft_percentile` (p90 by default) may not exceed `ttft_ms` (:func:`ttft_percentile_over`).
Capacity errors are not failures: they only set a short capacity cooldown. Client errors are neutral.

The thresholds come from the policy of the feature whose request produced the outcome: two features sharing a
target judge it by their own limits.

A verdict judges only the breaker state its attempt was admitted in: `begin` hands out a Ticket carrying the breaker's
epoch (bumped on every open and every open -> half-open), and `finish` ignores the verdict of a ticket from an older
epoch, so a probe sent before a re-trip can neither cancel the new cooldown nor release a newer probe's slot. A
throttle still sets the capacity cooldown whatever its epoch: it says the target is full now.

Breaker state is exportable as small BreakerRecords (epoch seconds when the
clock is time.time, the default) so a store can share transitions across Lambda instances; `merge` folds a remote
record in without ever shortening a local cooldown.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from .config import BreakerPolicy

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    RAMPING = "ramping"


class Verdict(StrEnum):
    """What one attempt tells the breaker."""

    OK = "ok"
    SLOW = "slow"
    FAILURE = "failure"  # unavailable or ours
    CAPACITY = "capacity"
    NEUTRAL = "neutral"  # client errors, cancelled attempts


class Admission(IntEnum):
    REFUSED = 0
    ADMITTED = 1
    PROBE = 2  # holds a half-open probe slot, or forced onto a target that is not closed: its verdict counts


class Ticket:
    """One `begin`: its admission and the breaker epoch it was granted in. Hand it back to `finish` exactly once
    (the first finish spends it; later ones, and any finish of a refused ticket, change nothing)."""

    __slots__ = ("_spent", "admission", "epoch")

    def __init__(self, admission: Admission, epoch: int) -> None:
        self.admission = admission
        self.epoch = epoch
        self._spent = False

    @property
    def admitted(self) -> bool:
        return self.admission is not Admission.REFUSED

    @property
    def probe(self) -> bool:
        return self.admission is Admission.PROBE

    def __repr__(self) -> str:
        return f"Ticket({self.admission.name}, epoch={self.epoch})"


# Severity of an unavailable target, for choosing the least bad one when all are unavailable.
AVAILABLE, COOLING, BUSY, OPEN = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The shareable part of a breaker (what another instance may learn of it: HealthBoard.merge)."""

    target: str
    state: BreakerState
    opened_at: float
    cooldown_until: float
    cooldown_s: float
    capacity_until: float
    trips: int
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "state": self.state.value,
            "opened_at": self.opened_at,
            "cooldown_until": self.cooldown_until,
            "cooldown_s": self.cooldown_s,
            "capacity_until": self.capacity_until,
            "trips": self.trips,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BreakerRecord:
        return cls(
            target=str(raw["target"]),
            state=BreakerState(raw["state"]),
            opened_at=float(raw["opened_at"]),
            cooldown_until=float(raw["cooldown_until"]),
            cooldown_s=float(raw["cooldown_s"]),
            capacity_until=float(raw.get("capacity_until", 0.0)),
            trips=int(raw.get("trips", 0)),
            updated_at=float(raw.get("updated_at", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    record: BreakerRecord  # the state after the transition
    previous: BreakerState
    cause: str  # trip | reopen | half_open | probe_ok | ramp_up | closed | remote
    remote: bool = False  # came from merge(): a store should not write it back


Listener = Callable[[Transition], None]


@dataclass(slots=True)
class _Breaker:
    target: str
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    cooldown_until: float = 0.0
    cooldown_s: float = 0.0  # the cooldown of the last trip; 0 once fully closed again
    capacity_until: float = 0.0
    trips: int = 0
    updated_at: float = 0.0
    consecutive: int = 0
    probes: int = 0  # half-open probe slots taken
    epoch: int = 0  # bumped on every open and every open -> half-open: tickets of older epochs carry no verdict
    ramp_step: int = 0
    ramp_ok: int = 0
    ramp_credit: float = 0.0
    # Sliding window of one-second buckets: [second, total, failures, slow, first tokens, first tokens over ttft_ms],
    # with running sums.
    buckets: deque[list[float]] = field(default_factory=deque)
    w_total: float = 0.0
    w_fail: float = 0.0
    w_slow: float = 0.0
    w_ttft: float = 0.0
    w_ttft_over: float = 0.0

    def record(self) -> BreakerRecord:
        return BreakerRecord(
            self.target,
            self.state,
            self.opened_at,
            self.cooldown_until,
            self.cooldown_s,
            self.capacity_until,
            self.trips,
            self.updated_at,
        )

    def add(self, now: float, window_s: float, fail: int, slow: int, ttft_over: bool | None = None) -> None:
        second = float(int(now))
        buckets = self.buckets
        ttft, over = (0, 0) if ttft_over is None else (1, int(ttft_over))
        if buckets and buckets[-1][0] == second:
            last = buckets[-1]
            last[1] += 1
            last[2] += fail
            last[3] += slow
            last[4] += ttft
            last[5] += over
        else:
            buckets.append([second, 1.0, float(fail), float(slow), float(ttft), float(over)])
        self.w_total += 1
        self.w_fail += fail
        self.w_slow += slow
        self.w_ttft += ttft
        self.w_ttft_over += over
        horizon = now - window_s
        while buckets and buckets[0][0] + 1 <= horizon:
            _, total, failed, slowed, ttfts, overs = buckets.popleft()
            self.w_total -= total
            self.w_fail -= failed
            self.w_slow -= slowed
            self.w_ttft -= ttfts
            self.w_ttft_over -= overs

    def reset_window(self) -> None:
        self.buckets.clear()
        self.w_total = self.w_fail = self.w_slow = self.w_ttft = self.w_ttft_over = 0.0
        self.consecutive = 0


class HealthBoard:
    """The breakers of one process. Thread-safe: one lock, held for a few dict and float operations only."""

    def __init__(self, clock: Clock = time.time, *, max_remote_cooldown_s: float = 600.0) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, _Breaker] = {}
        self._listeners: list[Listener] = []
        self._max_remote_cooldown_s = max_remote_cooldown_s

    @property
    def clock(self) -> Clock:
        return self._clock

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- planning view ----------------------------------------------------------------------------------------

    def standing(self, target_id: str) -> tuple[int, float]:
        """(severity, ready_at): severity 0 means available now; else when it may be available again."""
        b = self._breakers.get(target_id)
        if b is None:
            return (AVAILABLE, 0.0)
        now = self._clock()
        with self._lock:
            events = self._refresh(b, now)
            standing = self._standing(b, now)
        self._emit(events)
        return standing

    def state(self, target_id: str) -> BreakerState:
        b = self._breakers.get(target_id)
        if b is None:
            return BreakerState.CLOSED
        with self._lock:
            events = self._refresh(b, self._clock())
            state = b.state
        self._emit(events)
        return state

    # -- attempts ---------------------------------------------------------------------------------------------

    def begin(self, target_id: str, policy: BreakerPolicy, *, force: bool = False) -> Ticket:
        """Ask to send one attempt. Half-open admits a trickle of probes; ramping admits a share of requests.
        `force` always admits (the planner's probe of the least bad target, or a request's last resort).
        Every admitted ticket must reach `finish` (NEUTRAL when the attempt's outcome is unknown)."""
        b = self._breakers.get(target_id)
        if b is None:
            return Ticket(Admission.ADMITTED, 0)
        now = self._clock()
        with self._lock:
            events = self._refresh(b, now)
            ticket = Ticket(self._admit(b, policy, now, force), b.epoch)
        self._emit(events)
        return ticket

    def finish(
        self,
        target_id: str,
        policy: BreakerPolicy,
        verdict: Verdict,
        ticket: Ticket | None = None,
        *,
        retry_after_s: float | None = None,
        ttft_over: bool | None = None,
    ) -> None:
        """Feed the outcome of an attempt that `begin` admitted, with its ticket. Without a ticket the outcome
        counts as a plain (not probe) request of the current epoch. `ttft_over`: the attempt's first token came after
        the feature's ttft_ms (True) or within it (False); None when none was measured or the feature sets no limit."""
        now = self._clock()
        with self._lock:
            if ticket is not None:
                if ticket._spent or ticket.admission is Admission.REFUSED:
                    return
                ticket._spent = True
            b = self._breakers.get(target_id)
            if b is None:
                # Successes count too: the error rate needs the whole window, not just what followed a failure.
                b = self._breakers[target_id] = _Breaker(target_id)
            events = self._refresh(b, now)
            self._feed(
                b,
                policy,
                verdict,
                admission=Admission.ADMITTED if ticket is None else ticket.admission,
                epoch=b.epoch if ticket is None else ticket.epoch,
                retry_after_s=retry_after_s,
                now=now,
                events=events,
                ttft_over=ttft_over,
            )
        self._emit(events)

    # -- sharing ----------------------------------------------------------------------------------------------

    def export(self) -> list[BreakerRecord]:
        with self._lock:
            return [b.record() for b in self._breakers.values()]

    def record_of(self, target_id: str) -> BreakerRecord:
        with self._lock:
            b = self._breakers.get(target_id) or _Breaker(target_id)
            return b.record()

    def merge(self, remote: BreakerRecord) -> bool:
        """Fold in another instance's record. Adopts a remote open breaker or capacity cooldown when it ends
        later than the local one; never shortens a local cooldown; a remote closed record changes nothing.
        Returns True when local state changed."""
        now = self._clock()
        cap = now + self._max_remote_cooldown_s
        events: list[Transition] = []
        changed = False
        with self._lock:
            b = self._breakers.get(remote.target)
            if b is None:
                b = self._breakers[remote.target] = _Breaker(remote.target)
            capacity_until = min(remote.capacity_until, cap)
            if capacity_until > b.capacity_until:
                b.capacity_until = capacity_until
                changed = True
            until = min(remote.cooldown_until, cap)
            if remote.state is BreakerState.OPEN and until > now and until > b.cooldown_until:
                previous = b.state
                b.epoch += 1  # what was admitted before this extension no longer speaks for the breaker
                b.cooldown_until = until
                b.cooldown_s = min(max(b.cooldown_s, remote.cooldown_s), self._max_remote_cooldown_s)
                b.trips = max(b.trips, remote.trips)
                if previous is not BreakerState.OPEN:
                    b.state = BreakerState.OPEN
                    b.opened_at = remote.opened_at
                    b.probes = 0
                    b.reset_window()
                b.updated_at = now
                events.append(Transition(b.record(), previous, "remote", remote=True))
                changed = True
        self._emit(events)
        return changed

    # -- internals (called with the lock held) ----------------------------------------------------------------

    def _refresh(self, b: _Breaker, now: float) -> list[Transition]:
        if b.state is BreakerState.OPEN and now >= b.cooldown_until:
            b.state = BreakerState.HALF_OPEN
            b.probes = 0
            b.epoch += 1
            b.updated_at = now
            return [Transition(b.record(), BreakerState.OPEN, "half_open")]
        return []

    @staticmethod
    def _standing(b: _Breaker, now: float) -> tuple[int, float]:
        state = b.state
        if state is BreakerState.OPEN:
            return (OPEN, b.cooldown_until)
        if state is BreakerState.HALF_OPEN and b.probes > 0:
            return (BUSY, now)
        if b.capacity_until > now:
            return (COOLING, b.capacity_until)
        return (AVAILABLE, 0.0)

    @staticmethod
    def _admit(b: _Breaker, policy: BreakerPolicy, now: float, force: bool) -> Admission:
        state = b.state
        if state is BreakerState.CLOSED:
            return Admission.ADMITTED if force or b.capacity_until <= now else Admission.REFUSED
        if force:
            if state is BreakerState.HALF_OPEN:
                b.probes += 1
            return Admission.PROBE
        if state is BreakerState.OPEN or b.capacity_until > now:
            return Admission.REFUSED
        if state is BreakerState.HALF_OPEN:
            # The trickle counts probes in flight, not a rate: a hung probe holds its slot until it ends.
            if b.probes >= policy.half_open_trickle:
                return Admission.REFUSED
            b.probes += 1
            return Admission.PROBE
        return _ramp_admit(b, policy)

    def _feed(
        self,
        b: _Breaker,
        policy: BreakerPolicy,
        verdict: Verdict,
        *,
        admission: Admission,
        epoch: int,
        retry_after_s: float | None,
        now: float,
        events: list[Transition],
        ttft_over: bool | None = None,
    ) -> None:
        state = b.state
        stale = epoch != b.epoch  # admitted before the last open or half-open: it speaks for a state now gone
        probe = admission is Admission.PROBE and not stale
        if probe and state is BreakerState.HALF_OPEN and b.probes > 0:
            b.probes -= 1  # only this epoch's probes hold this epoch's slots
        if verdict is Verdict.CAPACITY:
            # Not a failure: the target is healthy but full. Skip it briefly; honour Retry-After up to a cap.
            pause = policy.capacity_cooldown_s
            if retry_after_s is not None:
                pause = max(pause, min(retry_after_s, policy.max_cooldown_s))
            b.capacity_until = max(b.capacity_until, now + pause)
        elif verdict is Verdict.NEUTRAL or stale:
            pass
        elif state is BreakerState.CLOSED:
            self._feed_closed(b, policy, verdict, now, events, ttft_over=ttft_over)
        elif state is BreakerState.RAMPING:
            self._feed_ramping(b, policy, verdict, now, events)
        elif probe:
            # Half-open or open: only probes carry a verdict; late answers to requests sent before the trip don't.
            self._feed_probe(b, policy, verdict, now, events)

    def _feed_closed(
        self,
        b: _Breaker,
        policy: BreakerPolicy,
        verdict: Verdict,
        now: float,
        events: list[Transition],
        *,
        ttft_over: bool | None = None,
    ) -> None:
        fail = verdict is Verdict.FAILURE
        b.add(now, policy.window_s, int(fail), int(verdict is Verdict.SLOW), ttft_over)
        b.consecutive = b.consecutive + 1 if fail else 0
        if verdict is Verdict.OK:
            return
        total = b.w_total
        if (
            b.consecutive >= policy.consecutive_failures
            or (total >= policy.min_requests and b.w_fail >= policy.error_rate * total)
            or (total >= policy.min_requests and b.w_slow >= policy.slow_rate * total)
            or ttft_percentile_over(b.w_ttft, b.w_ttft_over, policy)
        ):
            self._open(b, policy, now, escalate=False, cause="trip", events=events)

    def _feed_ramping(
        self, b: _Breaker, policy: BreakerPolicy, verdict: Verdict, now: float, events: list[Transition]
    ) -> None:
        if verdict is not Verdict.OK:
            self._open(b, policy, now, escalate=True, cause="reopen", events=events)
            return
        b.ramp_ok += 1
        if b.ramp_ok >= policy.ramp_successes:
            self._climb(b, policy, now, events)

    def _feed_probe(
        self, b: _Breaker, policy: BreakerPolicy, verdict: Verdict, now: float, events: list[Transition]
    ) -> None:
        if verdict is Verdict.OK:
            previous = b.state
            b.state = BreakerState.RAMPING
            b.ramp_step = b.ramp_ok = 0
            b.ramp_credit = 0.0
            b.updated_at = now
            events.append(Transition(b.record(), previous, "probe_ok"))
            if not policy.ramp_steps:
                self._close(b, now, events)
        else:
            # A failed half-open probe doubles the cooldown; a forced probe on a target still open only keeps
            # it out one more cooldown (it was tried because everything else was worse).
            escalate = b.state is BreakerState.HALF_OPEN
            self._open(b, policy, now, escalate=escalate, cause="reopen", events=events)

    def _climb(self, b: _Breaker, policy: BreakerPolicy, now: float, events: list[Transition]) -> None:
        b.ramp_step += 1
        b.ramp_ok = 0
        b.updated_at = now
        if b.ramp_step >= len(policy.ramp_steps):
            self._close(b, now, events)
        else:
            events.append(Transition(b.record(), BreakerState.RAMPING, "ramp_up"))

    @staticmethod
    def _close(b: _Breaker, now: float, events: list[Transition]) -> None:
        previous = b.state
        b.state = BreakerState.CLOSED
        b.cooldown_s = 0.0  # the escalation ends once the target has earned full traffic back
        b.updated_at = now
        b.reset_window()
        events.append(Transition(b.record(), previous, "closed"))

    @staticmethod
    def _open(
        b: _Breaker, policy: BreakerPolicy, now: float, *, escalate: bool, cause: str, events: list[Transition]
    ) -> None:
        previous = b.state
        cooldown = policy.cooldown_s
        # Escalate on a failed recovery; a fresh trip starts from the base (cooldown_s is 0 once closed).
        cooldown = min(max(cooldown, b.cooldown_s * 2 if escalate else b.cooldown_s), policy.max_cooldown_s)
        b.cooldown_s = cooldown
        # Never shorten a running cooldown (a short Retry-After or a lenient feature must not cut a long one).
        b.cooldown_until = max(b.cooldown_until, now + cooldown)
        if previous is not BreakerState.OPEN:
            b.opened_at = now
            b.trips += 1
        b.state = BreakerState.OPEN
        b.probes = 0
        b.epoch += 1
        b.ramp_step = b.ramp_ok = 0
        b.ramp_credit = 0.0
        b.updated_at = now
        b.reset_window()
        events.append(Transition(b.record(), previous, cause))

    def _emit(self, events: Sequence[Transition]) -> None:
        for event in events:
            for listener in self._listeners:
                # A store or metrics hook must never break routing; it reports its own failures.
                with contextlib.suppress(Exception):
                    listener(event)


def ttft_percentile_over(measured: float, over: float, policy: BreakerPolicy) -> bool:
    """Whether the window's `ttft_percentile` of time to first token (nearest rank) is over `ttft_ms`, from two
    counts: `measured` first tokens, `over` of them later than ttft_ms. Of n sorted values the q-th percentile is the
    ceil(q n / 100)-th, so it is over the limit exactly when at least n - ceil(q n / 100) + 1 values are: a window needs
    no samples, only the count over the feature's own limit (a store can share two integers per second). No verdict
    on fewer than `min_requests` first tokens, as for the rates."""
    if policy.ttft_ms is None or measured < policy.min_requests:
        return False
    n = int(measured)
    rank = math.ceil(round(policy.ttft_percentile * n / 100.0, 9))
    return over >= n - rank + 1


def _ramp_admit(b: _Breaker, policy: BreakerPolicy) -> Admission:
    """Admit a deterministic share of requests: credit accumulates by the current step's fraction."""
    steps = policy.ramp_steps
    share = steps[min(b.ramp_step, len(steps) - 1)] if steps else 1.0
    b.ramp_credit += share
    if b.ramp_credit >= 1.0 - 1e-9:
        b.ramp_credit -= 1.0
        return Admission.ADMITTED
    return Admission.REFUSED

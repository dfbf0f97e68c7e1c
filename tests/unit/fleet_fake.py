"""An in-memory FleetStore with a fake clock: the same operations as spillway/fleet_store.py's Lua scripts (one
bucket per second of the current epoch, a run of failures, leases scored by expiry, a probe key with an expiry),
for unit tests of the shared algorithms. tests/router/test_fleet_store.py runs the same scenarios on redis-server."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from spillway.fleet import Change, FleetState, FleetUnavailable, Report, Snapshot, TargetState
from spillway.fleet_store import LEARN_TTL_S
from spillway.health import Verdict


@dataclass
class _Target:
    state: TargetState = field(default_factory=TargetState)
    # (second, epoch) -> total, fail, slow, first tokens measured, first tokens over ttft_ms
    buckets: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    probe: tuple[str, float] | None = None  # holder, expiry
    leases: dict[str, float] = field(default_factory=dict)  # token -> expiry
    learned: tuple[int, float] = (0, 0.0)  # limit, when it was learned


class FakeFleetStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.targets: dict[str, _Target] = {}
        self.calls: list[str] = []
        self.down = False  # every call raises FleetUnavailable

    def _t(self, target: str) -> _Target:
        return self.targets.setdefault(target, _Target())

    def _call(self, name: str) -> float:
        self.calls.append(name)
        if self.down:
            raise FleetUnavailable("ConnectionRefusedError")
        return self.clock()

    def _view(self, target: str, now: float, window_s: float) -> TargetState:
        t = self._t(target)
        st = t.state
        sec = int(now)
        window = min(math.ceil(window_s), 120)
        total = fails = slow = ttft = over = 0
        for s in range(sec - window + 1, sec + 1):
            b = t.buckets.get((s, st.epoch))
            if b:
                total, fails, slow = total + b[0], fails + b[1], slow + b[2]
                ttft, over = ttft + b[3], over + b[4]
        probe = t.probe is not None and t.probe[1] > now
        leases = sum(1 for exp in t.leases.values() if exp > now)
        learned = self._learned(t, now)
        return replace(
            st,
            total=total,
            failures=fails,
            slow=slow,
            ttft=ttft,
            ttft_over=over,
            probe_held=probe,
            leases=leases,
            learned_limit=learned,
        )

    @staticmethod
    def _learned(t: _Target, now: float) -> int:
        limit, at = t.learned
        return limit if limit and now - at < LEARN_TTL_S else 0

    # -- FleetStore ---------------------------------------------------------------------------------------------

    def read(self, targets: Sequence[str], window_s: float) -> Snapshot:
        now = self._call("read")
        return Snapshot(now, {tid: self._view(tid, now, window_s) for tid in targets})

    def report(self, target: str, outcome: Report) -> tuple[float, TargetState]:
        verdict, epoch, level, lease, probe = (
            outcome.verdict,
            outcome.epoch,
            outcome.level,
            outcome.lease,
            outcome.probe,
        )
        now = self._call("report")
        t = self._t(target)
        if level:
            learned = self._learned(t, now)
            if verdict is Verdict.CAPACITY:
                t.learned = (max(1, min(learned, level - 1) if learned else level - 1), now)
            elif verdict is Verdict.OK and learned and level >= learned:
                t.learned = (level + 1, t.learned[1])
        if lease is not None:
            t.leases.pop(lease, None)
        if probe is not None and t.probe is not None and t.probe[0] == probe:
            t.probe = None
        st = t.state
        if verdict is Verdict.CAPACITY:
            t.state = replace(st, capacity_until=max(st.capacity_until, now + outcome.capacity_pause_s))
        elif verdict is not Verdict.NEUTRAL and epoch == st.epoch:
            if st.state is FleetState.CLOSED:
                bucket = t.buckets.setdefault((int(now), st.epoch), [0, 0, 0, 0, 0])
                bucket[0] += 1
                bucket[1] += verdict is Verdict.FAILURE
                bucket[2] += verdict is Verdict.SLOW
                if outcome.ttft_over is not None:
                    bucket[3] += 1
                    bucket[4] += outcome.ttft_over
                t.state = replace(st, run=st.run + 1 if verdict is Verdict.FAILURE else 0)
            elif st.state is FleetState.RAMPING and verdict is Verdict.OK:
                t.state = replace(st, ramp_ok=st.ramp_ok + 1)
        return now, self._view(target, now, outcome.window_s)

    def transition(self, target: str, *, epoch: int, change: Change) -> bool:
        now = self._call("transition")
        t = self._t(target)
        st = t.state
        if st.epoch != epoch:
            return False
        if change.kind == "open":
            trips = st.trips + (1 if st.state is not FleetState.OPEN or now >= st.until else 0)
            t.state = replace(
                st,
                state=FleetState.OPEN,
                until=max(st.until, now + change.cooldown_s),
                cooldown_s=change.cooldown_s,
                trips=trips,
                ramp_step=0,
                ramp_ok=0,
                run=0,
                epoch=epoch + 1,
            )
            t.probe = None
        elif change.kind == "ramp":
            t.state = replace(
                st, state=FleetState.RAMPING, ramp_step=change.ramp_step, ramp_ok=0, run=0, epoch=epoch + 1
            )
        else:
            t.state = replace(
                st, state=FleetState.CLOSED, cooldown_s=0.0, ramp_step=0, ramp_ok=0, run=0, epoch=epoch + 1
            )
        return True

    def acquire_probe(self, target: str, token: str, ttl_s: float) -> bool:
        now = self._call("probe")
        t = self._t(target)
        if t.probe is not None and t.probe[1] > now:
            return False
        t.probe = (token, now + ttl_s)
        t.state = replace(t.state, probes=t.state.probes + 1)
        return True

    def acquire_lease(self, target: str, token: str, limit: int, ttl_s: float, *, force: bool) -> int | None:
        now = self._call("lease")
        t = self._t(target)
        t.leases = {k: v for k, v in t.leases.items() if v > now}
        learned = self._learned(t, now)
        if learned:
            limit = min(limit, learned)
        if len(t.leases) >= limit and not force:
            return None
        t.leases[token] = now + ttl_s
        return len(t.leases)

    def prepare(self) -> None:
        self._call("prepare")

    def status(self) -> dict[str, Any]:
        return {"kind": "fake", "calls": len(self.calls)}

"""Predictive spillover: requests in flight per provisioned target, and the concurrency it was last seen to take.

A provisioned target is "full" when its requests in flight reach its limit: the configured max_in_flight, or a
limit learned from throttles (a throttle with n requests in flight means it holds fewer than n), whichever is
lower. A learned limit rises by one each time a request at the limit succeeds, and expires after `learn_ttl_s` without a
throttle, so one bad second does not shrink a target for good. The engine asks before sending and spills to the
next step of the plan instead of paying a throttled round trip.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .health import Clock


@dataclass(slots=True)
class _Load:
    in_flight: int = 0
    learned: int = 0  # 0: nothing learned
    learned_at: float = 0.0


class InflightTracker:
    def __init__(self, clock: Clock = time.monotonic, *, learn_ttl_s: float = 30.0) -> None:
        self._clock = clock
        self._ttl = learn_ttl_s
        self._lock = threading.Lock()
        self._loads: dict[str, _Load] = {}

    def in_flight(self, target_id: str) -> int:
        load = self._loads.get(target_id)
        return load.in_flight if load else 0

    def limit(self, target_id: str, configured: int | None) -> int | None:
        load = self._loads.get(target_id)
        learned = 0
        if load is not None and load.learned and self._clock() - load.learned_at < self._ttl:
            learned = load.learned
        if learned and configured:
            return min(learned, configured)
        return learned or configured

    def try_start(self, target_id: str, configured: int | None, *, force: bool = False) -> int | None:
        """Count one request in flight unless the target is estimated full (then None, unless forced).
        Returns the number in flight including this one."""
        with self._lock:
            load = self._loads.get(target_id)
            if load is None:
                load = self._loads[target_id] = _Load()
            if not force:
                cap = configured
                if load.learned and self._clock() - load.learned_at < self._ttl:
                    cap = min(load.learned, cap) if cap else load.learned
                if cap is not None and load.in_flight >= cap:
                    return None
            load.in_flight += 1
            return load.in_flight

    def finish(self, target_id: str, level: int, *, throttled: bool) -> None:
        """End a request started at concurrency `level`. A throttle teaches the limit; a success above it
        raises the limit."""
        with self._lock:
            load = self._loads[target_id]
            load.in_flight -= 1
            if throttled:
                load.learned = max(1, level - 1) if not load.learned else max(1, min(load.learned, level - 1))
                load.learned_at = self._clock()
            elif load.learned and level >= load.learned:
                load.learned = level + 1  # additive increase: probe one request above what just worked

"""Replay traffic through the router's own engine in simulated time, against emulated capacity.

Each request runs `Engine.handle` unchanged, in a greenlet of its own. The engine's clock, its breakers' clock and
its in-flight tracker's clock are one simulated clock. The backend is the emulator's capacity model
(local.emulator.targets.TargetState: requests in flight, a tokens-per-minute bucket) read on that clock: a request the
target admits holds its slot for the latency model's time (ttft + ms per output token), during which the greenlet
yields and the clock moves on to the next event; a request it does not admit is a ThrottlingException after one
short round trip. So overlapping requests see each other exactly as they would on the wire, and the spill, throttle
and drop figures are what the router decides, not a formula's. No thread, no sleep: a week replays in seconds.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from greenlet import getcurrent, greenlet

from local.emulator.targets import TargetSpec, TargetState
from tools.planner.router_adapter import (
    BackendReply,
    Target,
    Usage,
    build_engine,
    parse_table,
    throttle_error,
    throttled,
    timeout_error,
    was_served,
)

EPOCH = 1_767_000_000.0  # where simulated time starts (epoch seconds: the breakers' clock is wall-clock shaped)
THROTTLE_RTT_S = 0.02  # a throttled call's round trip
SHAPES = ("shared", "lambda-fleet")


class SimClock:
    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Scheduler:
    """A heap of (time, seq, greenlet) wake-ups, run by the greenlet that calls `run_until`."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, greenlet]] = []
        self._seq = itertools.count()
        self._hub: greenlet | None = None

    def at(self, when: float, task: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), greenlet(task)))

    def sleep(self, seconds: float) -> None:
        """Called from a task: come back `seconds` later in simulated time."""
        assert self._hub is not None, "sleep outside the scheduler"
        heapq.heappush(self._heap, (self.clock.now + max(0.0, seconds), next(self._seq), getcurrent()))
        self._hub.switch()

    def run_until(self, until: float | None = None) -> None:
        """Run every event before `until` (all of them when None), then set the clock to `until`."""
        self._hub = getcurrent()
        heap = self._heap
        while heap and (until is None or heap[0][0] < until):
            when, _, task = heapq.heappop(heap)
            self.clock.now = max(self.clock.now, when)
            task.parent = self._hub
            task.switch()
        if until is not None and self.clock.now < until:
            self.clock.now = until

    @property
    def idle(self) -> bool:
        return not self._heap


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float  # seconds since the start of the replay
    feature: str
    input_tokens: int
    output_tokens: int
    bucket: int = 0  # which slice of the profile it stands for (the hour of the week)


@dataclass(slots=True)
class Tally:
    """What became of the requests of one bucket."""

    requests: int = 0
    served: int = 0
    on_provisioned: int = 0
    spilled: int = 0  # served on on-demand where the feature starts on provisioned
    fell_back: int = 0
    failed_over: int = 0
    throttled: int = 0  # met at least one throttle
    dropped: int = 0
    input_tokens_by_target: dict[str, int] = field(default_factory=dict)
    output_tokens_by_target: dict[str, int] = field(default_factory=dict)


class EmulatedBackend:
    """The emulator's capacity and latency model, on the simulated clock. Keyed by the router's target id."""

    def __init__(self, specs: Mapping[str, TargetSpec], scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self.states = {tid: TargetState(spec, scheduler.clock) for tid, spec in specs.items()}

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        state = self.states[target.id]
        spec = state.spec
        out_tokens = int(request.get("output_tokens", spec.output_tokens))
        in_tokens = int(request.get("input_tokens", 0))
        if state.admit(in_tokens + out_tokens) is not None:
            self._scheduler.sleep(THROTTLE_RTT_S)
            raise throttle_error()
        latency_s = (spec.ttft_ms + spec.ms_per_token * out_tokens) / 1000.0
        try:
            if latency_s > timeout_s:
                self._scheduler.sleep(timeout_s)
                raise timeout_error()
            self._scheduler.sleep(latency_s)
        finally:
            state.release()
        return BackendReply({}, latency_s * 1000.0, None, Usage(in_tokens, out_tokens))


def replay(
    table_doc: Mapping[str, Any],
    specs: Mapping[str, TargetSpec],
    arrivals: Iterable[Arrival],
    *,
    windows: Sequence[tuple[float, float]] = (),
    progress: Callable[[float], None] | None = None,
    shape: str = "shared",
) -> dict[int, Tally]:
    """Send each arrival through the router's engine on `table_doc` at its simulated time; tally per bucket.

    `arrivals` must come in time order. `windows` (start_s, end_s), optional and in order, are stretches of the
    replay that stand apart: when one ends, the requests still in flight finish and the clock jumps to the next
    (the planner's sampled hours). `progress(fraction_of_arrivals_done)` is called now and then.

    `shape` is the router's: "shared" is one engine for every request, so its in-flight counts and breakers are
    the fleet's (the one-process local world; a Lambda fleet with fleet-wide PT occupancy and breakers in the
    store); "lambda-fleet" is Lambda without that store, one environment per concurrent request, each with its own
    engine (breakers, in-flight count) and one request at a time, reused when free, as Lambda reuses them."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
    clock = SimClock()
    scheduler = Scheduler(clock)
    backend = EmulatedBackend(specs, scheduler)
    table = parse_table(table_doc)
    shared = build_engine(table, backend, clock)
    idle: list[Any] = []  # lambda-fleet: environments not serving a request now

    tallies: dict[int, Tally] = {}
    items = list(arrivals)
    total = max(1, len(items))

    def task_for(a: Arrival) -> Callable[[], None]:
        def run() -> None:
            request = {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens}
            engine = shared if shape == "shared" else (idle.pop() if idle else build_engine(table, backend, clock))
            result = engine.handle(a.feature, request)
            if engine is not shared:
                idle.append(engine)
            t = tallies.setdefault(a.bucket, Tally())
            t.requests += 1
            if throttled(result):
                t.throttled += 1
            if not was_served(result) or result.target is None:
                t.dropped += 1
                return
            t.served += 1
            target = table.targets[result.target]
            if target.capacity == "provisioned":
                t.on_provisioned += 1
            t.spilled += result.spilled
            t.fell_back += result.fell_back
            t.failed_over += result.failed_over
            t.input_tokens_by_target[target.id] = t.input_tokens_by_target.get(target.id, 0) + a.input_tokens
            t.output_tokens_by_target[target.id] = t.output_tokens_by_target.get(target.id, 0) + a.output_tokens

        return run

    w = 0
    for i, a in enumerate(items):
        # Past the end of a window: when a gap follows it, finish what is in flight and jump over the gap; windows
        # that touch (every minute replayed) run on without a break.
        while w < len(windows) and a.at_s >= windows[w][1]:
            end = windows[w][1]
            w += 1
            nxt = windows[w][0] if w < len(windows) else None
            if nxt is None or nxt > end:
                scheduler.run_until(None)
                if nxt is not None and EPOCH + nxt > clock.now:
                    clock.now = EPOCH + nxt
        scheduler.run_until(EPOCH + a.at_s)
        scheduler.at(EPOCH + a.at_s, task_for(a))
        if progress is not None and i % 2000 == 0:
            progress(i / total)
    scheduler.run_until(None)
    if progress is not None:
        progress(1.0)
    return tallies


def poisson_arrivals(rate_per_s: float, start_s: float, duration_s: float, rng: random.Random) -> list[float]:
    """Arrival times of a Poisson process of `rate_per_s` within [start_s, start_s + duration_s)."""
    out: list[float] = []
    if rate_per_s <= 0:
        return out
    t = start_s + rng.expovariate(rate_per_s)
    while t < start_s + duration_s:
        out.append(t)
        t += rng.expovariate(rate_per_s)
    return out


def even_arrivals(rate_per_s: float, start_s: float, duration_s: float) -> list[float]:
    """Evenly spaced arrivals, as the local world's traffic generator sends them."""
    if rate_per_s <= 0:
        return []
    n = math.ceil(duration_s * rate_per_s)  # every i with i / rate < duration, as the generator's loop sends them
    return [start_s + i / rate_per_s for i in range(n)]

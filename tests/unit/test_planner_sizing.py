"""The sizing tool's stepping rule on fabricated steps: where it stops and what it calls sustainable. No load, no
wall clock (the tool's real run against the emulator is tests/integration/test_sizing_tool.py)."""

from __future__ import annotations

import pytest

# A tool of the dev environment (matplotlib, the CDK app's platform schema): not in the router's own test
# environment, where `make test-lambda-runtime` runs tests/unit again on the Lambda's Python.
pytest.importorskip("greenlet", reason="the planner's dependencies are in requirements-dev.txt only")

from tools.sizing import Result, Step, stepped_load


class FakeTarget:
    """Holds `capacity` requests; past `knee` in flight each answer takes `slow` times as long."""

    def __init__(self, capacity: int, *, knee: int = 1000, slow: float = 3.0) -> None:
        self.capacity, self.knee, self.slow = capacity, knee, slow
        self.now = 0.0
        self.sent = 0

    def clock(self) -> float:
        return self.now

    def run_at(self, concurrency: int, budget: int) -> Step:
        self.now += 1.0
        requests = min(budget, 10 * concurrency)
        self.sent += requests
        throttled = requests // 2 if concurrency > self.capacity else 0
        latency = 100.0 * (self.slow if concurrency > self.knee else 1.0)
        return Step(concurrency, requests, throttled, 0, [latency] * (requests - throttled), 600 * concurrency, 1.0)


def _load(target: FakeTarget, **overrides: float) -> Result:
    args = {
        "start": 1,
        "step": 1,
        "max_concurrency": 64,
        "step_seconds": 1.0,
        "max_throttle_share": 0.01,
        "knee": 2.0,
        "max_requests": 10_000,
        "max_seconds": 100.0,
    }
    args.update(overrides)
    return stepped_load(target.run_at, clock=target.clock, **args)  # type: ignore[arg-type]


def test_stops_at_the_first_throttling_step() -> None:
    result = _load(FakeTarget(6))
    assert result.sustainable is not None
    assert result.sustainable.concurrency == 6
    assert [s.concurrency for s in result.steps] == [1, 2, 3, 4, 5, 6, 7]
    assert result.stopped_because.startswith("throttles at 7 in flight")


def test_stops_at_the_latency_knee_before_any_throttle() -> None:
    result = _load(FakeTarget(20, knee=4))
    assert result.sustainable is not None
    assert result.sustainable.concurrency == 4
    assert result.stopped_because.startswith("latency knee at 5 in flight")


def test_bounded_in_time_and_requests() -> None:
    by_time = _load(FakeTarget(100), max_seconds=5.0)
    assert len(by_time.steps) == 5
    assert by_time.stopped_because == "out of --max-seconds 5"
    target = FakeTarget(100)
    by_requests = _load(target, max_requests=100)
    assert target.sent == 100
    assert by_requests.stopped_because == "spent --max-requests 100"


def test_nothing_sustainable_when_the_first_step_throttles() -> None:
    result = _load(FakeTarget(0))
    assert result.sustainable is None
    assert len(result.steps) == 1

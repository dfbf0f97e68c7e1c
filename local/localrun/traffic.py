"""Open-loop traffic through the local endpoint: requests leave at a set rate whatever the answers do, as callers
do; each answer is recorded with its phase, status, target and route. Bounded: a phase ends at its duration, and
the worker pool caps how many requests are in flight."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from local.localrun.client import Client, converse_body
from local.localrun.fleet import ENVIRONMENT_HEADER, INVOKED_AT_HEADER, is_throttle_answer
from local.localrun.retry import StandardRetry

if TYPE_CHECKING:
    from local.localrun.world import LocalWorld


@dataclass(frozen=True, slots=True)
class Record:
    phase: str
    feature: str
    sent_s: float  # since the run started
    done_s: float
    status: int
    target: str | None
    route: tuple[tuple[str, str], ...]
    retry_after: str | None = None
    error: str | None = None  # a transport failure (no HTTP answer at all)
    environment: int | None = None  # the fleet's environment that answered (fleet world only)
    # The answers before this one, when the caller retried (Traffic.retry): "lambda_throttle" for API Gateway's
    # answer to a throttled Lambda, else the status ("0": no answer). sent_s is the first attempt's.
    earlier: tuple[str, ...] = ()
    lambda_throttle: bool = False  # this answer is API Gateway's for a throttled Lambda
    invoked_s: float | None = None  # when the fleet handed this answer's event to an environment (fleet world only)

    @property
    def attempts_from_s(self) -> float:
        """When the router began this answer's attempts: the fleet's hand-over, else the send (the caller's
        clock lags the router's by the HTTP hop and any wait for an environment, more on a loaded machine)."""
        return self.sent_s if self.invoked_s is None else self.invoked_s

    @property
    def throttle_label(self) -> str:
        return "lambda_throttle" if self.lambda_throttle else str(self.status)

    @property
    def latency_ms(self) -> float:
        return (self.done_s - self.sent_s) * 1000.0

    @property
    def served(self) -> bool:
        return self.status == 200

    @property
    def retried_after_lambda_throttle(self) -> bool:
        return "lambda_throttle" in self.earlier

    @property
    def throttled_first(self) -> bool:
        """Some attempt before the one that served was throttled (a spill that paid for a 429)."""
        return any(outcome == "capacity" for _, outcome in self.route)


@dataclass
class Traffic:
    """``Traffic(client).phase("steady", {"summarize-thread": 20}, 10)`` sends 20 requests/s for 10 s."""

    client: Client
    max_in_flight: int = 128
    seed: int = 7
    body: Mapping[str, Any] = field(default_factory=converse_body)
    remaining_ms: float | None = None
    retry: StandardRetry | None = None  # None: one attempt per request (the caller never retries)
    records: list[Record] = field(default_factory=list)
    in_flight: int = 0
    sent: int = 0

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="traffic")
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)  # noqa: S311 (a traffic mix, not a secret)
        self._t0 = time.monotonic()
        self._pending: list[Future[None]] = []
        self._next_tick = 1.0  # once-a-second callbacks keep one beat across phases

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _one(self, phase: str, feature: str) -> None:
        sent = self.now()
        earlier: list[str] = []
        while True:
            rec = self._attempt(phase, feature, sent, tuple(earlier))
            delay = None
            if self.retry is not None:
                if rec.served:
                    self.retry.succeeded(_status_of(earlier[-1]) if earlier else None)
                else:
                    delay = self.retry.next_delay_s(len(earlier) + 1, rec.status, rec.retry_after)
            if delay is None:
                break
            earlier.append(rec.throttle_label)
            time.sleep(delay)
        with self._lock:
            self.records.append(rec)
            self.in_flight -= 1

    def _since_start(self, monotonic: str | None) -> float | None:
        """A time.monotonic() value from the fleet (the same process's clock) on this traffic's clock."""
        try:
            return None if monotonic is None else float(monotonic) - self._t0
        except ValueError:
            return None

    def _attempt(self, phase: str, feature: str, sent: float, earlier: tuple[str, ...]) -> Record:
        try:
            reply = self.client.converse(feature, dict(self.body), remaining_ms=self.remaining_ms)
        except Exception as exc:  # no answer at all: a dropped request, recorded as such
            return Record(phase, feature, sent, self.now(), 0, None, (), None, type(exc).__name__, earlier=earlier)
        return Record(
            phase,
            feature,
            sent,
            self.now(),
            reply.status,
            reply.target,
            tuple(reply.route),
            reply.header("retry-after"),
            environment=_environment(reply.header(ENVIRONMENT_HEADER)),
            earlier=earlier,
            invoked_s=self._since_start(reply.header(INVOKED_AT_HEADER)),
            lambda_throttle=is_throttle_answer(reply.status, reply.headers, reply.body),
        )

    def phase(
        self,
        name: str,
        rates: Mapping[str, float],
        duration_s: float,
        *,
        every_second: Callable[[str, float], None] | None = None,
        at: Sequence[tuple[float, Callable[[], None]]] = (),
    ) -> None:
        """Send each feature at its rate (requests/s, evenly spaced, features interleaved) for `duration_s`.
        `every_second(phase, elapsed)` runs once a second; `at` runs callbacks at offsets into the phase."""
        total = sum(rates.values())
        if total <= 0:
            time.sleep(duration_s)
            return
        features = list(rates)
        weights = [rates[f] for f in features]
        start = time.monotonic()
        gap = 1.0 / total
        i = 0
        hooks = sorted(at, key=lambda h: h[0])
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= duration_s:
                break
            while hooks and hooks[0][0] <= elapsed:
                hooks.pop(0)[1]()
            if every_second is not None and self.now() >= self._next_tick:
                every_second(name, elapsed)
                self._next_tick = float(int(self.now())) + 1.0
            due = i * gap
            if due > elapsed:
                time.sleep(min(due - elapsed, 0.05))
                continue
            feature = self._rng.choices(features, weights)[0]
            with self._lock:
                if self.in_flight >= self.max_in_flight:
                    # The pool is full: this request is not sent (counted as dropped by the caller's rules).
                    self.records.append(Record(name, feature, self.now(), self.now(), 0, None, (), None, "pool_full"))
                    i += 1
                    continue
                self.in_flight += 1
                self.sent += 1
            self._pending.append(self._pool.submit(self._one, name, feature))
            i += 1
        self._pending = [f for f in self._pending if not f.done()]

    def drain(self, timeout_s: float = 40.0) -> None:
        deadline = time.monotonic() + timeout_s
        for future in self._pending:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        self._pending = []

    def close(self) -> None:
        self.drain()
        self._pool.shutdown(wait=True)

    def of(self, phase: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.records if phase is None or r.phase == phase]


def _status_of(label: str) -> int:
    return 503 if label == "lambda_throttle" else int(label)


def _environment(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() else None


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


@contextmanager
def watch_breakers(world: LocalWorld, targets: list[str]) -> Iterator[dict[str, list[tuple[float, str]]]]:
    """Poll this router's breakers every 20 ms: every state change of `targets`, time-stamped (monotonic)."""
    changes: dict[str, list[tuple[float, str]]] = {t: [] for t in targets}
    stop = threading.Event()

    def loop() -> None:
        last: dict[str, str] = {}
        while not stop.is_set():
            now = time.monotonic()
            board = world.router.health
            for t in targets:
                state = board.state(t).value
                if last.get(t) != state:
                    changes[t].append((now, state))
                    last[t] = state
            stop.wait(0.02)

    thread = threading.Thread(target=loop, name="breaker-watch", daemon=True)
    thread.start()
    try:
        yield changes
    finally:
        stop.set()
        thread.join()


def first(changes: list[tuple[float, str]], state: str, after: float) -> float | None:
    return next((t for t, s in changes if s == state and t >= after), None)

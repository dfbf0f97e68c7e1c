"""Targets: one place a request can go, (region, kind, id), with its capacity and latency model."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from local.emulator.faults import Clock

__all__ = ["Kind", "TargetKey", "TargetSpec", "TargetState", "TokenBucket"]


class Kind(StrEnum):
    BEDROCK = "bedrock"
    SAGEMAKER = "sagemaker"
    OPENAI = "openai"  # an OpenAI-compatible chat completions endpoint (local/emulator/openai_compat.py)


@dataclass(frozen=True)
class TargetKey:
    region: str
    kind: Kind
    id: str

    def __str__(self) -> str:
        return f"{self.region}/{self.kind.value}/{self.id}"


@dataclass(frozen=True)
class TargetSpec:
    """A target and its model.

    ``id`` is what arrives on the wire: for Bedrock the Converse ``modelId`` (a model id, an inference
    profile id or an ARN, matched exactly after percent-decoding), for SageMaker the endpoint name.
    ``aliases`` are other ids that reach the same target (for example a foundation-model ARN of a model id).
    Capacity limits are off when ``None``.
    """

    region: str
    kind: Kind
    id: str
    aliases: tuple[str, ...] = ()
    name: str | None = None
    max_in_flight: int | None = None
    tokens_per_minute: int | None = None
    requests_per_minute: int | None = None
    ttft_ms: float = 0.0
    ms_per_token: float = 0.0
    output_tokens: int = 16
    echo: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", Kind(self.kind))
        except ValueError:
            raise ValueError(f"kind must be one of {[k.value for k in Kind]}, not {self.kind!r}") from None
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if not self.region or not self.id:
            raise ValueError("a target needs a region and an id")
        for attr in ("max_in_flight", "tokens_per_minute", "requests_per_minute"):
            value = getattr(self, attr)
            if value is not None and value < 0:
                raise ValueError(f"{attr} must be >= 0")
        if self.ttft_ms < 0 or self.ms_per_token < 0 or self.output_tokens < 0:
            raise ValueError("ttft_ms, ms_per_token and output_tokens must be >= 0")

    @property
    def key(self) -> TargetKey:
        return TargetKey(self.region, self.kind, self.id)

    def with_changes(self, **changes: Any) -> TargetSpec:
        if {"region", "kind", "id"} & set(changes):
            raise ValueError("region, kind and id identify a target and cannot change")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"region": self.region, "kind": self.kind.value, "id": self.id}
        for f in fields(self):
            if f.name in out:
                continue
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown target field(s): {', '.join(sorted(unknown))}")
        return cls(**dict(data))


class TokenBucket:
    """A bucket of ``per_minute`` units, refilled continuously, read on an injectable clock."""

    def __init__(self, per_minute: int, clock: Clock) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._level = float(per_minute)
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self._level = min(self.capacity, self._level + (now - self._last) * self._rate)
        self._last = now

    def available(self) -> float:
        self._refill()
        return self._level

    def take(self, amount: float) -> bool:
        """Take ``amount`` units if they are there; otherwise take nothing. Caller holds the lock."""
        self._refill()
        if amount <= self._level:
            self._level -= amount
            return True
        return False

    def give_back(self, amount: float) -> None:
        self._level = min(self.capacity, self._level + amount)


COUNTERS = (
    "requests",
    "served",
    "throttled",
    "faulted",
    "errors",
    "input_tokens",
    "output_tokens",
)
RECEIVED_KEPT = 64  # request bodies kept per target, newest last (what a test compares with what it sent)


@dataclass
class TargetState:
    """Run-time state of one target: counters, in-flight count and buckets. Thread safe."""

    spec: TargetSpec
    clock: Clock
    lock: threading.Lock = field(default_factory=threading.Lock)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    outcomes: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    in_flight_peak: int = 0
    tokens: TokenBucket | None = None
    requests_bucket: TokenBucket | None = None
    received: deque[bytes] = field(default_factory=lambda: deque(maxlen=RECEIVED_KEPT))

    def __post_init__(self) -> None:
        self._make_buckets()

    def _make_buckets(self) -> None:
        tpm, rpm = self.spec.tokens_per_minute, self.spec.requests_per_minute
        self.tokens = TokenBucket(tpm, self.clock) if tpm is not None else None
        self.requests_bucket = TokenBucket(rpm, self.clock) if rpm is not None else None

    def update(self, spec: TargetSpec) -> None:
        with self.lock:
            old = self.spec
            self.spec = spec
            if (old.tokens_per_minute, old.requests_per_minute) != (
                spec.tokens_per_minute,
                spec.requests_per_minute,
            ):
                self._make_buckets()

    def count(self, counter: str, amount: int = 1) -> None:
        with self.lock:
            self.counters[counter] += amount

    def record(self, body: bytes) -> None:
        """Keep a request body exactly as it arrived on the wire."""
        with self.lock:
            self.received.append(body)

    def outcome(self, code: str) -> None:
        with self.lock:
            self.outcomes[code] = self.outcomes.get(code, 0) + 1

    def admit(self, tokens: int) -> str | None:
        """Admit one request costing ``tokens``; return None when admitted, else the reason it is not.

        The in-flight check, the increment and the bucket takes happen under one lock, so the
        limits hold under any concurrency.
        """
        with self.lock:
            limit = self.spec.max_in_flight
            if limit is not None and self.in_flight >= limit:
                return "max_in_flight"
            if self.requests_bucket is not None and not self.requests_bucket.take(1):
                return "requests_per_minute"
            if self.tokens is not None and not self.tokens.take(tokens):
                if self.requests_bucket is not None:
                    self.requests_bucket.give_back(1)
                return "tokens_per_minute"
            self.in_flight += 1
            self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
            return None

    def release(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def reset(self) -> None:
        with self.lock:
            self.counters = dict.fromkeys(COUNTERS, 0)
            self.outcomes = {}
            self.received.clear()
            self.in_flight_peak = self.in_flight
            self._make_buckets()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {
                "region": self.spec.region,
                "kind": self.spec.kind.value,
                "id": self.spec.id,
            }
            if self.spec.name is not None:
                out["name"] = self.spec.name
            out.update(self.counters)
            out["in_flight"] = self.in_flight
            out["in_flight_peak"] = self.in_flight_peak
            out["outcomes"] = dict(self.outcomes)
            if self.tokens is not None:
                out["tokens_available"] = int(self.tokens.available())
            return out

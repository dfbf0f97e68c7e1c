"""Faults: what can go wrong on a target, a region or the AppConfig extension, and when.

A :class:`Fault` is a plain, immutable description (it round-trips through a dict / JSON for the HTTP
control API). Installing one on the emulator creates an :class:`ActiveFault`, which holds the run-time
state of its schedule: how many requests it still applies to, the window in which it is live (on the
emulator's injectable clock) and its own seeded random generator for probabilistic faults.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

__all__ = ["ActiveFault", "Fault", "FaultKind", "Scope"]


class FaultKind(StrEnum):
    """The kinds of fault the emulator can inject."""

    THROTTLE = "throttle"
    """Throttle storm: ThrottlingException for every matching request, whatever the capacity."""
    ERROR = "error"
    """An error response; ``Fault.error`` names it (an alias such as ``internal`` or an exact code)."""
    HANG = "hang"
    """Accept the request, then say nothing for ``Fault.seconds`` (past the client's read timeout)."""
    REFUSE = "refuse"
    """Region outage: the region's listener is closed, connections are refused. Region scope only."""
    SLOW_FIRST_TOKEN = "slow_first_token"  # noqa: S105 (not a password)
    """Add ``Fault.seconds`` to the time to first token, then answer normally."""
    MALFORMED = "malformed"
    """HTTP 200 with a broken body; ``Fault.malformed`` picks how it is broken."""
    RESET = "reset"
    """Close the connection without an answer (the client sees the connection drop)."""
    STALL = "stall"
    """Streams: after ``after_tokens`` tokens, say nothing for ``seconds``, then go on. Buffered: added latency."""
    STREAM_ERROR = "stream_error"
    """Streams: after ``after_tokens`` tokens, a modeled exception event (``error``: throttling,
    model_stream_error, internal, unavailable, validation, or the event's name). Buffered: that error."""
    DROP = "drop"
    """Streams: after ``after_tokens`` tokens, the connection drops. Buffered: like RESET."""


MALFORMED_VARIANTS = ("truncated", "not_json", "empty", "wrong_shape", "bad_types")

_DEFAULT_SECONDS = {FaultKind.HANG: 30.0, FaultKind.SLOW_FIRST_TOKEN: 1.0, FaultKind.STALL: 30.0}
MID_STREAM = frozenset({FaultKind.STALL, FaultKind.STREAM_ERROR, FaultKind.DROP})


@dataclass(frozen=True)
class Scope:
    """Which requests a fault applies to: ``None`` in a field matches anything."""

    region: str | None = None
    kind: str | None = None
    id: str | None = None

    def matches(self, region: str, kind: str, target_id: str) -> bool:
        return (
            (self.region is None or self.region == region)
            and (self.kind is None or self.kind == kind)
            and (self.id is None or self.id == target_id)
        )

    @property
    def is_region(self) -> bool:
        """True when the scope is exactly one whole region (needed for REFUSE)."""
        return self.region is not None and self.kind is None and self.id is None

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Fault:
    """A fault and its schedule.

    Schedule fields combine: the fault is live from ``starts_in_s`` after it is installed for
    ``duration_s`` (forever when ``None``), lets the first ``skip`` matching requests through, then
    applies to matching requests with ``probability`` (drawn from ``random.Random(seed)``) until it has
    fired ``count`` times (forever when ``None``). Times are read from the emulator's clock.
    """

    kind: FaultKind
    error: str | None = None
    """ERROR only: an alias (internal, unavailable, model_error, timeout, not_ready, access_denied,
    validation, not_found, quota, dependency, throttling, conflict, bad_credentials, expired_credentials,
    stream_error, stream_failure), an
    exact error code of the target's service or one of AWS's common errors (local.emulator.wire.COMMON_ERRORS).
    For the AppConfig extension: ``status`` decides instead."""
    status: int | None = None
    """ERROR with a wrapping code (model_error: ModelError, ModelErrorException, ModelStreamErrorException): the
    model's own status it wraps (OriginalStatusCode / originalStatusCode; default 500). AppConfig extension ERROR:
    the HTTP status to answer (default 500)."""
    seconds: float | None = None
    """HANG: how long to hang (default 30 s; shutdown interrupts it). SLOW_FIRST_TOKEN: added delay
    (default 1 s). STALL: how long the stream stalls (default 30 s)."""
    malformed: str = "truncated"
    """MALFORMED only: truncated | not_json | empty | wrong_shape | bad_types."""
    message: str | None = None
    """Optional error message (no prompt text is ever put in one)."""
    after_tokens: int = 1
    """STALL, STREAM_ERROR, DROP on a stream: how many tokens go out before the fault strikes."""
    count: int | None = None
    skip: int = 0
    starts_in_s: float = 0.0
    duration_s: float | None = None
    probability: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.skip < 0:
            raise ValueError("skip must be >= 0")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.duration_s is not None and self.duration_s < 0:
            raise ValueError("duration_s must be >= 0")
        if self.starts_in_s < 0:
            raise ValueError("starts_in_s must be >= 0")
        if self.seconds is not None and self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        if self.after_tokens < 0:
            raise ValueError("after_tokens must be >= 0")
        if self.malformed not in MALFORMED_VARIANTS:
            raise ValueError(f"malformed must be one of {', '.join(MALFORMED_VARIANTS)}")
        if self.kind is FaultKind.REFUSE and (self.count is not None or self.skip or self.probability != 1.0):
            raise ValueError("a REFUSE fault closes a listener: it takes a time window, not count/skip/probability")

    @property
    def delay_s(self) -> float:
        """The HANG or SLOW_FIRST_TOKEN delay, with its default."""
        if self.seconds is not None:
            return self.seconds
        return _DEFAULT_SECONDS.get(self.kind, 0.0)

    # Convenience constructors -------------------------------------------------------------
    @classmethod
    def throttle(cls, **schedule: Any) -> Fault:
        return cls(FaultKind.THROTTLE, **schedule)

    @classmethod
    def error_response(cls, error: str = "internal", **schedule: Any) -> Fault:
        return cls(FaultKind.ERROR, error=error, **schedule)

    @classmethod
    def hang(cls, seconds: float = 30.0, **schedule: Any) -> Fault:
        return cls(FaultKind.HANG, seconds=seconds, **schedule)

    @classmethod
    def refuse(cls, **schedule: Any) -> Fault:
        return cls(FaultKind.REFUSE, **schedule)

    @classmethod
    def slow_first_token(cls, seconds: float = 1.0, **schedule: Any) -> Fault:
        return cls(FaultKind.SLOW_FIRST_TOKEN, seconds=seconds, **schedule)

    @classmethod
    def malformed_body(cls, variant: str = "truncated", **schedule: Any) -> Fault:
        return cls(FaultKind.MALFORMED, malformed=variant, **schedule)

    @classmethod
    def reset(cls, **schedule: Any) -> Fault:
        return cls(FaultKind.RESET, **schedule)

    @classmethod
    def stall(cls, seconds: float = 30.0, after_tokens: int = 1, **schedule: Any) -> Fault:
        return cls(FaultKind.STALL, seconds=seconds, after_tokens=after_tokens, **schedule)

    @classmethod
    def stream_error(cls, error: str = "model_stream_error", after_tokens: int = 1, **schedule: Any) -> Fault:
        return cls(FaultKind.STREAM_ERROR, error=error, after_tokens=after_tokens, **schedule)

    @classmethod
    def drop(cls, after_tokens: int = 1, **schedule: Any) -> Fault:
        return cls(FaultKind.DROP, after_tokens=after_tokens, **schedule)

    # Dict / JSON form ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        for f in fields(self):
            if f.name == "kind":
                continue
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise ValueError("a fault needs a 'kind'")
        return cls(**dict(data))


_ids = itertools.count(1)


@dataclass
class ActiveFault:
    """An installed fault: its scope, its schedule resolved against the clock, and its state."""

    fault: Fault
    scope: Scope
    installed_at: float
    id: str = field(default_factory=lambda: f"f{next(_ids)}")
    fired: int = 0
    seen: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.fault.seed)  # noqa: S311 (reproducible chaos, not crypto)

    @property
    def not_before(self) -> float:
        return self.installed_at + self.fault.starts_in_s

    @property
    def not_after(self) -> float | None:
        if self.fault.duration_s is None:
            return None
        return self.not_before + self.fault.duration_s

    def in_window(self, now: float) -> bool:
        end = self.not_after
        return now >= self.not_before and (end is None or now < end)

    def expired(self, now: float) -> bool:
        end = self.not_after
        if end is not None and now >= end:
            return True
        return self.fault.count is not None and self.fired >= self.fault.count

    def try_fire(self, now: float) -> bool:
        """Decide whether this fault applies to one more request, and count it if so."""
        with self._lock:
            if not self.in_window(now) or self.expired(now):
                return False
            self.seen += 1
            if self.seen <= self.fault.skip:
                return False
            if self.fault.probability < 1.0 and self._rng.random() >= self.fault.probability:
                return False
            self.fired += 1
            return True

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "scope": self.scope.to_dict(),
            "fault": self.fault.to_dict(),
            "fired": self.fired,
        }
        if now is not None:
            out["live"] = self.in_window(now) and not self.expired(now)
        return out


Clock = Callable[[], float]

"""Test doubles every suite shares. No sleeps anywhere: time moves only when a test moves it."""

from __future__ import annotations

import threading
from typing import Any


class FakeClock:
    """Seconds, moved only by the test (or by a fake backend spending time). Safe to read from the threads some
    components run (the store's writer, the emulator's server)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "time does not go backwards"
        with self._lock:
            self.now += seconds


def spy_verdicts(board: Any) -> list[tuple[str, Any]]:
    """Record every (target id, verdict) a health board's `finish` is told, in order, and pass each on."""
    verdicts: list[tuple[str, Any]] = []
    finish = board.finish

    def spy(target_id: str, policy: Any, verdict: Any, *args: Any, **kwargs: Any) -> None:
        verdicts.append((target_id, verdict))
        finish(target_id, policy, verdict, *args, **kwargs)

    board.finish = spy
    return verdicts

"""Where the router's own stdout goes in a local run.

In Lambda, the router's EMF metric lines and logs go to stdout and on to CloudWatch. Locally they would bury the
demo's progress lines, so while a request is being handled on an endpoint thread, ``sys.stdout`` writes are kept
in a small bounded buffer instead (counted, the last lines kept for inspection). Metrics stay enabled: with
POWERTOOLS_METRICS_DISABLED, Powertools never clears its metric set and a long local run would grow without bound.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class _RoutedStdout:
    def __init__(self, real: TextIO, sink: RouterOutput) -> None:
        self._real = real
        self._sink = sink

    def write(self, text: str) -> int:
        if self._sink.capturing():
            self._sink.keep(text)
            return len(text)
        return self._real.write(text)

    def flush(self) -> None:
        self._real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class RouterOutput:
    def __init__(self, keep_lines: int = 200) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self.count = 0
        self.chars = 0
        self._installed: _RoutedStdout | None = None
        self._previous: TextIO | None = None

    def install(self) -> None:
        if self._installed is None:
            self._previous = sys.stdout
            self._installed = _RoutedStdout(sys.stdout, self)
            sys.stdout = self._installed  # type: ignore[assignment]

    def uninstall(self) -> None:
        if self._installed is not None and sys.stdout is self._installed:
            sys.stdout = self._previous  # type: ignore[assignment]
        self._installed = None

    def capturing(self) -> bool:
        return bool(getattr(self._local, "on", False))

    @contextmanager
    def capture(self) -> Iterator[None]:
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = False

    def keep(self, text: str) -> None:
        with self._lock:
            self.chars += len(text)
            for line in text.splitlines():
                if line:
                    self.count += 1
                    self.lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

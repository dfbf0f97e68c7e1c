"""The streaming contract between the engine and the backends, and the pump that puts deadlines on a stream.

A backend stream yields ConverseStream events as ``(name, members)`` pairs (``messageStart``, ``contentBlockStart``,
``contentBlockDelta``, ``contentBlockStop``, ``messageStop``, ``metadata``) whatever the backend speaks, and raises
spillway.errors.BackendError when it fails. A blocking read cannot be given a deadline from outside, so the
:class:`Pump` reads the stream on a reader thread into a queue and the engine waits on the queue with the time it
allows (first token, then each gap). The read never outlives the request: closing the pump closes the backend's
connection, which ends the blocked read, and waits for the read to end. No module here imports boto3.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, cast

from .config import Target
from .errors import BackendError, ErrorClass, from_exception

StreamEvent = tuple[str, Mapping[str, Any]]  # (ConverseStream event name, its members); members never logged

# Events that carry the answer itself: the first of them is the first token.
TOKEN_EVENTS = frozenset({"contentBlockStart", "contentBlockDelta"})
CONVERSE_STREAM_EVENTS = (
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
)
# Why an attempt was abandoned for want of tokens (both "unavailable": the breaker counts them as failures).
NO_FIRST_TOKEN = "NoFirstToken"  # noqa: S105 (an error code, not a password)
STREAM_STALLED = "StreamStalled"
JOIN_S = 2.0  # how long closing waits for the read to end once its connection is closed


class BackendStream(Protocol):
    """An open stream: iterate its events (BackendError on failure); close it to drop the connection."""

    def __iter__(self) -> Iterator[StreamEvent]: ...

    def close(self) -> None: ...


class StreamingBackend(Protocol):
    """What the engine calls to stream. Raises BackendError when the stream cannot start."""

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendStream: ...


class StreamTimeout(Exception):
    """Nothing came from the stream within the time allowed."""


class _End:
    pass


_END = _End()


class StreamReader:
    """Reads one backend stream on a pooled reader thread (:func:`reader_pool`); a subclass says what each event, the
    clean end and a failure do (set what they use before calling this constructor: the read starts in it). ``done``
    is set when the read has ended, whatever the way. Closing drops the connection, which ends a blocked read, and
    waits for the read to end, so the read never outlives its attempt."""

    def __init__(self, stream: BackendStream) -> None:
        self._stream = stream
        self._closed = threading.Event()
        self.done = threading.Event()
        reader_pool().submit(self._read)

    def _read(self) -> None:
        try:
            for item in self._stream:
                if self._closed.is_set():
                    return
                self._event(item)
            self._end()
        except Exception as exc:  # every failure reaches the engine as a BackendError, message dropped
            if not self._closed.is_set():
                self._failed(from_exception(exc))
        finally:
            self.done.set()
            self._over()

    def _event(self, item: StreamEvent) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        """The stream's clean end."""

    def _failed(self, error: BackendError) -> None:
        raise NotImplementedError

    def _over(self) -> None:
        """After the read, whatever ended it (``done`` is set)."""

    def close(self) -> None:
        """Drop the connection and wait for the read to end (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(Exception):  # closing a broken connection may fail; it is closed either way
            self._stream.close()
        self.done.wait(JOIN_S)


class Pump(StreamReader):
    """Hands each event over as it comes: :meth:`next` waits for the next one with a timeout."""

    def __init__(self, stream: BackendStream) -> None:
        self._queue: queue.Queue[StreamEvent | BackendError | _End] = queue.Queue()
        super().__init__(stream)

    def _event(self, item: StreamEvent) -> None:
        self._queue.put(item)

    def _end(self) -> None:
        self._queue.put(_END)

    def _failed(self, error: BackendError) -> None:
        self._queue.put(error)

    def next(self, timeout_s: float) -> StreamEvent | None:
        """The next event; None at the stream's clean end. Raises BackendError, or StreamTimeout after timeout_s."""
        try:
            item = self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise StreamTimeout from None
        if isinstance(item, _End):
            return None
        if isinstance(item, BackendError):
            raise item
        return item


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
MAX_READERS = 64  # streams read at once in one process (the local one-process world serves several requests)


def reader_pool() -> ThreadPoolExecutor:
    """The process's stream-reader threads, started on first use and kept. Starting a thread per attempt costs a
    few milliseconds (the starter waits for the new thread to run while that thread holds the interpreter). In
    Lambda one request runs per process, so one thread serves; an idle one does nothing while the environment is
    frozen, and no attempt returns before its stream's read has ended (closing waits for it)."""
    global _pool  # noqa: PLW0603 (one pool per process, built lazily)
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_READERS, thread_name_prefix="spillway-stream")
        return _pool


def stream_backend_for(backends: Mapping[str, Any], kind: str) -> StreamingBackend:
    """The backend of ``kind`` if it streams; a deployment bug (ours) otherwise."""
    backend = backends.get(kind)
    if backend is None or not callable(getattr(backend, "open_stream", None)):
        raise BackendError(ErrorClass.OURS, "NoStreamingBackendForKind")
    return cast(StreamingBackend, backend)

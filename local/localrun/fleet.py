"""The Lambda service of the fleet world: execution environments, one event at a time each, frozen between events.

:class:`Fleet` is what API Gateway invokes (``fleet.invoke(event, context)``, the signature of a Lambda handler, so
the local endpoint calls it as it would call the handler). Per invocation it does what Lambda does:

- a warm idle environment first (``reuse``: the one idle longest, or the most recently used), thawed with SIGCONT;
- else a new environment, if the function's reserved concurrency allows one more: a fresh process that pays its
  own cold start (interpreter, ``import handler``, the router's warm-up) before the event runs;
- else the invocation is throttled. Lambda answers API Gateway 429 TooManyRequestsException before any code runs,
  and API Gateway (REST, Lambda proxy) turns a failed invocation into its own 500 ``{"message": "Internal server
  error"}`` (AWS's "troubleshoot 500 errors from API Gateway with Lambda" article: throttling is one cause);
  a stack's DEFAULT_5XX gateway response may reshape that answer: ``throttle_answer`` says what the caller gets.

After the answer the environment is frozen (SIGSTOP): none of its threads run until the next event. An environment
that dies in the middle of an event (killed, crashed) costs that event a 502, as API Gateway answers a failed
invocation; one that overruns the function's timeout (the event's remaining time) is killed and costs a 504, API
Gateway's integration timeout. Either way Lambda replaces it with a fresh one on demand.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from local.localrun.environment import HEADER, ROOT
from local.localrun.server import InvocationError

JSON_HEADERS = [("content-type", "application/json")]
GATEWAY_500 = (500, b'{"message": "Internal server error"}')
GATEWAY_502 = (502, b'{"message": "Internal server error"}')
GATEWAY_504 = (504, b'{"message": "Endpoint request timed out"}')
DEFAULT_TIMEOUT_MS = 29_000.0  # API Gateway's integration timeout, the router Lambda's timeout at most
ENVIRONMENT_HEADER = "x-local-environment"
READY_TIMEOUT_S = 60.0  # a cold start on a loaded 2-core machine, with room


class EnvironmentGone(Exception):
    """The environment ended (or overran) in the middle of an event."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "exited")
        self.timed_out = timed_out


@dataclass(eq=False)  # identity: environments live in sets
class Environment:
    """One execution environment: a process, the two pipe ends to it, and its life so far."""

    index: int
    proc: subprocess.Popen[bytes]
    to_env: int
    from_env: int
    log: IO[bytes]
    spawned_s: float
    cold_start_ms: float = 0.0  # spawn to ready, measured here: interpreter, import, init
    init_ms: float = 0.0  # the import and init alone, measured inside
    invocations: int = 0
    frozen: bool = False
    alive: bool = True
    _buffer: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def freeze(self) -> None:
        """SIGSTOP, and wait until the kernel has stopped it: once this returns, none of its threads runs."""
        if self.alive and not self.frozen:
            try:
                os.kill(self.pid, signal.SIGSTOP)
                os.waitpid(self.pid, os.WUNTRACED)
            except (ProcessLookupError, ChildProcessError):
                return
            self.frozen = True

    def thaw(self) -> None:
        if self.alive and self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.frozen = False

    def send(self, doc: Any) -> None:
        data = json.dumps(doc, separators=(",", ":")).encode()
        view = memoryview(HEADER.pack(len(data)) + data)
        try:
            while view:
                view = view[os.write(self.to_env, view) :]
        except OSError:
            raise EnvironmentGone(timed_out=False) from None

    def receive(self, deadline: float) -> Any:
        """The next frame, waiting until `deadline` (monotonic) at most."""
        while True:
            if len(self._buffer) >= HEADER.size:
                size = HEADER.unpack(self._buffer[: HEADER.size])[0]
                if len(self._buffer) >= HEADER.size + size:
                    body = bytes(self._buffer[HEADER.size : HEADER.size + size])
                    del self._buffer[: HEADER.size + size]
                    return json.loads(body)
            left = deadline - time.monotonic()
            if left <= 0:
                raise EnvironmentGone(timed_out=True)
            ready, _, _ = select.select([self.from_env], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.from_env, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                raise EnvironmentGone(timed_out=False)
            self._buffer += chunk

    def crash(self) -> None:
        """SIGKILL, as a crash, an out-of-memory kill or a host failure ends an environment; the thread waiting on
        its event sees the pipe close and cleans up (:meth:`kill`)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def kill(self) -> None:
        """End the environment and release its pipes and log."""
        if self.alive:
            self.alive = False
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)  # a stopped process dies on SIGKILL too; this just reaps faster
            self.proc.wait()
            for fd in (self.to_env, self.from_env):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.log.close()


@dataclass(frozen=True)
class ColdStart:
    index: int
    cold_start_ms: float
    init_ms: float
    on_request: bool  # paid by a caller's request (False: the world's warm-up)


class Fleet:
    """Execution environments of one function. See the module docstring.

    ``env`` is every environment's process environment; ``per_environment(index)`` adds variables for one of them
    (a skewed clock, for example). ``reserved_concurrency`` caps the environments that exist at once.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        reserved_concurrency: int,
        log_dir: Path,
        per_environment: Callable[[int], Mapping[str, str]] | None = None,
        throttle_answer: tuple[int, bytes] = GATEWAY_500,
        reuse: str = "lru",
        python: str = sys.executable,
    ) -> None:
        if reuse not in ("lru", "mru"):
            raise ValueError("reuse is lru (the environment idle longest) or mru (the most recently used)")
        if reserved_concurrency < 1:
            raise ValueError("reserved_concurrency must be at least 1")
        self.env = dict(env)
        self.reserved_concurrency = reserved_concurrency
        self.log_dir = log_dir
        self.per_environment = per_environment
        self.throttle_answer = throttle_answer
        self.python = python
        self.reuse = reuse
        self._lock = threading.Lock()
        self._idle: list[Environment] = []  # oldest release first
        self._busy: set[Environment] = set()
        self._starting = 0
        self._next_index = 0
        self.cold_starts: list[ColdStart] = []
        self.invocations = 0
        self.throttles = 0
        self.failures = 0  # invocations whose environment died or timed out
        self.max_concurrency = 0

    # -- environments ---------------------------------------------------------------------------------------------

    def _spawn(self, *, on_request: bool) -> Environment:
        with self._lock:
            index = self._next_index
            self._next_index += 1
        env = dict(self.env)
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = f"local/[$LATEST]env-{index:03d}"
        if self.per_environment is not None:
            env.update(self.per_environment(index))
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        log = (self.log_dir / f"env-{index:03d}.log").open("wb")
        spawned = time.monotonic()
        try:
            proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [self.python, "-m", "local.localrun.environment", str(to_child_r), str(from_child_w)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(to_child_r, from_child_w),
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        environment = Environment(index, proc, to_child_w, from_child_r, log, spawned)
        try:
            ready = environment.receive(time.monotonic() + READY_TIMEOUT_S)
        except EnvironmentGone:
            environment.kill()
            raise RuntimeError(f"environment {index} failed its init (see {log.name})") from None
        environment.cold_start_ms = round((time.monotonic() - spawned) * 1000.0, 1)
        environment.init_ms = float(ready.get("init_ms", 0.0))
        with self._lock:
            self.cold_starts.append(ColdStart(index, environment.cold_start_ms, environment.init_ms, on_request))
        return environment

    def prewarm(self, count: int, parallel: int = 2) -> list[ColdStart]:
        """Start `count` environments (at most the reserved concurrency in all), `parallel` at a time, and leave them
        idle and frozen: the setup phase of a run, measured apart from its requests."""
        with self._lock:
            count = max(0, min(count, self.reserved_concurrency - self.size))
            self._starting += count
        started: list[Environment] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        todo = list(range(count))

        def worker() -> None:
            while True:
                with lock:
                    if not todo or errors:
                        return
                    todo.pop()
                try:
                    environment = self._spawn(on_request=False)
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                    return
                environment.freeze()
                with lock:
                    started.append(environment)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, parallel))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self._lock:
            self._starting -= count
            self._idle.extend(started)
        if errors:
            raise errors[0]
        return [c for c in self.cold_starts if c.index in {e.index for e in started}]

    @property
    def next_index(self) -> int:
        """The index the next environment started will have."""
        with self._lock:
            return self._next_index

    @property
    def size(self) -> int:
        """Environments that exist (idle, busy or starting): what reserved concurrency caps."""
        return len(self._idle) + len(self._busy) + self._starting

    def environments(self) -> list[Environment]:
        with self._lock:
            return [*self._idle, *self._busy]

    def busy(self) -> list[Environment]:
        with self._lock:
            return list(self._busy)

    def stop(self) -> None:
        """Every environment ends (a new fleet starts cold)."""
        with self._lock:
            everyone = [*self._idle, *self._busy]
            self._idle.clear()
            self._busy.clear()
        for environment in everyone:
            environment.kill()

    # -- invocations ----------------------------------------------------------------------------------------------

    def _acquire(self) -> Environment | None:
        """An idle environment (thawed), or None when a new one may start; raises when throttled."""
        with self._lock:
            self.invocations += 1
            if self._idle:
                environment = self._idle.pop(0 if self.reuse == "lru" else -1)
                self._busy.add(environment)
                self.max_concurrency = max(self.max_concurrency, len(self._busy) + self._starting)
                return environment
            if self.size < self.reserved_concurrency:
                self._starting += 1
                self.max_concurrency = max(self.max_concurrency, len(self._busy) + self._starting)
                return None
            self.throttles += 1
        status, body = self.throttle_answer
        raise InvocationError(status, body, [*JSON_HEADERS, ("x-amzn-errortype", "InternalServerErrorException")])

    def invoke_stream(self, event: dict[str, Any], context: Any) -> Iterator[bytes]:
        """One event through the fleet's streaming integration (InvokeWithResponseStream): the chunks as the
        environment writes them. The environment stays busy (thawed) until its stream ends; a caller that leaves
        early does not stop it (Lambda's function also runs to its end), its chunks are read and dropped."""
        environment = self._environment()
        remaining = float(getattr(context, "get_remaining_time_in_millis", lambda: DEFAULT_TIMEOUT_MS)())
        request_id = str(getattr(context, "aws_request_id", ""))
        deadline = time.monotonic() + remaining / 1000.0
        frame = {"op": "stream", "event": event, "request_id": request_id, "remaining_ms": remaining}
        finished = gone = False
        try:
            environment.thaw()
            environment.send(frame)
            while True:
                answer = environment.receive(deadline)
                if answer.get("end"):
                    finished = True
                    return
                yield base64.b64decode(answer["chunk"])
        except EnvironmentGone as error:
            gone = True
            self._discard(environment)
            raise InvocationError(*(GATEWAY_504 if error.timed_out else GATEWAY_502), JSON_HEADERS) from None
        finally:
            if not gone:
                self._end_stream(environment, deadline, drain=not finished)

    def _end_stream(self, environment: Environment, deadline: float, *, drain: bool) -> None:
        """Back to idle once its stream has ended (read to the end first if the caller left early)."""
        try:
            while drain and not environment.receive(deadline).get("end"):
                pass
        except EnvironmentGone:
            self._discard(environment)
            return
        environment.freeze()
        environment.invocations += 1
        self._release(environment)

    def _environment(self) -> Environment:
        """An environment for one event: an idle one, or a new one (a cold start) when the fleet may grow."""
        environment = self._acquire()
        if environment is None:
            try:
                environment = self._spawn(on_request=True)
            except BaseException:
                with self._lock:
                    self._starting -= 1
                    self.failures += 1
                raise InvocationError(*GATEWAY_502, JSON_HEADERS) from None
            with self._lock:
                self._starting -= 1
                self._busy.add(environment)
        return environment

    def invoke(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """One API Gateway event through the fleet: the Lambda handler's signature."""
        environment = self._environment()
        remaining = float(getattr(context, "get_remaining_time_in_millis", lambda: DEFAULT_TIMEOUT_MS)())
        request_id = str(getattr(context, "aws_request_id", ""))
        frame = {"op": "invoke", "event": event, "request_id": request_id, "remaining_ms": remaining}
        try:
            answer = self._call(environment, frame, remaining / 1000.0)
        except EnvironmentGone as gone:
            self._discard(environment)
            raise InvocationError(*(GATEWAY_504 if gone.timed_out else GATEWAY_502), JSON_HEADERS) from None
        environment.invocations += 1
        self._release(environment)
        result: dict[str, Any] = answer["result"]
        # Harness only (API Gateway sends no such header): which environment answered, for per-environment figures.
        result.setdefault("headers", {})[ENVIRONMENT_HEADER] = str(environment.index)
        return result

    def _call(self, environment: Environment, frame: Mapping[str, Any], timeout_s: float) -> Any:
        environment.thaw()
        environment.send(frame)
        answer = environment.receive(time.monotonic() + timeout_s)
        environment.freeze()
        return answer

    def _release(self, environment: Environment) -> None:
        with self._lock:
            self._busy.discard(environment)
            if environment.alive:
                self._idle.append(environment)

    def _discard(self, environment: Environment) -> None:
        environment.kill()
        with self._lock:
            self._busy.discard(environment)
            self.failures += 1

    def each_idle(self, frame: Mapping[str, Any], timeout_s: float = 10.0) -> list[tuple[int, Any]]:
        """Send `frame` to every idle environment in turn (thawed, answered, frozen again): the world's own look
        inside, not traffic. Busy environments are skipped."""
        with self._lock:
            taken, self._idle = list(self._idle), []
            self._busy.update(taken)
        out: list[tuple[int, Any]] = []
        for environment in taken:
            try:
                out.append((environment.index, self._call(environment, frame, timeout_s)))
            except EnvironmentGone:
                self._discard(environment)
                continue
            self._release(environment)
        return out

    def retire(self, environments: list[Environment]) -> int:
        """End these environments if idle (Lambda recycles environments too); returns how many ended."""
        with self._lock:
            chosen = [e for e in environments if e in self._idle]
            self._idle = [e for e in self._idle if e not in chosen]
        for environment in chosen:
            environment.kill()
        return len(chosen)

    def kill_busy(self) -> Environment | None:
        """SIGKILL one environment in the middle of an event (chaos); None when none is busy."""
        with self._lock:
            busy = sorted(self._busy, key=lambda e: e.index)
        if not busy:
            return None
        busy[0].crash()
        return busy[0]

"""The Lambda service of the fleet world: execution environments, one event at a time each, frozen between events.

:class:`Fleet` is what API Gateway invokes (``fleet.invoke(event, context)``, the signature of a Lambda handler, so
the local endpoint calls it as it would call the handler). Per invocation it does what Lambda does:

- a warm idle environment first (``reuse``: the one idle longest, or the most recently used), thawed with SIGCONT;
- else a new environment, if the function's reserved concurrency allows one more: a fresh process that pays its
  own cold start (interpreter, ``import handler``, the router's warm-up) before the event runs;
- else the invocation is throttled. Lambda answers API Gateway 429 TooManyRequestsException before any code runs,
  and API Gateway answers with its INTEGRATION_FAILURE gateway response: the router stack's (503 NoCapacity with
  Retry-After, in the router's error shape), rendered from the definition the stack deploys
  (stacks/gateway_responses.py), not a copy of it.

After the answer the environment is frozen (SIGSTOP): none of its threads run until the next event. An environment
that dies in the middle of an event (killed, crashed) costs that event a 502, as API Gateway answers a failed
invocation; one that overruns the function's timeout (the event's remaining time) is killed and costs API Gateway's
INTEGRATION_TIMEOUT gateway response (the stack's 504 DeadlineExceeded). Either way Lambda replaces it with a fresh
one on demand.
"""

from __future__ import annotations

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

from local.localrun.apigw import CHAT_RESOURCE, STREAM_RESOURCE
from local.localrun.environment import HANDLER, HEADER, ROOT, ROUTER_ROOT, STREAM_HANDLER
from local.localrun.runtime_api import Answer, NoAnswer, RuntimeApiStandIn
from local.localrun.server import InvocationError
from stacks.gateway_responses import REQUEST_ID_HEADER, GatewayResponse, by_type, render

JSON_HEADERS = [("content-type", "application/json")]
# A function that fails in the middle of an event: API Gateway's own 502 for a Lambda proxy integration.
GATEWAY_502 = (502, b'{"message": "Internal server error"}')
THROTTLED = by_type("INTEGRATION_FAILURE")  # Lambda refused the invoke (reserved concurrency reached)
TIMED_OUT = by_type("INTEGRATION_TIMEOUT")
DEFAULT_TIMEOUT_MS = 29_000.0  # API Gateway's integration timeout, the router Lambda's timeout at most
ENVIRONMENT_HEADER = "x-local-environment"
# Harness only too: time.monotonic() when the environment was handed the event, so a caller in this process can time
# a request's attempts from when the router began them rather than from when it sent the request.
INVOKED_AT_HEADER = "x-local-invoked-at"
READY_TIMEOUT_S = 60.0  # a cold start on a loaded 2-core machine, with room
PARK_TIMEOUT_S = 10.0  # from an answer to the runtime's next `next`: its few lines after the handler returns
# What the function's configuration sets in AWS to start the router's runtime loop (stacks/constructs/
# router_function.py, RouterFunction.runtime_environment; a test holds the two equal), but the wrapper: the
# environment runs runtime_loop.py itself, as runtime-wrapper does.
RUNTIME_ENVIRONMENT = {
    "_HANDLER": HANDLER,
    "SPILLWAY_STREAM_HANDLER": STREAM_HANDLER,
    "SPILLWAY_STREAM_ROUTES": f"POST {STREAM_RESOURCE},POST {CHAT_RESOURCE}",
    "LAMBDA_TASK_ROOT": str(ROUTER_ROOT),
}


class EnvironmentGone(Exception):
    """The environment ended (or overran) in the middle of an event."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "exited")
        self.timed_out = timed_out


@dataclass(eq=False)  # identity: environments live in sets
class Environment:
    """One execution environment: a process, its Runtime API, the control pipe's two ends, and its life so far."""

    index: int
    proc: subprocess.Popen[bytes]
    api: RuntimeApiStandIn
    to_env: int
    from_env: int
    log: IO[bytes]
    spawned_s: float
    cold_start_ms: float = 0.0  # spawn to its first `next`, measured here: interpreter, import, init
    init_ms: float = 0.0  # the runtime loop's init alone: from the process's first line to its first `next`
    invocations: int = 0
    frozen: bool = False
    alive: bool = True
    _buffer: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        """Whether the process still runs (Lambda knows when its runtime exits)."""
        return self.alive and self.proc.poll() is None

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
        """The next control frame, waiting until `deadline` (monotonic) at most."""
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

    def progress(self, request_id: str, deadline: float) -> Iterator[bytes | Answer]:
        """The invocation's streamed chunks as they arrive, then its answer; raises EnvironmentGone."""
        try:
            yield from self.api.progress(request_id, deadline=deadline, alive=self.running)
        except NoAnswer as none:
            raise EnvironmentGone(none.timed_out) from None

    def park(self, deadline: float) -> None:
        """Wait for the runtime's next `next` (where Lambda freezes an environment), then freeze it."""
        try:
            if not self.api.wait_parked(deadline=deadline, alive=self.running):
                raise EnvironmentGone(timed_out=False)  # an init error
        except NoAnswer as none:
            raise EnvironmentGone(none.timed_out) from None
        self.freeze()

    def crash(self) -> None:
        """SIGKILL, as a crash, an out-of-memory kill or a host failure ends an environment; the thread waiting on
        its event sees the process gone and cleans up (:meth:`kill`)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def kill(self) -> None:
        """End the environment and release its Runtime API, pipes and log."""
        if self.alive:
            self.alive = False
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)  # a stopped process dies on SIGKILL too; this just reaps faster
            self.proc.wait()
            self.api.close_soon()
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
        env = {**RUNTIME_ENVIRONMENT, **self.env}  # the router's entry, unless `env` names another function
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = f"local/[$LATEST]env-{index:03d}"
        if self.per_environment is not None:
            env.update(self.per_environment(index))
        api = RuntimeApiStandIn().__enter__()
        env["AWS_LAMBDA_RUNTIME_API"] = api.address
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
        except BaseException:
            api.__exit__(None, None, None)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        environment = Environment(index, proc, api, to_child_w, from_child_r, log, spawned)
        deadline = spawned + READY_TIMEOUT_S
        try:
            hello = environment.receive(deadline)
            if not api.wait_parked(deadline=deadline, alive=environment.running):
                raise EnvironmentGone(timed_out=False)  # it reported an init error
        except (EnvironmentGone, NoAnswer):
            environment.kill()
            raise RuntimeError(f"environment {index} failed its init (see {log.name})") from None
        ready = api.first_next_at or time.monotonic()
        environment.cold_start_ms = round((ready - spawned) * 1000.0, 1)
        environment.init_ms = round((ready - float(hello["started"])) * 1000.0, 1)
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
                environment.freeze()  # parked in `next`, as Lambda leaves an initialised environment
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

    def _acquire(self, request_id: str) -> Environment | None:
        """An idle environment (thawed), or None when a new one may start; raises API Gateway's answer for a
        throttled Lambda (`request_id`: API Gateway's) when the reserved concurrency is reached."""
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
        raise InvocationError(*_gateway_answer(THROTTLED, request_id))

    def invoke_stream(self, event: dict[str, Any], context: Any) -> Iterator[bytes]:
        """One event through the fleet's streaming integration (InvokeWithResponseStream): the chunks as the
        runtime posts them. A caller that leaves early does not stop the function (Lambda's runs to its end too):
        the rest is read and dropped before the environment is frozen."""
        parts = self._run(event, context)
        try:
            for part in parts:
                if isinstance(part, bytes):
                    yield part
                elif part.kind != "response" or not part.streamed or part.trailers:
                    # Before the first chunk: a failed invocation, API Gateway's 502. After it: the stream is cut.
                    raise InvocationError(*GATEWAY_502, JSON_HEADERS)
        finally:
            parts.close()

    def invoke(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """One API Gateway event through the fleet (Invoke): the Lambda handler's signature."""
        answer = list(self._run(event, context))[-1]
        assert isinstance(answer, Answer)  # the run's last part, after any chunks
        if answer.kind != "response" or answer.streamed:  # a function error, or a stream on a buffered integration
            raise InvocationError(*GATEWAY_502, JSON_HEADERS)
        try:
            result: dict[str, Any] = json.loads(answer.body)
        except ValueError:
            raise InvocationError(*GATEWAY_502, JSON_HEADERS) from None
        return result

    def _run(self, event: dict[str, Any], context: Any) -> Iterator[bytes | Answer]:
        """The one path of every invocation, buffered or streamed: an environment (warm first), the event queued
        on its Runtime API, its chunks as they arrive and its answer; then, once the runtime asks for its next
        event, the environment frozen and idle again. A process that exits or overruns costs the event API
        Gateway's 502 or 504 and the environment."""
        environment = self._environment(_api_request_id(event))
        remaining = float(getattr(context, "get_remaining_time_in_millis", lambda: DEFAULT_TIMEOUT_MS)())
        request_id = str(getattr(context, "aws_request_id", "") or "") or None
        deadline = time.monotonic() + remaining / 1000.0
        finished = False
        try:
            environment.thaw()
            invoked_at = time.monotonic()
            rid = environment.api.invoke(event, timeout_s=remaining / 1000.0, request_id=request_id)
            for part in environment.progress(rid, deadline):
                if isinstance(part, Answer):
                    finished = True
                    if part.kind == "response" and not part.streamed:
                        _tag_environment(part, environment.index, invoked_at)
                yield part
        except EnvironmentGone as error:
            self._discard(environment)
            if error.timed_out:
                raise InvocationError(*_gateway_answer(TIMED_OUT, _api_request_id(event))) from None
            raise InvocationError(*GATEWAY_502, JSON_HEADERS) from None
        except GeneratorExit:  # the caller left: the function runs on to its end, unread
            if not finished:
                self._drain(environment, rid, deadline)
            else:
                self._settle(environment)
            raise
        self._settle(environment)  # answered: whatever happens to the process now, the event has its answer

    def _drain(self, environment: Environment, rid: str, deadline: float) -> None:
        try:
            for _ in environment.progress(rid, deadline):
                pass
        except EnvironmentGone:
            self._discard(environment)
            return
        self._settle(environment)

    def _settle(self, environment: Environment) -> None:
        """Once its runtime asks for the next event: frozen and idle again (or dropped, if it ended instead)."""
        try:
            environment.park(time.monotonic() + PARK_TIMEOUT_S)
        except EnvironmentGone:
            self._discard(environment)
            return
        environment.invocations += 1
        self._release(environment)

    def _environment(self, request_id: str) -> Environment:
        """An environment for one event: an idle one, or a new one (a cold start) when the fleet may grow."""
        environment = self._acquire(request_id)
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

    def _call(self, environment: Environment, frame: Mapping[str, Any], timeout_s: float) -> Any:
        """A control frame to an idle environment (thawed, answered, frozen again)."""
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

    def each_idle(self, look: Callable[[Environment], Any]) -> list[tuple[int, Any]]:
        """``look`` at every idle environment in turn, taken out of dispatch meanwhile: the world's own look
        inside, not traffic. Busy environments are skipped; one that ends meanwhile is dropped."""
        with self._lock:
            taken, self._idle = list(self._idle), []
            self._busy.update(taken)
        out: list[tuple[int, Any]] = []
        for at, environment in enumerate(taken):
            try:
                out.append((environment.index, look(environment)))
            except EnvironmentGone:
                self._discard(environment)
                continue
            except BaseException:
                for untouched in taken[at:]:  # back to dispatch, whatever the look said
                    self._release(untouched)
                raise
            self._release(environment)
        return out

    def control(self, frame: Mapping[str, Any], timeout_s: float = 10.0) -> list[tuple[int, Any]]:
        """A control frame (``stats``, ``rebuild``: local/localrun/environment.py) to every idle environment."""
        return self.each_idle(lambda environment: self._call(environment, frame, timeout_s))

    def invoke_each_idle(self, event: dict[str, Any], timeout_s: float = 10.0) -> list[tuple[int, dict[str, Any]]]:
        """``event`` through each idle environment's Runtime API in turn (the world's look inside: a health check
        per environment); the answer's proxy result."""

        def call(environment: Environment) -> dict[str, Any]:
            environment.thaw()
            rid = environment.api.invoke(event, timeout_s=timeout_s)
            answer = list(environment.progress(rid, time.monotonic() + timeout_s))[-1]
            environment.park(time.monotonic() + PARK_TIMEOUT_S)
            if not isinstance(answer, Answer) or answer.kind != "response" or answer.streamed:
                raise RuntimeError(f"environment {environment.index} failed the world's look inside")
            result: dict[str, Any] = json.loads(answer.body)
            return result

        return self.each_idle(call)

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


def _tag_environment(answer: Answer, index: int, invoked_at: float) -> None:
    """Harness only (API Gateway sends no such header): which environment answered, for per-environment figures."""
    try:
        result = json.loads(answer.body)
    except ValueError:
        return
    if isinstance(result, dict):
        headers = result.setdefault("headers", {})
        headers[ENVIRONMENT_HEADER] = str(index)
        headers[INVOKED_AT_HEADER] = f"{invoked_at:.6f}"
        answer.body = json.dumps(result).encode()


def is_throttle_answer(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether an answer is API Gateway's for a throttled Lambda (`headers` by lower-case name), exactly as
    rendered for its request id."""
    expected_status, expected_body, expected_headers = _gateway_answer(THROTTLED, headers.get(REQUEST_ID_HEADER, ""))
    return (
        status == expected_status
        and body == expected_body
        and all(headers.get(name) == value for name, value in expected_headers)
    )


def _api_request_id(event: Mapping[str, Any]) -> str:
    """API Gateway's request id ($context.requestId), which its own answers carry."""
    return str((event.get("requestContext") or {}).get("requestId", ""))


def _gateway_answer(response: GatewayResponse, request_id: str) -> tuple[int, bytes, list[tuple[str, str]]]:
    """(status, body, headers) of a gateway response for one request, in InvocationError's order."""
    status, headers, body = render(response, {"requestId": request_id, "error.responseType": response.response_type})
    return status, body, headers

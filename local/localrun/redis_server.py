"""A real redis-server (Debian's) on a free loopback port: the fleet's shared store in the local worlds.

The router reaches it as ``SPILLWAY_FLEET_STORE_URL=redis://127.0.0.1:PORT/0``. The world talks to it with a few
RESP commands of its own (flush between scenarios, the server's command counters), so it needs no client library.
Faults: :meth:`down` stops the server (connections refused) until :meth:`up` restarts it on the same port;
:meth:`slow` makes the server block for a while before every burst of commands (``DEBUG SLEEP``), as a store under
load does.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from types import TracebackType
from typing import Self


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _encode(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(sock: socket.socket) -> bytes | int | None:
    """One RESP reply: simple string, error (raised), integer or bulk string (the forms the world uses)."""
    buf = sock.makefile("rb")
    line = buf.readline()
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode(errors='replace')}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else buf.read(size + 2)[:-2]
    raise RuntimeError(f"redis: unexpected reply {line[:20]!r}")


class RedisServer:
    """``with RedisServer() as r: r.url`` -> redis://127.0.0.1:PORT/0. Nothing is persisted (no RDB, no AOF)."""

    def __init__(self, binary: str = "redis-server") -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(f"{binary} not found: install Debian's redis-server (make .stamps/redis-server)")
        self.binary = path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._slow_stop: threading.Event | None = None
        self._slow_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        args += ["--protected-mode", "yes", "--loglevel", "warning", "--enable-debug-command", "local"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError):
                if self.command("PING") == b"PONG":
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        self.fast()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def command(self, *args: str, timeout_s: float = 5.0) -> bytes | int | None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as sock:
            sock.sendall(_encode(*args))
            return _read_reply(sock)

    # -- faults ---------------------------------------------------------------------------------------------------

    def down(self) -> None:
        """The store is unreachable: the server stops, its port refuses connections until :meth:`up`."""
        self.stop()

    def up(self) -> None:
        if self.proc is None:
            self.start()

    def slow(self, block_ms: float = 50.0, every_ms: float = 60.0) -> None:
        """Every command waits up to `block_ms`: the server sleeps that long, then serves for the rest of each
        `every_ms` period. Ends with :meth:`fast`."""
        self.fast()
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, RuntimeError):
                    self.command("DEBUG", "SLEEP", f"{block_ms / 1000.0:.3f}")
                stop.wait(max(0.0, (every_ms - block_ms) / 1000.0))

        self._slow_stop = stop
        self._slow_thread = threading.Thread(target=loop, name="redis-slow", daemon=True)
        self._slow_thread.start()

    def fast(self) -> None:
        if self._slow_stop is not None and self._slow_thread is not None:
            self._slow_stop.set()
            self._slow_thread.join()
        self._slow_stop = self._slow_thread = None

    # -- inspection -----------------------------------------------------------------------------------------------

    def flush(self) -> None:
        self.command("FLUSHALL")

    def commands_processed(self) -> int:
        """The server's count of commands since start (INFO stats: total_commands_processed), minus the world's own
        reads of it: one INFO each."""
        info = self.command("INFO", "stats")
        assert isinstance(info, bytes)
        for line in info.decode().splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":", 1)[1])
        raise RuntimeError("redis INFO stats has no total_commands_processed")

    def connections_received(self) -> int:
        info = self.command("INFO", "stats")
        assert isinstance(info, bytes)
        for line in info.decode().splitlines():
            if line.startswith("total_connections_received:"):
                return int(line.split(":", 1)[1])
        raise RuntimeError("redis INFO stats has no total_connections_received")

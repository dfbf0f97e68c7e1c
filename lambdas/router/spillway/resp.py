"""A small RESP2 client over one socket (TLS via ssl), for the fleet store: standard library only.

Why not the `redis` or `valkey` PyPI client: the router needs a handful of commands (EVALSHA, EVAL, SET, AUTH,
SELECT) on one connection per execution environment, and the import cost counts against every cold start
(docs/design-notes.md has the figure). What this client does not do: connection pools, RESP3, pub/sub, cluster
redirects (the fleet keeps every key under one hash tag, so ElastiCache Serverless never needs to redirect us; a
MOVED or ASK reply is an error like any other).

Timeouts: `connect_timeout_s` bounds the TCP connect and the TLS handshake, `read_timeout_s` each socket read.
No call is retried here, except that a connection found closed by the server on its first use after a pause (a
Lambda environment thawed after the server dropped its idle connection) is reopened once before the command is
sent: the server never saw that command.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

Reply: TypeAlias = "int | bytes | list[Reply] | RespError | None"
Credentials = Callable[[], tuple[str, str]]  # (user, password) for AUTH, computed per connection (IAM tokens)


class RespError(Exception):
    """An error reply from the server (its first word is the code: ERR, NOSCRIPT, WRONGTYPE, MOVED ...)."""

    @property
    def code(self) -> str:
        text = str(self.args[0]) if self.args else ""
        return text.split(" ", 1)[0] or "ERR"


class ProtocolError(Exception):
    """The server's bytes are not RESP2."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    tls: bool = False
    db: int = 0


def parse_url(url: str) -> Address:
    """redis://host:port/db or rediss://host:port (TLS). Raises ValueError for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "valkey", "valkeys"):
        raise ValueError("the fleet store URL must start with redis:// or rediss://")
    hostport, _, path = rest.partition("/")
    if "@" in hostport:
        raise ValueError("the fleet store URL must not carry credentials")
    host, colon, port_text = hostport.rpartition(":")
    if not colon:
        host, port_text = hostport, "6379"
    host = host.strip("[]")
    if not host:
        raise ValueError("the fleet store URL has no host")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError("the fleet store URL's port is out of range")
    db = int(path) if path.strip("/") else 0
    return Address(host, port, tls=scheme in ("rediss", "valkeys"), db=db)


def encode(args: Sequence[str | bytes | int | float]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Connection:
    """One connection, opened on first use. Not thread-safe: the store serialises calls with a lock."""

    def __init__(
        self,
        address: Address,
        *,
        connect_timeout_s: float = 0.25,
        read_timeout_s: float = 0.25,
        credentials: Credentials | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._credentials = credentials
        self._ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._received = False  # any reply byte read during the current pipeline (then the server saw it)
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def call(self, *args: str | bytes | int | float) -> Reply:
        """One command, one round trip. Raises RespError for an error reply, OSError/ProtocolError otherwise."""
        (reply,) = self.pipeline([args])
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Reply]:
        """Send the commands in one write and read their replies (error replies are returned, not raised)."""
        payload = b"".join(encode(c) for c in commands)
        reused = self._sock is not None
        self._received = False
        try:
            sock = self._open()
            sock.sendall(payload)
            return [self._read() for _ in commands]
        except (ConnectionResetError, BrokenPipeError, EOFError) as exc:
            self.close()
            if not reused or self._received:
                raise ConnectionError(type(exc).__name__) from exc
            # The server had closed the idle connection before we wrote: it never saw the command. Reopen once.
            sock = self._open()
            try:
                sock.sendall(payload)
                return [self._read() for _ in commands]
            except BaseException:
                self.close()
                raise
        except BaseException:
            self.close()  # a timeout or a half-read reply leaves the stream unusable
            raise

    # -- internals ----------------------------------------------------------------------------------------------

    def _open(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        address = self.address
        sock = socket.create_connection((address.host, address.port), timeout=self.connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.tls:
                if self._ssl_context is None:  # the system's CAs (ElastiCache's certificates chain to them), once
                    self._ssl_context = ssl.create_default_context()
                sock = self._ssl_context.wrap_socket(sock, server_hostname=address.host)
            sock.settimeout(self.read_timeout_s)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buffer.clear()
        self.connects += 1
        hello: list[list[str | bytes | int | float]] = []
        if self._credentials is not None:
            user, password = self._credentials()
            hello.append(["AUTH", user, password])
        if address.db:
            hello.append(["SELECT", address.db])
        if hello:
            try:
                sock.sendall(b"".join(encode(c) for c in hello))
                for _ in hello:
                    reply = self._read()
                    if isinstance(reply, RespError):
                        raise reply
            except BaseException:
                self.close()
                raise
        return sock

    def _line(self) -> bytes:
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 2]
                return line
            self._fill()

    def _exact(self, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size + 2:
            self._fill()
        data = bytes(buffer[:size])
        del buffer[: size + 2]
        return data

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise EOFError("the fleet store closed the connection")
        self._buffer.extend(chunk)
        self._received = True

    def _read(self) -> Reply:
        line = self._line()
        if not line:
            raise ProtocolError("empty line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exact(size)
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise ProtocolError(f"unexpected reply type {kind!r}")

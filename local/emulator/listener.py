"""A loopback HTTP listener that can be closed (connections refused) and reopened on the same port.

Handler threads are tracked and joined on close; open keep-alive connections are shut down so that no
thread lingers; long waits inside handlers use :attr:`Listener.closing` so that a close interrupts them.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Listener", "RequestHandler"]

Handle = Callable[["RequestHandler"], None]


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128
    timeout = 0.0  # handle_request() never blocks: serve() only calls it when the socket is readable

    def __init__(self, address: tuple[str, int], owner: Listener, closing: threading.Event) -> None:
        self.owner = owner
        self.closing = closing
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop_serving = False
        super().__init__(address, RequestHandler)

    def serve(self) -> None:
        """Accept until :meth:`stop_serving`: no polling, so stopping is immediate and idling is free."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop_serving:
                for key, _ in selector.select():
                    if key.fileobj is self and not self._stop_serving:
                        self.handle_request()  # ready: accepts at once (timeout 0 if the peer left)

    def stop_serving(self) -> None:
        self._stop_serving = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self.connections_lock:
            if add:
                self.connections.add(conn)
                if self.closing.is_set():  # accepted just before the close: drop it too
                    _shutdown(conn)
            else:
                self.connections.discard(conn)

    def drop_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            _shutdown(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (read timeout, reset) is normal here: stay quiet.
        pass


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60.0  # idle keep-alive connections are also shut down on close

    def setup(self) -> None:
        super().setup()
        # Small answers must not wait for the peer's delayed ACK (Nagle): ~40 ms a request otherwise.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    @property
    def closing(self) -> threading.Event:
        """Set when the listener closes or the emulator stops: waits must end."""
        return self.server.closing

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.server.closing.is_set():
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def start_chunked(self, status: int, headers: dict[str, str]) -> None:
        """Send the status and headers of a streamed answer (HTTP/1.1 chunked transfer encoding)."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, data: bytes) -> None:
        """One chunk, on the wire at once (an empty ``data`` ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n")
        self.wfile.flush()

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` mid-answer; True (at once) when the listener closes or the peer hangs up meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.server.closing.is_set():
                return True
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.25))
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return True  # the peer closed: nobody is listening any more
                except OSError:
                    return True
                return self.server.closing.wait(max(0.0, deadline - time.monotonic()))  # pipelined bytes: just wait
        return self.server.closing.is_set()

    def abort(self) -> None:
        """Drop the connection with no answer (RST)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _dispatch(self) -> None:
        try:
            self.server.owner.handle(self)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch
    do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        # Silent: nothing about requests reaches a log.
        pass


class Listener:
    """One loopback port. ``handle`` is called for every request, on the request's own thread."""

    def __init__(self, handle: Handle, host: str = "127.0.0.1", port: int = 0, name: str = "listener") -> None:
        self.handle = handle
        self.host = host
        self.name = name
        self._port = port
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._placeholder: socket.socket | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def open(self) -> None:
        """Listen (again, on the same port once it has one). Idempotent."""
        with self._lock:
            if self._server is not None:
                return
            if self._placeholder is not None:
                self._placeholder.close()
                self._placeholder = None
            server = _Server((self.host, self._port), self, self._stopping_event())
            self._port = server.server_port
            thread = threading.Thread(
                target=server.serve,
                name=f"emulator-{self.name}-{self._port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()

    def _stopping_event(self) -> threading.Event:
        # A fresh event per listening period: closing one period interrupts its waits only.
        self._stopping = threading.Event()
        return self._stopping

    def close(self, hold_port: bool = True) -> None:
        """Stop listening: new connections are refused, open ones dropped, waits interrupted.

        With ``hold_port`` the port stays bound (not listening), so connects are refused and nobody
        else takes the port before :meth:`open`.
        """
        with self._lock:
            server, thread = self._server, self._thread
            if server is None:
                if not hold_port and self._placeholder is not None:
                    self._placeholder.close()
                    self._placeholder = None
                return
            self._server = self._thread = None
            server.closing.set()
            server.stop_serving()
            if thread is not None:
                thread.join()
            server.socket.close()
            if hold_port:
                placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    placeholder.bind((self.host, self._port))
                    self._placeholder = placeholder
                except OSError:
                    placeholder.close()
            server.drop_connections()
            server.server_close()  # joins the handler threads

"""A blackholed port: connects to it time out instead of being refused, as when a region's packets are dropped.

The emulator closes a region by keeping its port bound but not listening (connects are refused). A blackhole
listens on that same port (both sockets set SO_REUSEADDR, and Linux lets a socket listen beside a bound one that
does not) with a backlog of zero and fills its accept queue with connections it never accepts: the kernel then
drops every further SYN, and the caller's connect waits out its timeout. Linux only, loopback only.
"""

from __future__ import annotations

import contextlib
import socket


class Blackhole:
    """``Blackhole(port)`` starts dropping connects to 127.0.0.1:port; :meth:`close` stops (before reopening)."""

    FILL = 3  # more than the accept queue of a zero backlog holds

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(0)
        self.fillers: list[socket.socket] = []
        for _ in range(self.FILL):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((host, port))
            self.fillers.append(filler)

    def close(self) -> None:
        for sock in (*self.fillers, self.listener):
            with contextlib.suppress(OSError):
                sock.close()
        self.fillers.clear()

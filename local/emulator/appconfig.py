"""The AWS AppConfig Agent Lambda extension's local HTTP interface, on its own loopback port.

In Lambda the extension listens on ``http://localhost:2772`` and answers
``GET /applications/{Application}/environments/{Environment}/configurations/{Configuration}`` with the
configuration bytes, their ``Content-Type`` and a ``Configuration-Version`` header; unknown configurations
are 404 and failures 500, with a plain-text body. Here the configuration is set at run time and the
endpoint can fail, hang, serve garbage or refuse connections as a fault.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from local.emulator.faults import ActiveFault, Fault, FaultKind, Scope
from local.emulator.listener import Listener, RequestHandler

__all__ = ["AppConfigExtension"]

_STATUS_TEXT = {
    400: "BadRequestException",
    404: "ResourceNotFoundException",
    500: "InternalServerException",
    502: "BadGatewayException",
    503: "ServiceUnavailableException",
    504: "GatewayTimeoutException",
}


@dataclass(frozen=True)
class _Config:
    content: bytes
    content_type: str
    version: str


def _as_bytes(content: bytes | str | Mapping[str, Any] | list[Any]) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    return json.dumps(content).encode()


class AppConfigExtension:
    """A stand-in for the AppConfig Agent Lambda extension. Use ``url`` as its base address."""

    def __init__(self, clock: Callable[[], float], host: str = "127.0.0.1", port: int = 0) -> None:
        self.clock = clock
        self.listener = Listener(self.handle, host=host, port=port, name="appconfig")
        self._lock = threading.Lock()
        self._configs: dict[tuple[str, str, str], _Config] = {}
        self._faults: list[ActiveFault] = []
        self._versions = 0
        self._started = False
        self.counters = {"requests": 0, "served": 0, "not_found": 0, "faulted": 0}

    @property
    def url(self) -> str:
        return self.listener.url

    def path(self, application: str, environment: str, profile: str) -> str:
        return f"/applications/{application}/environments/{environment}/configurations/{profile}"

    def config_url(self, application: str, environment: str, profile: str) -> str:
        return self.url + self.path(application, environment, profile)

    # Configurations -----------------------------------------------------------------------
    def set_configuration(
        self,
        application: str,
        environment: str,
        profile: str,
        content: bytes | str | Mapping[str, Any] | list[Any],
        content_type: str = "application/json",
        *,
        version: str | None = None,
    ) -> str:
        """Set (or replace) what the extension serves; returns the configuration version."""
        with self._lock:
            self._versions += 1
            ver = version or str(self._versions)
            self._configs[(application, environment, profile)] = _Config(_as_bytes(content), content_type, ver)
            return ver

    def remove_configuration(self, application: str, environment: str, profile: str) -> None:
        with self._lock:
            self._configs.pop((application, environment, profile), None)

    def configurations(self) -> list[dict[str, str]]:
        with self._lock:
            return [
                {"application": a, "environment": e, "profile": p, "content_type": c.content_type, "version": c.version}
                for (a, e, p), c in self._configs.items()
            ]

    # Faults -------------------------------------------------------------------------------
    def set_fault(self, fault: Fault) -> str:
        if fault.kind in (FaultKind.THROTTLE, FaultKind.SLOW_FIRST_TOKEN):
            raise ValueError(f"{fault.kind.value} does not apply to the AppConfig extension")
        active = ActiveFault(fault, Scope(), self.clock())
        with self._lock:
            self._faults.append(active)
        if fault.kind is FaultKind.REFUSE:
            self.tick()
        return active.id

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self.tick()

    def faults(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._lock:
            self._faults = [f for f in self._faults if f.fault.kind is FaultKind.REFUSE or not f.expired(now)]
            return [f.to_dict(now) for f in self._faults]

    def tick(self) -> None:
        """Apply REFUSE windows on the clock: close or reopen the listener; drop expired faults."""
        now = self.clock()
        with self._lock:
            self._faults = [f for f in self._faults if not f.expired(now)]
            refuse = any(f.fault.kind is FaultKind.REFUSE and f.in_window(now) for f in self._faults)
        if refuse and self.listener.is_open:
            self.listener.close()
        elif not refuse and not self.listener.is_open and self._started:
            self.listener.open()

    def start(self) -> None:
        self._started = True
        self.tick()

    def stop(self) -> None:
        self._started = False
        self.listener.close(hold_port=False)

    def _find_fault(self) -> ActiveFault | None:
        now = self.clock()
        with self._lock:
            faults = list(self._faults)
        for active in faults:
            if active.fault.kind is not FaultKind.REFUSE and active.try_fire(now):
                return active
        return None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.counters)

    def reset_stats(self) -> None:
        with self._lock:
            self.counters = dict.fromkeys(self.counters, 0)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    # HTTP ---------------------------------------------------------------------------------
    def handle(self, h: RequestHandler) -> None:
        h.read_body()
        parts = urlsplit(h.path).path.split("/")
        # ["", "applications", a, "environments", e, "configurations", p]
        if (
            h.command != "GET"
            or len(parts) != 7
            or parts[0] != ""
            or (parts[1], parts[3], parts[5]) != ("applications", "environments", "configurations")
        ):
            self._text(h, 400, "Invalid request path")
            return
        key = (unquote(parts[2]), unquote(parts[4]), unquote(parts[6]))
        self._count("requests")
        active = self._find_fault()
        if active is not None:
            self._count("faulted")
            fault = active.fault
            if fault.kind is FaultKind.ERROR:
                self._text(h, fault.status or 500, fault.message or "Internal error retrieving configuration")
                return
            if fault.kind is FaultKind.HANG:
                if not h.closing.wait(fault.delay_s):
                    self._text(h, 504, "Timed out retrieving configuration")
                else:
                    h.abort()
                return
            if fault.kind is FaultKind.RESET:
                h.abort()
                return
            if fault.kind is FaultKind.MALFORMED:
                h.reply(200, b'{"routing": ', {"Content-Type": "application/json", "Configuration-Version": "0"})
                return
        with self._lock:
            config = self._configs.get(key)
        if config is None:
            self._count("not_found")
            self._text(h, 404, f"Configuration {key[2]} not found for application {key[0]}, environment {key[1]}")
            return
        self._count("served")
        h.reply(200, config.content, {"Content-Type": config.content_type, "Configuration-Version": config.version})

    @staticmethod
    def _text(h: RequestHandler, status: int, message: str) -> None:
        body = f"{_STATUS_TEXT.get(status, 'Error')}: {message}".encode()
        h.reply(status, body, {"Content-Type": "text/plain"})

"""The HTTP control API (JSON), so that another process can drive a running emulator.

Routes (all bodies and answers JSON):

- ``GET /health`` -> ``{"ok": true}``
- ``GET /state`` -> regions and their URLs, the AppConfig URL, the targets
- ``GET /stats`` -> :meth:`Emulator.stats`; ``POST /stats/reset``
- ``GET /faults``; ``POST /faults`` ``{"scope": <scope>, "fault": {...}}`` -> ``{"id": ...}``;
  ``DELETE /faults`` (optional body ``{"scope": <scope>}``) -> ``{"removed": n}``;
  ``DELETE /faults/{id}``
- ``POST /targets`` (a target dict); ``PATCH /targets`` ``{"target": <scope>, "changes": {...}}``
- ``POST /regions/{region}/close``, ``POST /regions/{region}/open``
- ``PUT /appconfig/applications/{a}/environments/{e}/configurations/{p}``: the body is the configuration,
  its Content-Type is served with it; ``POST /appconfig/faults`` (a fault dict); ``DELETE /appconfig/faults``

A scope is ``"*"``, a region name, or ``{"region": ..., "kind": ..., "id": ...}`` with any of the keys.
Errors answer 400 (bad input) or 404 with ``{"error": message}``.
"""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from local.emulator.faults import Fault
from local.emulator.listener import Listener, RequestHandler

if TYPE_CHECKING:
    from local.emulator.core import Emulator

__all__ = ["ControlClient", "ControlServer"]


class ControlServer:
    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self.listener = Listener(self.handle, host=host, port=port, name="control")

    @property
    def url(self) -> str:
        return self.listener.url

    def start(self) -> None:
        self.listener.open()

    def stop(self) -> None:
        self.listener.close(hold_port=False)

    def handle(self, h: RequestHandler) -> None:
        raw = h.read_body()
        path = urlsplit(h.path).path
        try:
            if path.startswith("/appconfig/applications/") and h.command == "PUT":
                self._put_config(h, path, raw)
                return
            body: Any = json.loads(raw) if raw else {}
            status, answer = self._route(h.command, path, body)
        except KeyError as exc:
            status, answer = 404, {"error": str(exc)}
        except (ValueError, TypeError) as exc:
            status, answer = 400, {"error": str(exc)}
        h.reply(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _put_config(self, h: RequestHandler, path: str, raw: bytes) -> None:
        parts = path.split("/")
        # ["", "appconfig", "applications", a, "environments", e, "configurations", p]
        if len(parts) != 8 or (parts[2], parts[4], parts[6]) != ("applications", "environments", "configurations"):
            h.reply(400, b'{"error": "bad configuration path"}', {"Content-Type": "application/json"})
            return
        version = self.emulator.set_configuration(
            unquote(parts[3]),
            unquote(parts[5]),
            unquote(parts[7]),
            raw,
            h.headers.get("Content-Type") or "application/json",
        )
        h.reply(200, json.dumps({"version": version}).encode(), {"Content-Type": "application/json"})

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:  # noqa: PLR0911, PLR0912 (a route table)
        em = self.emulator
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        match method, parts:
            case "GET", ["health"]:
                return 200, {"ok": True}
            case "GET", ["state"]:
                return 200, em.describe()
            case "GET", ["stats"]:
                return 200, em.stats()
            case "POST", ["stats", "reset"]:
                em.reset_stats()
                return 200, {"ok": True}
            case "GET", ["faults"]:
                return 200, {"faults": em.faults()}
            case "POST", ["faults"]:
                fault_id = em.set_fault(body.get("scope", "*"), Fault.from_dict(body["fault"]))
                return 200, {"id": fault_id}
            case "DELETE", ["faults"]:
                return 200, {"removed": em.clear_faults(body.get("scope") if body else None)}
            case "DELETE", ["faults", fault_id]:
                if not em.remove_fault(fault_id):
                    raise KeyError(f"no fault {fault_id}")
                return 200, {"removed": 1}
            case "POST", ["targets"]:
                return 200, em.add_target(body).to_dict()
            case "PATCH", ["targets"]:
                return 200, em.update_target(body["target"], **body.get("changes", {})).to_dict()
            case "POST", ["regions", region, "close"]:
                em.close_region(region)
                return 200, {"region": region, "open": False}
            case "POST", ["regions", region, "open"]:
                em.open_region(region)
                return 200, {"region": region, "open": em.region_is_open(region)}
            case "POST", ["appconfig", "faults"]:
                if em.appconfig is None:
                    raise KeyError("the AppConfig extension is not enabled")
                return 200, {"id": em.appconfig.set_fault(Fault.from_dict(body))}
            case "DELETE", ["appconfig", "faults"]:
                if em.appconfig is None:
                    raise KeyError("the AppConfig extension is not enabled")
                em.appconfig.clear_faults()
                return 200, {"ok": True}
        raise KeyError(f"no route {method} {path}")


class ControlClient:
    """A tiny stdlib client for the HTTP control API (for the demo or a load test)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the control URL must be http(s)")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 (checked in __init__)
        request.add_header("Content-Type", "application/json")
        with self._opener.open(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null")

    def state(self) -> Any:
        return self.call("GET", "/state")

    def stats(self) -> Any:
        return self.call("GET", "/stats")

    def reset_stats(self) -> None:
        self.call("POST", "/stats/reset")

    def set_fault(self, scope: Any, fault: Fault | dict[str, Any]) -> str:
        fault_dict = fault.to_dict() if isinstance(fault, Fault) else fault
        return str(self.call("POST", "/faults", {"scope": scope, "fault": fault_dict})["id"])

    def clear_faults(self, scope: Any = None) -> int:
        body = {"scope": scope} if scope is not None else None
        return int(self.call("DELETE", "/faults", body)["removed"])

    def close_region(self, region: str) -> None:
        self.call("POST", f"/regions/{region}/close")

    def open_region(self, region: str) -> None:
        self.call("POST", f"/regions/{region}/open")

    def update_target(self, target: Any, **changes: Any) -> Any:
        return self.call("PATCH", "/targets", {"target": target, "changes": changes})

"""The emulator: regional runtime endpoints, the AppConfig extension, faults, stats, control."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from local.emulator.appconfig import AppConfigExtension
from local.emulator.control import ControlServer
from local.emulator.eventstream import validate_stream_error
from local.emulator.faults import ActiveFault, Fault, FaultKind, Scope
from local.emulator.runtime import RegionEndpoint
from local.emulator.targets import Kind, TargetKey, TargetSpec, TargetState
from local.emulator.wire import validate_error_name

__all__ = ["Emulator", "ScopeLike", "to_scope"]

ScopeLike = Scope | TargetSpec | TargetKey | tuple[str, str, str] | Mapping[str, str] | str | None


def to_scope(value: ScopeLike) -> Scope:
    """A fault scope from: None or "*" (everything), a region name, a TargetSpec/TargetKey,
    a (region, kind, id) tuple, a Scope, or a dict with any of region/kind/id."""
    if value is None or value == "*":
        return Scope()
    if isinstance(value, Scope):
        scope = value
    elif isinstance(value, str):
        scope = Scope(region=value)
    elif isinstance(value, TargetSpec | TargetKey):
        scope = Scope(value.region, value.kind.value, value.id)
    elif isinstance(value, tuple):
        region, kind, target_id = value
        scope = Scope(region, kind, target_id)
    elif isinstance(value, Mapping):
        unknown = set(value) - {"region", "kind", "id"}
        if unknown:
            raise ValueError(f"unknown scope field(s): {', '.join(sorted(unknown))}")
        scope = Scope(value.get("region"), value.get("kind"), value.get("id"))
    else:
        raise TypeError(f"cannot make a fault scope of {value!r}")
    if scope.kind is not None:
        scope = Scope(scope.region, Kind(scope.kind).value, scope.id)
    return scope


def _within(inner: Scope, outer: Scope) -> bool:
    return all(
        getattr(outer, name) is None or getattr(outer, name) == getattr(inner, name)
        for name in ("region", "kind", "id")
    )


def _as_spec(target: TargetSpec | Mapping[str, Any]) -> TargetSpec:
    return target if isinstance(target, TargetSpec) else TargetSpec.from_dict(target)


class Emulator:
    """Bedrock Runtime and SageMaker Runtime of several regions on loopback, with fault injection.

    ``targets`` are :class:`TargetSpec` or their dict form. Each region gets one listener on
    ``host`` (port 0 = ephemeral unless ``region_ports`` names one). ``clock`` drives fault windows and
    token buckets (inject a fake one in tests; latency sleeps stay real). ``appconfig`` starts the
    AppConfig extension stand-in; ``control`` starts the HTTP control API.
    """

    def __init__(
        self,
        targets: Iterable[TargetSpec | Mapping[str, Any]] = (),
        *,
        regions: Iterable[str] = (),
        region_ports: Mapping[str, int] | None = None,
        appconfig: bool = True,
        appconfig_port: int = 0,
        control: bool = False,
        control_port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        host: str = "127.0.0.1",
        tick_interval: float = 0.05,
    ) -> None:
        self.clock = clock
        self.host = host
        self.tick_interval = tick_interval
        self._region_ports = dict(region_ports or {})
        self._lock = threading.RLock()
        self._tick_lock = threading.Lock()
        self._regions: dict[str, RegionEndpoint] = {}
        self._closed_regions: set[str] = set()
        self._faults: list[ActiveFault] = []
        self._running = False
        self._stop_ticker = threading.Event()
        self._ticker: threading.Thread | None = None
        self.appconfig: AppConfigExtension | None = (
            AppConfigExtension(clock, host=host, port=appconfig_port) if appconfig else None
        )
        self._control_wanted = control
        self._control_port = control_port
        self._control: ControlServer | None = None
        for region in regions:
            self._region(region)
        for target in targets:
            self.add_target(target)

    # Construction from config ----------------------------------------------------------------
    @classmethod
    def from_config(cls, data: Mapping[str, Any] | list[Any], **overrides: Any) -> Emulator:
        """Build from the dict/JSON form: a list of targets, or
        ``{"targets": [...], "regions": [...], "region_ports": {...}, "appconfig": {"port": 2772,
        "configurations": [...]}, "control": {"port": 0}}``."""
        if isinstance(data, list):
            data = {"targets": data}
        known = {"targets", "regions", "region_ports", "appconfig", "control"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown emulator config field(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {
            "regions": data.get("regions", ()),
            "region_ports": data.get("region_ports"),
        }
        appconfig = data.get("appconfig", {})
        configurations: list[Mapping[str, Any]] = []
        if appconfig is False:
            kwargs["appconfig"] = False
        elif isinstance(appconfig, Mapping):
            kwargs["appconfig_port"] = int(appconfig.get("port", 0))
            configurations = list(appconfig.get("configurations", []))
        control = data.get("control")
        if control:
            kwargs["control"] = True
            if isinstance(control, Mapping):
                kwargs["control_port"] = int(control.get("port", 0))
        kwargs.update(overrides)
        emulator = cls(data.get("targets", ()), **kwargs)
        for item in configurations:
            emulator.set_configuration(
                item["application"],
                item["environment"],
                item["profile"],
                item.get("content", ""),
                item.get("content_type", "application/json"),
            )
        return emulator

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Emulator:
        return cls.from_config(json.loads(Path(path).read_text()), **overrides)

    # Life cycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        with self._lock:
            if self._running:
                return self
            self._running = True
        try:
            self.tick()
            if self.appconfig is not None:
                self.appconfig.start()
            if self._control_wanted:
                self._control = ControlServer(self, host=self.host, port=self._control_port)
                self._control.start()
            self._stop_ticker.clear()
            self._ticker = threading.Thread(target=self._tick_loop, name="emulator-ticker", daemon=True)
            self._ticker.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every listener, interrupt hanging requests, join every thread. Idempotent."""
        with self._lock:
            self._running = False
        self._stop_ticker.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._control is not None:
            self._control.stop()
            self._control = None
        # Close the listeners side by side: each close waits for its serve loop to notice.
        closers = [
            threading.Thread(target=endpoint.listener.close, kwargs={"hold_port": False}, name="emulator-stop")
            for endpoint in list(self._regions.values())
        ]
        if self.appconfig is not None:
            closers.append(threading.Thread(target=self.appconfig.stop, name="emulator-stop"))
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    @property
    def running(self) -> bool:
        return self._running

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _tick_loop(self) -> None:
        while not self._stop_ticker.wait(self.tick_interval):
            self.tick()

    def tick(self) -> None:
        """Apply the clock now: drop expired faults, open/close listeners for REFUSE windows.

        A background thread calls it every ``tick_interval``; with a fake clock, call it after
        advancing the clock to apply a window change at once.
        """
        with self._tick_lock:
            now = self.clock()
            with self._lock:
                self._faults = [f for f in self._faults if not f.expired(now)]
                refusing = {
                    f.scope.region for f in self._faults if f.fault.kind is FaultKind.REFUSE and f.in_window(now)
                }
                running = self._running
                endpoints = dict(self._regions)
                closed = set(self._closed_regions)
            for region, endpoint in endpoints.items():
                want_open = running and region not in closed and region not in refusing
                if want_open and not endpoint.listener.is_open:
                    endpoint.listener.open()
                elif not want_open and endpoint.listener.is_open and running:
                    endpoint.listener.close()
            if self.appconfig is not None and running:
                self.appconfig.tick()

    # Regions and targets ----------------------------------------------------------------------
    def _region(self, region: str) -> RegionEndpoint:
        with self._lock:
            endpoint = self._regions.get(region)
            if endpoint is None:
                endpoint = RegionEndpoint(
                    region, self.clock, self._find_fault, host=self.host, port=self._region_ports.get(region, 0)
                )
                self._regions[region] = endpoint
            return endpoint

    @property
    def regions(self) -> list[str]:
        with self._lock:
            return list(self._regions)

    def endpoint_url(self, region: str) -> str:
        """The ``endpoint_url`` for boto3 bedrock-runtime and sagemaker-runtime clients of ``region``."""
        with self._lock:
            if region not in self._regions:
                raise KeyError(f"no region {region!r} in the emulator")
            return self._regions[region].listener.url

    def endpoint_urls(self) -> dict[str, str]:
        with self._lock:
            return {region: endpoint.listener.url for region, endpoint in self._regions.items()}

    @property
    def appconfig_url(self) -> str:
        if self.appconfig is None:
            raise RuntimeError("the AppConfig extension is not enabled")
        return self.appconfig.url

    @property
    def control_url(self) -> str | None:
        return self._control.url if self._control is not None else None

    def add_target(self, target: TargetSpec | Mapping[str, Any]) -> TargetSpec:
        """Add a target (its region's listener starts if the emulator runs)."""
        spec = _as_spec(target)
        self._region(spec.region).add(spec)
        if self._running:
            self.tick()
        return spec

    def _state(self, target: ScopeLike) -> TargetState:
        scope = to_scope(target)
        if scope.region is None or scope.kind is None or scope.id is None:
            raise ValueError("name one target: region, kind and id")
        with self._lock:
            endpoint = self._regions.get(scope.region)
        state = endpoint.states.get((Kind(scope.kind), scope.id)) if endpoint else None
        if state is None:
            raise KeyError(f"no target {scope.region}/{scope.kind}/{scope.id}")
        return state

    def update_target(self, target: ScopeLike, **changes: Any) -> TargetSpec:
        """Change a target's model at run time (capacity, latency, echo...); counters are kept."""
        state = self._state(target)
        spec = state.spec.with_changes(**changes)
        self._regions[spec.region].update(spec)
        return spec

    def require_bearer(self, target: ScopeLike, check: Callable[[str], bool] | None) -> None:
        """An openai target answers 401 (OpenAI's invalid_api_key) unless ``check`` accepts the request's bearer
        token: a stand-in provider's key or access token (localrun/identity.py). None: no check (the default)."""
        state = self._state(target)
        self._regions[state.spec.region].set_bearer_check(state.spec.kind, state.spec.id, check)

    def remove_target(self, target: ScopeLike) -> None:
        state = self._state(target)
        self._regions[state.spec.region].remove(state.spec.kind, state.spec.id)

    def targets(self) -> list[TargetSpec]:
        with self._lock:
            endpoints = list(self._regions.values())
        return [state.spec for endpoint in endpoints for state in list(endpoint.states.values())]

    # Faults -----------------------------------------------------------------------------------
    def set_fault(self, scope: ScopeLike, fault: Fault | Mapping[str, Any]) -> str:
        """Install a fault on a target, a region (both kinds), a (region, kind) or everything ("*").

        Returns the fault's id (for :meth:`remove_fault`). A REFUSE fault needs a whole-region scope
        and closes that region's listener while it is live.
        """
        fault = fault if isinstance(fault, Fault) else Fault.from_dict(fault)
        where = to_scope(scope)
        if fault.kind is FaultKind.REFUSE and not where.is_region:
            raise ValueError("REFUSE closes a region's listener: scope it to one region (use RESET for one target)")
        if fault.kind is FaultKind.ERROR and fault.error is not None:
            validate_error_name(fault.error)
        if fault.kind is FaultKind.STREAM_ERROR and fault.error is not None:
            validate_stream_error(fault.error)
        if where.region is not None:
            self._region(where.region)
        active = ActiveFault(fault, where, self.clock())
        with self._lock:
            self._faults.append(active)
        if fault.kind is FaultKind.REFUSE:
            self.tick()
        return active.id

    def remove_fault(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            removed = len(self._faults) != before
        self.tick()
        return removed

    def clear_faults(self, scope: ScopeLike = None) -> int:
        """Remove the faults within ``scope`` (all by default) and reopen refused regions.

        Returns how many were removed. Regions closed with :meth:`close_region` stay closed.
        """
        where = to_scope(scope)
        with self._lock:
            keep = [f for f in self._faults if not _within(f.scope, where)]
            removed = len(self._faults) - len(keep)
            self._faults = keep
        self.tick()
        return removed

    def faults(self) -> list[dict[str, Any]]:
        """The installed faults that are not spent or past their window (pending ones included)."""
        now = self.clock()
        with self._lock:
            self._faults = [f for f in self._faults if f.fault.kind is FaultKind.REFUSE or not f.expired(now)]
            return [f.to_dict(now) for f in self._faults]

    def _find_fault(self, region: str, kind: Kind, target_id: str) -> ActiveFault | None:
        now = self.clock()
        with self._lock:
            faults = list(self._faults)
        for active in faults:
            if active.fault.kind is FaultKind.REFUSE:
                continue
            if active.scope.matches(region, kind.value, target_id) and active.try_fire(now):
                return active
        return None

    def close_region(self, region: str) -> None:
        """Region outage: connections to the region's port are refused until :meth:`open_region`."""
        self._region(region)
        with self._lock:
            self._closed_regions.add(region)
        self.tick()

    def open_region(self, region: str) -> None:
        with self._lock:
            self._closed_regions.discard(region)
        self.tick()

    def region_is_open(self, region: str) -> bool:
        return self._region(region).listener.is_open

    # AppConfig --------------------------------------------------------------------------------
    def set_configuration(
        self,
        application: str,
        environment: str,
        profile: str,
        content: bytes | str | Mapping[str, Any] | list[Any],
        content_type: str = "application/json",
    ) -> str:
        """Set what the AppConfig extension serves for application/environment/profile."""
        if self.appconfig is None:
            raise RuntimeError("the AppConfig extension is not enabled")
        return self.appconfig.set_configuration(application, environment, profile, content, content_type)

    # Stats ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: per target, per region (listener state, requests for unknown targets), AppConfig."""
        with self._lock:
            endpoints = dict(self._regions)
        out: dict[str, Any] = {
            "targets": [
                state.snapshot() for endpoint in endpoints.values() for state in list(endpoint.states.values())
            ],
            "regions": {
                region: {"url": e.listener.url, "open": e.listener.is_open, "unrouted": e.unrouted}
                for region, e in endpoints.items()
            },
        }
        if self.appconfig is not None:
            out["appconfig"] = self.appconfig.stats()
        return out

    def target_stats(self, target: ScopeLike) -> dict[str, Any]:
        return self._state(target).snapshot()

    def received(self, target: ScopeLike) -> list[bytes]:
        """The request bodies a target received, byte for byte as they arrived, oldest first (the last 64)."""
        state = self._state(target)
        with state.lock:
            return list(state.received)

    def reset_stats(self) -> None:
        """Zero the counters and refill the token buckets."""
        with self._lock:
            endpoints = list(self._regions.values())
        for endpoint in endpoints:
            for state in list(endpoint.states.values()):
                state.reset()
            endpoint.reset_unrouted()
        if self.appconfig is not None:
            self.appconfig.reset_stats()

    def describe(self) -> dict[str, Any]:
        """Where everything listens, and the targets: what ``python -m local.emulator`` prints."""
        out: dict[str, Any] = {
            "regions": self.endpoint_urls(),
            "targets": [spec.to_dict() for spec in self.targets()],
        }
        if self.appconfig is not None:
            out["appconfig"] = self.appconfig.url
        if self.control_url is not None:
            out["control"] = self.control_url
        return out

"""FleetWorld: the router as Lambda runs it, on loopback.

The services of :class:`~local.localrun.world.World` (emulator, redis-server) and, behind the API
Gateway-shaped endpoint, a :class:`~local.localrun.fleet.Fleet` of execution environments: separate Python processes
started fresh (each pays its own cold start, measured), one API Gateway event at a time each, frozen between events,
dispatched as Lambda does up to the function's reserved concurrency, throttled beyond it. Every environment gets the
router's configuration, ``SPILLWAY_FLEET_STORE_URL`` among it.

Parameters beyond the world's: ``reserved_concurrency`` (environments at most), ``warm`` (environments started
in the setup phase, before any request, and again after each :meth:`reset`), ``skewed_clock`` (environment index
-> seconds its wall clock is off, applied with Debian's libfaketime: a real process-wide clock, not a patched
module), ``reuse`` (which idle environment
takes the next event: ``lru``, the one idle longest, so every warm environment serves, or ``mru``; AWS does not
document Lambda's choice, and ``lru`` is the harder case for state kept per environment).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from local.localrun.apigw import to_event
from local.localrun.fleet import ColdStart, Fleet
from local.localrun.world import FUNCTION_NAME, LocalWorld, World

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def faketime_env(offset_s: float) -> dict[str, str]:
    """A process whose wall clock is `offset_s` off (libfaketime); its monotonic clock is left alone, as a host's
    clock error moves the wall clock only."""
    library = next((p for p in _libfaketime_candidates() if p.exists()), None)
    if library is None:
        raise RuntimeError("libfaketime not found: install Debian's faketime (make .stamps/faketime)")
    return {
        "LD_PRELOAD": str(library),
        "FAKETIME": f"{offset_s:+g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
    }


def _libfaketime_candidates() -> list[Path]:
    return [LIBFAKETIME, *Path("/usr/lib").glob("*/faketime/libfaketime.so.1")]


class FleetWorld(World):
    """The production shape on loopback. See the module docstring."""

    def __init__(
        self,
        *,
        reserved_concurrency: int = 16,
        warm: int = 0,
        skewed_clock: Mapping[int, float] | None = None,
        prewarm_parallel: int = 2,
        reuse: str = "lru",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reserved_concurrency = reserved_concurrency
        self.warm = warm
        self.skewed_clock = dict(skewed_clock or {})
        self.prewarm_parallel = prewarm_parallel
        self.reuse = reuse
        self.fleet: Fleet | None = None
        self.setup_cold_starts: list[ColdStart] = []
        self.setup_s = 0.0
        self._cold_reset = True

    def _start(self) -> None:
        env = dict(os.environ)
        env.update(self._start_services())
        env["AWS_LAMBDA_FUNCTION_NAME"] = FUNCTION_NAME  # as Lambda sets it: the router warms at init
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.fleet = Fleet(
            env,
            reserved_concurrency=self.reserved_concurrency,
            log_dir=self.workdir,
            per_environment=self._per_environment,
            reuse=self.reuse,
        )
        self._serve(self.fleet.invoke, stream_handler=self.fleet.invoke_stream)
        self._warm_up()

    def _per_environment(self, index: int) -> Mapping[str, str]:
        offset = self.skewed_clock.get(index)
        return faketime_env(offset) if offset else {}

    def _warm_up(self) -> None:
        missing = self.warm - self.functions.size
        if missing > 0:
            started = time.monotonic()
            self.setup_cold_starts = self.functions.prewarm(missing, parallel=self.prewarm_parallel)
            self.setup_s = time.monotonic() - started

    def _stop_router(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None

    def reset(self, *, cold: bool = False) -> None:
        """Between scenarios (see :meth:`World.reset`). The environments are kept and each rebuilds its router
        (fresh breakers, caches and clients, no new cold start); with `cold`, or with ``warm`` unset, the fleet
        is replaced by new environments instead."""
        self._cold_reset = cold or not self.warm
        super().reset()

    def _quiesce_router(self) -> None:
        if self._cold_reset:
            self.functions.stop()  # a fresh fleet: no environment keeps writing shared state from before

    def _fresh_router(self) -> None:
        fleet = self.functions
        fleet.cold_starts.clear()
        fleet.invocations = fleet.throttles = fleet.failures = fleet.max_concurrency = 0
        if self._cold_reset:
            self._warm_up()
        else:
            fleet.control({"op": "rebuild"}, timeout_s=30.0)
            self._warm_up()  # tops the fleet up to `warm` if an environment was lost

    @property
    def functions(self) -> Fleet:
        if self.fleet is None:
            raise RuntimeError("the world is not started")
        return self.fleet

    # -- looking inside (not traffic) -----------------------------------------------------------------------------

    def environment_health(self) -> list[dict[str, Any]]:
        """``GET /v1/health`` as each idle environment answers it (its own breakers, store and config), in turn."""
        event = to_event("GET", "/v1/health", {}, b"", request_id="world-look")
        out = []
        for index, result in self.functions.invoke_each_idle(event, timeout_s=5.0):
            doc = json.loads(result["body"])
            doc["environment"] = index
            out.append(doc)
        return out

    def await_config(self) -> None:
        time.sleep(self.config_ttl_s + 0.2)  # each environment's config cache has expired by then

    def breaker_states(self) -> dict[int, dict[str, str]]:
        """Per idle environment: its breaker state per target."""
        return {doc["environment"]: {t["id"]: t["state"] for t in doc["targets"]} for doc in self.environment_health()}

    def store_stats(self) -> list[tuple[int, Any]]:
        """Per idle environment: what its shared-state clients report (round trips among it)."""
        return [(index, answer.get("stats")) for index, answer in self.functions.control({"op": "stats"})]

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        return self.wait_for(lambda: not self.functions.busy(), timeout_s)


def make_world(shape: str, **kwargs: Any) -> World:
    """``fleet`` (the production shape) or ``process`` (one process, one event at a time). Fleet-only parameters
    are dropped for the one-process world."""
    if shape == "fleet":
        return FleetWorld(**kwargs)
    if shape == "process":
        for key in ("reserved_concurrency", "warm", "skewed_clock", "prewarm_parallel", "reuse"):
            kwargs.pop(key, None)
        return LocalWorld(**kwargs)
    raise ValueError(f"unknown world shape {shape!r} (fleet or process)")


SHAPES: tuple[str, ...] = ("fleet", "process")
WorldFactory = Callable[..., World]

"""The only modules that speak to AWS model runtimes: Bedrock (Converse) and SageMaker (InvokeEndpoint).

kinds.py is the registry of backend kinds (what each means: its config, its runtime, what it can express);
contract.py what the engine and a backend say to each other; chat.py the Converse <-> chat-completions translation.
This module: the pooled runtime clients every kind shares.

Clients are created once per (service, region, timeout tier) and reused across invocations. botocore's retries are
off (the engine owns retries). A botocore client's timeouts are fixed when it is created, so an attempt's budget is
rounded down to a tier of a short geometric ladder: an attempt never waits longer than its budget, loses at most a
fifth of it, and a region needs only a handful of clients. ``endpoint_url`` per region (the local emulator) comes
from ``SPILLWAY_ENDPOINT_URL_<REGION>`` (``us-east-1`` -> ``US_EAST_1``) or ``SPILLWAY_ENDPOINT_URL``, for the model
runtimes only; the other services a backend calls (Secrets Manager, STS) take botocore's own configuration, whose
``AWS_ENDPOINT_URL_<SERVICE>`` the local worlds set to their stand-ins.

Zero knowledge: failures leave here as spillway.errors.BackendError (errors.from_exception), which carries a code
and a class only; the service's message is read to classify the error and dropped.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, ErrorClass

if TYPE_CHECKING:  # the config imports this package's registry (kinds.py): no import of the config at run time
    from ..config import Target

# Read-timeout tiers in seconds (ratio ~1.25): the tier used is the largest not above the attempt's budget.
TIERS: tuple[float, ...] = (
    0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.4, 8.0, 10.0, 12.5, 16.0, 20.0,
    25.0, 32.0, 40.0, 50.0, 64.0, 80.0, 100.0, 128.0, 160.0, 200.0, 256.0, 320.0, 400.0, 512.0, 640.0, 800.0, 900.0,
)  # fmt: skip
# Connect timeouts (TCP and TLS). An endpoint in the function's own region is a VPC interface endpoint in its own VPC:
# a connect takes milliseconds, so 0.5 s is a wide margin, and it bounds what a blackholed region costs: every request
# sent before the first connect times out is held that long (docs/design-notes.md, "What sharing cannot do").
# Another region's endpoints are a peering round trip or more away (tens to hundreds of ms, TLS on top): 2 s.
HOME_CONNECT_TIMEOUT_S = 0.5
MAX_CONNECT_TIMEOUT_S = 2.0

# The services the emulator stands in for (SPILLWAY_ENDPOINT_URL_*): the registry's boto3 runtimes.
MODEL_RUNTIMES = frozenset({"bedrock-runtime", "sagemaker-runtime"})

ClientMaker = Callable[[str, str, Any], Any]  # (service, region, botocore Config) -> client


def endpoint_url_for(region: str, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    key = "SPILLWAY_ENDPOINT_URL_" + re.sub(r"[^A-Za-z0-9]", "_", region).upper()
    return env.get(key) or env.get("SPILLWAY_ENDPOINT_URL") or None


def tier_for(timeout_s: float) -> float:
    """The largest tier not above `timeout_s` (the smallest tier when the budget is below it)."""
    chosen = TIERS[0]
    for tier in TIERS:
        if tier > timeout_s:
            break
        chosen = tier
    return chosen


def connect_timeout_for(region: str, read_timeout_s: float, home_region: str | None) -> float:
    """The connect timeout to `region`'s endpoints from a function in `home_region` (None: unknown, every region is
    another), never over the read timeout."""
    ceiling = HOME_CONNECT_TIMEOUT_S if region == home_region else MAX_CONNECT_TIMEOUT_S
    return min(ceiling, read_timeout_s)


class ClientPool:
    """boto3 clients per (service, region, tier), created on first use. Thread-safe; boto3 clients are too.
    `home_region` is the function's own (the cell's): its endpoints get the shorter connect timeout."""

    def __init__(
        self,
        make: ClientMaker | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        home_region: str | None = None,
    ) -> None:
        self._make = make or _default_maker(environ)
        self.home_region = home_region
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, float], Any] = {}

    def client(self, service: str, region: str, timeout_s: float) -> tuple[Any, float]:
        """(client, read timeout in seconds it was built with)."""
        tier = tier_for(timeout_s)
        key = (service, region, tier)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    connect_s = connect_timeout_for(region, tier, self.home_region)
                    client = self._make(service, region, client_config(tier, connect_s))
                    self._clients[key] = client
        return client, tier

    def __len__(self) -> int:
        return len(self._clients)


class PooledBackend:
    """What both runtime backends share: clients from a pool, one service, a clock for latency."""

    SERVICE: str = ""

    def __init__(self, pool: ClientPool | None = None, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.pool = pool if pool is not None else ClientPool()
        self._clock = clock

    def warm(self, target: Target, timeout_s: float) -> None:
        """Create the client an attempt with this budget will use, so no request pays for building it."""
        self.pool.client(self.SERVICE, target.region, timeout_s)

    def client(self, target: Target, timeout_s: float) -> Any:
        return self.pool.client(self.SERVICE, target.region, timeout_s)[0]


def client_config(read_timeout_s: float, connect_timeout_s: float) -> Any:
    # Deferred: boto3/botocore cost ~400 ms to import, paid on first use (and untyped: no stubs in the asset).
    config_module: Any = importlib.import_module("botocore.config")
    return config_module.Config(
        retries={"total_max_attempts": 1, "mode": "standard"},  # the engine owns retries
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        tcp_keepalive=True,
        max_pool_connections=32,
        user_agent_extra="spillway-router",
    )


def _default_maker(environ: Mapping[str, str] | None) -> ClientMaker:
    session_holder: list[Any] = []
    lock = threading.Lock()

    def make(service: str, region: str, config: Any) -> Any:
        with lock:
            if not session_holder:
                boto3: Any = importlib.import_module("boto3")
                session_holder.append(boto3.session.Session())
            session = session_holder[0]
        url = endpoint_url_for(region, environ) if service in MODEL_RUNTIMES else None
        return session.client(service, region_name=region, config=config, endpoint_url=url)

    return make


def malformed(kind: str) -> BackendError:
    """A 200 answer the router cannot read: this target is not healthy, try the next."""
    return BackendError(ErrorClass.UNAVAILABLE, f"Malformed{kind}Response", 200)


def usage_int(raw: object) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0

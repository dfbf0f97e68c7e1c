# ruff: noqa: PLC0415  (the router is imported after its environment is set; stacks only when used)
"""The example platform on loopback: the services every local world starts, and the one-process world.

:class:`World` starts, in this process:

- the emulator (local/emulator/): Bedrock Converse and SageMaker InvokeEndpoint of every region of config/platform.yaml,
  one target per target the platform uses (stacks/targets.py ``used_targets``), with capacity and latency; and its
  AppConfig Lambda-extension stand-in, serving the routing table CDK renders for the router's region;
- a redis-server on a free loopback port, the fleet's shared store (``SPILLWAY_FLEET_STORE_URL``);
- :class:`~localrun.server.LocalEndpoint`, which speaks the API Gateway REST event shape, in front of the router
  configured through its own environment variables (:meth:`World.router_env`).

Two shapes of the router behind the endpoint: :class:`LocalWorld` (here) imports the handler into this process and
calls it one event at a time, as Lambda calls one environment: quick, for tests; no published figure comes from
it. ``local.localrun.fleet_world.FleetWorld`` runs the production shape: a fleet of execution environments (separate
processes, one event each, frozen between events). Both offer the same interface (url, http, emu, set_fault, reset,
deploy_table, set_flags, ...), so the suites switch with a parameter (``localrun.make_world``).

Everything listens on 127.0.0.1 and stops with :meth:`World.stop` (or the ``with`` block). The environment
variables the one-process world sets are restored on stop.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
ROUTER_ROOT = ROOT / "lambdas" / "router"
PLATFORM = ROOT / "config" / "platform.yaml"
for _path in (str(ROOT), str(ROUTER_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from local.emulator import Emulator, Fault, TargetKey, TargetSpec  # noqa: E402
from local.emulator.targets import Kind  # noqa: E402
from local.localrun.blackhole import Blackhole  # noqa: E402
from local.localrun.client import Client  # noqa: E402
from local.localrun.providers import LocalProviders  # noqa: E402
from local.localrun.redis_server import RedisServer  # noqa: E402
from local.localrun.server import LambdaHandler, LocalEndpoint, StreamHandler  # noqa: E402
from local.localrun.sink import RouterOutput  # noqa: E402

APPLICATION = "spillway"
ROUTING_PROFILE = "routing"
FLAGS_PROFILE = "flags"
FUNCTION_NAME = "spillway-router-local"  # AWS_LAMBDA_FUNCTION_NAME of the fleet's environments

# Set before the router's modules are imported: no X-Ray, no EMF lines on stdout, quiet logs, fake credentials
# (nothing leaves loopback; botocore still signs), no instance-metadata lookups.
_QUIET_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_SERVICE_NAME": "spillway-router",
    "POWERTOOLS_METRICS_NAMESPACE": "Spillway",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class Latency:
    """The emulator's latency model for every target: time to first token plus time per output token."""

    ttft_ms: float = 40.0
    ms_per_token: float = 2.0
    output_tokens: int = 16


@dataclass(frozen=True)
class RouterTarget:
    """A routing-table target and where it lives in the emulator."""

    id: str
    model: str
    capacity: str
    region: str
    kind: str
    invoke_id: str
    max_in_flight: int | None

    @property
    def key(self) -> TargetKey:
        return TargetKey(self.region, Kind(self.kind), self.invoke_id)

    @property
    def scope(self) -> tuple[str, str, str]:
        return (self.region, self.kind, self.invoke_id)


def load_platform_targets(platform_path: Path = PLATFORM) -> tuple[Any, list[RouterTarget]]:
    from stacks.platform import load_platform
    from stacks.targets import used_targets

    platform = load_platform(platform_path)
    targets = [
        RouterTarget(t.id, t.model, t.capacity, t.region, t.kind, t.invoke_id, t.max_in_flight)
        for t in used_targets(platform)
    ]
    return platform, targets


def _env_key(region: str) -> str:
    return "SPILLWAY_ENDPOINT_URL_" + "".join(c if c.isalnum() else "_" for c in region).upper()


class World:
    """The example platform and the router's dependencies on loopback; the router's shape is the subclass's.

    ``on_demand_max_in_flight`` caps each on-demand target in the emulator (None: unlimited); provisioned
    targets (Bedrock PT, SageMaker endpoints) take the platform's ``max_in_flight``, so the emulator's PT
    fills exactly where the router's estimate says it does (``pt_headroom`` shifts that on purpose).
    """

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        platform_path: Path = PLATFORM,
        latency: Latency = Latency(),
        on_demand_max_in_flight: int | None = 64,
        pt_headroom: int = 0,
        config_ttl_s: float = 1.0,
        redis: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.region = region
        self.latency = latency
        self.on_demand_max_in_flight = on_demand_max_in_flight
        self.pt_headroom = pt_headroom
        self.use_redis = redis
        self.redis: RedisServer | None = None
        self.config_ttl_s = config_ttl_s
        self.extra_env = dict(extra_env or {})
        self.platform, self.targets = load_platform_targets(platform_path)
        from stacks.routing import render_routing_table

        self.table_doc: dict[str, Any] = render_routing_table(self.platform, region)
        self.by_id = {t.id: t for t in self.targets if t.id in self.table_doc["targets"]}
        self.providers = LocalProviders(self.table_doc)  # other clouds' stand-ins (localrun/providers.py)
        self.emulator: Emulator | None = None
        self.endpoint: LocalEndpoint | None = None
        self.client: Client | None = None
        self.blackholes: dict[str, Blackhole] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    def emulator_specs(self) -> list[TargetSpec]:
        specs = []
        for t in self.targets:
            if t.capacity == "provisioned":
                limit = None if t.max_in_flight is None else t.max_in_flight + self.pt_headroom
            else:
                limit = self.on_demand_max_in_flight
            specs.append(
                TargetSpec(
                    t.region,
                    Kind(t.kind),
                    t.invoke_id,
                    name=t.id,
                    max_in_flight=limit,
                    ttft_ms=self.latency.ttft_ms,
                    ms_per_token=self.latency.ms_per_token,
                    output_tokens=self.latency.output_tokens,
                )
            )
        return specs

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def _start_services(self) -> dict[str, str]:
        """Emulator and redis; the router's environment variables to reach them."""
        self._tmp = tempfile.TemporaryDirectory(prefix="spillway-local-")
        self.emulator = Emulator(self.emulator_specs(), appconfig=True).start()
        if self.use_redis:
            self.redis = RedisServer().start()
        self.providers.start(self.emulator, self.table_doc)
        self.table_doc = self.providers.localize(self.table_doc, self.emulator)
        self.emulator.set_configuration(APPLICATION, self.region, ROUTING_PROFILE, self.table_doc)
        return self.router_env()

    @property
    def workdir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the world is not started")
        return Path(self._tmp.name)

    def router_env(self) -> dict[str, str]:
        """The router's configuration, as the stacks give it in AWS, pointed at the local services."""
        bundled = self.workdir / "routing.json"
        bundled.write_text(json.dumps(self.table_doc))
        env: dict[str, str] = dict(_QUIET_ENV)
        env.update(
            {
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "SPILLWAY_APPCONFIG_APPLICATION": APPLICATION,
                "SPILLWAY_APPCONFIG_ENVIRONMENT": self.region,
                "SPILLWAY_APPCONFIG_PROFILE": ROUTING_PROFILE,
                "SPILLWAY_APPCONFIG_FLAGS_PROFILE": FLAGS_PROFILE,
                "SPILLWAY_APPCONFIG_URL": self.emu.appconfig_url,
                "SPILLWAY_CONFIG_TTL_S": str(self.config_ttl_s),
                "SPILLWAY_CONFIG_TIMEOUT_S": "0.5",
                "SPILLWAY_BUNDLED_TABLE": str(bundled),
            }
        )
        for region, url in self.emu.endpoint_urls().items():
            env[_env_key(region)] = url
        if self.redis is not None:
            env["SPILLWAY_FLEET_STORE_URL"] = self.redis.url
        env.update(self.providers.env())
        env.update(self.extra_env)
        return env

    def _serve(
        self,
        lambda_handler: LambdaHandler,
        output: RouterOutput | None = None,
        stream_handler: StreamHandler | None = None,
    ) -> None:
        self.endpoint = LocalEndpoint(lambda_handler, output=output, stream_handler=stream_handler).start()
        self.client = Client(self.endpoint.url)

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        self._stop_router()
        for hole in self.blackholes.values():
            hole.close()
        self.blackholes.clear()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        self.providers.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _stop_router(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def bedrock_runtime(self, region: str) -> Any:
        """boto3's bedrock-runtime straight to the emulator in `region`, one attempt, connections kept: the direct
        path the benchmarks set beside the router's."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "bedrock-runtime",
            region_name=region,
            endpoint_url=self.emu.endpoint_url(region),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, tcp_keepalive=True),
        )

    # -- between scenarios ---------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Between scenarios: no faults, every region open, the rendered table deployed, counters zeroed,
        the fleet store emptied and a fresh router."""
        emu = self.emu
        emu.clear_faults()
        assert emu.appconfig is not None
        emu.appconfig.clear_faults()
        for region in emu.regions:
            self.region_up(region)
        for spec in self.emulator_specs():
            emu.update_target(
                spec.key,
                max_in_flight=spec.max_in_flight,
                ttft_ms=spec.ttft_ms,
                ms_per_token=spec.ms_per_token,
                output_tokens=spec.output_tokens,
            )
        self.deploy_table(self.table_doc)
        self.set_flags(None)
        self._quiesce_router()
        if self.redis is not None:
            self.redis.up()
            self.redis.fast()
            self.redis.flush()
        emu.reset_stats()
        self._fresh_router()

    def _quiesce_router(self) -> None:
        """Stop the current router from writing shared state (before the clean-up)."""

    def _fresh_router(self) -> None:
        raise NotImplementedError

    def environment_health(self) -> list[dict[str, Any]]:
        """``GET /v1/health`` as each execution environment answers it (its breakers, store and config)."""
        raise NotImplementedError

    def await_config(self) -> None:
        """Return once a newly deployed routing table is what the next request reads."""
        raise NotImplementedError

    @property
    def emu(self) -> Emulator:
        if self.emulator is None:
            raise RuntimeError("the world is not started")
        return self.emulator

    @property
    def url(self) -> str:
        if self.endpoint is None:
            raise RuntimeError("the world is not started")
        return self.endpoint.url

    @property
    def http(self) -> Client:
        if self.client is None:
            raise RuntimeError("the world is not started")
        return self.client

    def region_down(self, region: str, *, blackhole: bool = False) -> None:
        """A regional outage: connections to the region are refused, or with `blackhole` they time out."""
        self.emu.close_region(region)
        if blackhole and region not in self.blackholes:
            port = int(self.emu.endpoint_url(region).rsplit(":", 1)[1].split("/", 1)[0])
            self.blackholes[region] = Blackhole(port)

    def region_up(self, region: str) -> None:
        hole = self.blackholes.pop(region, None)
        if hole is not None:
            hole.close()
        self.emu.open_region(region)

    def deploy_table(self, doc: Mapping[str, Any] | str) -> str:
        """An AppConfig deployment of the routing profile (a rollout, or its rollback)."""
        return self.emu.set_configuration(
            APPLICATION, self.region, ROUTING_PROFILE, doc if isinstance(doc, str) else dict(doc)
        )

    def set_flags(self, flags: Mapping[str, Any] | None) -> None:
        assert self.emu.appconfig is not None
        if flags is None:
            self.emu.appconfig.remove_configuration(APPLICATION, self.region, FLAGS_PROFILE)
        else:
            self.emu.set_configuration(APPLICATION, self.region, FLAGS_PROFILE, dict(flags))

    def table_copy(self) -> dict[str, Any]:
        return copy.deepcopy(self.table_doc)

    def feature(self, name: str) -> dict[str, Any]:
        feature: dict[str, Any] = self.table_doc["features"][name]
        return feature

    def target(self, target_id: str) -> RouterTarget:
        return self.by_id[target_id]

    def targets_where(self, **match: str) -> list[RouterTarget]:
        return [t for t in self.by_id.values() if all(getattr(t, k) == v for k, v in match.items())]

    def set_fault(self, target_id: str, fault: Fault) -> str:
        return self.emu.set_fault(self.target(target_id).scope, fault)

    def emulator_served(self) -> dict[str, int]:
        """Requests each target served, as the emulator counted them (keyed by routing-table target id)."""
        stats = self.emu.stats()["targets"]
        return {s["name"]: s["served"] for s in stats if s.get("name") in self.by_id}

    def wait_for(self, predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval_s)
        return bool(predicate())


def iter_classify(table: Mapping[str, Any], feature: str, target_id: str | None) -> Iterator[str]:
    """The flags of a served answer, from the routing table: spilled, fell_back, failed_over."""
    if target_id is None:
        return
    f = table["features"][feature]
    t = table["targets"][target_id]
    if t["capacity"] != f["first_capacity"]:
        yield "spilled"
    if t["model"] != f["models"][0]:
        yield "fell_back"
    if t["region"] != f["home_region"]:
        yield "failed_over"


def serialized(lambda_handler: LambdaHandler) -> LambdaHandler:
    """The handler called one event at a time, as Lambda calls one execution environment."""
    lock = threading.Lock()

    def one_at_a_time(event: dict[str, Any], context: Any) -> dict[str, Any]:
        with lock:
            return lambda_handler(event, context)

    return one_at_a_time


def serialized_stream(stream_handler: StreamHandler) -> StreamHandler:
    """The streaming entry called one event at a time too: the environment is busy until its stream ends."""
    lock = threading.Lock()

    def one_at_a_time(event: dict[str, Any], context: Any) -> Iterator[bytes]:
        with lock:
            yield from stream_handler(event, context)

    return one_at_a_time


class LocalWorld(World):
    """The router imported into this process and called one event at a time (one execution environment): quick, for
    tests and debugging. Many callers at once queue for it, as they would for one Lambda environment, so its
    throughput is one model answer at a time and no published figure comes from it (local.localrun.fleet_world)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handler: ModuleType | None = None
        self.router: Any = None
        self.output = RouterOutput()
        self._telemetry_level: int | None = None
        self._saved_env: dict[str, str | None] = {}

    def _start(self) -> None:
        env = self._start_services()
        self._set_env(env)
        import handler

        self.handler = handler
        from spillway import telemetry

        self._telemetry_level = telemetry.logger.log_level  # restored on stop: the logger is shared
        telemetry.logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "ERROR"))
        # Powertools' notes about a dimension set twice come from reusing one router across many local
        # requests: an artefact of the harness, not a finding.
        warnings.filterwarnings("ignore", module=r"aws_lambda_powertools\..*")
        self.output.install()
        self.new_router()
        self._serve(
            serialized(handler.lambda_handler),
            self.output,
            stream_handler=serialized_stream(handler.lambda_stream_handler),
        )

    def _stop_router(self) -> None:
        if self.handler is not None:
            self.handler.set_router(None)
            if self._telemetry_level is not None:
                from spillway import telemetry

                telemetry.logger.setLevel(self._telemetry_level)
                self._telemetry_level = None
        self.output.uninstall()
        self._restore_env()

    def _set_env(self, env: Mapping[str, str]) -> None:
        for key, value in env.items():
            if key not in self._saved_env:
                self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def new_router(self) -> Any:
        """A fresh router from the environment (new breakers, caches and clients), installed in the handler."""
        assert self.handler is not None
        self.router = self.handler.build_router()
        self.handler.set_router(self.router)
        return self.router

    def _fresh_router(self) -> None:
        self.new_router()

    def environment_health(self) -> list[dict[str, Any]]:
        doc: dict[str, Any] = self.http.get_json("/v1/health")
        doc["environment"] = 0
        return [doc]

    def await_config(self) -> None:
        self.router.source.invalidate()

    def breaker_states(self) -> dict[str, str]:
        """This router's breaker state per routing-table target."""
        board = self.router.health
        return {tid: board.state(tid).value for tid in sorted(self.by_id)}

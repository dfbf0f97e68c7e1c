"""The fleet store's Lua scripts and client on a real redis-server (Debian's, started here on a free loopback port):
atomicity across several clients, lease and probe expiry, never-shorten, the server's clock, fail-open when the
server is down or never answers, reconnects, and the router wired to it. Skipped where redis-server is missing."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import handler
from spillway.capacity import InflightTracker
from spillway.engine import Engine, Status
from spillway.fleet import Change, Fleet, FleetState, FleetUnavailable, Report
from spillway.fleet_store import ACCESS_STRING, ValkeyFleetStore, iam_credentials
from spillway.health import BreakerState, HealthBoard, Verdict
from spillway.resp import Address, Connection, parse_url
from spillway.settings import Settings, SettingsError
from tests.unit.fleet_fake import FakeFleetStore
from tests.unit.helpers import FEATURE, FakeClock, ScriptedBackend, make_table

from .conftest import Harness, api_event, body_of, header

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PT_E, OD_E = "claude-sonnet/provisioned/us-east-1", "claude-sonnet/on_demand/us-east-1"
PT_W = "claude-sonnet/provisioned/us-west-2"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}

pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, redis' rule) is free and valid too: the kernel's
    ephemeral range reaches 60999, and a cluster node on a port over 55535 refuses to start."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a redis cluster node")


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = Connection(Address("127.0.0.1", port), connect_timeout_s=0.2, read_timeout_s=0.5)
        for _ in range(600):  # a loaded machine can take seconds to start the server
            with contextlib.suppress(OSError):
                if probe.call("PING") == b"PONG":
                    break
            time.sleep(0.05)
        probe.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.fixture
def raw(redis_port: int) -> Iterator[Connection]:
    conn = Connection(Address("127.0.0.1", redis_port), read_timeout_s=2.0)
    conn.call("FLUSHALL")
    yield conn
    conn.close()


def store_on(port: int, **kwargs: Any) -> ValkeyFleetStore:
    return ValkeyFleetStore.from_url(f"redis://127.0.0.1:{port}/0", **kwargs)


@pytest.fixture
def store(raw: Connection, redis_port: int) -> Iterator[ValkeyFleetStore]:
    s = store_on(redis_port)
    yield s
    s.close()


def server_time(raw: Connection) -> float:
    reply = raw.call("TIME")
    assert isinstance(reply, list)
    sec, usec = reply
    assert isinstance(sec, bytes)
    assert isinstance(usec, bytes)
    return int(sec) + int(usec) / 1e6


def report(s: ValkeyFleetStore, verdict: Verdict, *, epoch: int = 0, target: str = PT_E, **kw: Any) -> Any:
    return s.report(target, Report(epoch, verdict, **{"window_s": 30.0, **kw}))


def race(n: int, fn: Any) -> list[Any]:
    """Run fn(i) in n threads released together; their results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- the scripts --------------------------------------------------------------------------------------------------


def test_an_unknown_target_reads_closed_and_the_time_is_the_servers(store: ValkeyFleetStore, raw: Connection) -> None:
    before = server_time(raw)
    snapshot = store.read([PT_E, OD_E], 30.0)
    after = server_time(raw)
    assert before - 0.002 <= snapshot.now <= after + 0.002
    assert snapshot.targets[PT_E].state is FleetState.CLOSED
    assert snapshot.targets[PT_E].total == snapshot.targets[OD_E].leases == 0


def test_reports_fill_the_window_and_the_run_and_a_stale_epoch_counts_nothing(store: ValkeyFleetStore) -> None:
    report(store, Verdict.OK)
    report(store, Verdict.FAILURE)
    _, state = report(store, Verdict.FAILURE)
    assert (state.total, state.failures, state.run) == (3, 2, 2)
    _, state = report(store, Verdict.SLOW)
    assert (state.total, state.slow, state.run) == (4, 1, 0)  # a slow answer breaks the run, as in health.py
    _, state = report(store, Verdict.FAILURE, epoch=7)
    assert (state.total, state.run) == (4, 0)
    _, state = report(store, Verdict.NEUTRAL)
    assert state.total == 4


def test_first_tokens_are_counted_beside_the_window_and_only_where_measured(
    store: ValkeyFleetStore, raw: Connection
) -> None:
    report(store, Verdict.OK, ttft_over=False)
    report(store, Verdict.SLOW, ttft_over=True)
    report(store, Verdict.FAILURE)  # no first token: counted in the window, not among first tokens
    _, state = report(store, Verdict.OK)  # buffered API: nothing measured
    assert (state.total, state.ttft, state.ttft_over) == (4, 2, 1)
    _, stale = report(store, Verdict.SLOW, epoch=3, ttft_over=True)
    assert (stale.ttft, stale.ttft_over) == (2, 1)
    # The w<n> buckets keep their old form, so a router of the release before reads them during a rolling deploy.
    fields = raw.call("HGETALL", f"{{spillway}}:b:{PT_E}")
    assert isinstance(fields, list)
    buckets = {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2], strict=True) if k.startswith(b"w")}
    assert [len(v.split(":")) for v in buckets.values()] == [5]
    assert store.transition(PT_E, epoch=0, change=Change("open", cooldown_s=5.0))
    fresh = store.read([PT_E], 30.0).targets[PT_E]
    assert (fresh.ttft, fresh.ttft_over) == (0, 0)  # a new epoch's window holds no first tokens


def test_a_transition_starts_a_new_epoch_with_an_empty_window(store: ValkeyFleetStore) -> None:
    for _ in range(3):
        report(store, Verdict.FAILURE)
    assert store.transition(PT_E, epoch=0, change=Change("open", cooldown_s=5.0))
    state = store.read([PT_E], 30.0).targets[PT_E]
    assert (state.epoch, state.state, state.trips, state.total, state.run) == (1, FleetState.OPEN, 1, 0, 0)
    assert state.cooldown_s == 5.0


def test_the_capacity_cooldown_is_shared_and_never_shortened(store: ValkeyFleetStore) -> None:
    now, state = report(store, Verdict.CAPACITY, capacity_pause_s=5.0)
    assert state.capacity_until == pytest.approx(now + 5.0, abs=0.002)
    _, shorter = report(store, Verdict.CAPACITY, capacity_pause_s=1.0)
    assert shorter.capacity_until == state.capacity_until
    assert shorter.total == 0  # a throttle is not health evidence


def test_one_transition_wins_a_race_and_no_write_shortens_a_cooldown(raw: Connection, redis_port: int) -> None:
    clients = [store_on(redis_port) for _ in range(8)]
    won = race(8, lambda i: clients[i].transition(PT_E, epoch=0, change=Change("open", cooldown_s=30.0)))
    assert sum(won) == 1
    state = clients[0].read([PT_E], 30.0).targets[PT_E]
    assert (state.epoch, state.trips) == (1, 1)
    assert clients[0].transition(PT_E, epoch=1, change=Change("open", cooldown_s=1.0))
    after = clients[0].read([PT_E], 30.0).targets[PT_E]
    assert after.until == state.until  # the shorter cooldown left the end where it was
    assert after.cooldown_s == 1.0
    for c in clients:
        c.close()


def test_exactly_one_of_several_clients_holds_the_probe_until_it_expires_or_its_holder_reports(
    raw: Connection, redis_port: int
) -> None:
    clients = [store_on(redis_port) for _ in range(8)]
    got = race(8, lambda i: clients[i].acquire_probe(PT_E, f"env{i}", 5.0))
    assert sum(got) == 1
    holder = got.index(True)
    assert clients[0].read([PT_E], 30.0).targets[PT_E].probe_held
    report(clients[0], Verdict.OK, probe="someone-else")  # only the holder's report releases it
    assert not clients[1].acquire_probe(PT_E, "late", 5.0)
    report(clients[holder], Verdict.OK, probe=f"env{holder}")
    assert clients[1].acquire_probe(PT_E, "next", 0.05)
    time.sleep(0.1)  # the probe's expiry is the server's (PX): a frozen holder does not keep it
    assert clients[2].acquire_probe(PT_E, "after-expiry", 5.0)
    assert clients[2].read([PT_E], 30.0).targets[PT_E].probes == 3  # every probe taken is counted, no refusal
    for c in clients:
        c.close()


def test_leases_cap_the_fleet_across_clients_expire_and_are_released_with_the_report(
    raw: Connection, redis_port: int
) -> None:
    clients = [store_on(redis_port) for _ in range(6)]
    levels = race(6, lambda i: clients[i].acquire_lease(PT_E, f"l{i}", 2, 5.0, force=False))
    assert sorted(level for level in levels if level is not None) == [1, 2]
    assert clients[0].read([PT_E], 30.0).targets[PT_E].leases == 2
    assert clients[0].acquire_lease(PT_E, "forced", 2, 5.0, force=True) == 3  # a last resort is never refused
    holders = [f"l{i}" for i, level in enumerate(levels) if level is not None]
    _, state = report(clients[0], Verdict.OK, lease=holders[0])
    assert state.leases == 2
    raw.call("FLUSHALL")
    assert clients[0].acquire_lease(PT_E, "short", 1, 0.05, force=False) == 1
    assert clients[1].acquire_lease(PT_E, "blocked", 1, 5.0, force=False) is None
    time.sleep(0.1)  # the holder was frozen or killed: its lease expires on the server's clock
    assert clients[1].acquire_lease(PT_E, "free", 1, 5.0, force=False) == 1
    for c in clients:
        c.close()


def test_a_throttle_at_a_level_lowers_the_limit_leases_are_granted_at(store: ValkeyFleetStore) -> None:
    assert store.acquire_lease(PT_E, "a", 4, 5.0, force=False) == 1
    assert store.acquire_lease(PT_E, "b", 4, 5.0, force=False) == 2
    _, state = report(store, Verdict.CAPACITY, lease="b", level=2, capacity_pause_s=0.0)
    assert (state.learned_limit, state.leases) == (1, 1)
    assert store.acquire_lease(PT_E, "c", 4, 5.0, force=False) is None
    _, state = report(store, Verdict.OK, lease="a", level=1)
    assert state.learned_limit == 2  # a success at the learned limit raises it by one
    assert store.acquire_lease(PT_E, "d", 4, 5.0, force=False) == 1


def test_the_window_is_the_last_seconds_of_the_servers_clock(store: ValkeyFleetStore, raw: Connection) -> None:
    reported_at, _ = report(store, Verdict.FAILURE)
    assert store.read([PT_E], 1.0).targets[PT_E].total == 1
    while int(server_time(raw)) <= int(reported_at):  # wait for the server's next second (at most one)
        time.sleep(0.02)
    assert store.read([PT_E], 1.0).targets[PT_E].total == 0  # a one-second window has moved on
    assert store.read([PT_E], 30.0).targets[PT_E].total == 1


def test_the_scripts_run_as_the_iam_users_access_string(raw: Connection, redis_port: int) -> None:
    raw.call("ACL", "SETUSER", "router", "reset", *ACCESS_STRING.split(), ">secret")
    s = store_on(redis_port, credentials=lambda: ("router", "secret"))
    s.prepare()
    s.read([PT_E], 30.0)
    report(s, Verdict.FAILURE, lease="x", probe="y")
    assert s.transition(PT_E, epoch=0, change=Change("open", cooldown_s=5.0))
    assert s.acquire_probe(PT_E, "p", 1.0)
    assert s.acquire_lease(PT_E, "l", 1, 1.0, force=False) == 1
    assert s.errors == 0
    raw.call("ACL", "SETUSER", "router", "-time")  # the planted weakness: without TIME the scripts cannot run
    s.close()
    with pytest.raises(FleetUnavailable):
        s.read([PT_E], 30.0)
    s.close()


def test_prepare_loads_every_script_in_one_round_trip_so_no_request_meets_noscript(
    store: ValkeyFleetStore, raw: Connection
) -> None:
    raw.call("SCRIPT", "FLUSH")
    store.prepare()
    assert store.round_trips == 1
    report(store, Verdict.OK)
    store.read([PT_E], 30.0)
    assert store.round_trips == 3  # EVALSHA found each script: no second round trip with the source


def test_a_script_missing_from_the_server_cache_is_sent_whole(store: ValkeyFleetStore, raw: Connection) -> None:
    store.read([PT_E], 30.0)
    raw.call("SCRIPT", "FLUSH")
    assert store.read([PT_E], 30.0).targets[PT_E].epoch == 0
    assert store.errors == 0


def test_a_connection_the_server_closed_while_idle_is_reopened_once(store: ValkeyFleetStore, raw: Connection) -> None:
    store.read([PT_E], 30.0)
    raw.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    time.sleep(0.05)
    assert store.read([PT_E], 30.0).targets[PT_E].epoch == 0
    assert store.errors == 0
    assert store.status()["connects"] == 2


# -- TLS and IAM-style authentication ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """redis-server with TLS only (as ElastiCache Serverless), a self-signed certificate for localhost."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    workdir = tmp_path_factory.mktemp("redis-tls")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-cert-file",
            "cert.pem",
            "--tls-key-file",
            "key.pem",
            "--tls-auth-clients",
            "no",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):  # a loaded machine can take seconds to start the server
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                break
            time.sleep(0.05)
        yield port, workdir / "cert.pem"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_rediss_with_a_token_signed_anew_for_each_connection(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis
    context = ssl.create_default_context(cafile=str(cert))
    admin = Connection(Address("localhost", port, tls=True), ssl_context=context, read_timeout_s=2.0)
    admin.call("ACL", "SETUSER", "spillway-router", "reset", *ACCESS_STRING.split(), "nopass")
    env = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "session"}
    signed: list[str] = []
    sign = iam_credentials(user_id="spillway-router", cache_name="spillway-fleet", region="us-east-1", environ=env)

    def credentials() -> tuple[str, str]:
        user, token = sign()
        signed.append(token)
        return user, token

    s = ValkeyFleetStore.from_url(f"rediss://localhost:{port}", credentials=credentials, ssl_context=context)
    assert s.read([PT_E], 30.0).targets[PT_E].epoch == 0
    whoami = admin.call("CLIENT", "LIST")
    assert isinstance(whoami, bytes)
    assert b"user=spillway-router" in whoami  # authenticated as the IAM user, over TLS
    admin.call("CLIENT", "KILL", "USER", "spillway-router")
    time.sleep(0.05)
    assert s.read([PT_E], 30.0).targets[PT_E].epoch == 0  # reconnected
    assert len(signed) == 2  # a token signed for each connection, never reused
    assert signed[0].startswith("spillway-fleet/?Action=connect&")
    assert "&User=spillway-router&" in signed[0]
    admin.call("ACL", "SETUSER", "spillway-router", "off")  # a refused AUTH is a store failure like any other
    admin.call("CLIENT", "KILL", "USER", "spillway-router")
    with pytest.raises(FleetUnavailable):
        s.read([PT_E], 30.0)
    s.close()
    admin.close()


def test_a_server_certificate_the_client_does_not_trust_is_refused(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    s = ValkeyFleetStore.from_url(f"rediss://localhost:{port}")  # the system's CAs: a self-signed cert fails
    with pytest.raises(FleetUnavailable) as refused:
        s.read([PT_E], 30.0)
    assert refused.value.reason == "SSLCertVerificationError"


# -- fail-open ----------------------------------------------------------------------------------------------------


def test_a_store_that_is_down_fails_at_once_then_stays_quiet_for_the_backoff() -> None:
    clock = FakeClock()
    s = store_on(free_port(), backoff_s=5.0, clock=clock)
    with pytest.raises(FleetUnavailable) as first:
        s.read([PT_E], 30.0)
    assert first.value.sent
    with pytest.raises(FleetUnavailable) as quiet:
        s.read([PT_E], 30.0)
    assert not quiet.value.sent  # no I/O during the backoff
    assert s.round_trips == 1
    clock.advance(5.0)
    with pytest.raises(FleetUnavailable) as again:
        s.read([PT_E], 30.0)
    assert again.value.sent


def fake_server(answer: bytes | None) -> Iterator[int]:
    """A server that accepts connections and answers every read with `answer` (None: never answers)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while conn.recv(65536) and answer is not None:
                conn.sendall(answer)

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn = listener.accept()[0]
                accepted.append(conn)
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from fake_server(None)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "ProtocolError"),  # not a RESP server at all
        (b"*1\r\n:1\r\n", "BadReply"),  # RESP, but not the shape of the read script's reply
        (b"-NOPERM this user has no permissions\r\n", "NOPERM"),
    ],
)
def test_a_reply_the_store_cannot_read_fails_open_with_its_name(answer: bytes, reason: str) -> None:
    server = fake_server(answer)
    port = next(server)
    s = store_on(port, read_timeout_s=0.5)
    try:
        with pytest.raises(FleetUnavailable) as failed:
            s.read([PT_E], 30.0)
        assert failed.value.reason == reason
        assert s.status()["last_error"] == reason
        assert s.status()["backing_off"]
    finally:
        s.close()
        server.close()


def test_a_store_that_never_answers_costs_one_read_timeout_then_nothing(silent_port: int) -> None:
    clock = FakeClock()
    s = store_on(silent_port, read_timeout_s=0.1, backoff_s=5.0, clock=clock)
    t0 = time.perf_counter()
    with pytest.raises(FleetUnavailable) as first:
        s.read([PT_E], 30.0)
    paid = time.perf_counter() - t0
    assert first.value.reason == "TimeoutError"
    assert paid >= 0.1
    with pytest.raises(FleetUnavailable) as quiet:
        s.report(PT_E, Report(0, Verdict.OK, 30.0))
    assert not quiet.value.sent


def test_the_router_serves_on_local_state_when_the_store_never_answers(silent_port: int) -> None:
    clock = FakeClock()
    board = HealthBoard(clock)
    tracker = InflightTracker(clock)
    fleet = Fleet(store_on(silent_port, read_timeout_s=0.05, backoff_s=60.0), board, tracker)
    backend = ScriptedBackend(clock, {PT_E: [("unavailable", 0.01, None)]})
    engine = Engine(make_table(), {"bedrock": backend}, health=board, clock=clock, tracker=tracker, fleet=fleet)
    results = [engine.handle(FEATURE, REQUEST) for _ in range(4)]
    assert all(r.status is Status.SERVED for r in results)
    assert [r.store_round_trips for r in results] == [1, 0, 0, 0]  # one timed-out read, then the backoff
    assert board.state(PT_E) is BreakerState.OPEN  # local breakers as without a store


# -- the fleet on redis-server ------------------------------------------------------------------------------------


def fleet_of(n: int, port: int, script: dict[str, list[tuple[str, float, float | None]]], **table: Any) -> Any:
    clock = FakeClock()
    backend = ScriptedBackend(clock, script)
    engines = []
    for _ in range(n):
        board, tracker = HealthBoard(), InflightTracker(clock)
        fleet = Fleet(store_on(port), board, tracker)
        engines.append(
            Engine(make_table(**table), {"bedrock": backend}, health=board, clock=clock, tracker=tracker, fleet=fleet)
        )
    return engines, backend


def test_sixteen_environments_pay_one_run_of_failures_per_dead_target(raw: Connection, redis_port: int) -> None:
    engines, backend = fleet_of(
        16, redis_port, {PT_E: [("unavailable", 0.0, None)], OD_E: [("unavailable", 0.0, None)]}
    )
    for i in range(48):
        assert engines[i % 16].handle(FEATURE, REQUEST).target == PT_W
    sent = [tid for tid, _ in backend.calls]
    assert (sent.count(PT_E), sent.count(OD_E)) == (3, 3)
    for engine in engines:
        assert engine.fleet is not None
        engine.fleet.store.close()  # type: ignore[attr-defined]


def test_round_trips_per_request_on_redis(raw: Connection, redis_port: int) -> None:
    engines, _ = fleet_of(1, redis_port, {}, max_in_flight=4)
    assert engines[0].handle(FEATURE, REQUEST).store_round_trips == 3  # provisioned: read, lease, report
    engines, _ = fleet_of(1, redis_port, {}, feature={"first_capacity": "on_demand"})
    result = engines[0].handle(FEATURE, REQUEST)
    assert result.target == OD_E
    assert result.store_round_trips == 2  # on-demand: read, report
    assert result.store_ms > 0


# -- the handler's wiring -----------------------------------------------------------------------------------------


def test_the_handler_wires_the_fleet_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: Connection, redis_port: int, table_doc: dict[str, Any]
) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    monkeypatch.setenv("SPILLWAY_FLEET_STORE_URL", url)
    built = handler.build_router()
    assert built.fleet is not None
    assert parse_url(url) == built.fleet.store.address  # type: ignore[attr-defined]
    h = Harness(table_doc)
    try:
        h.router.fleet = handler.build_fleet(
            Settings.from_environ({"SPILLWAY_FLEET_STORE_URL": url}), h.health, h.router.tracker
        )
        response = h.converse()
        assert response["statusCode"] == 200
        assert header(response, "x-spillway-store-round-trips") in {"2", "3"}
        status = body_of(h.call(api_event("GET", "/v1/health")))
        assert status["store"]["enabled"] is True
        assert status["store"]["kind"] == "valkey"
        assert sum(u["requests"] for u in status["store"]["usage"].values()) == 1
        served = header(response, "x-spillway-target")
        assert served is not None
        fleet_view = status["store"]["targets"][served]  # the fleet's view of each target, from one read
        assert fleet_view["state"] == "closed"
        assert fleet_view["window"]["total"] == 1
    finally:
        h.handler.set_router(None)


def test_no_url_no_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPILLWAY_FLEET_STORE_URL", raising=False)
    assert handler.build_fleet(Settings.from_environ({}), HealthBoard(), InflightTracker()) is None
    with pytest.raises(SettingsError, match=r"SPILLWAY_FLEET_STORE_URL.*redis://"):
        Settings.from_environ({"SPILLWAY_FLEET_STORE_URL": "http://x:1"})


# -- the fake of the unit tests behaves as the scripts ------------------------------------------------------------


def test_the_unit_tests_fake_store_and_the_scripts_agree_on_a_breakers_life(store: ValkeyFleetStore) -> None:
    fake = FakeFleetStore(time.time)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("report", {"verdict": Verdict.OK}),
        ("report", {"verdict": Verdict.FAILURE}),
        ("report", {"verdict": Verdict.SLOW, "ttft_over": True}),
        ("report", {"verdict": Verdict.OK, "ttft_over": False}),
        ("report", {"verdict": Verdict.FAILURE}),
        ("report", {"verdict": Verdict.CAPACITY, "capacity_pause_s": 2.0}),
        ("lease", {"token": "a", "limit": 2}),
        ("lease", {"token": "b", "limit": 2}),
        ("lease", {"token": "c", "limit": 2}),
        ("report", {"verdict": Verdict.CAPACITY, "lease": "b", "level": 2}),
        ("lease", {"token": "d", "limit": 2}),
        ("transition", {"epoch": 0, "change": Change("open", cooldown_s=5.0)}),
        ("transition", {"epoch": 0, "change": Change("open", cooldown_s=9.0)}),
        ("report", {"verdict": Verdict.FAILURE, "epoch": 0}),
        ("probe", {"token": "p1"}),
        ("probe", {"token": "p2"}),
        ("transition", {"epoch": 1, "change": Change("ramp", ramp_step=0)}),
        ("report", {"verdict": Verdict.OK, "epoch": 2, "probe": "p1", "lease": "a", "level": 1}),
        ("transition", {"epoch": 2, "change": Change("open", cooldown_s=3.0)}),
        ("transition", {"epoch": 3, "change": Change("close")}),
        ("report", {"verdict": Verdict.FAILURE, "epoch": 4}),
    ]
    for name, kw in steps:
        answers = []
        for s in (store, fake):
            if name == "report":
                epoch = kw.get("epoch", 0)
                rest = {k: v for k, v in kw.items() if k != "epoch"}
                answers.append(report(s, epoch=epoch, **rest)[1])  # type: ignore[arg-type]
            elif name == "lease":
                answers.append(s.acquire_lease(PT_E, kw["token"], kw["limit"], 5.0, force=False))
            elif name == "probe":
                answers.append(s.acquire_probe(PT_E, kw["token"], 5.0))
            else:
                answers.append(s.transition(PT_E, **kw))
        real, faked = answers
        if name == "report":
            now = time.time()
            for field in ("until", "capacity_until"):
                r, f = getattr(real, field), getattr(faked, field)
                assert max(r - now, 0) == pytest.approx(max(f - now, 0), abs=0.05), (name, kw, field)
            strip = {"until": 0.0, "capacity_until": 0.0}
            assert dataclasses.replace(real, **strip) == dataclasses.replace(faked, **strip), (name, kw)
        else:
            assert real == faked, (name, kw)


def test_every_write_is_made_before_the_request_returns_and_no_thread_is_left(raw: Connection, redis_port: int) -> None:
    """Lambda freezes the environment once the handler returns: what the fleet must know is written by then."""
    threads = threading.active_count()
    engines, _ = fleet_of(1, redis_port, {PT_E: [("unavailable", 0.0, None)]}, max_in_flight=2)
    engines[0].handle(FEATURE, REQUEST)
    assert threading.active_count() == threads
    other = store_on(redis_port)  # another environment, reading at once
    state = other.read([PT_E, OD_E], 30.0).targets
    assert (state[PT_E].total, state[PT_E].failures, state[PT_E].run) == (1, 1, 1)
    assert state[PT_E].leases == 0  # the lease was released with the report
    assert state[OD_E].total == 1
    other.close()


# -- cluster mode (ElastiCache Serverless is cluster mode) ---------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A one-node redis cluster serving every slot: scripts whose keys span slots are refused (CROSSSLOT)."""
    port = free_cluster_port()
    workdir = tmp_path_factory.mktemp("redis-cluster")
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(workdir / "nodes.conf"),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        admin = Connection(Address("127.0.0.1", port), connect_timeout_s=0.2, read_timeout_s=2.0)
        for _ in range(600):  # a loaded machine can take seconds to start the server
            with contextlib.suppress(OSError):
                admin.call("PING")
                break
            time.sleep(0.05)
        admin.call("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        for _ in range(600):  # a loaded machine can take seconds to start the server
            info = admin.call("CLUSTER", "INFO")
            if isinstance(info, bytes) and b"cluster_state:ok" in info:
                break
            time.sleep(0.05)
        admin.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_every_operation_runs_on_a_cluster_because_its_keys_share_one_slot(cluster_port: int) -> None:
    s = store_on(cluster_port)
    s.prepare()
    snapshot = s.read([PT_E, OD_E, PT_W], 30.0)  # nine keys of three targets in one script
    assert set(snapshot.targets) == {PT_E, OD_E, PT_W}
    report(s, Verdict.FAILURE, lease="l", probe="p", level=1)
    assert s.transition(PT_E, epoch=0, change=Change("open", cooldown_s=5.0))
    assert s.acquire_probe(PT_E, "p", 1.0)
    assert s.acquire_lease(PT_E, "l", 1, 1.0, force=False) == 1
    assert s.errors == 0
    s.close()


def test_without_the_hash_tag_a_cluster_refuses_the_scripts(cluster_port: int) -> None:
    """The planted weakness: keys named without the {…} tag land in different slots."""
    s = store_on(cluster_port, prefix="spillway")
    with pytest.raises(FleetUnavailable) as refused:
        s.read([PT_E, OD_E], 30.0)
    assert refused.value.reason == "CROSSSLOT"
    s.close()

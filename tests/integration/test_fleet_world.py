"""The fleet world behaves as Lambda does: separate processes that pay their own cold start, one event each, frozen
between events, a warm environment reused before a new one starts, throttled beyond the reserved concurrency (the
stack's gateway response for a throttled Lambda: 503 NoCapacity with Retry-After), a killed environment costing its
own event only, and every environment told where the fleet's store is."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.localrun import FleetWorld, Latency
from local.localrun.client import Reply
from local.localrun.fleet import is_throttle_answer
from local.localrun.retry import StandardRetry
from local.localrun.traffic import Traffic
from stacks.gateway_responses import GATEWAY_RESPONSES

FEATURE = "summarize-thread"
RESERVED = 2


@pytest.fixture(scope="module")
def fleet_started() -> Iterator[FleetWorld]:
    with FleetWorld(
        reserved_concurrency=RESERVED,
        latency=Latency(ttft_ms=5.0, ms_per_token=0.0),
        config_ttl_s=0.3,
    ) as world:
        yield world


@pytest.fixture
def fleet(fleet_started: FleetWorld) -> FleetWorld:
    fleet_started.reset()
    return fleet_started


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _concurrently(world: FleetWorld, count: int) -> list[Reply]:
    replies: list[Reply] = []
    lock = threading.Lock()

    def one() -> None:
        reply = world.http.converse(FEATURE)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def test_a_first_request_pays_a_cold_start_and_the_environment_is_frozen_after_it(fleet: FleetWorld) -> None:
    functions = fleet.functions
    assert functions.environments() == []  # reset leaves no environment: the next request starts one
    reply = fleet.http.converse(FEATURE)
    assert reply.status == 200
    [cold] = functions.cold_starts
    assert cold.on_request
    assert cold.init_ms > 0
    assert cold.cold_start_ms >= cold.init_ms
    [environment] = functions.environments()
    assert environment.pid != os.getpid()
    assert _state(environment.pid) == "T"  # stopped between events: none of its threads run
    assert environment.api.nexts == 2  # through the Runtime API: the init's `next`, then the one it is frozen in
    assert environment.api.violations == []


def test_a_warm_environment_is_reused_before_a_new_one_starts(fleet: FleetWorld) -> None:
    for _ in range(4):
        assert fleet.http.converse(FEATURE).status == 200
    assert len(fleet.functions.cold_starts) == 1
    [environment] = fleet.functions.environments()
    assert environment.invocations == 4


def test_beyond_the_reserved_concurrency_api_gateway_answers_for_the_throttled_lambda(fleet: FleetWorld) -> None:
    fleet.functions.prewarm(RESERVED)
    for spec in fleet.emulator_specs():  # every answer takes long enough for the requests to overlap
        fleet.emu.update_target(spec.key, ttft_ms=1500.0)
    replies = _concurrently(fleet, RESERVED + 2)
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * RESERVED + [503] * 2
    throttled = [r for r in replies if r.status == 503]
    for reply in throttled:  # the router stack's INTEGRATION_FAILURE response, rendered for this request
        request_id = reply.header("x-spillway-request-id")
        assert request_id
        assert reply.header("retry-after") == "1"
        assert reply.json() == {
            "error": {"code": "NoCapacity", "message": GATEWAY_RESPONSES["IntegrationFailure"].message,
                      "request_id": request_id}
        }  # fmt: skip
        assert is_throttle_answer(reply.status, reply.headers, reply.body)
    assert fleet.functions.throttles == 2
    assert len(fleet.functions.environments()) == RESERVED
    assert fleet.functions.max_concurrency == RESERVED


def test_an_environment_killed_mid_request_costs_that_request_only(fleet: FleetWorld) -> None:
    fleet.functions.prewarm(1)
    for spec in fleet.emulator_specs():
        fleet.emu.update_target(spec.key, ttft_ms=1500.0)
    replies: list[Reply] = []
    thread = threading.Thread(target=lambda: replies.append(fleet.http.converse(FEATURE)))
    thread.start()
    assert fleet.wait_for(lambda: bool(fleet.functions.busy()), 10.0)
    killed = fleet.functions.kill_busy()
    thread.join()
    assert killed is not None
    assert [r.status for r in replies] == [502]
    for spec in fleet.emulator_specs():
        fleet.emu.update_target(spec.key, ttft_ms=5.0)
    after = fleet.http.converse(FEATURE)
    assert after.status == 200
    assert killed not in fleet.functions.environments()
    assert fleet.functions.failures == 1


def test_every_environment_is_given_the_fleet_store(fleet: FleetWorld) -> None:
    fleet.functions.prewarm(RESERVED)
    assert fleet.redis is not None
    for environment in fleet.functions.environments():
        environ = Path(f"/proc/{environment.pid}/environ").read_bytes().split(b"\0")
        assert f"SPILLWAY_FLEET_STORE_URL={fleet.redis.url}".encode() in environ
        # The router runs through its runtime loop, against this environment's own Runtime API.
        assert f"AWS_LAMBDA_RUNTIME_API={environment.api.address}".encode() in environ
        assert b"_HANDLER=handler.lambda_handler" in environ
    assert fleet.redis.command("PING") == b"PONG"


def test_a_caller_retrying_as_the_sdk_does_is_served_after_a_lambda_throttle(fleet: FleetWorld) -> None:
    fleet.functions.prewarm(RESERVED)
    for spec in fleet.emulator_specs():  # each answer holds its environment long enough for the next to find none
        fleet.emu.update_target(spec.key, ttft_ms=1000.0)
    traffic = Traffic(fleet.http, max_in_flight=8, retry=StandardRetry())
    try:
        traffic.phase("burst", {FEATURE: 4.0}, 1.0)
    finally:
        traffic.close()
    records = traffic.of()
    assert len(records) == 4
    assert all(r.served for r in records), [(r.status, r.earlier) for r in records]
    assert fleet.functions.throttles >= 2  # two environments, four requests within 0.75 s of 1 s each
    # Every throttle the fleet counted is one of the caller's earlier answers, each recognised as the gateway's.
    assert sum(r.earlier.count("lambda_throttle") for r in records) == fleet.functions.throttles
    assert sum(1 for r in records if r.retried_after_lambda_throttle) >= 2
    # Each answer says when the fleet handed its event over: after the request first left, never before.
    assert all(r.invoked_s is not None and r.invoked_s >= r.sent_s for r in records)


def test_the_worlds_look_inside_asks_each_idle_environment_and_leaves_it_idle(fleet: FleetWorld) -> None:
    fleet.functions.prewarm(RESERVED)
    health = fleet.environment_health()  # GET /v1/health through each environment's Runtime API
    assert sorted(doc["environment"] for doc in health) == sorted(e.index for e in fleet.functions.environments())
    assert all(doc["targets"] for doc in health)
    stats = fleet.store_stats()  # over the control pipe, beside the loop
    assert sorted(index for index, _ in stats) == sorted(doc["environment"] for doc in health)
    assert all(isinstance(doc, dict) for _, doc in stats)
    assert fleet.functions.busy() == []
    for environment in fleet.functions.environments():
        assert _state(environment.pid) == "T"
        assert environment.api.parked
    assert fleet.http.converse(FEATURE).status == 200

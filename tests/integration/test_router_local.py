"""Through the local API Gateway-shaped endpoint: the router's real handler, real boto3 runtime clients against the
emulator, the fleet store on redis-server, routing tables from the AppConfig extension stand-in."""

from __future__ import annotations

import time

from local.emulator import Fault
from local.localrun import LocalWorld, error_body_ok

FEATURE = "summarize-thread"
PT_EAST = "claude-sonnet/provisioned/us-east-1"
OD_EAST = "claude-sonnet/on_demand/us-east-1"
PT_WEST = "claude-sonnet/provisioned/us-west-2"


def test_served_through_api_gateway_event_shape(world: LocalWorld) -> None:
    reply = world.http.converse(FEATURE)
    assert reply.status == 200
    body = reply.json()
    assert {"output", "stopReason", "usage", "metrics"} <= set(body)
    assert reply.target == PT_EAST
    assert reply.header("x-spillway-attempts") == "1"
    assert reply.header("x-spillway-request-id")
    assert world.emulator_served()[PT_EAST] == 1


def test_every_feature_is_served_at_home(world: LocalWorld) -> None:
    expected = {
        "summarize-thread": PT_EAST,
        "nightly-recap": "nova-lite/on_demand/us-west-2",
        "redact-escrow": "llama-escrow/provisioned/us-east-1",
    }
    for feature, target in expected.items():
        reply = world.http.converse(feature)
        assert (reply.status, reply.target) == (200, target)


def test_features_and_health(world: LocalWorld) -> None:
    features = world.http.get_json("/v1/features")["features"]
    assert {f["name"] for f in features} == set(world.table_doc["features"])
    health = world.http.get_json("/v1/health")
    assert health["config"]["source"] == "appconfig"
    assert health["store"]["enabled"] is True
    assert {t["id"] for t in health["targets"]} == set(world.table_doc["targets"])


def test_pt_throttle_spills_to_on_demand(world: LocalWorld) -> None:
    world.set_fault(PT_EAST, Fault.throttle())
    reply = world.http.converse(FEATURE)
    assert (reply.status, reply.target) == (200, OD_EAST)
    assert reply.route == [(PT_EAST, "capacity"), (OD_EAST, "ok")]


def test_region_outage_fails_over_and_shares_the_open_breaker(world: LocalWorld) -> None:
    world.emu.close_region("us-east-1")
    replies = [world.http.converse(FEATURE) for _ in range(6)]
    assert all(r.status == 200 for r in replies)
    assert all(r.target is not None and r.target.endswith("us-west-2") for r in replies)
    assert world.breaker_states()[PT_EAST] == "open"
    # The trip went through the fleet store (redis-server here, SPILLWAY_FLEET_STORE_URL).
    store = world.http.get_json("/v1/health")["store"]
    assert store["kind"] == "valkey"
    assert store["round_trips"] > 0
    assert store["last_error"] is None
    # Another environment (a fresh router) learns it from the fleet store and never sends to the dead target.
    world.new_router()
    reply = world.http.converse(FEATURE)
    assert reply.status == 200
    assert PT_EAST not in [t for t, outcome in reply.route if outcome != "refused"]


def test_malformed_body_moves_on(world: LocalWorld) -> None:
    for variant in ("truncated", "not_json", "empty", "wrong_shape", "bad_types"):
        world.reset()
        world.set_fault(PT_EAST, Fault.malformed_body(variant))
        reply = world.http.converse(FEATURE)
        assert (reply.status, reply.target) == (200, OD_EAST), variant
        assert reply.route[0] == (PT_EAST, "unavailable"), variant


def test_every_target_down_is_a_clean_503(world: LocalWorld) -> None:
    for region in world.emu.regions:
        world.emu.close_region(region)
    started = time.monotonic()
    reply = world.http.converse(FEATURE)
    assert time.monotonic() - started < 5.0
    assert reply.status == 503
    assert error_body_ok(reply.body)
    assert reply.json()["error"]["code"] == "NoCapacity"
    retry_after = int(reply.header("retry-after") or "0")
    assert 1 <= retry_after <= 60


def test_appconfig_unreachable_keeps_last_known_good(world: LocalWorld) -> None:
    assert world.http.converse(FEATURE).status == 200
    assert world.emu.appconfig is not None
    world.emu.appconfig.set_fault(Fault.refuse())
    assert world.wait_for(lambda: world.http.get_json("/v1/health")["config"]["source"] == "last_known_good", 3.0), (
        "the router never noticed AppConfig was gone"
    )
    reply = world.http.converse(FEATURE)
    assert (reply.status, reply.target) == (200, PT_EAST)


def test_config_rollout_and_rollback(world: LocalWorld) -> None:
    assert world.http.converse(FEATURE).target == PT_EAST
    rollout = world.table_copy()
    rollout["features"][FEATURE]["first_capacity"] = "on_demand"
    world.deploy_table(rollout)
    assert world.wait_for(lambda: world.http.converse(FEATURE).target == OD_EAST, 3.0)
    world.deploy_table(world.table_doc)
    assert world.wait_for(lambda: world.http.converse(FEATURE).target == PT_EAST, 3.0)


def test_invalid_rollout_is_ignored(world: LocalWorld) -> None:
    assert world.http.converse(FEATURE).target == PT_EAST  # the good table is loaded from AppConfig first
    broken = world.table_copy()
    broken["features"][FEATURE]["models"] = ["no-such-model"]
    world.deploy_table(broken)
    # The broken table was fetched and refused: the router says it serves its last known good one.
    assert world.wait_for(lambda: world.http.get_json("/v1/health")["config"]["source"] == "last_known_good", 3.0), (
        "the broken rollout was never fetched"
    )
    reply = world.http.converse(FEATURE)
    assert (reply.status, reply.target) == (200, PT_EAST)


def test_fleet_store_unreachable_routing_goes_on(world: LocalWorld) -> None:
    assert world.redis is not None
    world.redis.down()
    try:
        replies = [world.http.converse(FEATURE) for _ in range(5)]
        assert all(r.status == 200 for r in replies)
        store = world.http.get_json("/v1/health")["store"]
        assert store["last_error"] is not None
    finally:
        world.redis.up()


def test_bad_requests_answer_documented_errors(world: LocalWorld) -> None:
    cases = [
        (world.http.converse(FEATURE, b"{not json"), 400),
        (world.http.converse("no-such-feature"), 404),
        (world.http.converse(FEATURE, content_type="text/plain"), 415),
        (world.http.request("GET", "/v1/features/x/converse"), 405),
        (world.http.request("GET", "/nowhere"), 404),
    ]
    for reply, status in cases:
        assert reply.status == status
        assert error_body_ok(reply.body)


def test_request_botocore_rejects_is_a_400_and_trips_no_breaker(world: LocalWorld) -> None:
    # Found by `make fuzz`: a content block the router's shape check admits but botocore's model refuses
    # (ParamValidationError) used to count as every target failing: 503, and breakers fed by a caller's mistake.
    body = {"messages": [{"role": "user", "content": [{"audio": {}}]}]}
    for _ in range(4):
        reply = world.http.converse(FEATURE, body)
        assert reply.status == 400
        assert error_body_ok(reply.body)
    assert set(world.breaker_states().values()) == {"closed"}
    assert world.http.converse(FEATURE).status == 200

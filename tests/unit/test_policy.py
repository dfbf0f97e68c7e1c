"""Planning: default and custom orders, skipping unavailable targets, and the least-bad probe."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from spillway.config import DIMENSIONS, BreakerPolicy, RoutingTable, parse_routing_table
from spillway.health import Admission, HealthBoard, Verdict
from spillway.policy import Planner, StepKind

from .helpers import FEATURE, FakeClock, make_table, table_dict

P = BreakerPolicy(consecutive_failures=1, cooldown_s=5, max_cooldown_s=60)
PT_E, OD_E = "claude-sonnet/provisioned/us-east-1", "claude-sonnet/on_demand/us-east-1"
PT_W, OD_W = "claude-sonnet/provisioned/us-west-2", "claude-sonnet/on_demand/us-west-2"
NPT_E, NOD_E = "nova-lite/provisioned/us-east-1", "nova-lite/on_demand/us-east-1"
NPT_W, NOD_W = "nova-lite/provisioned/us-west-2", "nova-lite/on_demand/us-west-2"


def plan_ids(table: RoutingTable, board: HealthBoard | None = None) -> tuple[str, ...]:
    return Planner(table).plan(FEATURE, board or HealthBoard(FakeClock())).target_ids


def fail(board: HealthBoard, target: str) -> None:
    board.finish(target, P, Verdict.FAILURE, board.begin(target, P, force=True))


def test_default_order_spills_then_fails_over_then_falls_back() -> None:
    plan = Planner(make_table()).plan(FEATURE, HealthBoard(FakeClock()))
    assert plan.target_ids == (PT_E, OD_E, PT_W, OD_W, NPT_E, NOD_E, NPT_W, NOD_W)
    assert [s.kind for s in plan.steps[:5]] == [
        StepKind.PRIMARY,
        StepKind.SPILL,
        StepKind.FAILOVER,
        StepKind.FAILOVER,
        StepKind.FALLBACK,
    ]
    assert not any(s.probe for s in plan.steps)


def test_order_can_fail_over_before_spilling() -> None:
    table = make_table(feature={"order": ["failover", "spill", "fallback"]})
    assert plan_ids(table)[:4] == (PT_E, PT_W, OD_E, OD_W)


def test_order_can_fall_back_before_failing_over() -> None:
    table = make_table(feature={"order": ["spill", "fallback", "failover"]})
    assert plan_ids(table)[:4] == (PT_E, OD_E, NPT_E, NOD_E)


def test_a_dimension_left_out_is_not_expanded() -> None:
    assert plan_ids(make_table(feature={"order": ["spill"]})) == (PT_E, OD_E)
    assert plan_ids(make_table(feature={"order": ["failover", "fallback"]})) == (PT_E, PT_W, NPT_E, NPT_W)
    assert plan_ids(make_table(feature={"order": []})) == (PT_E,)


def test_on_demand_first_never_spills_onto_provisioned() -> None:
    table = make_table(feature={"first_capacity": "on_demand"})
    assert plan_ids(table) == (OD_E, OD_W, NOD_E, NOD_W)


def test_missing_targets_are_simply_absent() -> None:

    raw = table_dict()
    del raw["targets"][PT_W]
    del raw["targets"][NPT_E]
    assert plan_ids(parse_routing_table(raw)) == (PT_E, OD_E, OD_W, NOD_E, NPT_W, NOD_W)


def test_open_breakers_and_capacity_cooldowns_are_skipped() -> None:
    board = HealthBoard(FakeClock())
    fail(board, OD_E)
    board.finish(PT_E, P, Verdict.CAPACITY, board.begin(PT_E, P))
    plan = Planner(make_table()).plan(FEATURE, board)
    assert plan.target_ids == (PT_W, OD_W, NPT_E, NOD_E, NPT_W, NOD_W)
    assert set(plan.skipped) == {PT_E, OD_E}


def test_a_busy_half_open_target_is_skipped_until_its_probe_ends() -> None:
    clock = FakeClock()
    board = HealthBoard(clock)
    fail(board, PT_E)
    clock.advance(5)
    probe = board.begin(PT_E, P)
    assert probe.admission is Admission.PROBE
    assert PT_E not in plan_ids(make_table(), board)
    board.finish(PT_E, P, Verdict.CAPACITY, probe)  # no verdict, slot released, short capacity cooldown
    clock.advance(1)
    assert plan_ids(make_table(), board)[0] == PT_E


def test_when_everything_is_open_the_least_bad_is_kept_as_a_probe() -> None:
    clock = FakeClock()
    board = HealthBoard(clock)
    table = make_table()
    for target in table.targets:
        fail(board, target)
        clock.advance(0.1)  # later failures, later recovery (all within the 5 s cooldown)
    plan = Planner(table).plan(FEATURE, board)
    assert plan.target_ids == (PT_E,)  # the first to recover
    assert plan.steps[0].probe
    assert PT_E not in plan.skipped
    assert len(plan.skipped) == 7


def test_a_capacity_cooldown_is_less_bad_than_an_open_breaker() -> None:
    board = HealthBoard(FakeClock())
    table = make_table()
    for target in table.targets:
        if target == NOD_W:
            board.finish(target, P, Verdict.CAPACITY, board.begin(target, P), retry_after_s=30)
        else:
            fail(board, target)
    assert plan_ids(table, board) == (NOD_W,)


# -- property: a plan names only targets its feature allows -------------------------------------------------------

feature_shapes = st.fixed_dictionaries(
    {
        "first_capacity": st.sampled_from(["provisioned", "on_demand"]),
        "models": st.permutations(["claude-sonnet", "nova-lite", "llama-escrow"]).map(lambda m: m[:2]),
        "failover_regions": st.sampled_from([[], ["us-west-2"], ["us-west-2", "eu-west-1"], ["eu-west-1"]]),
        "order": st.permutations(list(DIMENSIONS)).flatmap(lambda p: st.integers(0, 3).map(lambda n: p[:n])),
    }
)


@settings(max_examples=120, deadline=None)
@given(
    shape=feature_shapes,
    broken=st.lists(st.tuples(st.integers(0, 30), st.sampled_from(list(Verdict)), st.floats(0, 10)), max_size=40),
)
def test_property_a_plan_names_only_targets_its_feature_allows(
    shape: dict[str, Any], broken: list[tuple[int, Verdict, float]]
) -> None:
    table = make_table(
        models=("claude-sonnet", "nova-lite", "llama-escrow"),
        regions=("us-east-1", "us-west-2", "eu-west-1"),
        feature=shape,
    )
    f = table.features[FEATURE]
    clock = FakeClock()
    board = HealthBoard(clock)
    ids = sorted(table.targets)
    for index, verdict, gap in broken:
        clock.advance(gap)
        target = ids[index % len(ids)]
        board.finish(target, P, verdict, board.begin(target, P, force=True))
    plan = Planner(table).plan(FEATURE, board)
    models = f.models if "fallback" in f.order else f.models[:1]
    regions = f.regions if "failover" in f.order else f.regions[:1]
    capacities = {f.first_capacity} | ({"on_demand"} if "spill" in f.order else set())
    assert plan.steps, "a plan is never empty: at worst it probes the least bad target"
    assert len(set(plan.target_ids)) == len(plan.target_ids)
    for step in plan.steps:
        t = step.target
        assert t.model in models
        assert t.region in regions
        assert t.capacity in capacities
        assert step.probe or board.standing(t.id)[0] == 0
    assert all(s.probe for s in plan.steps) == (len(plan.steps) == 1 and plan.steps[0].probe)
    # The first step is the feature's primary target whenever that target is available.
    primary = f"{f.models[0]}/{f.first_capacity}/{f.home_region}"
    if board.standing(primary)[0] == 0:
        assert plan.target_ids[0] == primary

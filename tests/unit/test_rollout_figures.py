"""The rollout benchmark's figures (local/benchmarks/rollout_figures.py), each against records with a planted
weakness."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from local.benchmarks import rollout_figures as rf
from spillway.routing_source import Canary, Snapshot, bucket

SHARE = 0.5
LOW, HIGH = 0.1, 0.9  # a bucket on the canary side of 0.5, and one outside it


def on(env: int, sent_s: float, *, low: bool, canary_first: bool, status: int = 200) -> rf.Sample:
    return rf.Sample(sent_s, env, LOW if low else HIGH, canary_first, status)


def rolled(env: int, change_s: float, move_s: float, end_s: float, step_s: float = 0.25) -> list[rf.Sample]:
    """Telling requests of one environment every `step_s`: old table until `move_s` after the change, new after."""
    out, t = [], change_s
    while t < end_s:
        out.append(on(env, t, low=True, canary_first=t >= change_s + move_s))
        t += step_s
    return out


def test_canary_side_is_the_routers_split() -> None:
    snapshot = Snapshot(None, "none", None, {"f": Canary("m", 0.3)})
    for _ in range(500):
        rid = str(uuid.uuid4())
        assert rf.canary_side(bucket(rid), 0.3) == (snapshot.route_name("f", rid) != "f")
    assert not rf.canary_side(0.0, 0.0)


def test_a_fleet_that_moves_within_the_goal_meets_it() -> None:
    samples = rolled(0, 10.0, 1.0, 20.0) + rolled(1, 10.0, 2.6, 20.0)
    found = rf.moves(samples, 10.0, 0.0, SHARE)
    figures = rf.direction_figures(found, 2, goal_s=6.0)
    assert figures["meets_goal"]
    assert figures["stale_until_s"] == 2.5  # environment 1's last old-table request
    assert figures["moved_by_s"]["max"] == 2.75
    assert found[0].first_new_s == 1.0


def test_requests_that_fall_on_the_same_side_of_both_shares_say_nothing() -> None:
    untelling = [on(0, 11.0 + i, low=False, canary_first=False) for i in range(5)]
    assert rf.moves(untelling, 10.0, 0.0, SHARE) == {}
    assert not rf.direction_figures({}, 1, 6.0)["meets_goal"]  # nothing seen is not a pass


def test_an_environment_that_never_moves_misses_the_goal() -> None:
    samples = rolled(0, 10.0, 1.0, 20.0) + rolled(1, 10.0, 99.0, 20.0)
    figures = rf.direction_figures(rf.moves(samples, 10.0, 0.0, SHARE), 2, 6.0)
    assert figures["environments_never_moved"] == [1]
    assert not figures["meets_goal"]


def test_a_late_environment_misses_the_goal() -> None:
    figures = rf.direction_figures(rf.moves(rolled(3, 10.0, 7.0, 20.0), 10.0, 0.0, SHARE), 1, 6.0)
    assert figures["stale_until_s"] == 6.75
    assert not figures["meets_goal"]


def test_an_environment_that_goes_back_to_the_old_share_misses_the_goal() -> None:
    samples = [*rolled(0, 10.0, 1.0, 14.0), on(0, 14.5, low=True, canary_first=False)]
    figures = rf.direction_figures(rf.moves(samples, 10.0, 0.0, SHARE), 1, 6.0)
    assert figures["reverted_requests"] == 1
    assert not figures["meets_goal"]


def test_the_yank_reads_the_shares_the_other_way_and_ignores_failures_and_earlier_requests() -> None:
    samples = [
        on(0, 9.0, low=True, canary_first=True),  # before the yank
        on(0, 10.5, low=True, canary_first=True),  # still on the canary: stale
        on(0, 11.0, low=True, canary_first=True, status=503),  # not served: not counted
        on(0, 11.5, low=True, canary_first=False),  # moved
    ]
    found = rf.moves(samples, 10.0, SHARE, 0.0)
    assert found[0] == rf.Move(0, 2, 0.5, 1.5, 0)


def test_thaw_figures_flag_a_stale_answer_from_an_expired_cache() -> None:
    ttl = 5.0
    fine = [rf.Thawed(0, 1.0, 1.5, False), rf.Thawed(1, 6.0, 6.5, True)]
    figures = rf.thaw_figures(fine, ttl, ttl + 1)
    assert figures["meets_goal"]
    assert (figures["stale"], figures["longest_stale_after_change_s"]) == (1, 1.0)
    no_refresh_on_thaw = [*fine, rf.Thawed(2, 6.0, 6.5, False)]
    figures = rf.thaw_figures(no_refresh_on_thaw, ttl, ttl + 1)
    assert figures["stale_past_ttl"] == 1
    assert not figures["meets_goal"]


def test_the_published_rollout_figures_are_the_recorded_ones() -> None:
    """README.md and local/benchmarks/README.md state results.json's rollout figures (rerun the benchmark,
    update both)."""
    root = Path(__file__).resolve().parents[2]
    run = json.loads((root / "local" / "benchmarks" / "results.json").read_text())["rollout"]
    figures = run["rollout_and_yank"]
    thaw = run["after_thaw"]
    stated = [
        f"{figures['rollout']['stale_until_s']:.2f} s",
        f"{figures['yank']['stale_until_s']:.2f} s",
        f"{thaw['longest_stale_after_change_s']:.2f} s",
        f"{run['environments']} environments",
        f"{run['config_ttl_s']:g} s",
    ]
    for document in ("README.md", "local/benchmarks/README.md"):
        text = (root / document).read_text()
        for figure in stated:
            assert figure in text, (document, figure)
    assert (
        f"stale in {thaw['stale']} of {thaw['first_requests_after_thaw']}"
        in (root / "local/benchmarks/README.md").read_text()
    )
    for met in (figures["rollout"], figures["yank"], thaw):  # the docs say met
        assert met["meets_goal"]

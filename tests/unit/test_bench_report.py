"""The fleet figures in README.md and local/benchmarks/README.md are the ones in
local/benchmarks/results.json, and a goal the run missed reads as missed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from local.benchmarks.report import BEGIN, DOCUMENTS, END, RESULTS, render, splice


def _results() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(RESULTS.read_text())
    return doc


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_the_published_table_is_rendered_from_the_results(path: Any) -> None:
    text = path.read_text()
    assert BEGIN in text
    assert END in text
    assert splice(text, render(_results())) == text, f"{path.name} is stale: run python -m local.benchmarks.report"


def test_a_missed_goal_reads_missed_and_a_met_one_met() -> None:
    doc = _results()
    key = "fleet" if "fleet" in doc else "fleet_before_shared_state"
    planted = copy.deepcopy(doc)
    spill = planted[key]["environments_48"]["spillover"]
    spill["meets_goal"] = False
    row = next(line for line in render(planted).splitlines() if line.startswith("| spillover"))
    assert "**missed**" in row
    assert "**met**" not in row.split("|")[-2]
    spill["meets_goal"] = True
    row = next(line for line in render(planted).splitlines() if line.startswith("| spillover"))
    assert row.split("|")[-2].strip().endswith("**met**")


def test_a_figure_moves_the_table() -> None:
    planted = _results()
    key = "fleet" if "fleet" in planted else "fleet_before_shared_state"
    planted[key]["environments_48"]["spillover"]["spilled_throttled_first_share"] = 0.123
    assert "12.3% of" in render(planted)

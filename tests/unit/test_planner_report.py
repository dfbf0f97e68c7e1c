"""`python -m tools.planner` end to end on a small profile: the table, the JSON and the plots it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# A tool of the dev environment (greenlet, matplotlib, the CDK app's platform schema): not in the router's own
# test environment, where `make test-lambda-runtime` runs tests/unit again on the Lambda's Python.
pytest.importorskip("greenlet", reason="the planner's dependencies are in requirements-dev.txt only")
import yaml

from tools.planner import __main__ as planner_cli

ROOT = Path(__file__).resolve().parents[2]


def test_writes_table_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((ROOT / "config" / "traffic.yaml").read_text())
    quiet = [0] * 24
    for name, feature in doc["features"].items():
        busy = list(quiet)
        busy[12] = 3600 if name == "summarize-thread" else 1800
        feature["days"] = {day: list(busy) if day == "mon" else list(quiet) for day in feature["days"]}
    doc["replay"] = {"sample_minutes": 1, "seed": 3}
    traffic = tmp_path / "traffic.yaml"
    traffic.write_text(yaml.safe_dump(doc))
    out = tmp_path / "plan"
    assert planner_cli.main(["--traffic", str(traffic), "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert set(plan["features"]) == {"summarize-thread", "nightly-recap"}
    summarize = plan["features"]["summarize-thread"]
    assert [s["model_units"] for s in summarize["scenarios"]] == list(
        range(summarize["pt_for_peak"]["model_units"] + 1)
    )
    assert summarize["all_on_demand"]["requests_per_week"] == 3600
    assert plan["features"]["nightly-recap"]["batch_alternatives_per_month"]["batch"] > 0
    assert "provisioned.claude-sonnet.one_month" in plan["unconfirmed_prices"]
    table = (out / "plan.md").read_text()
    for row in ("| summarize-thread | all on-demand |", "| summarize-thread | PT sized for the peak |"):
        assert row in table
    assert "## Break-even" in table
    assert "## The chosen plans together" in table
    assert set(plan["together"]["features"]) == {"summarize-thread", "nightly-recap"}
    assert "## Batch work off the standard tier" in table
    for png in ("traffic.png", "cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    streams = capsys.readouterr()
    assert "replaying summarize-thread: 1 model unit(s): 100%" in streams.err  # the progress display
    assert "wrote " in streams.out

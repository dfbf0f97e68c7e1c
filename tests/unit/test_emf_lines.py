"""local/localrun/emf.py reads the router's EMF lines back per target: value lists flattened, other metrics, other lines
and lines before the run's start left out."""

from __future__ import annotations

import json
from pathlib import Path

from local.localrun.emf import fleet_values, values_by_target


def emf(target: str, stamp: int, **metrics: object) -> str:
    return json.dumps({"_aws": {"Timestamp": stamp, "CloudWatchMetrics": []}, "target": target, **metrics})


def test_values_per_target_from_every_environments_log(tmp_path: Path) -> None:
    (tmp_path / "env-001.log").write_text(
        "\n".join(
            [
                emf("pt", 1000, TimeToFirstToken=[210.0, 1230.5]),
                emf("od", 1000, TimeToFirstToken=[190.0], InterTokenGap=[1.0, 2.0]),
                emf("pt", 10, TimeToFirstToken=[9999.0]),  # before the run started
                emf("pt", 1000, AttemptLatency=[5.0]),  # another metric
                '{"level":"INFO","message":"routed","target":"pt","TimeToFirstToken":1}',  # a log line, not EMF
                '{"_aws": {"Timestamp": 2000, "CloudW',  # cut short by a killed environment
            ]
        )
    )
    (tmp_path / "env-002.log").write_text(emf("pt", 1500, TimeToFirstToken=[300.0]) + "\n")
    assert fleet_values(tmp_path, "TimeToFirstToken", since_ms=100) == {"pt": [210.0, 1230.5, 300.0], "od": [190.0]}
    assert values_by_target([emf("od", 1, InterTokenMax=4.5)], "InterTokenMax") == {"od": [4.5]}

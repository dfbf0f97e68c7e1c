"""The results writer merges one benchmark's key without clobbering the others."""

from __future__ import annotations

import json
from pathlib import Path

from local.benchmarks.results import merge_result, percentiles


def test_merge_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"cold_start": {"p50": 1}}))
    merge_result("engine", {"one_attempt_us": {"p50": 10.0, "p99": 20.0}}, path)
    merge_result("engine", {"one_attempt_us": {"p50": 11.0, "p99": 21.0}}, path)
    assert json.loads(path.read_text()) == {
        "cold_start": {"p50": 1},
        "engine": {"one_attempt_us": {"p50": 11.0, "p99": 21.0}},
    }
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_merge_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    merge_result("engine", {"x": 1}, path)
    assert json.loads(path.read_text()) == {"engine": {"x": 1}}


def test_percentiles_by_nearest_rank() -> None:
    samples = [i * 1000 for i in range(1, 101)]  # 1..100 us
    assert percentiles(samples) == {"p50": 50.0, "p99": 99.0}
    assert percentiles([7000]) == {"p50": 7.0, "p99": 7.0}

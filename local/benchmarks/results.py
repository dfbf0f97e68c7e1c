"""local/benchmarks/results.json: one key per benchmark, merged so no benchmark clobbers another's figures."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"


def merge_result(key: str, value: Any, path: Path = RESULTS) -> dict[str, Any]:
    """Set `key` in the results file, keeping every other key; written atomically."""
    data: dict[str, Any] = {}
    if path.exists():
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            data = loaded
    data[key] = value
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return data


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) by nearest rank: the ceil(q n)-th smallest value."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def figures_ms(values: list[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank) of milliseconds, rounded to the microsecond."""
    return {"p50": round(nearest_rank(values, 0.5), 3), "p99": round(nearest_rank(values, 0.99), 3)}


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 and p99 in microseconds (nearest rank), rounded to 0.01 us."""
    ordered = sorted(samples_ns)

    def rank(q: float) -> float:
        index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
        return round(ordered[index] / 1000.0, 2)

    return {"p50": rank(0.50), "p99": rank(0.99)}

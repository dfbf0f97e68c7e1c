"""The router's EMF metric lines as the fleet's execution environments wrote them (their stdout: in Lambda,
CloudWatch's input), read back per target: what an operator's dashboard would show, computed from the same lines.

Only names, dimensions and numbers are read (the lines hold nothing else: spillway/telemetry.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def values_by_target(lines: Iterable[str], metric: str, *, since_ms: float = 0.0) -> dict[str, list[float]]:
    """Every value of `metric` (EMF value lists flattened) per `target` dimension, from lines at or after since_ms."""
    out: dict[str, list[float]] = {}
    needle = f'"{metric}"'
    for line in lines:
        if needle not in line or not line.startswith('{"_aws"'):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # a line cut by a killed environment
        target = doc.get("target")
        stamp = doc.get("_aws", {}).get("Timestamp", 0)
        if not isinstance(target, str) or stamp < since_ms:
            continue
        raw = doc.get(metric)
        values = raw if isinstance(raw, list) else [raw]
        out.setdefault(target, []).extend(float(v) for v in values if isinstance(v, int | float))
    return out


def fleet_values(log_dir: Path, metric: str, *, since_ms: float = 0.0) -> dict[str, list[float]]:
    """values_by_target over every environment's log in `log_dir` (env-NNN.log)."""
    merged: dict[str, list[float]] = {}
    for path in sorted(log_dir.glob("env-*.log")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for target, values in values_by_target(lines, metric, since_ms=since_ms).items():
                merged.setdefault(target, []).extend(values)
    return merged

"""`make bench` works: every benchmark runs end to end in its quick form (figures are not judged here: a timed
assertion on a shared machine is not a benchmark; local/benchmarks/README.md gives the method and the figures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_in_quick_mode_without_touching_results() -> None:
    results = ROOT / "local" / "benchmarks" / "results.json"
    before = results.read_bytes()
    run = subprocess.run(
        [sys.executable, "local/benchmarks/run.py", "--quick", "--no-write"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    benches = sorted(p.name for p in (ROOT / "local" / "benchmarks").glob("bench_*.py"))
    for bench in benches:
        assert f"== {bench}" in run.stdout
    for key in (
        "engine:",
        "http_overhead_ratio",
        "fleet: one process, failover:",
        "fleet: done in",
        "stream_ttft:",
        "buffered_ttft:",
    ):
        assert key in run.stdout, key
    for figure in ("failover_refused", "failover_blackholed", "brownout", "spillover", "recovery", "price of sharing"):
        assert f"{figure}:" in run.stdout, figure
    for figure in ("rollout: rollout and yank:", "rollout: after a thaw:", "rollout: done in"):
        assert figure in run.stdout, figure
    assert results.read_bytes() == before  # --no-write leaves the recorded figures alone

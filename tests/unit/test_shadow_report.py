"""tools/shadow_report.py: figures computed from the records, other log lines ignored, a plot per feature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools import shadow_report

# The report draws with matplotlib, a requirements-dev.txt tool: the router's own Python 3.13 test venv
# (make test-lambda-runtime) has only the Lambda's dependencies, so this tool's tests run in the main suite.
pytest.importorskip("matplotlib", reason="the shadow report's plot needs matplotlib (requirements-dev.txt only)")

FEATURE = "summarize-thread"
CANDIDATE = "nova-lite/on_demand/us-east-1"


def record(outcome: str, incumbent_ms: float, candidate_ms: float | None, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "message": "shadow",
        "feature": FEATURE,
        "incumbent": "claude-sonnet/provisioned/us-east-1",
        "candidate": CANDIDATE,
        "incumbent_status": 200,
        "incumbent_ms": incumbent_ms,
        "incumbent_input_tokens": 10,
        "incumbent_output_tokens": 100,
        "incumbent_stop": "end_turn",
        "outcome": outcome,
        "candidate_ms": candidate_ms,
        "candidate_output_tokens": 150 if outcome == "ok" else None,
        "candidate_stop": "max_tokens" if outcome == "ok" else None,
    }
    return {**base, **kw}


def judged(outcome: str, score: float | None, candidate: str = CANDIDATE) -> dict[str, Any]:
    return {
        "message": "shadow_judge",
        "feature": FEATURE,
        "incumbent": "claude-sonnet/provisioned/us-east-1",
        "candidate": candidate,
        "judge": "llama-escrow/provisioned/us-east-1",
        "outcome": outcome,
        "score": score,
        "judge_ms": 40.0,
    }


def lines() -> list[str]:
    rows = [
        record("ok", 10.0 * i, 20.0 * i, incumbent_ttft_ms=2.0 * i if i % 2 else None, candidate_ttft_ms=3.0 * i)
        for i in range(1, 9)
    ]
    rows.append(record("error", 50.0, 5.0, error_class="capacity", error_code="ThrottlingException"))
    rows.append(record("abandoned", 60.0, None, incumbent_throttles=2))
    rows += [judged("scored", 0.9), judged("scored", 0.4), judged("scored", 0.8), judged("unparsed", None)]
    rows += [judged("error", None), judged("scored", 0.0, candidate="another/on_demand/us-east-1")]
    out = [f"2026-12-04T15:00:00Z\t{json.dumps(r)}" for r in rows]  # a CloudWatch export's prefix
    out.append(json.dumps({"message": "routed", "feature": FEATURE, "candidate": "x"}))  # not a shadow record
    out.append("START RequestId: abc Version: $LATEST")
    return out


def test_the_report_compares_candidate_and_incumbent(tmp_path: Path) -> None:
    records = shadow_report.read_records(lines())
    assert len(records) == 16
    (c,) = shadow_report.write_report(records, tmp_path)  # the other candidate's judge alone makes no comparison
    assert (c.feature, c.candidate) == (FEATURE, CANDIDATE)
    assert c.incumbent.requests == c.shadow.requests == 10
    assert c.incumbent.p50_ms == 50.0  # nearest rank of 10, 20, ..., 80, 50, 60
    assert c.shadow.p50_ms == 80.0  # 5, 20, 40, ..., 160: the abandoned one is not a latency
    assert c.shadow.p99_ms == 160.0
    assert c.shadow.error_rate == round(1 / 9, 4)
    assert c.abandoned_share == 0.1
    assert c.token_ratio == 1.5
    assert c.shadow.stop_reasons == {"max_tokens": 1.0}
    assert c.incumbent.stop_reasons == {"end_turn": 1.0}
    # Time to first token: the incumbent's where measured (2, 6, 10, 14), the candidate's served shadows' (3..24).
    assert (c.incumbent.ttft_p50_ms, c.incumbent.ttft_p99_ms) == (6.0, 14.0)
    assert (c.shadow.ttft_p50_ms, c.shadow.ttft_p99_ms) == (12.0, 24.0)
    assert (c.incumbent.throttle_rate, c.shadow.throttle_rate) == (0.1, round(1 / 9, 4))
    assert c.judge == shadow_report.Judged(
        calls=5, scored=3, mean_score=0.7, low_share=round(1 / 3, 4), unparsed=1, errors=1
    )
    assert (
        "| summarize-thread | nova-lite/on_demand/us-east-1 | 5 | 3 | 0.70 | 33.3% | 1 | 1 |"
        in (tmp_path / "report.md").read_text()
    )
    assert (
        "| summarize-thread | candidate | nova-lite/on_demand/us-east-1 | 10 | 80.0 | 160.0 |"
        in (tmp_path / "report.md").read_text()
    )
    plot = tmp_path / "latency-summarize-thread--nova-lite_on_demand_us-east-1.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_reads_a_log_file(tmp_path: Path) -> None:
    log = tmp_path / "router.log"
    log.write_text("\n".join(lines()) + "\n")
    assert shadow_report.main([str(log), "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())[0]["token_ratio"] == 1.5


def test_without_a_judge_the_report_has_no_scores(tmp_path: Path) -> None:
    records = [r for r in shadow_report.read_records(lines()) if r["message"] == "shadow"]
    (c,) = shadow_report.write_report(records, tmp_path)
    assert c.judge is None
    assert "Judge scores" not in (tmp_path / "report.md").read_text()


def test_no_records_is_an_empty_report(tmp_path: Path) -> None:
    assert shadow_report.write_report([], tmp_path) == []
    assert "no shadow records" in (tmp_path / "report.md").read_text()


def test_the_local_measurement_feeds_the_report_with_ttft_and_scores(tmp_path: Path) -> None:
    """`make shadow-report` without a log: tools.shadow_overhead's records carry both sides' TTFT and judge scores."""
    from tools import shadow_overhead  # noqa: PLC0415 (sleeps its simulated models: only this test pays for it)

    figures = shadow_overhead.run(requests=12, grace_ms=1000, out=tmp_path)
    assert figures["sent_shadows"] == 12
    records = shadow_report.read_records((tmp_path / "records.jsonl").read_text().splitlines())
    (c,) = shadow_report.write_report(records, tmp_path)
    assert c.shadow.ttft_p50_ms is not None
    assert c.incumbent.ttft_p50_ms is not None
    assert c.shadow.ttft_p50_ms <= (c.shadow.p50_ms or 0), "a first token comes before the whole answer"
    assert c.judge is not None
    assert c.judge.scored == figures["judged"]["scored"] > 0
    assert c.judge.mean_score is not None
    assert 0.0 < c.judge.mean_score < 1.0, "a changed answer is neither identical nor unrelated"

"""Compare a feature's shadow candidate with its incumbent, from the router's shadow records.

Reads log lines (a CloudWatch Logs export or `sam logs` output: anything before the first "{" on a line is
ignored) and keeps the records spillway/shadow.py writes (``"message": "shadow"``, and the judge's
``"message": "shadow_judge"``). Per feature and candidate: requests, p50/p99 latency, p50/p99 time to first token
(where measured: the candidate's streamed call always, the incumbent's when the engine measured one), error and
throttle rates, output-token ratio (candidate over incumbent, on the pairs where both answered), stop-reason mix,
the share of shadows abandoned at the grace (their latency is only known to be above the incumbent's plus the
grace, so they are counted, not put in the percentiles), and the judge's scores where a judge ran (mean, share
below half marks, calls without a score). Writes report.md, report.json and a plot per feature (latency and time
to first token) under the output directory.

    python -m tools.shadow_report LOGFILE [--out reports/shadow]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the incumbent (the targets that answered callers) or the candidate."""

    requests: int
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None
    output_tokens: int
    stop_reasons: dict[str, float]  # share of answers per stop reason
    ttft_p50_ms: float | None = None  # time to first token, where measured
    ttft_p99_ms: float | None = None
    throttle_rate: float | None = None  # incumbent: requests with a throttled attempt; candidate: shadows throttled


@dataclass(frozen=True)
class Judged:
    """The judge's scores of one candidate against the incumbents (0..1: 1 is as good as the incumbent's answer)."""

    calls: int
    scored: int
    mean_score: float | None
    low_share: float | None  # share of scores below 0.5
    unparsed: int  # the judge answered something other than a score
    errors: int


@dataclass(frozen=True)
class Comparison:
    feature: str
    candidate: str
    incumbents: list[str]
    incumbent: Side
    shadow: Side
    abandoned_share: float
    token_ratio: float | None  # candidate output tokens / incumbent output tokens, on the pairs where both answered
    judge: Judged | None = None  # None where no judge ran


KINDS = ("shadow", "shadow_judge")  # the records' "message"


def read_records(lines: Iterable[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("message") in KINDS and "candidate" in doc and "outcome" in doc:
            records.append(doc)
    return records


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _mix(reasons: list[str | None]) -> dict[str, float]:
    known = [r for r in reasons if r is not None]
    counts = Counter(known)
    return {reason: round(n / len(known), 4) for reason, n in sorted(counts.items())} if known else {}


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None]


def _judged(rows: list[dict[str, Any]]) -> Judged | None:
    if not rows:
        return None
    scores = _values([r for r in rows if r["outcome"] == "scored"], "score")
    return Judged(
        calls=len(rows),
        scored=len(scores),
        mean_score=round(sum(scores) / len(scores), 4) if scores else None,
        low_share=round(sum(1 for v in scores if v < 0.5) / len(scores), 4) if scores else None,
        unparsed=sum(1 for r in rows if r["outcome"] == "unparsed"),
        errors=sum(1 for r in rows if r["outcome"] == "error"),
    )


def compare(records: list[dict[str, Any]]) -> list[Comparison]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    judges: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        key = (str(r["feature"]), str(r["candidate"]))
        (judges if r.get("message") == "shadow_judge" else groups)[key].append(r)
    out = []
    for (feature, candidate), rows in sorted(groups.items()):
        incumbent_ok = [r for r in rows if r.get("incumbent_status") == 200]
        incumbent_ttft = _values(rows, "incumbent_ttft_ms")
        incumbent = Side(
            requests=len(rows),
            p50_ms=percentile([float(r["incumbent_ms"]) for r in rows], 0.50),
            p99_ms=percentile([float(r["incumbent_ms"]) for r in rows], 0.99),
            error_rate=round(1 - len(incumbent_ok) / len(rows), 4),
            output_tokens=sum(int(r.get("incumbent_output_tokens") or 0) for r in rows),
            stop_reasons=_mix([r.get("incumbent_stop") for r in incumbent_ok]),
            ttft_p50_ms=percentile(incumbent_ttft, 0.50),
            ttft_p99_ms=percentile(incumbent_ttft, 0.99),
            throttle_rate=round(sum(1 for r in rows if int(r.get("incumbent_throttles") or 0) > 0) / len(rows), 4),
        )
        finished = [r for r in rows if r["outcome"] in ("ok", "error")]
        served = [r for r in finished if r["outcome"] == "ok"]
        candidate_ttft = _values(served, "candidate_ttft_ms")
        throttled = sum(1 for r in finished if r.get("error_class") == "capacity")
        shadow = Side(
            requests=len(rows),
            p50_ms=percentile([float(r["candidate_ms"]) for r in finished], 0.50),
            p99_ms=percentile([float(r["candidate_ms"]) for r in finished], 0.99),
            error_rate=round(1 - len(served) / len(finished), 4) if finished else None,
            output_tokens=sum(int(r.get("candidate_output_tokens") or 0) for r in served),
            stop_reasons=_mix([r.get("candidate_stop") for r in served]),
            ttft_p50_ms=percentile(candidate_ttft, 0.50),
            ttft_p99_ms=percentile(candidate_ttft, 0.99),
            throttle_rate=round(throttled / len(finished), 4) if finished else None,
        )
        pairs = [
            r
            for r in served
            if r.get("incumbent_output_tokens") is not None and r.get("candidate_output_tokens") is not None
        ]
        base = sum(int(r["incumbent_output_tokens"]) for r in pairs)
        ratio = round(sum(int(r["candidate_output_tokens"]) for r in pairs) / base, 4) if base else None
        out.append(
            Comparison(
                feature=feature,
                candidate=candidate,
                incumbents=sorted({str(r["incumbent"]) for r in rows if r.get("incumbent")}),
                incumbent=incumbent,
                shadow=shadow,
                abandoned_share=round(sum(1 for r in rows if r["outcome"] == "abandoned") / len(rows), 4),
                token_ratio=ratio,
                judge=_judged(judges.get((feature, candidate), [])),
            )
        )
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_markdown(comparisons: list[Comparison]) -> str:
    lines = [
        "# Shadow traffic: candidate against incumbent",
        "",
        "| feature | side | target | requests | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms | error rate "
        "| throttled | abandoned | output-token ratio | stop reasons |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in comparisons:
        for name, side, target, abandoned, ratio in (
            ("incumbent", c.incumbent, ", ".join(c.incumbents) or "-", "-", "1"),
            (
                "candidate",
                c.shadow,
                c.candidate,
                _rate(c.abandoned_share),
                "-" if c.token_ratio is None else f"{c.token_ratio:.2f}",
            ),
        ):
            stops = ", ".join(f"{k} {v:.0%}" for k, v in side.stop_reasons.items()) or "-"
            lines.append(
                f"| {c.feature} | {name} | {target} | {side.requests} | {_ms(side.p50_ms)} | {_ms(side.p99_ms)} "
                f"| {_ms(side.ttft_p50_ms)} | {_ms(side.ttft_p99_ms)} | {_rate(side.error_rate)} "
                f"| {_rate(side.throttle_rate)} | {abandoned} | {ratio} | {stops} |"
            )
    if not comparisons:
        lines.append("| (no shadow records) | | | | | | | | | | | | |")
    judged = [c for c in comparisons if c.judge is not None]
    if judged:
        lines += [
            "",
            "## Judge scores (the candidate's answer against the incumbent's: 1 = as good, 0 = wrong or empty)",
            "",
            "| feature | candidate | judge calls | scored | mean score | scores below 0.5 | unparsed | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in judged:
            j = c.judge
            assert j is not None
            mean = "-" if j.mean_score is None else f"{j.mean_score:.2f}"
            lines.append(
                f"| {c.feature} | {c.candidate} | {j.calls} | {j.scored} | {mean} | {_rate(j.low_share)} "
                f"| {j.unparsed} | {j.errors} |"
            )
    return "\n".join(lines) + "\n"


def _cdf(ax: Any, values: list[float], label: str) -> None:
    if values:
        ordered = sorted(values)
        ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label=label)


def plot(comparison: Comparison, records: list[dict[str, Any]], path: Path) -> None:
    """Latency and time to first token (empirical CDFs) of one feature's incumbent and candidate, side by side."""
    import matplotlib  # noqa: PLC0415 (a report's dependency, loaded only to draw)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [
        r
        for r in records
        if r.get("message", "shadow") == "shadow"
        and r["feature"] == comparison.feature
        and r["candidate"] == comparison.candidate
    ]
    finished = [r for r in rows if r["outcome"] in ("ok", "error")]
    incumbent = f"incumbent ({', '.join(comparison.incumbents) or '-'})"
    candidate = f"candidate {comparison.candidate}"
    fig, (latency, ttft) = plt.subplots(1, 2, figsize=(11, 4))
    _cdf(latency, _values(rows, "incumbent_ms"), incumbent)
    _cdf(latency, _values(finished, "candidate_ms"), candidate)
    _cdf(ttft, _values(rows, "incumbent_ttft_ms"), incumbent)
    _cdf(ttft, _values([r for r in rows if r["outcome"] == "ok"], "candidate_ttft_ms"), candidate)
    latency.set_xlabel("latency (ms)")
    ttft.set_xlabel("time to first token (ms)")
    latency.set_ylabel("share of requests at or below")
    score = ""
    if comparison.judge is not None and comparison.judge.mean_score is not None:
        score = f", judge's mean score {comparison.judge.mean_score:.2f}"
    latency.set_title(f"{comparison.feature}: abandoned {comparison.abandoned_share:.1%} of shadows{score}", fontsize=9)
    ttft.set_title("time to first token (where measured)", fontsize=9)
    for ax in (latency, ttft):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(records: list[dict[str, Any]], out: Path) -> list[Comparison]:
    comparisons = compare(records)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_markdown(comparisons), encoding="utf-8")
    (out / "report.json").write_text(json.dumps([asdict(c) for c in comparisons], indent=2) + "\n", encoding="utf-8")
    for c in comparisons:
        safe = f"{c.feature}--{c.candidate}".replace("/", "_")
        plot(c, records, out / f"latency-{safe}.png")
    return comparisons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare shadow candidates with incumbents from router logs.")
    parser.add_argument("logfile", type=Path, help="router log lines (JSON lines, prefixes allowed)")
    parser.add_argument("--out", type=Path, default=Path("reports/shadow"))
    args = parser.parse_args(argv)
    if not args.logfile.is_file():
        parser.error(f"{args.logfile}: no such file")
    with args.logfile.open(encoding="utf-8", errors="replace") as lines:
        records = read_records(lines)
    write_report(records, args.out)
    print((args.out / "report.md").read_text(encoding="utf-8"), end="")
    judged = sum(1 for r in records if r.get("message") == "shadow_judge")
    print(f"{len(records) - judged} shadow records, {judged} judge records; written to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compare a feature's shadow candidate with its incumbent, from the router's shadow records.

Reads log lines (a CloudWatch Logs export or `sam logs` output: anything before the first "{" on a line is
ignored) and keeps the records spillway/shadow.py writes (``"message": "shadow"``). Per feature and candidate:
requests, p50/p99 latency, error rate, output-token ratio (candidate over incumbent, on the pairs where both
answered), stop-reason mix, and the share of shadows abandoned at the grace (their latency is only known to be above
the incumbent's plus the grace, so they are counted, not put in the percentiles). Writes report.md, report.json and
a latency plot per feature under the output directory.

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


@dataclass(frozen=True)
class Comparison:
    feature: str
    candidate: str
    incumbents: list[str]
    incumbent: Side
    shadow: Side
    abandoned_share: float
    token_ratio: float | None  # candidate output tokens / incumbent output tokens, on the pairs where both answered


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
        if isinstance(doc, dict) and doc.get("message") == "shadow" and "candidate" in doc and "outcome" in doc:
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


def compare(records: list[dict[str, Any]]) -> list[Comparison]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(str(r["feature"]), str(r["candidate"]))].append(r)
    out = []
    for (feature, candidate), rows in sorted(groups.items()):
        incumbent_ok = [r for r in rows if r.get("incumbent_status") == 200]
        incumbent = Side(
            requests=len(rows),
            p50_ms=percentile([float(r["incumbent_ms"]) for r in rows], 0.50),
            p99_ms=percentile([float(r["incumbent_ms"]) for r in rows], 0.99),
            error_rate=round(1 - len(incumbent_ok) / len(rows), 4),
            output_tokens=sum(int(r.get("incumbent_output_tokens") or 0) for r in rows),
            stop_reasons=_mix([r.get("incumbent_stop") for r in incumbent_ok]),
        )
        finished = [r for r in rows if r["outcome"] in ("ok", "error")]
        served = [r for r in finished if r["outcome"] == "ok"]
        shadow = Side(
            requests=len(rows),
            p50_ms=percentile([float(r["candidate_ms"]) for r in finished], 0.50),
            p99_ms=percentile([float(r["candidate_ms"]) for r in finished], 0.99),
            error_rate=round(1 - len(served) / len(finished), 4) if finished else None,
            output_tokens=sum(int(r.get("candidate_output_tokens") or 0) for r in served),
            stop_reasons=_mix([r.get("candidate_stop") for r in served]),
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
        "| feature | side | target | requests | p50 ms | p99 ms | error rate | abandoned | output-token ratio "
        "| stop reasons |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
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
                f"| {_rate(side.error_rate)} | {abandoned} | {ratio} | {stops} |"
            )
    if not comparisons:
        lines.append("| (no shadow records) | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def plot(comparison: Comparison, records: list[dict[str, Any]], path: Path) -> None:
    """The two latency distributions (empirical CDFs) of one feature and candidate."""
    import matplotlib  # noqa: PLC0415 (a report's dependency, loaded only to draw)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [r for r in records if r["feature"] == comparison.feature and r["candidate"] == comparison.candidate]
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in (
        (f"incumbent ({', '.join(comparison.incumbents) or '-'})", [float(r["incumbent_ms"]) for r in rows]),
        (
            f"candidate {comparison.candidate}",
            [float(r["candidate_ms"]) for r in rows if r["outcome"] in ("ok", "error")],
        ),
    ):
        if values:
            ordered = sorted(values)
            ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label=label)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of requests at or below")
    ax.set_title(f"{comparison.feature}: abandoned {comparison.abandoned_share:.1%} of shadows")
    ax.grid(alpha=0.3)
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
    print(f"{len(records)} shadow records; written to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m local.demo`: Spillway on your machine, no AWS account.

It starts the emulator for config/platform.yaml (Bedrock and SageMaker in us-east-1 and us-west-2), redis-server
(the fleet store) and the router behind a local API Gateway-shaped endpoint, as Lambda runs it: a
fleet of execution environments, one request each, frozen between requests (``--world process``: one process
instead, quick but not the production shape). Then it drives four phases of traffic:

1. steady    summarize-thread below its Provisioned Throughput (PT) capacity, plus the two other features;
2. surge     summarize-thread at three times its PT capacity: the router spills the excess to on-demand;
3. outage    us-east-1 (the home region) stops answering: breakers open, traffic fails over to us-west-2;
4. recovery  us-east-1 comes back: breakers probe, ramp up and close; traffic returns home.

Once a second it prints a progress line; at the end a summary table (with each target's time to first token, read
from the router's own EMF metric lines: every request measures it, buffered ones too), written with a plot of
traffic per target to reports/demo/, then an image request and a request while Bedrock is out everywhere (Gemini on
Vertex AI, the example's model in another cloud, serves it through the token exchange's loopback stand-ins). Runs in
about a minute.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from local.emulator import Fault
from local.localrun import FleetWorld, Latency, World, iter_classify, make_world
from local.localrun import figures as ff
from local.localrun.emf import fleet_values
from local.localrun.traffic import Record, Traffic, percentile

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "demo"
DOCS = ROOT / "docs"
FEATURE = "summarize-thread"
HOME = "us-east-1"
# The emulator's model: 200 ms to the first token, 5 ms per token, 20 tokens: about 0.3 s per answer. With the
# platform's PT max_in_flight of 8, summarize-thread's PT in us-east-1 serves about 8 / 0.3 = 26 requests/s.
LATENCY = Latency(ttft_ms=200.0, ms_per_token=5.0, output_tokens=20)
SHORT = {"claude-sonnet": "sonnet", "nova-lite": "nova", "llama-escrow": "llama"}
CAP = {"provisioned": "PT", "on_demand": "OD"}


def label(world: World, target_id: str) -> str:
    t = world.target(target_id)
    cap = "SM" if t.kind == "sagemaker" else CAP[t.capacity]
    return f"{SHORT.get(t.model, t.model)} {cap} {t.region}"


def pt_capacity_rps(world: World) -> float:
    pt = world.target(f"claude-sonnet/provisioned/{HOME}")
    per_request_s = (LATENCY.ttft_ms + LATENCY.ms_per_token * LATENCY.output_tokens) / 1000.0
    return (pt.max_in_flight or 1) / per_request_s


class Progress:
    """One line a second: requests in the last second, served per target, failed attempts, environments that
    answered (each environment keeps its own breakers: what callers saw is the fleet-wide view)."""

    def __init__(self, world: World, traffic: Traffic) -> None:
        self.world = world
        self.traffic = traffic
        self.seen = 0

    def __call__(self, phase: str, _elapsed: float) -> None:
        records = self.traffic.of()
        fresh = records[self.seen :]
        self.seen = len(records)
        served = Counter(label(self.world, r.target) for r in fresh if r.served and r.target)
        dropped = sum(1 for r in fresh if not r.served)
        failed = len(ff.dead_attempts(fresh, set(self.world.by_id)))
        environments = len({r.environment for r in fresh if r.environment is not None})
        per_target = "  ".join(f"{name} {n:>3}" for name, n in sorted(served.items(), key=lambda kv: -kv[1]))
        print(
            f"[{self.traffic.now():5.1f}s] {phase:<8} {len(fresh):>3} req/s  dropped {dropped:>2}  in flight "
            f"{self.traffic.in_flight:>3} | {per_target} | failed attempts {failed:>3}, environments {environments:>2}",
            flush=True,
        )


def ttft_table(world: World, first_tokens: dict[str, list[float]] | None) -> list[str]:
    """Time to first token per target, as the router's metrics report it (the TimeToFirstToken values of its EMF
    lines: p50, p90 (what breakers hold to a feature's ttft_ms), p99 of every attempt that got a first token)."""
    header = f"{'time to first token by target':<36}{'attempts':>9}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
    if first_tokens is None:
        return ["", header, "(fleet world only: read from its environments' EMF metric lines)"]
    lines = ["", header]
    for target_id in sorted(first_tokens, key=lambda t: (-len(first_tokens[t]), t)):
        values = first_tokens[target_id]
        if target_id not in world.by_id or not values:
            continue
        lines.append(
            f"{target_id:<36}{len(values):>9}{percentile(values, 50):>8.0f}{percentile(values, 90):>8.0f}"
            f"{percentile(values, 99):>8.0f}"
        )
    return lines


def summarize(
    world: World,
    traffic: Traffic,
    phases: list[str],
    seconds: float,
    first_tokens: dict[str, list[float]] | None = None,
) -> str:
    records = traffic.of()
    table = world.table_doc
    lines = [
        f"Spillway local demo: {len(records)} requests in {seconds:.0f} s "
        f"(emulated Bedrock and SageMaker in us-east-1 and us-west-2, router behind a local API Gateway endpoint)",
        "",
        f"{'phase':<10}{'requests':>9}{'served':>8}{'spilled':>9}{'fell back':>11}{'failed over':>13}"
        f"{'dropped':>9}{'p50 ms':>8}{'p99 ms':>8}",
    ]

    def row(name: str, rs: list[Record]) -> str:
        flags: Counter[str] = Counter()
        for r in rs:
            if r.served:
                flags.update(iter_classify(table, r.feature, r.target))
        served = [r for r in rs if r.served]
        lat = [r.latency_ms for r in served]
        return (
            f"{name:<10}{len(rs):>9}{len(served):>8}{flags['spilled']:>9}{flags['fell_back']:>11}"
            f"{flags['failed_over']:>13}{len(rs) - len(served):>9}"
            f"{percentile(lat, 50):>8.0f}{percentile(lat, 99):>8.0f}"
        )

    for phase in phases:
        lines.append(row(phase, [r for r in records if r.phase == phase]))
    lines.append(row("total", records))
    lines += ["", f"{'served by target':<36}{'requests':>9}{'share':>8}"]
    per_target = Counter(r.target for r in records if r.served and r.target)
    total_served = max(1, sum(per_target.values()))
    for target_id in sorted(world.by_id, key=lambda t: (-per_target.get(t, 0), t)):
        n = per_target.get(target_id, 0)
        lines.append(f"{target_id:<36}{n:>9}{n / total_served:>8.1%}")
    lines += ttft_table(world, first_tokens)
    features = Counter(r.feature for r in records)
    lines += [
        "",
        "features: " + ", ".join(f"{f} {n}" for f, n in sorted(features.items())),
        "spilled: served on on-demand although the feature starts on provisioned; fell back: served by a model",
        "after the first of its hierarchy; failed over: served outside the home region; dropped: any answer",
        "other than 200. Time to first token: the emulated model's own (200 ms) plus the router's and the wire's.",
    ]
    return "\n".join(lines) + "\n"


def plot(world: World, traffic: Traffic, bounds: list[tuple[str, float, float]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (only the plot needs it: ~0.5 s to import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    records = traffic.of()
    end = int(max((r.done_s for r in records), default=1.0)) + 1
    order = {t.id: (t.region != HOME, t.model, t.capacity) for t in world.by_id.values()}
    targets = sorted({r.target for r in records if r.served and r.target}, key=lambda t: order[t])
    series: dict[str, list[int]] = {t: [0] * end for t in targets}
    dropped = [0] * end
    for r in records:
        second = int(r.done_s)
        if r.served and r.target:
            series[r.target][second] += 1
        else:
            dropped[second] += 1
    xs = list(range(end))
    fig, ax = plt.subplots(figsize=(11, 5.2), dpi=110)
    palette = plt.get_cmap("tab10")
    fixed = {t: palette(i) for i, t in enumerate(sorted(world.by_id, key=lambda t: order[t]))}
    # Stacked bottom-up in this order; the legend lists them top-down, as they appear on the plot.
    ax.stackplot(
        xs,
        *[series[t] for t in targets],
        labels=[label(world, t) for t in targets],
        colors=[fixed[t] for t in targets],
        step="post",
        alpha=0.85,
    )
    if any(dropped):
        ax.plot(xs, dropped, color="black", linestyle="--", label="dropped")
    shades = {"steady": "#ffffff", "surge": "#fff4d6", "outage": "#fde0dd", "recovery": "#e5f5e0"}
    top = max(sum(series[t][i] for t in targets) for i in xs) if targets else 1
    for name, start, stop in bounds:
        ax.axvspan(start, stop, color=shades.get(name, "#f0f0f0"), alpha=0.6, zorder=0)
        ax.text((start + stop) / 2, top * 1.04, name, ha="center", va="bottom", fontsize=10)
    ax.set_ylim(0, top * 1.15)
    ax.set_xlim(0, end - 1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests served per second")
    ax.set_title("Spillway local demo: traffic per target (surge to 3x PT, then a us-east-1 outage)", fontsize=11)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# A 1x1 PNG: the demo's multimodal request (its bytes travel base64 in the JSON body, decoded once for Bedrock).
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def image_request(world: World) -> str:
    """One Converse request with an image to redact-escrow, whose first model (a SageMaker chat-completions
    endpoint) cannot express it: the plan passes over it as unsupported and the next model of the hierarchy serves."""
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(TINY_PNG).decode()}}}
    body = {"messages": [{"role": "user", "content": [{"text": "What is in this picture?"}, image]}]}
    reply = world.http.converse("redact-escrow", body)
    route = ", ".join(f"{target}={outcome}" for target, outcome in reply.route)
    return f"\nan image to redact-escrow: HTTP {reply.status}, served by {reply.target}; route {route}\n"


def other_cloud_request(world: World) -> str:
    """Bedrock out in every region for one request to summarize-thread: Gemini on Vertex AI (the example's model in
    another cloud) serves it, with an access token the router got from its role through the token exchange."""
    faults = [
        world.set_fault(t.id, Fault.error_response("unavailable")) for t in world.by_id.values() if t.kind == "bedrock"
    ]
    try:
        reply = world.http.converse(FEATURE, {"messages": [{"role": "user", "content": [{"text": "Summarize: ..."}]}]})
    finally:
        for fault in faults:
            world.emu.remove_fault(fault)
    route = ", ".join(f"{target}={outcome}" for target, outcome in reply.route)
    served = f"HTTP {reply.status}, served by {reply.target}"
    return f"Bedrock out everywhere, one request to {FEATURE}: {served}; route {route}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phase-seconds", type=float, default=13.0, help="length of each phase (default 13)")
    parser.add_argument("--out", type=Path, default=OUT, help="where summary.txt and traffic.png go")
    parser.add_argument("--docs", action="store_true", help="also copy them to docs/demo-*.{txt,png}")
    parser.add_argument("--world", choices=("fleet", "process"), default="fleet", help="the router's shape")
    parser.add_argument("--environments", type=int, default=40, help="reserved concurrency of the fleet (40)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(
        "Starting the emulator (Bedrock + SageMaker, us-east-1 and us-west-2), redis-server (the fleet store) and the "
        f"router ({'a fleet of execution environments' if args.world == 'fleet' else 'one process'})..."
    )
    warm = args.environments  # every environment warm before the phases: cold starts here share the CPU
    with make_world(args.world, latency=LATENCY, reserved_concurrency=args.environments, warm=warm) as world:
        pt_rps = pt_capacity_rps(world)
        steady = round(pt_rps * 0.7)
        surge = round(pt_rps * 3)
        others = {"redact-escrow": 3.0, "nightly-recap": 2.0}
        print(
            f"Router at {world.url} (API Gateway event shape); summarize-thread's PT in {HOME} serves about "
            f"{pt_rps:.0f} req/s."
        )
        print(
            f"Phases of {args.phase_seconds:.0f} s: steady {steady} req/s, surge {surge} req/s (3x PT), outage of "
            f"{HOME}, recovery; plus redact-escrow 3 req/s and nightly-recap 2 req/s throughout.\n"
        )
        traffic = Traffic(world.http, max_in_flight=160)
        progress = Progress(world, traffic)
        length = args.phase_seconds
        plan: list[tuple[str, float, list[tuple[float, Any]]]] = [
            ("steady", steady, []),
            ("surge", surge, []),
            ("outage", steady, [(0.0, lambda: world.region_down(HOME))]),
            ("recovery", steady, [(0.0, lambda: world.region_up(HOME))]),
        ]
        bounds = []
        for name, rate, hooks in plan:
            begin = traffic.now()
            if name == "outage":
                print(f"--- {HOME} goes down: its listener refuses every connection ---", flush=True)
            if name == "recovery":
                print(f"--- {HOME} is back ---", flush=True)
            traffic.phase(name, {FEATURE: rate, **others}, length, every_second=progress, at=hooks)
            bounds.append((name, begin, traffic.now()))
        traffic.close()
        seconds = traffic.now()
        first_tokens = fleet_values(world.workdir, "TimeToFirstToken") if isinstance(world, FleetWorld) else None
        summary = summarize(world, traffic, [p[0] for p in plan], seconds, first_tokens) + image_request(world)
        summary += other_cloud_request(world)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.txt").write_text(summary)
        plot(world, traffic, bounds, args.out / "traffic.png")
    print("\n" + summary)
    print(f"Wrote {args.out / 'summary.txt'} and {args.out / 'traffic.png'} ({time.monotonic() - started:.0f} s).")
    if args.docs:
        shutil.copyfile(args.out / "summary.txt", DOCS / "demo-summary.txt")
        shutil.copyfile(args.out / "traffic.png", DOCS / "demo-traffic.png")
        print("Copied them to docs/demo-summary.txt and docs/demo-traffic.png.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

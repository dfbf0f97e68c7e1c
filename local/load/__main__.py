"""`python -m local.load --concurrency 8 --duration 20`: closed-loop load through the local endpoint.

`concurrency` callers each send their next request as soon as the last one is answered, for `duration` seconds,
through the router (real handler, real boto3 clients) to the emulator. The router runs as Lambda runs it: a fleet
of `concurrency` execution environments, one request each, frozen between requests (``--world process``: in this
process). It reports throughput, p50/p99 latency, errors, and the router's resident memory over time: the largest
environment's (``--world process``: this process's, router, emulator and callers together). Memory is "flat" when
the mean RSS of the last quarter of the run is within 10% of the second quarter's (the first quarter is warm-up:
clients, connection pools, caches). Exit status 1 when there were errors or memory grew.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from local.localrun import FleetWorld, Latency, World, converse_body, make_world
from local.localrun.traffic import percentile

FEATURES = ("summarize-thread", "summarize-thread", "summarize-thread", "redact-escrow", "nightly-recap")


def rss_kib(pid: int | str = "self") -> int:
    """VmRSS of a process, from /proc/PID/status (Linux); 0 when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def router_rss_kib(world: World) -> int:
    """The router's memory: the largest environment of a fleet, or this whole process in the one-process world."""
    if isinstance(world, FleetWorld):
        return max((rss_kib(e.pid) for e in world.functions.environments()), default=0)
    return rss_kib()


def run(
    concurrency: int, duration_s: float, latency: Latency, sample_s: float = 0.5, shape: str = "fleet"
) -> dict[str, Any]:
    settings: dict[str, Any] = {"latency": latency, "on_demand_max_in_flight": None}
    with make_world(shape, reserved_concurrency=concurrency, warm=concurrency, **settings) as world:
        body = converse_body()
        latencies: list[list[float]] = [[] for _ in range(concurrency)]
        errors: list[dict[str, int]] = [{} for _ in range(concurrency)]
        stop = threading.Event()
        # Warm-up outside the measured window: first clients and connections.
        for feature in set(FEATURES):
            world.http.converse(feature, body)

        def caller(i: int) -> None:
            n = 0
            while not stop.is_set():
                feature = FEATURES[(i + n) % len(FEATURES)]
                n += 1
                try:
                    reply = world.http.converse(feature, body)
                    status = reply.status
                    latencies[i].append(reply.elapsed_ms)
                except Exception as exc:  # no answer at all
                    status = 0
                    errors[i][type(exc).__name__] = errors[i].get(type(exc).__name__, 0) + 1
                if status != 200:
                    errors[i][str(status)] = errors[i].get(str(status), 0) + 1
            world.http.close()

        samples: list[tuple[float, int]] = []
        threads = [threading.Thread(target=caller, args=(i,), name=f"load-{i}") for i in range(concurrency)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while (elapsed := time.monotonic() - t0) < duration_s:
            samples.append((round(elapsed, 2), router_rss_kib(world)))
            time.sleep(sample_s)
        stop.set()
        for t in threads:
            t.join(timeout=40)
        wall = time.monotonic() - t0
        samples.append((round(wall, 2), router_rss_kib(world)))
    all_lat = [x for per in latencies for x in per]
    err: dict[str, int] = {}
    for per in errors:
        for k, v in per.items():
            err[k] = err.get(k, 0) + v
    quarter = max(1, len(samples) // 4)
    second_q = [kib for _, kib in samples[quarter : 2 * quarter]]
    last_q = [kib for _, kib in samples[-quarter:]]
    growth = statistics.mean(last_q) / statistics.mean(second_q) - 1.0
    return {
        "concurrency": concurrency,
        "duration_s": round(wall, 2),
        "requests": len(all_lat) + sum(v for k, v in err.items() if not k.isdigit()),
        "throughput_rps": round(len(all_lat) / wall, 1),
        "p50_ms": round(percentile(all_lat, 50), 1),
        "p99_ms": round(percentile(all_lat, 99), 1),
        "errors": err,
        "rss_mib": [(t, round(kib / 1024, 1)) for t, kib in samples],
        "rss_growth_last_vs_second_quarter": round(growth, 4),
        "memory_flat": abs(growth) <= 0.10,
        "emulator_latency_ms": latency.ttft_ms + latency.ms_per_token * latency.output_tokens,
        "world": shape,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=8, help="callers in parallel (default 8; max 64)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20; max 300)")
    parser.add_argument("--model-ms", type=float, default=20.0, help="emulator time to first token (default 20)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--world", choices=("fleet", "process"), default="fleet", help="the router's shape")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 64 or not 1 <= args.duration <= 300:
        parser.error("concurrency 1-64 and duration 1-300 s keep the test bounded")
    print(
        f"load: {args.concurrency} callers for {args.duration:.0f} s through the local endpoint "
        f"(emulator {args.model_ms:.0f} ms to first token)...",
        flush=True,
    )
    result = run(args.concurrency, args.duration, Latency(ttft_ms=args.model_ms, ms_per_token=0.0), shape=args.world)
    print(
        f"requests {result['requests']}  throughput {result['throughput_rps']} req/s  p50 {result['p50_ms']} ms  "
        f"p99 {result['p99_ms']} ms  errors {sum(result['errors'].values())} {result['errors'] or ''}"
    )
    series = result["rss_mib"]
    step = max(1, len(series) // 10)
    print("RSS over time (s: MiB): " + "  ".join(f"{t:.0f}: {m}" for t, m in series[::step]))
    verdict = "flat" if result["memory_flat"] else "GROWING"
    print(
        f"memory {verdict}: last quarter {result['rss_growth_last_vs_second_quarter']:+.1%} against the second "
        f"(limit 10%)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = result["memory_flat"] and not result["errors"]
    print(f"load: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

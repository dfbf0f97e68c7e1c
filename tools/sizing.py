"""`python -m tools.sizing` (`make size`): find what one target sustains, by a stepped load, and write the values
the platform file needs.

Against the project's emulator by default: the tool starts it on loopback with the capacity given (`--emulate-*`),
so the run is a check of the method against a known answer. Against a real Provisioned Throughput or endpoint in
AWS only with `--aws` AND credentials AND `--model-id`; otherwise it refuses before any client exists.

Each step holds `c` requests in flight (closed loop: `c` workers, each sending the next request when its answer
comes back) for `--step-seconds`, from `--start` up by `--step`. The load stops at the first step that throttles
more than `--max-throttle-share` of its requests, or whose median latency passes `--knee` times the first step's
(the latency knee), or at the bounds (`--max-concurrency`, `--max-requests`, `--max-seconds`). The sustainable
concurrency is the last step that did neither; its tokens per minute (per model unit, given `--model-units`) and a
`max_in_flight` go to a YAML snippet for config/platform.yaml, with the model units the traffic profile's peak needs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import matplotlib
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from local.emulator import Emulator, TargetSpec
from local.emulator.targets import Kind
from stacks.platform import load_platform
from tools.planner.inputs import load_traffic

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Summarize the thread, please."  # what the load sends; the answer is never read or kept


@dataclass
class Step:
    concurrency: int
    requests: int = 0
    throttled: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def throttle_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def tokens_per_minute(self) -> float:
        return self.tokens / self.seconds * 60.0 if self.seconds else 0.0


@dataclass
class Result:
    steps: list[Step]
    sustainable: Step | None
    stopped_because: str


Call = Callable[[], tuple[str, int]]  # one request: ("ok" | "throttled" | "error", tokens used)


def run_step(call: Call, concurrency: int, seconds: float, budget: int) -> Step:
    """Hold `concurrency` requests in flight for `seconds` (or until `budget` requests were sent)."""
    step = Step(concurrency)
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    sent = [0]

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                if sent[0] >= budget:
                    return
                sent[0] += 1
            t0 = time.monotonic()
            outcome, tokens = call()
            latency_ms = (time.monotonic() - t0) * 1000.0
            with lock:
                step.requests += 1
                if outcome == "ok":
                    step.latencies_ms.append(latency_ms)
                    step.tokens += tokens
                elif outcome == "throttled":
                    step.throttled += 1
                else:
                    step.errors += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"sizing-{i}") for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    step.seconds = time.monotonic() - t0
    return step


def stepped_load(
    run_at: Callable[[int, int], Step],
    *,
    start: int,
    step: int,
    max_concurrency: int,
    step_seconds: float,
    max_throttle_share: float,
    knee: float,
    max_requests: int,
    max_seconds: float,
    progress: Callable[[Step], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Result:
    """Step up until a step throttles, errs or passes the knee, or a bound is reached. `run_at(concurrency,
    request_budget)` runs one step (run_step against a real target)."""
    steps: list[Step] = []
    sustainable: Step | None = None
    t_end = clock() + max_seconds
    left = max_requests
    c = start
    while True:
        if c > max_concurrency:
            return Result(
                steps, sustainable, f"reached --max-concurrency {max_concurrency} without throttles or a knee"
            )
        if left <= 0:
            return Result(steps, sustainable, f"spent --max-requests {max_requests}")
        if clock() + step_seconds > t_end:
            return Result(steps, sustainable, f"out of --max-seconds {max_seconds:g}")
        s = run_at(c, left)
        left -= s.requests
        steps.append(s)
        if progress is not None:
            progress(s)
        if s.requests and s.errors / s.requests > max_throttle_share:
            return Result(steps, sustainable, f"{s.errors} errors at {c} in flight (not throttles: check the target)")
        if s.throttle_share > max_throttle_share:
            return Result(steps, sustainable, f"throttles at {c} in flight ({s.throttle_share:.1%} of requests)")
        if steps[0].p50_ms and s.p50_ms > knee * steps[0].p50_ms:
            return Result(steps, sustainable, f"latency knee at {c} in flight (p50 {s.p50_ms:.0f} ms)")
        sustainable = s
        c += step


def bedrock_call(client: Any, model_id: str, max_tokens: int) -> Call:
    body = [{"role": "user", "content": [{"text": PROMPT}]}]

    def call() -> tuple[str, int]:
        try:
            reply = client.converse(modelId=model_id, messages=body, inferenceConfig={"maxTokens": max_tokens})
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            return ("throttled" if "Throttl" in code or code == "ServiceQuotaExceededException" else "error", 0)
        except Exception:  # a transport failure counts as an error of the step, never as capacity
            return ("error", 0)
        usage = reply.get("usage", {})
        return ("ok", int(usage.get("inputTokens", 0)) + int(usage.get("outputTokens", 0)))

    return call


def client_for(region: str, endpoint_url: str | None, timeout_s: float) -> Any:
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},  # every throttle is seen, none retried
        read_timeout=timeout_s,
        connect_timeout=2,
        max_pool_connections=256,
    )
    if endpoint_url is None:
        return boto3.client("bedrock-runtime", region_name=region, config=config)
    return boto3.client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (the emulator checks no signature)
        config=config,
    )


def units_for_peak(model: str, tokens_per_minute_per_unit: float, traffic: Path, platform: Path) -> int | None:
    """Model units the traffic profile's peak needs on `model` (features starting on it with PT), if any."""
    if not traffic.exists() or tokens_per_minute_per_unit <= 0:
        return None
    p = load_platform(platform)
    t = load_traffic(traffic, p.features)
    peaks = [
        f.peak_tokens_per_minute
        for name, f in t.features.items()
        if p.features[name].models[0] == model and p.features[name].first_capacity == "provisioned"
    ]
    return math.ceil(max(peaks) / tokens_per_minute_per_unit) if peaks else None


def snippet(result: Result, *, model: str, region: str, units: int, target: str, units_needed: int | None) -> str:
    s = result.sustainable
    assert s is not None
    per_unit = s.tokens_per_minute / units
    lines = [
        f"# python -m tools.sizing against {target}, {time.strftime('%Y-%m-%d', time.gmtime())}: "
        f"{s.concurrency} requests in flight sustained, {s.tokens_per_minute:,.0f} tokens/min "
        f"({per_unit:,.0f} per model unit, {units} unit(s) measured), p50 {s.p50_ms:.0f} ms.",
        f"# Stopped: {result.stopped_because}.",
        "models:",
        f"  {model}:",
        "    regions:",
        f"      {region}:",
        "        provisioned:",
        f"          max_in_flight: {s.concurrency}",
    ]
    if units_needed is not None:
        lines.append(
            f"          # model units for the traffic profile's peak at {per_unit:,.0f} tokens/min each: {units_needed}"
        )
        lines.append(
            f"          # create: {{model_units: {units_needed}, commitment: ONE_MONTH, acknowledge_cost: ...}}"
        )
    lines += [
        "# For the planner (config/traffic.yaml, capacity.models):",
        f"#   {model}: {{tokens_per_minute_per_unit: {per_unit:.0f}, "
        f"max_in_flight_per_unit: {max(1, s.concurrency // units)}}}",
    ]
    return "\n".join(lines) + "\n"


def write_plot(result: Result, path: Path, title: str) -> None:
    c = [s.concurrency for s in result.steps]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(c, [s.tokens_per_minute for s in result.steps], marker="o", label="tokens/min served")
    ax.set_xlabel("requests in flight")
    ax.set_ylabel("tokens per minute")
    ax2 = ax.twinx()
    ax2.plot(c, [s.p50_ms for s in result.steps], marker="s", color="tab:orange", label="p50 latency (ms)")
    ax2.plot(c, [100 * s.throttle_share for s in result.steps], marker="x", color="tab:red", label="throttled (%)")
    ax2.set_ylabel("ms / %")
    if result.sustainable is not None:
        ax.axvline(result.sustainable.concurrency, linestyle="--", color="green", label="sustainable")
    ax.set_title(title)
    fig.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _has_credentials() -> bool:
    try:
        return boto3.session.Session().get_credentials() is not None
    except BotoCoreError:  # a credential provider that fails is no credentials
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.sizing", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="claude-sonnet", help="the platform's model name (for the snippet)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--model-units", type=int, default=1, help="model units of the PT under test")
    parser.add_argument("--aws", action="store_true", help="load a real target in AWS (needs credentials)")
    parser.add_argument("--model-id", help="with --aws: the PT ARN or model id to load")
    parser.add_argument("--emulate-max-in-flight", type=int, default=8)
    parser.add_argument("--emulate-tokens-per-minute", type=int, default=None)
    parser.add_argument("--emulate-ttft-ms", type=float, default=150.0)
    parser.add_argument("--emulate-ms-per-token", type=float, default=2.0)
    parser.add_argument("--max-tokens", type=int, default=64, help="maxTokens of each request")
    parser.add_argument("--start", type=int, default=1)
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--step-seconds", type=float, default=2.0)
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--max-throttle-share", type=float, default=0.01)
    parser.add_argument("--knee", type=float, default=2.0, help="latency knee: p50 over this multiple of the first")
    parser.add_argument("--traffic", type=Path, default=ROOT / "config" / "traffic.yaml")
    parser.add_argument("--platform", type=Path, default=ROOT / "config" / "platform.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "sizing")
    args = parser.parse_args(argv)
    for name in ("model_units", "start", "step", "max_concurrency", "max_requests"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.step_seconds <= 0 or args.max_seconds <= 0:
        parser.error("--step-seconds and --max-seconds must be > 0")
    return args


def _progress(s: Step) -> None:
    print(
        f"  {s.concurrency:3d} in flight: {s.requests:5d} requests, {s.throttle_share:6.1%} throttled, "
        f"p50 {s.p50_ms:6.0f} ms, {s.tokens_per_minute:10,.0f} tokens/min",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emulator = None
    if args.aws:
        if not args.model_id:
            print("error: --aws needs --model-id (the PT ARN or model id to load)", file=sys.stderr)
            return 2
        if not _has_credentials():
            print("error: --aws needs AWS credentials (none found); refusing to run", file=sys.stderr)
            return 2
        client = client_for(args.region, None, 60.0)
        target = model_id = args.model_id
    else:
        if args.model_id:
            print("error: --model-id names a target in AWS: add --aws (and credentials) to load it", file=sys.stderr)
            return 2
        spec = TargetSpec(
            args.region,
            Kind.BEDROCK,
            "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/sizing",
            max_in_flight=args.emulate_max_in_flight,
            tokens_per_minute=args.emulate_tokens_per_minute,
            ttft_ms=args.emulate_ttft_ms,
            ms_per_token=args.emulate_ms_per_token,
            output_tokens=args.max_tokens,
        )
        emulator = Emulator([spec], appconfig=False).start()
        client = client_for(args.region, emulator.endpoint_url(args.region), 30.0)
        model_id = spec.id
        target = f"the emulator (max_in_flight {args.emulate_max_in_flight}) on loopback"
    try:
        print(f"sizing {target}: steps of {args.step_seconds:g} s from {args.start} in flight", file=sys.stderr)

        call = bedrock_call(client, model_id, args.max_tokens)
        result = stepped_load(
            lambda concurrency, budget: run_step(call, concurrency, args.step_seconds, budget),
            start=args.start,
            step=args.step,
            max_concurrency=args.max_concurrency,
            step_seconds=args.step_seconds,
            max_throttle_share=args.max_throttle_share,
            knee=args.knee,
            max_requests=args.max_requests,
            max_seconds=args.max_seconds,
            progress=_progress,
        )
    finally:
        if emulator is not None:
            emulator.stop()
    print(f"stopped: {result.stopped_because}", file=sys.stderr)
    if result.sustainable is None:
        print("error: not even the first step was sustainable; lower --start", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    per_unit = result.sustainable.tokens_per_minute / args.model_units
    needed = units_for_peak(args.model, per_unit, args.traffic, args.platform)
    text = snippet(
        result, model=args.model, region=args.region, units=args.model_units, target=target, units_needed=needed
    )
    (args.out / "platform-snippet.yaml").write_text(text)
    write_plot(result, args.out / "sizing.png", f"stepped load: {target}")
    print(text)
    print(f"wrote {args.out / 'platform-snippet.yaml'}, {args.out / 'sizing.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

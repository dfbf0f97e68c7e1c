"""What shadowing costs the caller: p50 and p99 of the caller's latency with shadowing on and off, same run.

Shape: one process serving one request at a time, as a Lambda instance does; the router's own engine and shadower
(spillway/shadow.py) over backends that sleep for a seeded log-normal latency (incumbent median 20 ms, candidate
median 30 ms: a slower candidate is the case the grace exists for; 1 in 200 candidate calls throttles). A fifth of
each latency is the time to its first token: the candidate streams (the shadower measures it), the incumbent's reply
states it, as a streamed attempt's would. A judge (the feature's ``shadow.judge``, a quarter of the served shadows)
scores the candidate's answer with the emulator's judge (local/emulator/judge.py): the candidate's answer is the
incumbent's with about one word in four changed. Requests alternate on/off so load drift on a shared machine falls
on both sides alike. The handler's own work is the same with and without a shadow and is left out. Also writes the
run's shadow and judge records (the log lines' fields) to reports/shadow/records.jsonl, the input
`make shadow-report` reads by default.

    python -m tools.shadow_overhead [--requests 400] [--grace-ms 50] [--out reports/shadow]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambdas" / "router"))

from local.emulator.judge import judge_reply
from spillway.backends.contract import BackendReply, Usage
from spillway.config import RoutingTable, Target, parse_routing_table
from spillway.engine import Engine
from spillway.errors import BackendError
from spillway.shadow import JudgeRecord, Shadower, ShadowRecord
from spillway.streaming import StreamEvent

FEATURE = "summarize-thread"
INCUMBENT = "claude-sonnet/provisioned/us-east-1"
CANDIDATE = "nova-lite/on_demand/us-east-1"
JUDGE = "llama-escrow/provisioned/us-east-1"
MEDIAN_MS = {INCUMBENT: 20.0, CANDIDATE: 30.0, JUDGE: 5.0}
FIRST_TOKEN_SHARE = 0.2  # of a call's latency, before its first token
THROTTLE_SHARE = 0.005
JUDGE_SHARE = 0.25
CHANGED_WORDS = 0.25  # of the candidate's answer, against the incumbent's
VOCABULARY = ("the", "router", "sends", "each", "request", "to", "a", "model", "and", "spills", "when", "full")


def table(share: float, grace_ms: float) -> RoutingTable:
    def target(tid: str) -> dict[str, Any]:
        model, capacity, region = tid.split("/")
        return {
            "model": model,
            "capacity": capacity,
            "region": region,
            "backend": {"kind": "bedrock", "model_id": f"{model}-{capacity}"},
        }

    feature: dict[str, Any] = {
        "first_capacity": "provisioned",
        "models": ["claude-sonnet"],
        "home_region": "us-east-1",
        "deadline_ms": 20000,
        "attempt_timeout_ms": {"min": 300, "max": 8000},
        "max_attempts": 2,
        "order": [],
    }
    if share:
        judge = {"target": JUDGE, "share": JUDGE_SHARE, "max_per_minute": 600}
        feature["shadow"] = {"target": CANDIDATE, "share": share, "grace_ms": grace_ms, "judge": judge}
    return parse_routing_table(
        {"version": 1, "targets": {t: target(t) for t in MEDIAN_MS}, "features": {FEATURE: feature}}
    )


def answer_words(request: Mapping[str, Any], target_id: str) -> str:
    """The request's answer: words drawn from its text (the same for every model), about one in four changed on
    the candidate. Deterministic: the same request gets the same answers."""
    question = json.dumps(request, sort_keys=True)
    words = random.Random(question).choices(VOCABULARY, k=24)  # noqa: S311 (simulated answers)
    if target_id == CANDIDATE:
        change = random.Random(question + target_id)  # noqa: S311
        words = [change.choice(VOCABULARY) if change.random() < CHANGED_WORDS else w for w in words]
    return " ".join(words)


def converse_text(request: Mapping[str, Any]) -> str:
    return "\n".join(
        block["text"] for message in request["messages"] for block in message["content"] if "text" in block
    )


class SleepingModel:
    """Models that take a log-normal time (sigma 0.5), a fifth of it before the first token; thread-safe draws.
    Each streams (the engine serves buffered requests through the stream, the shadower streams the candidate) or
    answers whole (the judge, with the emulator's score)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 (a benchmark's latencies, not a secret)
        self._lock = threading.Lock()

    def _draw(self, target: Target) -> tuple[float, bool, int]:
        with self._lock:
            delay_s = MEDIAN_MS[target.id] / 1000.0 * self._random.lognormvariate(0.0, 0.5)
            throttled = target.id == CANDIDATE and self._random.random() < THROTTLE_SHARE
            tokens = self._random.randint(80, 400)
        return delay_s, throttled, tokens

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        delay_s, throttled, tokens = self._draw(target)
        time.sleep(min(delay_s, timeout_s))
        if throttled:
            raise BackendError.of("ThrottlingException", 429)
        if target.id == JUDGE:
            text = judge_reply(converse_text(request)) or "no score"
            return BackendReply({"output": {"message": {"content": [{"text": text}]}}}, delay_s * 1000.0)
        words = tokens if target.id == INCUMBENT else int(tokens * 1.3)
        stop = "end_turn" if words < 380 else "max_tokens"
        response = {
            "output": {"message": {"content": [{"text": answer_words(request, target.id)}]}},
            "stopReason": stop,
        }
        ttft_ms = delay_s * FIRST_TOKEN_SHARE * 1000.0
        return BackendReply(response, delay_s * 1000.0, ttft_ms=ttft_ms, usage=Usage(120, words))

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> Iterable[StreamEvent]:
        """The candidate's answer as ConverseStream events: the first after a fifth of its time, the rest after."""
        delay_s, throttled, tokens = self._draw(target)
        if throttled:
            raise BackendError.of("ThrottlingException", 429)
        words = tokens if target.id == INCUMBENT else int(tokens * 1.3)
        stop = "end_turn" if words < 380 else "max_tokens"
        text = answer_words(request, target.id)
        return _SleepingStream(delay_s, timeout_s, text, stop, words)


class _SleepingStream:
    def __init__(self, delay_s: float, timeout_s: float, text: str, stop: str, words: int) -> None:
        self._delay_s = min(delay_s, timeout_s)
        self._text, self._stop, self._words = text, stop, words

    def __iter__(self) -> Iterator[StreamEvent]:
        yield "messageStart", {"role": "assistant"}
        time.sleep(self._delay_s * FIRST_TOKEN_SHARE)
        yield "contentBlockDelta", {"delta": {"text": self._text}, "contentBlockIndex": 0}
        time.sleep(self._delay_s * (1 - FIRST_TOKEN_SHARE))
        yield "contentBlockStop", {"contentBlockIndex": 0}
        yield "messageStop", {"stopReason": self._stop}
        yield "metadata", {"usage": {"inputTokens": 120, "outputTokens": self._words}}

    def close(self) -> None:
        return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(requests: int, grace_ms: float, out: Path) -> dict[str, Any]:
    backends = {"bedrock": SleepingModel(seed=7)}
    records: list[ShadowRecord] = []
    judged: list[JudgeRecord] = []
    shadower = Shadower(backends, emit=records.append, emit_judge=judged.append)
    sides = {"off": table(0.0, grace_ms), "on": table(1.0, grace_ms)}
    engines = {name: Engine(t, backends) for name, t in sides.items()}
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(requests * 2):
        side = "on" if i % 2 else "off"
        request = {"messages": [{"role": "user", "content": [{"text": f"question {i}"}]}]}
        t0 = time.perf_counter()
        shadower.mirror(
            sides[side], FEATURE, request, f"bench-{i}", lambda s=side, r=request: engines[s].handle(FEATURE, r)
        )
        latencies[side].append((time.perf_counter() - t0) * 1000.0)
    shadower.wait_idle(10)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "records.jsonl").open("w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps({"message": "shadow", **asdict(record)}) + "\n")
        for judge in judged:
            sink.write(json.dumps({"message": "shadow_judge", **asdict(judge)}) + "\n")
    outcomes = {name: sum(1 for r in records if r.outcome == name) for name in ("ok", "error", "abandoned")}
    figures = {
        "shape": "one process, one request at a time (a Lambda instance), engine + shadower, sleeping backends",
        "requests_per_side": requests,
        "grace_ms": grace_ms,
        "p50_ms": {side: round(percentile(v, 0.50), 2) for side, v in latencies.items()},
        "p99_ms": {side: round(percentile(v, 0.99), 2) for side, v in latencies.items()},
        "max_ms": {side: round(max(v), 2) for side, v in latencies.items()},
        "shadows": outcomes,
        "sent_shadows": len(records),
        "judged": {name: sum(1 for j in judged if j.outcome == name) for name in ("scored", "unparsed", "error")},
    }
    (out / f"overhead-grace{grace_ms:g}ms.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400, help="requests per side (default 400)")
    parser.add_argument("--grace-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=Path("reports/shadow"))
    args = parser.parse_args(argv)
    figures = run(args.requests, args.grace_ms, args.out)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

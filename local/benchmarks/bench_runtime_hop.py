"""What the fleet world pays per invocation for running the router's runtime loop against a Runtime API, against the
pipe the environments spoke before (a frame in, the handler called directly, a frame out), side by side in one run.

Both paths thaw a process (SIGCONT), hand it one event, read its answer and freeze it again (SIGSTOP): the fleet's
(local/localrun/fleet.py: the event queued on the environment's Runtime API, the loop's `next`, its POST, frozen once
it asks for its next event), and a process reading length-prefixed JSON frames on a pipe and calling the same handler.
The function is tests/router/runtime_fixture/fake_function.py (answers at once), so the difference is the transport
alone, not the router. Interleaved rounds (the order alternates each round), sequential invocations, medians of all.
Prints JSON only (not in results.json: a transport figure, not the product's). Shape: one environment, one event at
a time. Usage: python local/benchmarks/bench_runtime_hop.py [--quick] [--rounds N] [--per-round N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from local.localrun.apigw import CONVERSE_RESOURCE, STREAM_RESOURCE, LocalContext  # noqa: E402
from local.localrun.environment import read_frame, write_frame  # noqa: E402
from local.localrun.fleet import Fleet  # noqa: E402

FIXTURE = ROOT / "tests" / "router" / "runtime_fixture"
BUFFERED_EVENT = {
    "resource": CONVERSE_RESOURCE,
    "path": "/v1/features/f/converse",
    "httpMethod": "POST",
}
STREAM_EVENT = {"resource": STREAM_RESOURCE, "path": "/v1/features/f/converse-stream", "httpMethod": "POST"}
# The pipe environment as it was: frames in, the handler called in-process, frames out.
PIPE_CHILD = """
import base64, sys
from local.localrun.environment import read_frame, write_frame
sys.path.insert(0, sys.argv[3])
import fake_function
from local.localrun.apigw import LocalContext
fd_in, fd_out = int(sys.argv[1]), int(sys.argv[2])
write_frame(fd_out, {"ready": True})
while (frame := read_frame(fd_in)) is not None:
    context = LocalContext(frame["request_id"], 20000.0)
    if frame["op"] == "stream":
        for chunk in fake_function.stream(frame["event"], context):
            write_frame(fd_out, {"chunk": base64.b64encode(chunk).decode()})
        write_frame(fd_out, {"end": True})
    else:
        write_frame(fd_out, {"result": fake_function.buffered(frame["event"], context)})
"""


class PipeEnvironment:
    """One process on pipes, thawed for each event and frozen after it, as the fleet's environments were."""

    def __init__(self) -> None:
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PIPE_CHILD, str(to_r), str(from_w), str(FIXTURE)],
            cwd=ROOT,
            pass_fds=(to_r, from_w),
        )
        os.close(to_r)
        os.close(from_w)
        assert read_frame(self.from_r) == {"ready": True}
        self._freeze()

    def _freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        os.waitpid(self.proc.pid, os.WUNTRACED)

    def call(self, op: str, event: dict[str, Any], request_id: str) -> int:
        os.kill(self.proc.pid, signal.SIGCONT)
        write_frame(self.to_w, {"op": op, "event": event, "request_id": request_id})
        frames = 1
        while "chunk" in (frame := read_frame(self.from_r)):
            frames += 1
        assert "result" in frame or frame.get("end")
        self._freeze()
        return frames

    def close(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        os.close(self.to_w)
        self.proc.wait(10)
        os.close(self.from_r)


def _timed(call: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def measure(rounds: int, per_round: int) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "_HANDLER": "fake_function.buffered",
        "SPILLWAY_STREAM_HANDLER": "fake_function.stream",
        "LAMBDA_TASK_ROOT": str(FIXTURE),
    }
    samples: dict[str, list[float]] = {k: [] for k in ("runtime_api", "pipe", "runtime_api_stream", "pipe_stream")}
    with tempfile.TemporaryDirectory() as logs:
        fleet = Fleet(env, reserved_concurrency=1, log_dir=Path(logs))
        fleet.prewarm(1)
        pipe = PipeEnvironment()
        try:
            paths: dict[str, Callable[[], object]] = {
                "runtime_api": lambda: fleet.invoke(BUFFERED_EVENT, LocalContext("bench", 20_000)),
                "pipe": lambda: pipe.call("invoke", BUFFERED_EVENT, "bench"),
                "runtime_api_stream": lambda: list(fleet.invoke_stream(STREAM_EVENT, LocalContext("bench", 20_000))),
                "pipe_stream": lambda: pipe.call("stream", STREAM_EVENT, "bench"),
            }
            for call in paths.values():  # warm both (first-call costs out of the figure)
                _timed(call, 3)
            for index in range(rounds):
                order = list(paths) if index % 2 == 0 else list(reversed(paths))
                for name in order:
                    samples[name] += _timed(paths[name], per_round)
        finally:
            pipe.close()
            fleet.stop()
    medians = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    return {
        "median_us": medians,
        "ratio_buffered": round(medians["runtime_api"] / medians["pipe"], 2),
        "ratio_streamed": round(medians["runtime_api_stream"] / medians["pipe_stream"], 2),
        "added_ms_buffered": round((medians["runtime_api"] - medians["pipe"]) / 1000.0, 2),
        "added_ms_streamed": round((medians["runtime_api_stream"] - medians["pipe_stream"]) / 1000.0, 2),
        "invocations_per_path": rounds * per_round,
        "load_average": round(os.getloadavg()[0], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5: a smoke run")
    # make bench (run.py) passes every benchmark the same arguments; this one writes nothing to results.json anyway.
    parser.add_argument("--no-write", action="store_true", help="accepted: nothing is written in any case")
    args = parser.parse_args()
    result = measure(2, 5) if args.quick else measure(args.rounds, args.per_round)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Capacity (in flight, tokens and requests per minute) and the latency model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.emulator import Emulator, TargetSpec
from tests.emulator.conftest import FakeClock, chat_body, converse_kwargs, make_factory

REGION = "eu-central-1"


def _burst(n: int, call: Callable[[], Any]) -> list[str]:
    """Run ``n`` calls at once (released together by a barrier); return their outcomes."""
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            call()
            result = "ok"
        except ClientError as exc:
            result = exc.response["Error"]["Code"]
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_max_in_flight_under_concurrency(clock: FakeClock) -> None:
    target = TargetSpec(REGION, "bedrock", "m", max_in_flight=3, ttft_ms=800)
    with Emulator([target], clock=clock, appconfig=False) as emu:
        bedrock = make_factory(emu)("bedrock-runtime", REGION)
        bedrock.converse(**converse_kwargs("m"))  # warm the client (credentials, endpoint) outside the burst
        emu.reset_stats()
        outcomes = _burst(8, lambda: bedrock.converse(**converse_kwargs("m")))
        assert outcomes == ["ThrottlingException"] * 5 + ["ok"] * 3
        stats = emu.target_stats(target)
        assert (stats["requests"], stats["served"], stats["throttled"]) == (8, 3, 5)
        assert stats["in_flight_peak"] == 3
        assert stats["in_flight"] == 0
        assert stats["faulted"] == 0


def test_sagemaker_in_flight_throttle(clock: FakeClock) -> None:
    target = TargetSpec(REGION, "sagemaker", "ep", max_in_flight=1, ttft_ms=600)
    with Emulator([target], clock=clock, appconfig=False) as emu:
        sagemaker = make_factory(emu)("sagemaker-runtime", REGION)
        sagemaker.invoke_endpoint(EndpointName="ep", Body=chat_body())
        outcomes = _burst(3, lambda: sagemaker.invoke_endpoint(EndpointName="ep", Body=chat_body()))
        assert outcomes == ["ThrottlingException"] * 2 + ["ok"]


def test_tokens_per_minute(clock: FakeClock) -> None:
    # "hello there" is 3 tokens in, 20 out: 23 a request; 50 a minute is two requests.
    target = TargetSpec(REGION, "bedrock", "m", tokens_per_minute=50, output_tokens=20)
    with Emulator([target], clock=clock, appconfig=False) as emu:
        bedrock = make_factory(emu)("bedrock-runtime", REGION)

        def outcome() -> str:
            try:
                bedrock.converse(**converse_kwargs("m"))
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            return "ok"

        assert [outcome() for _ in range(3)] == ["ok", "ok", "ThrottlingException"]
        clock.advance(23 * 60 / 50)  # the bucket refills continuously: one request's worth
        assert outcome() == "ok"
        assert outcome() == "ThrottlingException"
        clock.advance(60)
        assert [outcome() for _ in range(3)] == ["ok", "ok", "ThrottlingException"]
        stats = emu.target_stats(target)
        assert stats["throttled"] == 3
        assert stats["output_tokens"] == 5 * 20


def test_max_tokens_lowers_the_token_cost(clock: FakeClock) -> None:
    # 50 tokens a minute: uncapped, a request costs 3 in + 20 out = 23 (two fit); capped at 5 out, 8 (six fit).
    uncapped = TargetSpec(REGION, "bedrock", "m", tokens_per_minute=50, output_tokens=20)
    capped = TargetSpec(REGION, "bedrock", "c", tokens_per_minute=50, output_tokens=20)
    with Emulator([uncapped, capped], clock=clock, appconfig=False) as emu:
        bedrock = make_factory(emu)("bedrock-runtime", REGION)

        def outcome(model: str, **extra: Any) -> str:
            try:
                reply = bedrock.converse(**converse_kwargs(model, **extra))
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            return f"{reply['stopReason']}:{reply['usage']['outputTokens']}"

        assert [outcome("m") for _ in range(3)] == ["end_turn:20"] * 2 + ["ThrottlingException"]
        five = {"inferenceConfig": {"maxTokens": 5}}
        assert [outcome("c", **five) for _ in range(7)] == ["max_tokens:5"] * 6 + ["ThrottlingException"]
        assert emu.target_stats(capped)["output_tokens"] == 6 * 5


def test_requests_per_minute(clock: FakeClock) -> None:
    target = TargetSpec(REGION, "sagemaker", "ep", requests_per_minute=2)
    with Emulator([target], clock=clock, appconfig=False) as emu:
        sagemaker = make_factory(emu)("sagemaker-runtime", REGION)
        sagemaker.invoke_endpoint(EndpointName="ep", Body=chat_body())
        sagemaker.invoke_endpoint(EndpointName="ep", Body=chat_body())
        with pytest.raises(ClientError) as info:
            sagemaker.invoke_endpoint(EndpointName="ep", Body=chat_body())
        assert info.value.response["Error"]["Code"] == "ThrottlingException"
        clock.advance(30)
        sagemaker.invoke_endpoint(EndpointName="ep", Body=chat_body())


def test_latency_model(clock: FakeClock) -> None:
    target = TargetSpec(REGION, "bedrock", "m", ttft_ms=150, ms_per_token=10, output_tokens=10)
    with Emulator([target], clock=clock, appconfig=False) as emu:
        bedrock = make_factory(emu)("bedrock-runtime", REGION)
        started = time.monotonic()
        reply = bedrock.converse(**converse_kwargs("m"))
        elapsed = time.monotonic() - started
        assert elapsed >= 0.25
        assert 250 <= reply["metrics"]["latencyMs"] < 1000
        # Fewer tokens, less time (the server's own figure: immune to a loaded test machine).
        started = time.monotonic()
        short = bedrock.converse(**converse_kwargs("m", inferenceConfig={"maxTokens": 1}))
        assert time.monotonic() - started >= 0.16
        assert 160 <= short["metrics"]["latencyMs"] < reply["metrics"]["latencyMs"]


def test_capacity_changes_at_run_time(clock: FakeClock) -> None:
    target = TargetSpec(REGION, "bedrock", "m", max_in_flight=0)
    with Emulator([target], clock=clock, appconfig=False) as emu:
        bedrock = make_factory(emu)("bedrock-runtime", REGION)
        with pytest.raises(ClientError) as info:
            bedrock.converse(**converse_kwargs("m"))
        assert info.value.response["Error"]["Code"] == "ThrottlingException"
        spec = emu.update_target(target, max_in_flight=None, echo=True)
        assert spec.echo
        assert bedrock.converse(**converse_kwargs("m", "again"))["output"]["message"]["content"][0]["text"] == "again"
        assert emu.target_stats(target)["requests"] == 2  # counters survive the change


def test_back_to_back_calls_never_see_their_own_slot(clock: FakeClock) -> None:
    """The slot frees before the answer is written: sequential calls at max_in_flight=1 are never throttled."""
    target = TargetSpec(REGION, "bedrock", "m", max_in_flight=1)
    with Emulator([target], clock=clock, appconfig=False) as emu:
        bedrock = make_factory(emu)("bedrock-runtime", REGION)
        for _ in range(40):
            bedrock.converse(**converse_kwargs("m"))
        assert emu.target_stats(target)["throttled"] == 0

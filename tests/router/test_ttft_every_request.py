"""Time to first token on every request (issue 12, item 4), through the handler, the real Bedrock backend (boto3) and
the emulator: a buffered Converse request is served through ConverseStream and assembled; its answer is Converse's
own, byte for byte but the latency; its time to first token and inter-token gaps reach the per-target metrics (EMF
value lists) and the breaker; no prompt or completion text reaches any of them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

import handler
from local.emulator import Emulator
from tests.router.conftest import LambdaContext, api_event, body_of, converse_body, emulated_router, header

PT = "claude-sonnet/provisioned/us-east-1"
FEATURE, DIRECT = "summarize-thread", "summarize-thread-converse"
ESCROW, ESCROW_DIRECT = "redact-escrow", "redact-escrow-invoke"  # SageMaker first: chat completions, streamed or not
CANARY = "TTFTCANARY-7c1d"
TTFT_MS, TOKENS = 120.0, 8
PROMPT = f"{CANARY} two three four five six seven eight"  # the emulator echoes it: 8 words, 8 deltas


@pytest.fixture
def world(table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The example's table plus a twin of summarize-thread that calls the buffered Converse API."""
    doc = copy.deepcopy(table_doc)
    doc["features"][DIRECT] = {**copy.deepcopy(doc["features"][FEATURE]), "buffered_via_stream": False}
    doc["features"][ESCROW_DIRECT] = {**copy.deepcopy(doc["features"][ESCROW]), "buffered_via_stream": False}
    with emulated_router(doc, monkeypatch) as emu:
        model_id = doc["targets"][PT]["backend"]["model_id"]
        emu.update_target(("us-east-1", "bedrock", model_id), ttft_ms=TTFT_MS, ms_per_token=1.0, output_tokens=TOKENS)
        yield emu


def converse(feature: str, text: str) -> dict[str, Any]:
    event = api_event("POST", f"/v1/features/{feature}/converse", body=converse_body(text))
    return handler.lambda_handler(event, LambdaContext())


def emf_lines(out: str, metric: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if f'"{metric}"' in line and "_aws" in line]


@pytest.mark.parametrize(
    ("feature", "twin", "served_by"),
    [(FEATURE, DIRECT, PT), (ESCROW, ESCROW_DIRECT, "llama-escrow/provisioned/us-east-1")],
    ids=["bedrock-converse-stream", "sagemaker-response-stream"],
)
def test_a_buffered_answer_assembled_from_the_stream_is_the_buffered_apis_own(
    world: Emulator, feature: str, twin: str, served_by: str
) -> None:
    streamed, direct = converse(feature, "same prompt"), converse(twin, "same prompt")
    assert streamed["statusCode"] == direct["statusCode"] == 200
    assert header(streamed, "x-spillway-target") == header(direct, "x-spillway-target") == served_by
    a, b = body_of(streamed), body_of(direct)
    if served_by == PT:
        assert a["metrics"]["latencyMs"] >= TTFT_MS
    a["metrics"].pop("latencyMs")
    b["metrics"].pop("latencyMs")
    assert a == b
    assert a["output"]["message"]["content"][0]["text"]  # an answer, not an empty shell


def test_every_buffered_request_reports_its_time_to_first_token_and_gaps_per_target(
    world: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    for _ in range(3):
        assert converse(FEATURE, PROMPT)["statusCode"] == 200
    assert converse(DIRECT, PROMPT)["statusCode"] == 200  # the buffered API: nothing to measure
    out, err = capsys.readouterr()
    lines = [m for m in emf_lines(out, "TimeToFirstToken") if m.get("target") == PT]
    assert [m["feature"] for m in lines] == [FEATURE] * 3
    for line in lines:
        (ttft,) = line["TimeToFirstToken"]
        assert ttft >= TTFT_MS  # the emulator holds the first delta back this long; messageStart is not a token
        assert len(line["InterTokenGap"]) == TOKENS - 1  # every delta after the first (each gap about 1 ms)
        assert line["InterTokenMax"] == [max(line["InterTokenGap"])]
        metrics = {m["Name"] for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
        assert {"TimeToFirstToken", "InterTokenGap", "InterTokenMax"} <= metrics
    assert CANARY not in out
    assert CANARY not in err


def test_a_long_answers_gaps_fit_one_emf_line_as_order_statistics_with_the_extremes() -> None:
    from spillway.telemetry import MAX_VALUES, gap_values  # noqa: PLC0415

    gaps = [float((i * 37) % 1000) for i in range(1000)]  # 0..999, shuffled
    values = gap_values(gaps)
    sampled = values["InterTokenGap"][1]
    assert isinstance(sampled, list)
    assert len(sampled) == MAX_VALUES
    assert (sampled[0], sampled[-1]) == (0.0, 999.0)
    assert sampled == sorted(sampled)
    assert sampled[49] == pytest.approx(500.0, abs=10)  # the median stays where it was
    assert values["InterTokenMax"][1] == 999.0
    assert gap_values([3.0, 1.0])["InterTokenGap"][1] == [1.0, 3.0]  # a short answer: every gap

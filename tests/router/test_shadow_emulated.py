"""Shadow traffic and its judge as deployed, minus AWS: real boto3 clients against the loopback emulator. The
candidate's call streams (ConverseStream), so its time to first token is measured on the wire; the judge is the home
region's escrow endpoint (SageMaker), which the emulator answers with a deterministic score of the two answers."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest

import handler
from local.emulator.judge import similarity
from spillway import sse
from spillway.backends.kinds import BedrockRef
from tests.router.conftest import LambdaContext, api_event, converse_body, emulated_router

FEATURE = "summarize-thread"
CANDIDATE = "nova-lite/on_demand/us-east-1"
JUDGE = "llama-escrow/provisioned/us-east-1"
CANARY = "EMUSHADOWCANARY-2b9e"
CANDIDATE_TTFT_MS = 40.0
INCUMBENT_TTFT_MS = 30.0
# The candidate answers the emulator's synthetic words; the incumbent echoes the prompt, which shares some of them.
PROMPT = f"synthetic reply from the spillway {CANARY}"
CANDIDATE_ANSWER = " ".join(("synthetic", "reply", "from", "the", "spillway", "emulator") * 3)


def shadowed(table: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(table)
    doc["features"][FEATURE]["shadow"] = {
        "target": CANDIDATE,
        "share": 1.0,
        "grace_ms": 1000,
        "judge": {"target": JUDGE, "share": 1.0},
    }
    return doc


def records(logs: io.StringIO, message: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == message]


def test_a_shadow_over_the_wire_measures_its_first_token_and_the_emulated_judge_scores_it(
    table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, logs: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    with emulated_router(shadowed(table_doc), monkeypatch) as emu:
        nova = ("us-east-1", "bedrock", "amazon.nova-lite-v1:0")
        emu.update_target(nova, echo=False, output_tokens=18, ttft_ms=CANDIDATE_TTFT_MS)
        emu.update_target(("us-east-1", "sagemaker", "spillway-llama-escrow"), judge=True)
        event = api_event("POST", f"/v1/features/{FEATURE}/converse", body=converse_body(PROMPT))
        response = handler.lambda_handler(event, LambdaContext())
        assert handler.get_router().shadower.wait_idle(10)
        judge_stats = emu.target_stats(("us-east-1", "sagemaker", "spillway-llama-escrow"))
        nova_stats = emu.target_stats(nova)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["output"]["message"]["content"] == [{"text": PROMPT}]
    (shadow,) = records(logs, "shadow")
    assert (shadow["outcome"], shadow["candidate"]) == ("ok", CANDIDATE)
    assert shadow["candidate_ttft_ms"] >= CANDIDATE_TTFT_MS, "the emulator waited that long before the first token"
    assert shadow["candidate_ttft_ms"] <= shadow["candidate_ms"]
    assert shadow["candidate_output_tokens"] == 18
    assert shadow["candidate_stop"] == "end_turn"
    assert nova_stats["requests"] == 1
    (judged,) = records(logs, "shadow_judge")
    expected = round(similarity(PROMPT, CANDIDATE_ANSWER) * 10) / 10
    assert 0.0 < expected < 1.0, "a partial match: the score is neither end of the scale"
    assert (judged["outcome"], judged["judge"], judged["score"]) == ("scored", JUDGE, expected)
    assert judge_stats["requests"] == 1
    out, err = capsys.readouterr()
    assert CANARY not in logs.getvalue() + out + err, "the answers went to the judge and nowhere else"


def test_the_emulated_judge_reads_the_routers_template() -> None:
    """The emulator's judge and the router's prompt template agree on where the two answers are."""
    from local.emulator import judge as emulated  # noqa: PLC0415
    from spillway import judge  # noqa: PLC0415

    assert (emulated.REFERENCE_TAG, emulated.CANDIDATE_TAG) == (judge.REFERENCE_TAG, judge.CANDIDATE_TAG)
    text = judge.judge_request("the same answer", "the same answer")["messages"][0]["content"][0]["text"]
    assert emulated.judge_reply(text) == "10"
    text = judge.judge_request("alpha beta gamma delta", "alpha beta omega")["messages"][0]["content"][0]["text"]
    assert emulated.judge_reply(text) == str(round(similarity("alpha beta gamma delta", "alpha beta omega") * 10))
    assert emulated.judge_reply("no tags at all") is None


def test_a_judge_target_still_serves_its_feature(
    table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    """The escrow endpoint judges the judge's prompts and answers the escrow feature's own requests as before."""
    with emulated_router(shadowed(table_doc), monkeypatch) as emu:
        emu.update_target(("us-east-1", "sagemaker", "spillway-llama-escrow"), judge=True)
        event = api_event("POST", "/v1/features/redact-escrow/converse", body=converse_body("private words"))
        response = handler.lambda_handler(event, LambdaContext())
    assert json.loads(response["body"])["output"]["message"]["content"] == [{"text": "private words"}]


def test_an_emulator_without_a_judge_gives_no_score(
    table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    """A judge target that is an ordinary model answers words: recorded unparsed, no score invented."""
    with emulated_router(shadowed(table_doc), monkeypatch):
        event = api_event("POST", f"/v1/features/{FEATURE}/converse", body=converse_body("hello"))
        assert handler.lambda_handler(event, LambdaContext())["statusCode"] == 200
        assert handler.get_router().shadower.wait_idle(10)
    (judged,) = records(logs, "shadow_judge")
    assert (judged["outcome"], judged.get("score")) == ("unparsed", None)  # the logger leaves out a null


def _streamed(feature: str, text: str) -> tuple[int, list[tuple[str, Any]]]:
    """A streamed request through the streaming entry point: its status and its relayed events, timings left out
    (the model's own ``metrics`` and the last ``spillway`` event's)."""
    event = api_event("POST", f"/v1/features/{feature}/converse-stream", body=converse_body(text))
    prelude, rest = sse.split_prelude(b"".join(handler.lambda_stream_handler(event, LambdaContext()))) or ({}, b"")
    events = []
    for block in rest.decode().split("\n\n"):
        if not block or block.startswith(f"event: {sse.TRAILER_EVENT}"):
            continue
        name, data = block.removeprefix("event: ").split("\ndata: ", 1)
        events.append((name, {k: v for k, v in json.loads(data).items() if k != "metrics"}))
    return int(prelude["statusCode"]), events


def test_a_streamed_request_is_shadowed_with_both_first_tokens_and_its_stream_untouched(
    table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    with emulated_router(table_doc, monkeypatch):
        plain = _streamed(FEATURE, "stream me")
    with emulated_router(shadowed(table_doc), monkeypatch) as emu:
        table = handler.get_router().source.get().table
        assert table is not None
        pt = table.targets["claude-sonnet/provisioned/us-east-1"].backend
        assert isinstance(pt, BedrockRef)
        emu.update_target(("us-east-1", "bedrock", pt.model_id), ttft_ms=INCUMBENT_TTFT_MS)
        emu.update_target(("us-east-1", "sagemaker", "spillway-llama-escrow"), judge=True)
        shadowed_stream = _streamed(FEATURE, "stream me")
        assert handler.get_router().shadower.wait_idle(10)
    assert shadowed_stream == plain
    assert plain[0] == 200
    (record,) = records(logs, "shadow")
    assert record["outcome"] == "ok"
    assert record["incumbent_ttft_ms"] >= INCUMBENT_TTFT_MS, "the streamed route's own first token"
    assert record["candidate_ttft_ms"] > 0
    assert records(logs, "shadow_judge") == [], "a streamed answer is not kept whole: nothing for a judge to read"

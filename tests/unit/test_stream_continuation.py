"""Continuing a stream cut after its first token (routing.continue_with_prefix): the engine's streaming walk on a
fake clock with scripted streaming backends. The partial answer goes to the next able target as the assistant's
prefix, a seam marks where it goes on, nothing reaches the caller twice, usage adds up, and what cannot be continued
(a tool use, no able target, the deadline, a feature that did not opt in) ends incomplete as before."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from spillway.backends.contract import Usage
from spillway.backends.kinds import PREFIX_MODEL_IDS, BedrockRef, SageMakerRef, takes_prefix
from spillway.capacity import InflightTracker
from spillway.config import Target, parse_routing_table
from spillway.continuation import NO_PREFIX, SEAM_EVENT, Partial, Splice, StreamSeam, prefix_targets, with_prefix
from spillway.engine import Engine, Outcome, Status
from spillway.errors import BackendError
from spillway.health import HealthBoard, Verdict
from spillway.stream_route import DEADLINE_EXCEEDED, STREAM_STALLED, StreamHead, StreamTail
from stacks.platform import PlatformConfigError, load_platform
from stacks.routing import render_routing_table
from tests.fakes import FakeClock, spy_verdicts
from tests.router.conftest import PLATFORM

E, W = "us-east-1", "us-west-2"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
PT = "sonnet/provisioned/us-east-1"
OD_E, OD_W = "sonnet/on_demand/us-east-1", "sonnet/on_demand/us-west-2"
LLAMA, NOVA = "llama/provisioned/us-east-1", "nova/on_demand/us-east-1"
REQUEST = {"messages": [{"role": "user", "content": [{"text": "tell me a story"}]}]}
STOP = [
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("messageStop", {"stopReason": "end_turn"}),
]


def _target(model: str, capacity: str, region: str, backend: dict[str, str]) -> dict[str, Any]:
    return {
        f"{model}/{capacity}/{region}": {"model": model, "capacity": capacity, "region": region, "backend": backend}
    }


def table(**feature: Any) -> dict[str, Any]:
    """Plan: PT (an ARN: no prefix) -> OD east -> OD west (Claude Sonnet 4.5) -> llama (SageMaker) -> nova."""
    pt_arn = "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/sonnetpt01"
    targets = {
        **_target("sonnet", "provisioned", E, {"kind": "bedrock", "model_id": pt_arn}),
        **_target("sonnet", "on_demand", E, {"kind": "bedrock", "model_id": SONNET}),
        **_target("sonnet", "on_demand", W, {"kind": "bedrock", "model_id": SONNET}),
        **_target("llama", "provisioned", E, {"kind": "sagemaker", "endpoint_name": "llama-escrow"}),
        **_target("nova", "on_demand", E, {"kind": "bedrock", "model_id": "amazon.nova-lite-v1:0"}),
    }
    chat = {
        "first_capacity": "provisioned",
        "models": ["sonnet", "llama", "nova"],
        "home_region": E,
        "failover_regions": [W],
        "deadline_ms": 20000,
        "attempt_timeout_ms": {"min": 300, "max": 5000},
        "max_attempts": 6,
        "first_token_ms": 1000,
        "inter_token_ms": 1000,
        "continue_with_prefix": True,
        **feature,
    }
    return {"version": 1, "targets": targets, "features": {"chat": chat}}


def text(*pieces: str) -> list[tuple[str, dict[str, Any]]]:
    return [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces]


def answer(*pieces: str, usage: tuple[int, int] = (10, 4)) -> list[tuple[str, dict[str, Any]]]:
    """A whole answer: messageStart, the text, the closing events and the usage."""
    meta = {"usage": {"inputTokens": usage[0], "outputTokens": usage[1], "totalTokens": sum(usage)}}
    return [("messageStart", {"role": "assistant"}), *text(*pieces), *STOP, ("metadata", meta)]


STALL_STEP_S = 0.5  # fake time that passes, while a stream stalls, each time the router may look at the clock


class _Stream:
    def __init__(
        self, events: list[tuple[str, dict[str, Any]]], end: str | BackendError | None, clock: FakeClock
    ) -> None:
        self.events, self.end, self.clock = events, end, clock
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        yield from self.events
        if isinstance(self.end, BackendError):
            raise self.end
        if self.end == "stall":  # fake time passes with nothing sent, until the router hangs up
            for _ in range(1000):
                if self.closed.wait(0.005):
                    break
                self.clock.advance(STALL_STEP_S)
            raise BackendError.of("ConnectionClosedError")

    def close(self) -> None:
        self.closed.set()


Script = tuple[list[tuple[str, dict[str, Any]]], "str | BackendError | None"]


class StreamingBackend:
    """Streams per target id from a script: the events, then how the stream ends (None: cleanly, a BackendError
    raised mid-stream, "stall"), or a BackendError instead of a stream. Records each request it was sent."""

    def __init__(self, script: Mapping[str, Script | BackendError], clock: FakeClock) -> None:
        self.script, self.clock = dict(script), clock
        self.requests: list[tuple[str, Mapping[str, Any]]] = []

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> _Stream:
        self.requests.append((target.id, request))
        scripted = self.script.get(target.id, (answer("fine"), None))
        if isinstance(scripted, BackendError):
            raise scripted
        events, end = scripted
        return _Stream(events, end, self.clock)

    def sent_to(self) -> list[str]:
        return [target for target, _ in self.requests]


def rig(
    script: Mapping[str, Script | BackendError], doc: dict[str, Any] | None = None, **feature: Any
) -> tuple[Engine, StreamingBackend, list[Any]]:
    clock = FakeClock()
    backend = StreamingBackend(script, clock)
    engine = Engine(
        parse_routing_table(doc or table(**feature)),
        {"bedrock": backend, "sagemaker": backend},
        health=HealthBoard(clock),
        clock=clock,
        tracker=InflightTracker(clock),
    )
    return engine, backend, spy_verdicts(engine.health)


def seams_in(items: list[Any]) -> list[StreamSeam]:
    """The seam events of a stream, read back as seams."""
    return [
        StreamSeam(d["from"], d["code"], d["to"], d["contentBlockIndex"])
        for i in items
        if isinstance(i, tuple) and i[0] == SEAM_EVENT
        for d in [i[1]]
    ]


def caller_text(items: list[Any]) -> str:
    return "".join(i[1]["delta"]["text"] for i in items if isinstance(i, tuple) and i[0] == "contentBlockDelta")


def cut(*pieces: str, code: str = "ModelStreamErrorException") -> Script:
    """A stream that sends its text, then fails mid-stream."""
    return [("messageStart", {"role": "assistant"}), *text(*pieces)], BackendError.of(code, 424)


def test_a_cut_stream_goes_on_at_the_next_target_with_its_partial_as_prefix() -> None:
    engine, backend, verdicts = rig({PT: cut("Once ", "upon ", "a"), OD_E: (answer(" time."), None)})
    items = list(engine.stream("chat", REQUEST))
    head, *events, tail = items
    assert isinstance(head, StreamHead)
    assert head.target == PT
    assert isinstance(tail, StreamTail)
    seams = seams_in(events)
    assert seams == [StreamSeam(PT, "ModelStreamErrorException", OD_E, 0)]
    names = [i[0] for i in events if isinstance(i, tuple)]
    assert names.count(SEAM_EVENT) == 1
    assert names.count("messageStart") == 1  # the continuing target's own messageStart is not sent again
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert events.index(seams[0].event()) == 4  # after messageStart and PT's three deltas, before the continuation's
    assert caller_text(items) == "Once upon a time."
    # The continuing target was sent the request with the partial answer as the assistant's prefix.
    assert backend.requests[1] == (OD_E, with_prefix(REQUEST, "Once upon a"))
    assert backend.requests[1][1]["messages"][-1] == {"role": "assistant", "content": [{"text": "Once upon a"}]}
    assert REQUEST["messages"][-1]["role"] == "user"  # the caller's request itself is untouched
    result = tail.result
    assert (result.status, result.target, tail.incomplete) == (Status.SERVED, OD_E, False)
    assert [(a.target, a.outcome, a.code) for a in result.attempts] == [
        (PT, Outcome.UNAVAILABLE, "ModelStreamErrorException"),
        (OD_E, Outcome.OK, None),
    ]
    assert tail.seams == tuple(seams)
    assert result.usage == Usage(10, 4)
    assert verdicts == [(PT, Verdict.FAILURE), (OD_E, Verdict.OK)]


def test_without_the_opt_in_a_cut_stream_ends_incomplete() -> None:
    engine, backend, _ = rig({PT: cut("Once ", "upon")}, continue_with_prefix=False)
    items = list(engine.stream("chat", REQUEST))
    tail = items[-1]
    assert isinstance(tail, StreamTail)
    assert tail.incomplete
    assert (tail.result.status, tail.result.target) == (Status.INCOMPLETE, PT)
    assert seams_in(items) == []
    assert backend.sent_to() == [PT]


def test_targets_that_cannot_take_a_prefix_are_passed_over_and_failed_ones_unseen() -> None:
    """OD east and west fail before their first token (abandoned unseen), SageMaker cannot take a prefix (passed
    over, never sent), Nova continues: one seam, from the cut target to Nova."""
    script: dict[str, Script | BackendError] = {
        PT: cut("Dear ", "reader"),
        OD_E: BackendError.of("ServiceUnavailableException", 503),
        OD_W: BackendError.of("InternalServerException", 500),
        NOVA: (answer(", hello.", usage=(12, 3)), None),
    }
    engine, backend, _ = rig(script)
    items = list(engine.stream("chat", REQUEST))
    assert backend.sent_to() == [PT, OD_E, OD_W, NOVA]
    assert seams_in(items) == [StreamSeam(PT, "ModelStreamErrorException", NOVA, 0)]
    assert caller_text(items) == "Dear reader, hello."
    tail = items[-1]
    assert isinstance(tail, StreamTail)
    assert [(a.target, a.outcome, a.code) for a in tail.result.attempts] == [
        (PT, Outcome.UNAVAILABLE, "ModelStreamErrorException"),
        (OD_E, Outcome.UNAVAILABLE, "ServiceUnavailableException"),
        (OD_W, Outcome.UNAVAILABLE, "InternalServerException"),
        (LLAMA, Outcome.UNSUPPORTED, NO_PREFIX),
        (NOVA, Outcome.OK, None),
    ]
    assert tail.result.fell_back


def test_no_target_left_to_continue_ends_incomplete_where_it_was_cut() -> None:
    failed = BackendError.of("InternalServerException", 500)
    engine, _, _ = rig({PT: cut("Dear ", "reader"), OD_E: failed, OD_W: failed, NOVA: failed})
    items = list(engine.stream("chat", REQUEST))
    tail = items[-1]
    assert isinstance(tail, StreamTail)
    assert tail.incomplete
    assert (tail.result.status, tail.result.target, tail.result.code) == (
        Status.INCOMPLETE,
        PT,
        "ModelStreamErrorException",
    )
    assert tail.seams == ()
    assert tail.ttft_ms is not None  # the cut segment's timing still reaches the metrics
    assert caller_text(items) == "Dear reader"


def test_a_provisioned_target_takes_a_prefix_when_its_model_does() -> None:
    """A PT ARN names no family, but the PT serves its model, whose on-demand target names Claude Sonnet 4.5."""
    doc = table()
    pt_w_arn = "arn:aws:bedrock:us-west-2:111122223333:provisioned-model/sonnetpt02"
    doc["targets"].update(_target("sonnet", "provisioned", W, {"kind": "bedrock", "model_id": pt_w_arn}))
    pt_w = "sonnet/provisioned/us-west-2"
    script: dict[str, Script | BackendError] = {
        PT: cut("Once"),
        OD_E: BackendError.of("ServiceUnavailableException", 503),
        pt_w: (answer(" more."), None),
    }
    engine, backend, _ = rig(script, doc)
    items = list(engine.stream("chat", REQUEST))
    assert backend.sent_to() == [PT, OD_E, pt_w]
    assert [(i.cut, i.target) for i in seams_in(items)] == [(PT, pt_w)]
    assert caller_text(items) == "Once more."


def test_which_targets_of_a_table_take_a_prefix() -> None:
    doc = table()
    doc["targets"].update(
        _target(
            "titan",
            "provisioned",
            E,
            {"kind": "bedrock", "model_id": "arn:aws:bedrock:us-east-1:1:provisioned-model/t"},
        )
    )
    # The Claude 4.6 target of a model whose other target takes one is not taken along: only an ARN goes by its model.
    doc["targets"][OD_W]["backend"]["model_id"] = "us.anthropic.claude-opus-4-6-v1"
    assert prefix_targets(parse_routing_table(doc).targets) == {PT, OD_E, NOVA}  # not llama, not titan's PT


def test_a_partial_holding_a_tool_use_is_not_continued() -> None:
    tool = [
        ("messageStart", {"role": "assistant"}),
        *text("Let me look."),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "search"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"q": "wea'}}}),
    ]
    engine, backend, _ = rig({PT: (tool, BackendError.of("ModelStreamErrorException", 424))})
    tail = list(engine.stream("chat", REQUEST))[-1]
    assert isinstance(tail, StreamTail)
    assert tail.incomplete
    assert backend.sent_to() == [PT]


def test_a_stall_after_the_first_token_is_continued_too() -> None:
    start = [("messageStart", {"role": "assistant"}), *text("Slow ", "and")]
    engine, _, verdicts = rig({PT: (start, "stall"), OD_E: (answer(" steady."), None)}, inter_token_ms=1)
    items = list(engine.stream("chat", REQUEST))
    assert seams_in(items) == [StreamSeam(PT, STREAM_STALLED, OD_E, 0)]
    assert caller_text(items) == "Slow and steady."
    assert verdicts[0] == (PT, Verdict.FAILURE)


def test_trailing_whitespace_leaves_the_prefix_and_is_not_sent_twice() -> None:
    """Prefill may not end in whitespace: the prefix drops it, and the continuation's leading whitespace (which the
    caller already has) is dropped, whitespace-only deltas included."""
    engine, backend, _ = rig({PT: cut("Hello ", "there \n"), OD_E: (answer(" ", "\n general", " Kenobi"), None)})
    items = list(engine.stream("chat", REQUEST))
    assert backend.requests[1][1]["messages"][-1]["content"] == [{"text": "Hello there"}]
    assert caller_text(items) == "Hello there \ngeneral Kenobi"


def test_a_caller_prefill_is_extended_not_repeated() -> None:
    request = {
        "messages": [
            {"role": "user", "content": [{"text": "list three colours as JSON"}]},
            {"role": "assistant", "content": [{"text": '{"colours": ['}]},
        ]
    }
    engine, backend, _ = rig({PT: cut('"red", ', '"gre'), OD_E: (answer('en", "blue"]}'), None)})
    items = list(engine.stream("chat", request))
    assert backend.requests[1][1]["messages"] == [
        request["messages"][0],
        {"role": "assistant", "content": [{"text": '{"colours": ["red", "gre'}]},
    ]
    assert caller_text(items) == '"red", "green", "blue"]}'


def test_two_cuts_two_seams_and_the_usage_adds_up() -> None:
    """A cut stream's continuation is cut in turn and continued again. Each segment's usage that its backend
    reported is added, in the tail and in the metadata event the caller gets."""
    od_cut = [("messageStart", {"role": "assistant"}), *text(" b"), ("metadata", {"usage": {"inputTokens": 7}})]
    script: dict[str, Script | BackendError] = {
        PT: cut("a"),
        OD_E: (od_cut, BackendError.of("InternalServerException", 500)),
        OD_W: (answer(" c", usage=(9, 2)), None),
    }
    engine, _, _ = rig(script)
    items = list(engine.stream("chat", REQUEST))
    seams = seams_in(items)
    assert [(s.cut, s.target) for s in seams] == [(PT, OD_E), (OD_E, OD_W)]
    assert caller_text(items) == "a b c"
    tail = items[-1]
    assert isinstance(tail, StreamTail)
    assert tail.result.usage == Usage(16, 2)
    metadata = [i[1] for i in items if isinstance(i, tuple) and i[0] == "metadata"]
    assert metadata[-1]["usage"] == {"inputTokens": 16, "outputTokens": 2, "totalTokens": 18}


def test_the_continuation_goes_on_in_the_open_block_or_a_new_one() -> None:
    stopped = [("messageStart", {"role": "assistant"}), *text("One."), ("contentBlockStop", {"contentBlockIndex": 0})]
    engine, _, _ = rig({PT: (stopped, BackendError.of("InternalServerException", 500))})
    items = list(engine.stream("chat", REQUEST))
    (seam,) = seams_in(items)
    assert seam.content_block_index == 1  # block 0 was closed: the continuation's text is a new block
    after = items[items.index(seam.event()) + 1 :]
    indexes = {i[1]["contentBlockIndex"] for i in after if isinstance(i, tuple) and "contentBlockIndex" in i[1]}
    assert indexes == {1}


def test_a_deadline_cut_is_not_continued() -> None:
    """Out of time is the request's end, not the target's failure: no continuation is started. (The stall outlasts
    the 300 ms deadline, well inside the gap limit: the cut is the deadline's.)"""
    start = [("messageStart", {"role": "assistant"}), *text("x")]
    engine, backend, _ = rig(
        {PT: (start, "stall")},
        deadline_ms=300,
        attempt_timeout_ms={"min": 250, "max": 5000},
        first_token_ms=300,
        inter_token_ms=60_000,
    )
    tail = list(engine.stream("chat", REQUEST))[-1]
    assert isinstance(tail, StreamTail)
    assert tail.incomplete
    assert tail.result.code == DEADLINE_EXCEEDED
    assert backend.sent_to() == [PT]


def test_a_whole_answer_missing_only_its_metadata_is_not_continued() -> None:
    whole = [("messageStart", {"role": "assistant"}), *text("Done."), *STOP]
    engine, backend, _ = rig({PT: (whole, BackendError.of("InternalServerException", 500))})
    tail = list(engine.stream("chat", REQUEST))[-1]
    assert isinstance(tail, StreamTail)
    assert tail.incomplete
    assert backend.sent_to() == [PT]


@pytest.mark.parametrize(
    ("model_id", "able"),
    [
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", True),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
        ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", True),
        ("anthropic.claude-opus-4-1-20250805-v1:0", True),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", True),
        ("amazon.nova-lite-v1:0", True),
        ("us.amazon.nova-premier-v1:0", True),
        ("us.anthropic.claude-opus-4-6-v1", False),  # Claude 4.6 and later refuse prefill
        ("anthropic.claude-sonnet-4-6", False),
        ("meta.llama3-3-70b-instruct-v1:0", False),
        ("arn:aws:bedrock:us-east-1:111122223333:provisioned-model/sonnetpt01", False),
    ],
)
def test_which_models_take_a_prefix(model_id: str, able: bool) -> None:
    assert takes_prefix(BedrockRef(model_id)) is able


def _documented() -> list[tuple[str, bool]]:
    """The rows of docs/models.md's prefix table: (model id, takes a prefix)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    table = text.split("<!-- prefix-table")[1].split("<!-- /prefix-table -->")[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    return [(cells[1].strip().strip("`"), cells[2].strip() == "yes") for cells in rows]


def test_docs_say_which_models_take_a_prefix_as_the_registry_decides() -> None:
    rows = _documented()
    assert len(rows) >= 10
    for model_id, able in rows:
        assert takes_prefix(BedrockRef(model_id)) is able, model_id
    # Every family the registry accepts has a documented example.
    for pattern in PREFIX_MODEL_IDS:
        assert any(able and re.search(pattern, model_id) for model_id, able in rows), pattern


def test_no_sagemaker_endpoint_takes_a_prefix() -> None:
    assert not takes_prefix(SageMakerRef("llama-escrow"))


def test_partial_and_splice_rules() -> None:
    partial = Partial()
    assert not partial.continuable()  # nothing sent yet
    for event in text("   "):
        partial.observe(event)
    assert not partial.continuable()  # whitespace only: nothing to continue from
    splice = Splice(2, trim=False, earlier=None)
    assert splice(("messageStart", {"role": "assistant"})) is None
    assert splice(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " x"}})) == (
        "contentBlockDelta",
        {"contentBlockIndex": 2, "delta": {"text": " x"}},
    )


def _platform(tmp_path: Path, feature: str, **changes: Any) -> Path:
    doc = yaml.safe_load(PLATFORM.read_text())
    doc["features"][feature].update(changes)
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_platform_file_opts_a_feature_in(tmp_path: Path) -> None:
    path = _platform(tmp_path, "summarize-thread", routing={"continue_with_prefix": True})
    rendered = render_routing_table(load_platform(path), E)
    assert parse_routing_table(rendered).features["summarize-thread"].continue_with_prefix
    assert not parse_routing_table(rendered).features["nightly-recap"].continue_with_prefix  # off unless opted in


def test_the_platform_file_refuses_the_switch_where_no_model_takes_a_prefix(tmp_path: Path) -> None:
    path = _platform(tmp_path, "redact-escrow", models=["llama-escrow"], routing={"continue_with_prefix": True})
    with pytest.raises(PlatformConfigError, match=r"features\.redact-escrow\.routing\.continue_with_prefix"):
        load_platform(path)


def test_a_switch_that_is_not_a_boolean_is_refused_at_its_platform_key(tmp_path: Path) -> None:
    path = _platform(tmp_path, "summarize-thread", routing={"continue_with_prefix": "yes"})
    with pytest.raises(PlatformConfigError, match=r"features\.summarize-thread\.routing\.continue_with_prefix"):
        render_routing_table(load_platform(path), E)

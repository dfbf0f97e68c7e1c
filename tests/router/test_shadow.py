"""Shadow traffic through the handler: the caller's answer, status and headers are the same with shadowing on and
off, a failing, hanging or throttling shadow is invisible, breakers and leases never hear of a shadow, the flags
profile turns it on and off, and no prompt or completion reaches a shadow record (canary strings)."""

from __future__ import annotations

import copy
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

import pytest

from spillway.backends.contract import BackendReply
from spillway.config import ShadowPolicy, Target, parse_routing_table
from spillway.errors import BackendError, ErrorClass
from spillway.shadow import log_judge, log_record
from stacks.platform import PlatformConfigError, parse_platform
from stacks.routing import render_routing_table
from tests.router.conftest import PLATFORM, Harness, converse_body, ok_reply

FEATURE = "summarize-thread"
INCUMBENT = "claude-sonnet/provisioned/us-east-1"
CANDIDATE = "claude-sonnet/on_demand/us-east-1"  # another tier, and the feature's own spill target
CANARY = "SHADOWCANARY-7c1d"


JUDGE = "llama-escrow/provisioned/us-east-1"  # the escrow endpoint of the home region: inside the cell


def with_shadow(
    doc: dict[str, Any],
    share: float = 1.0,
    target: str = CANDIDATE,
    grace_ms: float = 1000,
    judge: dict[str, Any] | None = None,
) -> Any:
    doc = copy.deepcopy(doc)
    doc["features"][FEATURE]["shadow"] = {"target": target, "share": share, "grace_ms": grace_ms}
    if judge is not None:
        doc["features"][FEATURE]["shadow"]["judge"] = judge
    return doc


_SINKS: list[list[dict[str, Any]]] = []
_JUDGE_SINKS: list[list[dict[str, Any]]] = []


def _collected(sinks: list[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    sinks.append(seen)
    yield seen
    sinks.remove(seen)


@pytest.fixture
def records() -> Iterator[list[dict[str, Any]]]:
    """Every shadow record of the harnesses `build` makes, also logged by the default sink."""
    yield from _collected(_SINKS)


@pytest.fixture
def judged() -> Iterator[list[dict[str, Any]]]:
    """Every judge record of the harnesses `build` makes, also logged by the default sink."""
    yield from _collected(_JUDGE_SINKS)


def _tee(log: Callable[[Any], None], sinks: list[list[dict[str, Any]]]) -> Callable[[Any], None]:
    """A sink that logs as the router does (log line and metrics) and keeps each record for the test."""

    def tee(record: Any) -> None:
        log(record)
        for sink in sinks:
            sink.append(asdict(record))

    return tee


def build(doc: dict[str, Any], flags: dict[str, Any] | None = None) -> Harness:
    h = Harness(doc, flags)
    h.bedrock.plan[INCUMBENT] = ok_reply("the incumbent's answer")
    h.router.shadower.emit = _tee(log_record, _SINKS)
    h.router.shadower.emit_judge = _tee(log_judge, _JUDGE_SINKS)
    return h


class Spy:
    """Counts every breaker ticket and provisioned lease the router takes, per target."""

    def __init__(self, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tickets: list[str] = []
        self.leases: list[str] = []
        begin, try_start = h.health.begin, h.router.tracker.try_start

        def counted_begin(target_id: str, *args: Any, **kw: Any) -> Any:
            self.tickets.append(target_id)
            return begin(target_id, *args, **kw)

        def counted_start(target_id: str, *args: Any, **kw: Any) -> Any:
            self.leases.append(target_id)
            return try_start(target_id, *args, **kw)

        monkeypatch.setattr(h.health, "begin", counted_begin)
        monkeypatch.setattr(h.router.tracker, "try_start", counted_start)


def answer(h: Harness, request_id: str = "req-shadow-1", text: str = "hello") -> dict[str, Any]:
    response = h.converse(FEATURE, body=converse_body(text), request_id=request_id)
    assert h.router.shadower.wait_idle(5)
    return response


def comparable(response: dict[str, Any]) -> tuple[Any, ...]:
    headers = {k: v for k, v in (response.get("headers") or {}).items() if k.lower() != "x-spillway-request-id"}
    multi = {k: v for k, v in (response.get("multiValueHeaders") or {}).items() if k.lower() != "x-spillway-request-id"}
    return response["statusCode"], response["body"], headers, multi


def hanging(release: threading.Event) -> Any:
    def hang(target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        release.wait(10)
        raise BackendError(ErrorClass.UNAVAILABLE, "ReadTimeoutError")

    return hang


CANDIDATE_BEHAVIOURS: list[tuple[str, Any]] = [
    ("served", lambda: ok_reply("the candidate's different answer", 3, 99)),
    ("fails", lambda: RuntimeError("candidate bug")),
    ("refuses", lambda: BackendError.of("ValidationException", 400)),
    ("throttles", lambda: BackendError.of("ThrottlingException", 429)),
    ("unavailable", lambda: BackendError.of("ServiceUnavailableException", 503)),
]


@pytest.mark.parametrize(("name", "behaviour"), CANDIDATE_BEHAVIOURS, ids=[c[0] for c in CANDIDATE_BEHAVIOURS])
def test_the_caller_sees_the_same_answer_with_shadowing_on_and_off(
    table_doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch, records: list[dict[str, Any]], name: str, behaviour: Any
) -> None:
    off = build(table_doc)
    spy_off = Spy(off, monkeypatch)
    plain = answer(off)
    off.handler.set_router(None)
    on = build(with_shadow(table_doc))
    spy_on = Spy(on, monkeypatch)
    on.bedrock.plan[CANDIDATE] = behaviour()
    shadowed = answer(on, request_id="req-shadow-2")
    on.handler.set_router(None)
    assert plain["statusCode"] == 200
    assert comparable(shadowed) == comparable(plain)
    assert sorted(on.bedrock.targets) == [CANDIDATE, INCUMBENT], "the shadow was sent"
    assert [r["outcome"] for r in records] == ["ok" if name == "served" else "error"]
    # No breaker ticket, no lease, no breaker state: the feature's own targets never hear of the shadow.
    assert (spy_on.tickets, spy_on.leases) == (spy_off.tickets, spy_off.leases) == ([INCUMBENT], [INCUMBENT])
    assert [r.to_dict() for r in on.health.export()] == [r.to_dict() for r in off.health.export()]
    assert on.router.tracker.in_flight(CANDIDATE) == 0


def test_a_hanging_shadow_is_abandoned_and_the_caller_answered(
    table_doc: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    plain_h = build(table_doc)
    plain = answer(plain_h)
    plain_h.handler.set_router(None)
    h = build(with_shadow(table_doc, grace_ms=0))
    release = threading.Event()
    h.bedrock.plan[CANDIDATE] = hanging(release)
    try:
        response = h.converse(FEATURE, body=converse_body("hello"), request_id="req-hang")
        assert comparable(response) == comparable(plain)
        assert [r["outcome"] for r in records] == ["abandoned"]
    finally:
        release.set()
        assert h.router.shadower.wait_idle(5)
        h.handler.set_router(None)


def test_shadow_traffic_stops_after_a_throttle(table_doc: dict[str, Any], records: list[dict[str, Any]]) -> None:
    h = build(with_shadow(table_doc))
    h.bedrock.plan[CANDIDATE] = BackendError.of("ThrottlingException", 429)
    for i in range(5):
        assert answer(h, request_id=f"req-throttle-{i}")["statusCode"] == 200
    assert h.bedrock.targets.count(CANDIDATE) == 1, "one throttle, then the candidate is left alone"
    h.clock.advance(1.0)
    h.bedrock.plan[CANDIDATE] = ok_reply()
    answer(h, request_id="req-after")
    assert h.bedrock.targets.count(CANDIDATE) == 2
    assert [r["outcome"] for r in records] == ["error", "ok"]
    h.handler.set_router(None)


def test_the_flags_profile_turns_a_shadow_on_and_off(table_doc: dict[str, Any], records: list[dict[str, Any]]) -> None:
    h = build(table_doc, flags={"shadow": {FEATURE: {"target": CANDIDATE, "share": 1.0, "grace_ms": 1000}}})
    answer(h, request_id="req-flag-on")
    assert sorted(h.bedrock.targets) == [CANDIDATE, INCUMBENT]
    h.flags = {"shadow": {FEATURE: {"target": CANDIDATE, "share": 1.0, "enabled": False}}}
    h.source.invalidate()
    h.bedrock.calls.clear()
    answer(h, request_id="req-flag-off")
    assert h.bedrock.targets == [INCUMBENT]
    h.handler.set_router(None)
    # A flag yanks the table's own shadow too.
    yanked = build(with_shadow(table_doc), flags={"shadow": {FEATURE: {"target": CANDIDATE, "share": 0}}})
    answer(yanked, request_id="req-yanked")
    assert yanked.bedrock.targets == [INCUMBENT]
    yanked.handler.set_router(None)


def test_a_flag_naming_an_unknown_target_is_refused_and_the_table_shadow_stays(table_doc: dict[str, Any]) -> None:
    events: list[tuple[str, str]] = []
    h = build(with_shadow(table_doc), flags={"shadow": {FEATURE: {"target": "gpt/on_demand/us-east-1", "share": 1}}})
    h.source._on_event = lambda kind, detail: events.append((kind, detail))
    answer(h, request_id="req-unknown-flag")
    assert ("shadow_rejected", FEATURE) in events
    assert sorted(h.bedrock.targets) == [CANDIDATE, INCUMBENT]
    h.handler.set_router(None)


def everything_emitted(
    capsys: pytest.CaptureFixture[str], logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> tuple[str, str]:
    """What the router printed (its EMF lines), and that with every log line and record it wrote."""
    out, err = capsys.readouterr()
    return out, out + err + logs.getvalue() + caplog.text + repr([r.__dict__ for r in caplog.records])


@pytest.mark.parametrize("candidate", ["echoes", "quotes_in_error"])
def test_shadow_records_hold_no_content(
    *,
    table_doc: dict[str, Any],
    logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    records: list[dict[str, Any]],
    candidate: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    h = build(with_shadow(table_doc))

    def echo(target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        text = json.dumps(request)
        if candidate == "quotes_in_error":
            raise RuntimeError(f"model rejected {text}")
        reply = ok_reply(f"{CANARY}-completion {text}")
        return BackendReply({**reply.response, "stopReason": f"{CANARY}-stop"}, 1.0, usage=reply.usage)

    h.bedrock.plan[INCUMBENT] = echo if candidate == "echoes" else ok_reply(f"{CANARY}-completion")
    h.bedrock.plan[CANDIDATE] = echo
    response = answer(h, request_id="req-zk", text=f"{CANARY}-prompt")
    h.handler.set_router(None)
    out, emitted = everything_emitted(capsys, logs, caplog)
    assert '"message":"shadow"' in logs.getvalue().replace(" ", ""), "the shadow record was captured"
    assert set(shadow_metrics(out)) == {"candidate", "incumbent"}, "and its metrics"
    assert len(records) == 1
    assert CANARY not in emitted
    assert CANARY not in json.dumps(records)
    assert CANARY in response["body"], "the canary did travel to the model and back"


def _platform_with_shadow(target: str, judge: str | None = None) -> Any:
    text = PLATFORM.read_text(encoding="utf-8")
    anchor = "    routing:\n      attempt_timeout_ms: {min: 300, max: 8000}\n"
    assert anchor in text, "summarize-thread's routing block is where this test expects it"
    judged = f", judge: {judge}" if judge is not None else ""
    shadow = f"      shadow: {{target: {target}, share: 0.05, grace_ms: 20{judged}}}\n"
    return parse_platform(text.replace(anchor, anchor + shadow, 1), "platform.yaml")


def test_the_platform_files_routing_block_carries_the_shadow_into_the_table() -> None:
    table = parse_routing_table(render_routing_table(_platform_with_shadow(CANDIDATE), "us-east-1"))
    assert table.features[FEATURE].shadow == ShadowPolicy(CANDIDATE, 0.05, 20.0)


def test_a_platform_shadow_naming_an_unknown_target_is_refused_with_its_key() -> None:
    with pytest.raises(PlatformConfigError, match=r"features\.summarize-thread\.routing\.shadow\.target"):
        render_routing_table(_platform_with_shadow("gpt-9/on_demand/us-east-1"), "us-east-1")


# -- metrics and the judge -----------------------------------------------------------------------------------------


def emf_documents(out: str) -> list[dict[str, Any]]:
    """The EMF lines among what the router printed."""
    docs = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def shadow_metrics(out: str) -> dict[str, dict[str, Any]]:
    """The shadow EMF lines by role ("candidate", "incumbent", "judge"), each the line's own members."""
    by_role: dict[str, dict[str, Any]] = {}
    for doc in emf_documents(out):
        names = {m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
        if "ShadowRequests" in names:
            by_role[doc["role"]] = doc
        elif "ShadowJudgeLatency" in names:
            by_role["judge"] = doc
    return by_role


def metric(doc: dict[str, Any], name: str) -> float:
    """One metric's value in an EMF line (Powertools writes each value as a list)."""
    (value,) = doc[name] if isinstance(doc[name], list) else [doc[name]]
    return float(value)


def test_shadow_metrics_come_per_side_as_emf(
    table_doc: dict[str, Any], capsys: pytest.CaptureFixture[str], records: list[dict[str, Any]]
) -> None:
    h = build(with_shadow(table_doc))
    h.bedrock.plan[INCUMBENT] = [BackendError.of("ThrottlingException", 429)]  # the caller's route spills once
    h.bedrock.plan[CANDIDATE] = ok_reply("the caller's spill and the shadow alike", 5, 33)
    capsys.readouterr()
    answer(h, request_id="req-metrics")
    h.handler.set_router(None)
    metrics = shadow_metrics(capsys.readouterr().out)
    assert set(metrics) == {"candidate", "incumbent"}
    for role, doc in metrics.items():
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Dimensions"] == [["feature", "candidate", "role", "service"]], role
        assert (doc["feature"], doc["candidate"]) == (FEATURE, CANDIDATE)
    (record,) = records
    incumbent, candidate = metrics["incumbent"], metrics["candidate"]
    assert metric(incumbent, "ShadowThrottles") == record["incumbent_throttles"] == 1
    assert metric(incumbent, "ShadowLatency") == record["incumbent_ms"]
    assert metric(candidate, "ShadowLatency") == record["candidate_ms"]
    assert metric(candidate, "ShadowOutputTokens") == record["candidate_output_tokens"] == 33
    assert (metric(candidate, "ShadowAbandoned"), metric(candidate, "ShadowErrors")) == (0, 0)
    assert "ShadowAbandoned" not in incumbent, "only a candidate is abandoned"


def _judge_echoes(target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
    return ok_reply(f"7 {json.dumps(request)}")  # a judge that talks: quotes both answers back (no score)


def _judge_quotes_in_error(target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
    raise RuntimeError(f"judge failed on {json.dumps(request)}")


JUDGE_BEHAVIOURS: list[tuple[str, Any, str]] = [
    ("scores", lambda: ok_reply("7"), "scored"),
    ("echoes the answers", lambda: _judge_echoes, "unparsed"),
    ("fails quoting the answers", lambda: _judge_quotes_in_error, "error"),
    ("throttles", lambda: BackendError.of("ThrottlingException", 429), "error"),
]


@pytest.mark.parametrize(("name", "behaviour", "outcome"), JUDGE_BEHAVIOURS, ids=[b[0] for b in JUDGE_BEHAVIOURS])
def test_the_judge_never_changes_the_callers_answer_and_no_text_leaves_its_call(
    *,
    table_doc: dict[str, Any],
    logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    records: list[dict[str, Any]],
    judged: list[dict[str, Any]],
    name: str,
    behaviour: Any,
    outcome: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    plain_h = build(table_doc)
    plain_h.bedrock.plan[INCUMBENT] = ok_reply(f"{CANARY}-incumbent")
    plain = answer(plain_h, request_id="req-judge-off", text=f"{CANARY}-prompt")
    plain_h.handler.set_router(None)
    h = build(with_shadow(table_doc, judge={"target": JUDGE, "share": 1.0}))
    h.bedrock.plan[INCUMBENT] = ok_reply(f"{CANARY}-incumbent")
    h.bedrock.plan[CANDIDATE] = ok_reply(f"{CANARY}-candidate")
    h.sagemaker.plan[JUDGE] = behaviour()
    capsys.readouterr()
    response = answer(h, request_id="req-judge-on", text=f"{CANARY}-prompt")
    h.handler.set_router(None)
    assert comparable(response) == comparable(plain)
    ((judge_id, judge_request, _),) = h.sagemaker.calls
    assert judge_id == JUDGE
    sent = json.dumps(judge_request)
    assert f"{CANARY}-incumbent" in sent, "the answers went to the judge call"
    assert f"{CANARY}-candidate" in sent
    assert f"{CANARY}-prompt" not in sent, "the judge reads the two answers, not the prompt"
    assert [r["outcome"] for r in judged] == [outcome]
    assert [r["outcome"] for r in records] == ["ok"]
    out, emitted = everything_emitted(capsys, logs, caplog)
    assert '"message":"shadow_judge"' in logs.getvalue().replace(" ", ""), "the judge record was logged"
    assert "judge" in shadow_metrics(out), "and its metrics emitted"
    assert CANARY not in emitted
    assert CANARY not in json.dumps(records + judged)
    if name == "scores":
        assert judged[0]["score"] == 0.7
        assert metric(shadow_metrics(out)["judge"], "ShadowJudgeScore") == 0.7


def test_a_hanging_judge_never_holds_the_caller(table_doc: dict[str, Any], judged: list[dict[str, Any]]) -> None:
    plain_h = build(table_doc)
    plain = answer(plain_h, request_id="req-hang-off")
    plain_h.handler.set_router(None)
    h = build(with_shadow(table_doc, judge={"target": JUDGE, "share": 1.0}))
    release = threading.Event()
    h.sagemaker.plan[JUDGE] = hanging(release)
    try:
        response = h.converse(FEATURE, body=converse_body("hello"), request_id="req-hang-on")
        assert comparable(response) == comparable(plain)
        assert judged == [], "answered while the judge is still out"
    finally:
        release.set()
        assert h.router.shadower.wait_idle(5)
        h.handler.set_router(None)
    assert [(r["outcome"], r["error_code"]) for r in judged] == [("error", "ReadTimeoutError")]


def test_the_platform_files_shadow_carries_a_judge_and_refuses_one_outside_the_cell() -> None:
    judge = "{target: llama-escrow/provisioned/us-east-1, share: 0.2, max_per_minute: 4}"
    table = parse_routing_table(render_routing_table(_platform_with_shadow(CANDIDATE, judge), "us-east-1"))
    policy = table.features[FEATURE].shadow
    assert policy is not None
    assert policy.judge is not None
    assert (policy.judge.target, policy.judge.share, policy.judge.max_per_minute) == (JUDGE, 0.2, 4)
    # Claude on-demand here is a cross-region inference profile (us.): it could serve from another region.
    outside = "{target: claude-sonnet/on_demand/us-east-1, share: 0.2}"
    with pytest.raises(PlatformConfigError, match=r"features\.summarize-thread\.routing\.shadow\.judge\.target"):
        render_routing_table(_platform_with_shadow(CANDIDATE, outside), "us-east-1")

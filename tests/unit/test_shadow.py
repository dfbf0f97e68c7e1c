"""Shadow traffic (spillway/shadow.py) on its own: the table's key, sampling, records, failures, throttle cooldown.

No sleeps: a hanging shadow is a backend blocked on an Event the test releases; the caller's wait for it is the
feature's grace (0 here), so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import jsonschema
import pytest

from spillway import schema
from spillway.backends.contract import BackendReply, Usage
from spillway.config import RoutingConfigError, RoutingTable, Target, parse_routing_table
from spillway.engine import RouteResult, Status
from spillway.errors import BackendError, ErrorClass
from spillway.routing_source import _shadow_flags
from spillway.shadow import FIRST_COOLDOWN_S, Shadower, ShadowRecord, stop_reason
from tests.fakes import FakeClock
from tests.unit.helpers import FEATURE, table_dict

CANDIDATE = "nova-lite/on_demand/us-east-1"
INCUMBENT = "claude-sonnet/provisioned/us-east-1"


def shadow_table(share: float = 1.0, grace_ms: float = 0.0, target: str = CANDIDATE) -> RoutingTable:
    return parse_routing_table(table_dict(feature={"shadow": {"target": target, "share": share, "grace_ms": grace_ms}}))


def served() -> RouteResult:
    response = {"output": {"message": {"content": [{"text": "answer"}]}}, "stopReason": "max_tokens"}
    return RouteResult(Status.SERVED, 200, (), 12.5, response=response, target=INCUMBENT, usage=Usage(10, 20))


class Candidate:
    """The candidate's backend: answers, raises, or blocks until released."""

    def __init__(self, action: Any = None) -> None:
        self.action = action
        self.calls: list[str] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        self.calls.append(target.id)
        self.entered.set()
        if self.action == "hang":
            self.release.wait(10)
            raise BackendError(ErrorClass.UNAVAILABLE, "ReadTimeoutError")
        if isinstance(self.action, BaseException):
            raise self.action
        response = {"output": {"message": {"content": [{"text": "other"}]}}, "stopReason": "end_turn"}
        return BackendReply(response, 5.0, usage=Usage(10, 30))


def shadower(backend: Candidate, clock: FakeClock | None = None, **kw: Any) -> tuple[Shadower, list[ShadowRecord]]:
    records: list[ShadowRecord] = []
    return Shadower({"bedrock": backend}, emit=records.append, clock=clock or FakeClock(), **kw), records


def mirror(s: Shadower, table: RoutingTable, request_id: str = "r1", result: RouteResult | None = None) -> RouteResult:
    answer = result or served()
    out = s.mirror(table, FEATURE, {"messages": []}, request_id, lambda: answer)
    assert out is answer, "the caller gets the primary's own result object"
    return out


# -- the table's key -------------------------------------------------------------------------------------------


def test_the_table_carries_a_feature_shadow() -> None:
    shadow = shadow_table(share=0.25, grace_ms=40).features[FEATURE].shadow
    assert shadow is not None
    assert (shadow.target, shadow.share, shadow.grace_ms) == (CANDIDATE, 0.25, 40.0)
    assert parse_routing_table(table_dict()).features[FEATURE].shadow is None


@pytest.mark.parametrize(
    ("shadow", "path", "problem"),
    [
        ({"target": "gpt/on_demand/us-east-1", "share": 0.1}, "features.summarize-thread.shadow.target", "unknown"),
        ({"target": CANDIDATE, "share": 1.5}, "features.summarize-thread.shadow.share", "above"),
        ({"target": CANDIDATE, "share": 0.1, "grace_ms": 5000}, "features.summarize-thread.shadow.grace_ms", "above"),
        ({"target": CANDIDATE}, "features.summarize-thread.shadow.share", "required"),
        ({"target": CANDIDATE, "share": 0.1, "model": "x"}, "features.summarize-thread.shadow.model", "unknown key"),
    ],
)
def test_a_bad_shadow_is_refused_with_its_key_named(shadow: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(RoutingConfigError) as err:
        parse_routing_table(table_dict(feature={"shadow": shadow}))
    assert err.value.path == path
    assert problem in err.value.problem


# -- sampling and records --------------------------------------------------------------------------------------


def test_a_served_shadow_records_numbers_of_both_sides() -> None:
    backend = Candidate()
    s, records = shadower(backend)
    mirror(s, shadow_table(grace_ms=1000))
    assert s.wait_idle(5)
    assert backend.calls == [CANDIDATE]
    (record,) = records
    assert record.outcome == "ok"
    assert (record.feature, record.incumbent, record.candidate) == (FEATURE, INCUMBENT, CANDIDATE)
    assert (record.incumbent_output_tokens, record.candidate_output_tokens) == (20, 30)
    assert (record.incumbent_stop, record.candidate_stop) == ("max_tokens", "end_turn")
    assert record.incumbent_ms == 12.5


def test_share_samples_request_ids_and_zero_sends_nothing() -> None:
    backend = Candidate()
    s, records = shadower(backend, max_running=1000)
    for i in range(400):
        mirror(s, shadow_table(share=0.25, grace_ms=1000), request_id=f"id-{i}")
    assert s.wait_idle(5)
    assert 60 <= len(backend.calls) <= 140  # 25% of 400 = 100, binomial sd ~8.7
    assert len(records) == len(backend.calls)
    quiet = Candidate()
    s0, records0 = shadower(quiet)
    for i in range(50):
        mirror(s0, shadow_table(share=0.0), request_id=f"id-{i}")
    assert quiet.calls == []
    assert records0 == []


def test_a_failing_shadow_is_recorded_by_class_and_code_only() -> None:
    backend = Candidate(RuntimeError("a backend bug that quotes the prompt"))
    s, records = shadower(backend)
    mirror(s, shadow_table(grace_ms=1000))
    (record,) = records
    assert (record.outcome, record.error_class, record.error_code) == ("error", "unavailable", "RuntimeError")
    assert "prompt" not in repr(record)


def test_a_hanging_shadow_is_abandoned_at_the_grace_and_its_slot_held_until_it_ends() -> None:
    backend = Candidate("hang")
    s, records = shadower(backend, max_running=1)
    mirror(s, shadow_table(grace_ms=0))
    assert backend.entered.wait(5)
    assert [r.outcome for r in records] == ["abandoned"]
    assert records[0].candidate_ms is None
    mirror(s, shadow_table(grace_ms=0), request_id="r2")  # the one slot is held by the abandoned shadow
    assert backend.calls == [CANDIDATE]
    assert len(records) == 1
    backend.release.set()
    assert s.wait_idle(5)
    backend.action = None
    mirror(s, shadow_table(grace_ms=1000), request_id="r3")
    assert backend.calls == [CANDIDATE, CANDIDATE]


def test_a_throttled_candidate_is_left_alone_for_a_doubling_cooldown() -> None:
    clock = FakeClock()
    backend = Candidate(BackendError.of("ThrottlingException", 429))
    s, records = shadower(backend, clock)
    table = shadow_table(grace_ms=1000)
    mirror(s, table)
    assert s.cooling(CANDIDATE)
    for i in range(10):  # stopped by itself: nothing is sent while cooling
        mirror(s, table, request_id=f"cool-{i}")
    assert len(backend.calls) == 1
    clock.advance(FIRST_COOLDOWN_S)
    mirror(s, table, request_id="after-1")  # throttled again: the cooldown doubles
    assert len(backend.calls) == 2
    clock.advance(FIRST_COOLDOWN_S * 1.5)
    mirror(s, table, request_id="still-cooling")
    assert len(backend.calls) == 2
    clock.advance(FIRST_COOLDOWN_S * 0.5)
    backend.action = None  # the candidate recovers: a served shadow resets the cooldown
    mirror(s, table, request_id="after-2")
    mirror(s, table, request_id="after-3")
    assert len(backend.calls) == 4
    assert [r.error_code for r in records] == ["ThrottlingException", "ThrottlingException", None, None]


def test_a_shadow_bug_before_sending_never_reaches_the_caller() -> None:
    class Broken(Shadower):
        def _start(self, *args: Any, **kw: Any) -> Any:
            raise RuntimeError("bug")

    records: list[ShadowRecord] = []
    s = Broken({"bedrock": Candidate()}, emit=records.append)
    mirror(s, shadow_table())
    assert records == []


def test_stop_reasons_come_from_a_closed_vocabulary() -> None:
    assert stop_reason({"stopReason": "end_turn"}) == "end_turn"
    assert stop_reason({"stopReason": "free text from a model"}) == "other"
    assert stop_reason({}) is None
    assert stop_reason(None) is None


def test_a_shadow_goes_out_as_the_feature_would_send_it() -> None:
    """The feature's platform Converse members (here a guardrail) ride on the shadow too: never unguarded."""
    guardrail = {"guardrailIdentifier": "gr-1", "guardrailVersion": "3"}
    table = parse_routing_table(
        table_dict(
            feature={
                "shadow": {"target": CANDIDATE, "share": 1.0, "grace_ms": 1000},
                "converse": {"defaults": {"guardrailConfig": guardrail}},
            }
        )
    )
    sent: list[Target] = []

    class Recording(Candidate):
        def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
            sent.append(target)
            return super().invoke(target, request, timeout_s)

    s, records = shadower(Recording())
    mirror(s, table)
    (target,) = sent
    assert target.id == CANDIDATE
    assert dict(target.backend.defaults) == {"guardrailConfig": guardrail}  # type: ignore[union-attr]
    assert [r.outcome for r in records] == ["ok"]


@pytest.mark.parametrize(
    "entry",
    [
        {"target": CANDIDATE, "share": 0.1, "model": "nova-lite"},
        {"target": CANDIDATE, "share": 0.1, "enabled": "yes"},
        ["not", "an", "object"],
    ],
)
def test_a_flag_shadow_entry_the_router_refuses_fails_the_flags_schema(entry: Any) -> None:
    events: list[tuple[str, str]] = []
    doc = {"shadow": {FEATURE: entry}}
    assert _shadow_flags(doc, lambda kind, detail: events.append((kind, detail))) == {}
    assert events == [("flags_invalid", "shadow_entry")]
    assert not jsonschema.Draft4Validator(schema.flags_schema()).is_valid(doc)


def test_a_flag_shadow_entry_the_router_takes_passes_the_flags_schema() -> None:
    doc = {"shadow": {FEATURE: {"target": CANDIDATE, "share": 0.1, "grace_ms": 0, "enabled": False}}}
    assert _shadow_flags(doc, lambda kind, detail: None) == {FEATURE: None}
    jsonschema.Draft4Validator(schema.flags_schema()).validate(doc)

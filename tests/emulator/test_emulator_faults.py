"""Faults: kinds, scopes and schedules (count, skip, window on the clock, seeded probability)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from local.emulator import Emulator, Fault, FaultKind, TargetSpec
from tests.emulator.conftest import (
    EAST,
    ENDPOINT,
    MODEL,
    PROFILE,
    PT_ARN,
    WEST,
    ClientFactory,
    FakeClock,
    chat_body,
    converse_kwargs,
    make_factory,
)


def _codes(call: object, n: int) -> list[str]:
    out = []
    for _ in range(n):
        try:
            call()  # type: ignore[operator]
            out.append("ok")
        except ClientError as exc:
            out.append(exc.response["Error"]["Code"])
    return out


def test_throttle_storm_on_a_region_hits_both_kinds(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault(EAST, Fault.throttle())
    bedrock, sagemaker = client("bedrock-runtime"), client("sagemaker-runtime")
    assert _codes(lambda: bedrock.converse(**converse_kwargs(PT_ARN)), 2) == ["ThrottlingException"] * 2
    assert _codes(lambda: sagemaker.invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body()), 1) == [
        "ThrottlingException"
    ]
    # The other region is untouched.
    assert client("bedrock-runtime", WEST).converse(**converse_kwargs(MODEL))["output"]
    stats = emu.target_stats((EAST, "bedrock", PT_ARN))
    assert (stats["requests"], stats["throttled"], stats["faulted"], stats["served"]) == (2, 2, 2, 0)
    assert emu.clear_faults() == 1
    assert bedrock.converse(**converse_kwargs(PT_ARN))["output"]


def test_fault_on_one_target_spares_its_neighbours(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault((EAST, "bedrock", PT_ARN), Fault.error_response("unavailable"))
    bedrock = client("bedrock-runtime")
    assert _codes(lambda: bedrock.converse(**converse_kwargs(PT_ARN)), 1) == ["ServiceUnavailableException"]
    assert bedrock.converse(**converse_kwargs(PROFILE))["output"]


def test_count_and_skip(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault(WEST, Fault.error_response("internal", count=2, skip=1))
    bedrock = client("bedrock-runtime", WEST)
    codes = _codes(lambda: bedrock.converse(**converse_kwargs(MODEL)), 5)
    assert codes == ["ok", "InternalServerException", "InternalServerException", "ok", "ok"]
    assert emu.faults() == []  # spent faults are dropped


def test_time_window_on_the_injected_clock(client: ClientFactory, emu: Emulator, clock: FakeClock) -> None:
    emu.set_fault(WEST, Fault.throttle(starts_in_s=10, duration_s=30))
    bedrock = client("bedrock-runtime", WEST)
    call = lambda: bedrock.converse(**converse_kwargs(MODEL))  # noqa: E731
    assert _codes(call, 1) == ["ok"]
    clock.advance(10)
    assert _codes(call, 2) == ["ThrottlingException"] * 2
    clock.advance(29.9)
    assert _codes(call, 1) == ["ThrottlingException"]
    clock.advance(0.1)
    assert _codes(call, 1) == ["ok"]


def test_probability_is_reproducible_with_a_seed(client: ClientFactory, emu: Emulator) -> None:
    bedrock = client("bedrock-runtime", WEST)
    runs = []
    for _ in range(2):
        emu.clear_faults()
        emu.set_fault(WEST, Fault.error_response("internal", probability=0.5, seed=7))
        runs.append(_codes(lambda: bedrock.converse(**converse_kwargs(MODEL)), 12))
    assert runs[0] == runs[1]
    assert 0 < runs[0].count("InternalServerException") < 12


def test_fault_dict_form_and_validation(emu: Emulator) -> None:
    fault = Fault.from_dict({"kind": "error", "error": "model_error", "count": 3})
    assert Fault.from_dict(json.loads(json.dumps(fault.to_dict()))) == fault
    fault_id = emu.set_fault({"region": WEST, "kind": "sagemaker"}, fault.to_dict())
    assert emu.faults()[0]["scope"] == {"region": WEST, "kind": "sagemaker"}
    assert emu.remove_fault(fault_id)
    with pytest.raises(ValueError, match="unknown error"):
        emu.set_fault(WEST, Fault.error_response("teapot"))
    with pytest.raises(ValueError, match="one region"):
        emu.set_fault((WEST, "bedrock", MODEL), Fault.refuse())
    with pytest.raises(ValueError, match="time window"):
        Fault(FaultKind.REFUSE, count=1)
    with pytest.raises(ValueError, match="probability"):
        Fault.throttle(probability=2)
    with pytest.raises(ValueError, match="unknown fault field"):
        Fault.from_dict({"kind": "hang", "sleep": 3})


def test_clear_faults_by_scope(emu: Emulator) -> None:
    emu.set_fault((WEST, "bedrock", MODEL), Fault.throttle())
    emu.set_fault(WEST, Fault.throttle())
    emu.set_fault(EAST, Fault.throttle())
    assert emu.clear_faults(WEST) == 2
    assert [f["scope"] for f in emu.faults()] == [{"region": EAST}]


def test_hang_past_the_read_timeout_then_stop_is_prompt(clock: FakeClock) -> None:
    emu = Emulator([TargetSpec(WEST, "bedrock", MODEL)], clock=clock, appconfig=False).start()
    try:
        emu.set_fault(WEST, Fault.hang(seconds=60))
        bedrock = make_factory(emu)("bedrock-runtime", WEST, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            bedrock.converse(**converse_kwargs(MODEL))
        assert 0.3 <= time.monotonic() - started < 2
        assert emu.target_stats((WEST, "bedrock", MODEL))["in_flight"] == 1  # still hanging, server side
    finally:
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 1.5  # the 60 s hang was interrupted


def test_short_hang_ends_in_a_timeout_error(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault(WEST, Fault.hang(seconds=0.05, count=2))
    bedrock = client("bedrock-runtime", WEST)
    assert _codes(lambda: bedrock.converse(**converse_kwargs(MODEL)), 1) == ["ModelTimeoutException"]
    sagemaker = client("sagemaker-runtime", WEST)
    with pytest.raises(ClientError) as info:
        sagemaker.invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body())
    assert info.value.response["Error"]["Code"] == "ModelError"
    assert info.value.response["OriginalStatusCode"] == 408


def test_region_outage_refuses_connections_then_recovers(client: ClientFactory, emu: Emulator) -> None:
    bedrock = client("bedrock-runtime", WEST)
    assert bedrock.converse(**converse_kwargs(MODEL))["output"]  # a pooled keep-alive connection exists
    url = emu.endpoint_url(WEST)
    emu.set_fault(WEST, Fault.refuse())
    assert not emu.region_is_open(WEST)
    with pytest.raises(EndpointConnectionError):
        bedrock.converse(**converse_kwargs(MODEL))
    with pytest.raises(EndpointConnectionError):
        client("sagemaker-runtime", WEST).invoke_endpoint(EndpointName=ENDPOINT, Body=chat_body())
    assert client("bedrock-runtime", EAST).converse(**converse_kwargs(PT_ARN))["output"]
    emu.clear_faults(WEST)
    assert emu.endpoint_url(WEST) == url  # same port again
    assert bedrock.converse(**converse_kwargs(MODEL))["output"]


def test_refuse_window_follows_the_clock(client: ClientFactory, emu: Emulator, clock: FakeClock) -> None:
    emu.set_fault(WEST, Fault.refuse(starts_in_s=5, duration_s=10))
    assert emu.region_is_open(WEST)
    clock.advance(5)
    emu.tick()
    assert not emu.region_is_open(WEST)
    with pytest.raises(EndpointConnectionError):
        client("bedrock-runtime", WEST).converse(**converse_kwargs(MODEL))
    clock.advance(10)
    emu.tick()
    assert emu.region_is_open(WEST)
    assert emu.faults() == []


def test_close_and_open_region(client: ClientFactory, emu: Emulator) -> None:
    emu.close_region(EAST)
    with pytest.raises(EndpointConnectionError):
        client("bedrock-runtime", EAST).converse(**converse_kwargs(PT_ARN))
    emu.clear_faults()  # a manual close is not a fault: it stays closed
    assert not emu.region_is_open(EAST)
    emu.open_region(EAST)
    assert client("bedrock-runtime", EAST).converse(**converse_kwargs(PT_ARN))["output"]


def test_outage_interrupts_requests_in_flight(client: ClientFactory, emu: Emulator) -> None:
    emu.update_target((WEST, "bedrock", MODEL), ttft_ms=5000)
    bedrock = client("bedrock-runtime", WEST)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            bedrock.converse(**converse_kwargs(MODEL))
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 2
    while emu.target_stats((WEST, "bedrock", MODEL))["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    emu.close_region(WEST)
    worker.join(3)
    assert time.monotonic() - started < 1.5
    assert len(errors) == 1
    assert "Connection" in type(errors[0]).__name__


def test_slow_first_token(client: ClientFactory, emu: Emulator) -> None:
    emu.set_fault(WEST, Fault.slow_first_token(seconds=0.25, count=1))
    bedrock = client("bedrock-runtime", WEST)
    started = time.monotonic()
    reply = bedrock.converse(**converse_kwargs(MODEL))
    assert time.monotonic() - started >= 0.25
    assert reply["metrics"]["latencyMs"] >= 250
    assert bedrock.converse(**converse_kwargs(MODEL))["metrics"]["latencyMs"] < 250  # count=1: spent

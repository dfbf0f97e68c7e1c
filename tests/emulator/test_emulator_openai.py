"""The emulator's OpenAI-compatible kind, through the router's own openai backend: served answers, capacity (429
with Retry-After when full), 5xx faults, hangs and unknown targets, each reaching the router as its error class."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.emulator import Emulator, Fault, TargetSpec
from local.emulator.openai_compat import base_path
from local.emulator.targets import Kind
from spillway.backends.kinds import OpenAIRef
from spillway.backends.openai_compat import OpenAICompatBackend, StaticKeys
from spillway.config import Target
from spillway.errors import BackendError, ErrorClass

MODEL = "gpt-oss-120b"
SCOPE = ("us-east-1", "openai", MODEL)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    spec = TargetSpec("us-east-1", Kind.OPENAI, MODEL, echo=True, requests_per_minute=2)
    with Emulator([spec]) as emulator:
        yield emulator


def _call(emu: Emulator, text: str = "hi", model: str = MODEL, timeout_s: float = 5.0) -> str:
    base_url = emu.endpoint_url("us-east-1").rstrip("/") + base_path(model)
    target = Target("m/on_demand/us-east-1", "m", "on_demand", "us-east-1", OpenAIRef(base_url, model, "secret", "k"))
    request = {"messages": [{"role": "user", "content": [{"text": text}]}]}
    reply = OpenAICompatBackend(keys=StaticKeys({"k": "key"})).invoke(target, request, timeout_s)
    return str(reply.response["output"]["message"]["content"][0]["text"])


def _error(emu: Emulator, **kw: object) -> BackendError:
    with pytest.raises(BackendError) as caught:
        _call(emu, **kw)  # type: ignore[arg-type]
    return caught.value


def test_served_and_then_full(emu: Emulator) -> None:
    assert _call(emu, "one") == "one"
    assert _call(emu, "two") == "two"
    full = _error(emu)  # a third request in the minute: over requests_per_minute
    assert full.error_class is ErrorClass.CAPACITY
    assert full.http_status == 429
    assert full.retry_after_s == 1.0
    assert emu.target_stats(SCOPE)["throttled"] == 1


def test_a_5xx_fault_is_unavailable(emu: Emulator) -> None:
    emu.set_fault(SCOPE, Fault.error_response("unavailable"))
    error = _error(emu)
    assert (error.error_class, error.http_status) == (ErrorClass.UNAVAILABLE, 503)


def test_a_hang_times_out_as_unavailable(emu: Emulator) -> None:
    emu.set_fault(SCOPE, Fault.hang(seconds=5.0))
    error = _error(emu, timeout_s=0.3)
    assert (error.error_class, error.code) == (ErrorClass.UNAVAILABLE, "ReadTimeout")


def test_an_unknown_model_is_ours(emu: Emulator) -> None:
    error = _error(emu, model="no-such-model")
    assert (error.error_class, error.http_status) == (ErrorClass.OURS, 404)


def test_a_validation_fault_is_the_callers(emu: Emulator) -> None:
    emu.set_fault(SCOPE, Fault.error_response("validation"))
    assert _error(emu).error_class is ErrorClass.CLIENT

"""The emulator's OpenAI-compatible kind, through the router's own openai backend: served answers, capacity (429
with Retry-After when full), 5xx faults, hangs and unknown targets, each reaching the router as its error class;
and its streamed answer (``stream: true``) as the official `openai` package reads it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


# -- stream: true, read by the official `openai` package (httpx on loopback) --------------------------------------


def _openai() -> Any:
    return pytest.importorskip("openai", reason="the openai package is in requirements-dev.txt only")


def _openai_client(emu: Emulator) -> Any:
    base_url = emu.endpoint_url("us-east-1").rstrip("/") + base_path(MODEL)
    return _openai().OpenAI(base_url=base_url, api_key="local-key", max_retries=0)


def test_the_openai_package_reads_the_emulators_stream(emu: Emulator) -> None:
    stream = _openai_client(emu).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert {c.model for c in chunks} == {MODEL}
    assert emu.target_stats(SCOPE)["served"] == 1


def test_a_mid_stream_fault_is_an_error_chunk_the_package_raises(emu: Emulator) -> None:
    openai = _openai()
    emu.set_fault(SCOPE, Fault.stream_error("internal", after_tokens=2))
    stream = _openai_client(emu).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        _drain(stream, seen)
    assert caught.value.code == "server_error"  # OpenAI's error object: its code is the error type
    assert [c.choices[0].delta.content for c in seen] == ["one ", "two "]


def test_a_stream_over_capacity_is_refused_before_it_starts(emu: Emulator) -> None:
    openai = _openai()
    client = _openai_client(emu)
    _call(emu, "one")
    _call(emu, "two")
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    assert caught.value.response.headers["retry-after"] == "1"


def _drain(stream: Any, into: list[Any]) -> None:
    for chunk in stream:
        into.append(chunk)

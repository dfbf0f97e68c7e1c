"""Start and stop: quick, repeatable, no thread or port left behind."""

from __future__ import annotations

import socket
import threading

import pytest

from local.emulator import Emulator, Fault, TargetSpec
from tests.emulator.conftest import chat_body, converse_kwargs, default_targets, make_factory


def test_start_stop_many_times() -> None:
    baseline = threading.active_count()
    for _ in range(15):
        with Emulator(default_targets()) as emu:
            assert len(emu.endpoint_urls()) == 2
    assert threading.active_count() == baseline


def test_stop_with_live_keepalive_connections_and_requests() -> None:
    emu = Emulator(default_targets()).start()
    factory = make_factory(emu)
    bedrock = factory("bedrock-runtime", "us-west-2")
    sagemaker = factory("sagemaker-runtime", "us-east-1")
    bedrock.converse(**converse_kwargs("anthropic.claude-sonnet-4-v1:0"))
    sagemaker.invoke_endpoint(EndpointName="llama-escrow", Body=chat_body())
    emu.set_fault("*", Fault.hang(seconds=30))
    errors: list[Exception] = []

    def call() -> None:
        try:
            bedrock.converse(**converse_kwargs("anthropic.claude-sonnet-4-v1:0"))
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    while emu.target_stats(("us-west-2", "bedrock", "anthropic.claude-sonnet-4-v1:0"))["in_flight"] == 0:
        threading.Event().wait(0.005)
    emu.stop()
    worker.join(2)
    assert not worker.is_alive()
    assert len(errors) == 1  # the hanging call was cut off, not answered
    emu.stop()  # idempotent


def test_ports_are_released_on_stop() -> None:
    with Emulator(default_targets()) as emu:
        ports = [int(url.rsplit(":", 1)[1]) for url in emu.endpoint_urls().values()]
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0  # refused: nobody listens


def test_fixed_ports_and_duplicates() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Emulator([TargetSpec("r1", "bedrock", "m")], region_ports={"r1": port}, appconfig=False) as emu:
        assert emu.endpoint_url("r1") == f"http://127.0.0.1:{port}"
        with pytest.raises(ValueError, match="already a target"):
            emu.add_target({"region": "r1", "kind": "bedrock", "id": "m"})
        with pytest.raises(KeyError):
            emu.endpoint_url("nowhere")
        emu.remove_target(("r1", "bedrock", "m"))
        assert emu.targets() == []


def test_restart_keeps_urls_and_targets() -> None:
    emu = Emulator(default_targets())
    with emu:
        urls = emu.endpoint_urls()
    with emu:
        assert emu.endpoint_urls() == urls
        bedrock = make_factory(emu)("bedrock-runtime", "us-west-2")
        assert bedrock.converse(**converse_kwargs("anthropic.claude-sonnet-4-v1:0"))["output"]

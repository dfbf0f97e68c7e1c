"""The AppConfig Agent Lambda extension's local HTTP interface."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from local.emulator import Emulator, Fault
from tests.emulator.conftest import FakeClock

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[Emulator]:
    with Emulator(clock=clock) as emulator:
        yield emulator


def test_serves_the_current_configuration(emu: Emulator) -> None:
    assert emu.appconfig is not None
    url = emu.appconfig.config_url("spillway", "prod", "routing")
    assert url.startswith(emu.appconfig_url)
    version = emu.set_configuration("spillway", "prod", "routing", {"version": 1, "targets": []})
    status, body, headers = _get(url)
    assert status == 200
    assert json.loads(body) == {"version": 1, "targets": []}
    assert headers["Content-Type"] == "application/json"
    assert headers["Configuration-Version"] == version
    # Changed at run time; any content type.
    emu.set_configuration("spillway", "prod", "routing", "routing: {}\n", "application/x-yaml")
    status, body, headers = _get(url)
    assert (status, body, headers["Content-Type"]) == (200, b"routing: {}\n", "application/x-yaml")
    assert headers["Configuration-Version"] != version


def test_unknown_configuration_and_bad_path(emu: Emulator) -> None:
    assert emu.appconfig is not None
    status, body, _ = _get(emu.appconfig.config_url("spillway", "prod", "nope"))
    assert status == 404
    assert body.startswith(b"ResourceNotFoundException")
    assert _get(emu.appconfig_url + "/applications/x")[0] == 400
    assert emu.stats()["appconfig"]["not_found"] == 1


def test_faults(emu: Emulator) -> None:
    assert emu.appconfig is not None
    extension = emu.appconfig
    emu.set_configuration("a", "e", "p", b"{}")
    url = extension.config_url("a", "e", "p")
    extension.set_fault(Fault.error_response(count=1))
    status, body, _ = _get(url)
    assert status == 500
    assert body.startswith(b"InternalServerException")
    extension.set_fault(Fault(kind="error", status=503, count=1))
    assert _get(url)[0] == 503
    extension.set_fault(Fault.malformed_body(count=1))
    status, body, _ = _get(url)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    extension.set_fault(Fault.hang(seconds=30, count=1))
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        _get(url, timeout=0.2)
    assert _get(url)[0] == 200
    assert extension.stats()["faulted"] == 4


def test_refused_while_down(emu: Emulator, clock: FakeClock) -> None:
    assert emu.appconfig is not None
    emu.set_configuration("a", "e", "p", b"{}")
    url = emu.appconfig.config_url("a", "e", "p")
    emu.appconfig.set_fault(Fault.refuse(duration_s=5))
    with pytest.raises(urllib.error.URLError) as info:
        _get(url)
    assert isinstance(info.value.reason, ConnectionRefusedError)
    clock.advance(5)
    emu.tick()
    assert _get(url)[0] == 200


def test_hang_is_interrupted_by_stop(clock: FakeClock) -> None:
    emu = Emulator(clock=clock).start()
    assert emu.appconfig is not None
    emu.appconfig.set_fault(Fault.hang(seconds=60))
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        _get(emu.appconfig.config_url("a", "e", "p"), timeout=0.2)
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 1.5

"""The HTTP control API, the dict/JSON form and ``python -m local.emulator``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from local.emulator import ControlClient, Emulator, Fault
from tests.emulator.conftest import ENDPOINT, MODEL, WEST, chat_body, converse_kwargs, make_factory

CONFIG = {
    "targets": [
        {"region": "us-east-1", "kind": "bedrock", "id": "m", "max_in_flight": 2, "echo": True},
        {"region": "us-west-2", "kind": "bedrock", "id": MODEL},
        {"region": "us-west-2", "kind": "sagemaker", "id": ENDPOINT, "ttft_ms": 1},
    ],
    "regions": ["eu-west-1"],
    "appconfig": {"configurations": [{"application": "a", "environment": "e", "profile": "p", "content": {"x": 1}}]},
    "control": True,
}


def test_from_config() -> None:
    with Emulator.from_config(CONFIG) as emu:
        assert set(emu.regions) == {"us-east-1", "us-west-2", "eu-west-1"}
        assert len(emu.targets()) == 3
        assert emu.control_url is not None
        described = emu.describe()
        assert set(described) == {"regions", "targets", "appconfig", "control"}
        assert described["targets"][0] == CONFIG["targets"][0]  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown emulator config"):
        Emulator.from_config({"target": []})
    with Emulator.from_config(CONFIG["targets"], appconfig=False) as emu:  # a bare list works too
        assert emu.appconfig is None
        assert emu.control_url is None


def test_http_control_api() -> None:
    with Emulator.from_config(CONFIG) as emu:
        assert emu.control_url is not None
        control = ControlClient(emu.control_url)
        assert control.call("GET", "/health") == {"ok": True}
        assert control.state()["regions"] == emu.endpoint_urls()
        bedrock = make_factory(emu)("bedrock-runtime", WEST)

        fault_id = control.set_fault({"region": WEST, "kind": "bedrock"}, Fault.error_response("unavailable"))
        assert control.call("GET", "/faults")["faults"][0]["id"] == fault_id
        with pytest.raises(ClientError) as info:
            bedrock.converse(**converse_kwargs(MODEL))
        assert info.value.response["Error"]["Code"] == "ServiceUnavailableException"
        assert control.clear_faults(WEST) == 1
        assert bedrock.converse(**converse_kwargs(MODEL))["output"]

        control.set_fault(WEST, {"kind": "throttle", "count": 1})
        control.call("DELETE", f"/faults/{emu.faults()[0]['id']}")
        assert emu.faults() == []

        control.close_region(WEST)
        with pytest.raises(EndpointConnectionError):
            bedrock.converse(**converse_kwargs(MODEL))
        control.open_region(WEST)
        assert bedrock.converse(**converse_kwargs(MODEL))["output"]

        assert (
            control.update_target({"region": WEST, "kind": "bedrock", "id": MODEL}, output_tokens=2)["output_tokens"]
            == 2
        )
        added = control.call("POST", "/targets", {"region": "ap-south-1", "kind": "sagemaker", "id": "new"})
        assert added["region"] == "ap-south-1"
        sagemaker = make_factory(emu)("sagemaker-runtime", "ap-south-1")
        assert sagemaker.invoke_endpoint(EndpointName="new", Body=chat_body())["Body"].read()

        stats = control.stats()
        west = next(t for t in stats["targets"] if t["id"] == MODEL)
        assert (west["requests"], west["served"], west["errors"]) == (3, 2, 1)
        control.reset_stats()
        assert next(t for t in control.stats()["targets"] if t["id"] == MODEL)["requests"] == 0

        # AppConfig through the control API.
        request = urllib.request.Request(
            emu.control_url + "/appconfig/applications/a/environments/e/configurations/p",
            data=b"k: v",
            method="PUT",
            headers={"Content-Type": "application/x-yaml"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as response:
            assert json.loads(response.read())["version"]
        assert emu.appconfig is not None
        with opener.open(emu.appconfig.config_url("a", "e", "p"), timeout=5) as response:
            assert response.read() == b"k: v"
        control.call("POST", "/appconfig/faults", {"kind": "error", "status": 500})
        with pytest.raises(urllib.error.HTTPError):
            opener.open(emu.appconfig.config_url("a", "e", "p"), timeout=5)
        control.call("DELETE", "/appconfig/faults")

        # Errors are JSON with a status.
        for method, path, body, status in [
            ("GET", "/nowhere", None, 404),
            ("POST", "/faults", {"scope": WEST, "fault": {"kind": "nope"}}, 400),
            ("PATCH", "/targets", {"target": {"region": WEST, "kind": "bedrock", "id": "zz"}}, 404),
        ]:
            with pytest.raises(urllib.error.HTTPError) as http_error:
                control.call(method, path, body)
            assert http_error.value.code == status
            assert "error" in json.loads(http_error.value.read())


def test_python_dash_m(tmp_path: Path) -> None:
    config = tmp_path / "targets.json"
    config.write_text(json.dumps(CONFIG["targets"]))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "local.emulator", "--targets", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("}"):
                break
        described = json.loads("".join(lines))
        assert set(described["regions"]) == {"us-east-1", "us-west-2"}
        control = ControlClient(described["control"])
        assert control.call("GET", "/health") == {"ok": True}
        emu_stub = type("Stub", (), {"endpoint_url": lambda self, region: described["regions"][region]})()
        bedrock = make_factory(emu_stub)("bedrock-runtime", "us-east-1")  # type: ignore[arg-type]
        reply = bedrock.converse(**converse_kwargs("m", "from another process"))
        assert reply["output"]["message"]["content"][0]["text"] == "from another process"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0

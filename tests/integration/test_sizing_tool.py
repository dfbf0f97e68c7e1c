"""The sizing tool against the emulator with a known capacity: it must find the configured max_in_flight."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tools import sizing


def _run(tmp_path: Path, *extra: str) -> int:
    return sizing.main(
        [
            "--emulate-max-in-flight", "5", "--emulate-ttft-ms", "80", "--emulate-ms-per-token", "0",
            "--step-seconds", "0.4", "--max-seconds", "20", "--out", str(tmp_path), *extra,
        ]
    )  # fmt: skip


@pytest.mark.parametrize("step", [1, 2])
def test_finds_the_emulators_max_in_flight(tmp_path: Path, step: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--step", str(step)) == 0
    snippet = yaml.safe_load((tmp_path / "platform-snippet.yaml").read_text())
    found = snippet["models"]["claude-sonnet"]["regions"]["us-east-1"]["provisioned"]["max_in_flight"]
    assert 5 - step < found <= 5  # within one step, never above what the target holds
    assert (tmp_path / "sizing.png").stat().st_size > 0
    err = capsys.readouterr().err
    assert "stopped: throttles at" in err
    assert "in flight:" in err  # the progress display, one line a step


def test_bounded_by_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--max-requests", "30") == 0
    assert "spent --max-requests 30" in capsys.readouterr().err


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_credentials")
def test_refuses_aws_without_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sizing, "client_for", lambda *a, **k: pytest.fail("no client may be built"))
    assert _run(tmp_path, "--aws", "--model-id", "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/x") == 2
    assert capsys.readouterr().err.strip() == "error: --aws needs AWS credentials (none found); refusing to run"
    assert not (tmp_path / "platform-snippet.yaml").exists()


def test_a_real_target_needs_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--model-id", "arn:aws:bedrock:us-east-1:111122223333:provisioned-model/x") == 2
    assert "add --aws" in capsys.readouterr().err

"""The planner's inputs: a bad traffic profile or price file stops with one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

# A tool of the dev environment (greenlet, matplotlib, the CDK app's platform schema): not in the router's own
# test environment, where `make test-lambda-runtime` runs tests/unit again on the Lambda's Python.
pytest.importorskip("greenlet", reason="the planner's dependencies are in requirements-dev.txt only")
import yaml

from tools.planner import __main__ as planner_cli
from tools.planner.inputs import InputError, load_prices, load_traffic

ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = ROOT / "config" / "traffic.yaml"
PRICES = ROOT / "config" / "prices.yaml"
FEATURES = {"summarize-thread": None, "nightly-recap": None, "redact-escrow": None}
MODELS = {"claude-sonnet", "nova-lite", "llama-escrow", "gemini-flash", "gpt-azure"}  # config/platform.yaml's


def _write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _traffic_doc() -> dict:
    return yaml.safe_load(TRAFFIC.read_text())


def _prices_doc() -> dict:
    return yaml.safe_load(PRICES.read_text())


def test_the_example_inputs_load() -> None:
    traffic = load_traffic(TRAFFIC, FEATURES)
    prices = load_prices(PRICES, MODELS)
    summarize = traffic.features["summarize-thread"]
    assert len(summarize.requests_per_hour) == 168
    # The example's promise: a 10x daily swing for summaries, a nightly batch for recaps.
    weekday = summarize.requests_per_hour[:24]
    assert max(weekday) / min(weekday) == 10
    recap = traffic.features["nightly-recap"]
    assert recap.batch
    assert sum(1 for r in recap.requests_per_hour[:24] if r) == 2
    assert prices.on_demand_price("claude-sonnet").output_per_mtok == 15.0
    assert all(p.source and p.date for terms in prices.provisioned.values() for p in terms.values())


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (
            lambda d: d["features"].update({"summarize-threads": d["features"]["summarize-thread"]}),
            "features.summarize-threads",
            "unknown feature",
        ),
        (
            lambda d: d["features"]["summarize-thread"]["days"].__setitem__("tue", [9, 9, 9, -5] + [9] * 20),
            "features.summarize-thread.days.tue[3]",
            "must be >= 0",
        ),
        (
            lambda d: d["features"]["summarize-thread"]["days"].__setitem__("sat", [1] * 23),
            "features.summarize-thread.days.sat",
            "23 hours, expected 24",
        ),
        (lambda d: d["features"]["nightly-recap"]["days"].pop("sun"), "features.nightly-recap.days.sun", "missing"),
        (
            lambda d: d["features"]["nightly-recap"].__setitem__("output_tokens", "lots"),
            "features.nightly-recap.output_tokens",
            "expected an integer",
        ),
        (
            lambda d: d["capacity"]["models"]["claude-sonnet"].pop("ttft_ms"),
            "capacity.models.claude-sonnet.ttft_ms",
            "missing",
        ),
    ],
)
def test_bad_traffic_names_file_and_key(tmp_path: Path, mutate, key: str, words: str) -> None:
    doc = _traffic_doc()
    mutate(doc)
    path = _write(tmp_path, "traffic.yaml", doc)
    with pytest.raises(InputError) as caught:
        load_traffic(path, FEATURES)
    assert caught.value.key == key
    assert words in caught.value.message
    assert str(caught.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (
            lambda d: d["on_demand"]["nova-lite"]["standard"].pop("source"),
            "on_demand.nova-lite.standard.source",
            "missing",
        ),
        (
            lambda d: d["provisioned"]["claude-sonnet"]["one_month"].__setitem__("source", " "),
            "provisioned.claude-sonnet.one_month.source",
            "needs its source",
        ),
        (lambda d: d["batch"]["nova-lite"].__setitem__("date", "last week"), "batch.nova-lite.date", "YYYY-MM-DD"),
        (
            lambda d: d["on_demand"]["claude-sonnet"]["standard"].__setitem__("input_per_mtok", -3),
            "on_demand.claude-sonnet.standard.input_per_mtok",
            "must be >= 0",
        ),
        (lambda d: d["on_demand"].__setitem__("gpt-9", {}), "on_demand.gpt-9", "unknown model"),
        (
            lambda d: d["provisioned"]["nova-lite"].__setitem__("forever", {}),
            "provisioned.nova-lite.forever",
            "unknown key",
        ),
    ],
)
def test_bad_prices_name_file_and_key(tmp_path: Path, mutate, key: str, words: str) -> None:
    doc = _prices_doc()
    mutate(doc)
    path = _write(tmp_path, "prices.yaml", doc)
    with pytest.raises(InputError) as caught:
        load_prices(path, MODELS)
    assert caught.value.key == key
    assert words in caught.value.message


def test_cli_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _traffic_doc()
    doc["features"]["nightly-recap"]["days"]["wed"] = [0] * 25
    path = _write(tmp_path, "traffic.yaml", doc)
    out = tmp_path / "plan"
    assert planner_cli.main(["--traffic", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: features.nightly-recap.days.wed: 25 hours, expected 24"]
    assert not out.exists()  # nothing replayed, nothing written

"""Routing across backend kinds in the one-process world: a hierarchy of Claude on PT, then on demand, then a model on
an OpenAI-compatible endpoint (the emulator's) keeps serving, through both front doors, when every Bedrock target is
down; the dead targets' breakers open so later requests go straight to the other kind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from local.emulator import Fault, TargetSpec
from local.emulator.openai_compat import base_path
from local.emulator.targets import Kind
from local.localrun import LocalWorld

GPT = "gpt-oss/on_demand/us-east-1"
WIRE_MODEL = "openai.gpt-oss-120b-1-0"
FEATURE = "summarize-thread"
JSON = {"Content-Type": "application/json"}


def _with_openai_target(world: LocalWorld) -> dict[str, Any]:
    """The example's table plus an openai target as the feature's last model (its endpoint on the emulator)."""
    world.emu.add_target(TargetSpec("us-east-1", Kind.OPENAI, WIRE_MODEL, name=GPT, echo=True))
    table = world.table_copy()
    base_url = world.emu.endpoint_url("us-east-1").rstrip("/") + base_path(WIRE_MODEL)
    backend = {"kind": "openai", "base_url": base_url, "model": WIRE_MODEL, "auth": "sigv4"}
    table["targets"][GPT] = {"model": "gpt-oss", "capacity": "on_demand", "region": "us-east-1", "backend": backend}
    feature = table["features"][FEATURE]
    # The example's Bedrock models, then this echoing target (the example's own model in another cloud is
    # tests/integration/test_multicloud_local.py's).
    bedrock = {t["model"] for t in table["targets"].values() if t["backend"]["kind"] == "bedrock"}
    feature["models"] = [*(m for m in feature["models"] if m in bedrock), "gpt-oss"]
    feature["max_attempts"] = len(table["targets"])  # room to try every Bedrock target, then the other kind
    return table


@pytest.fixture
def mixed(world: LocalWorld) -> Iterator[LocalWorld]:
    world.deploy_table(_with_openai_target(world))
    world.await_config()
    yield world
    world.emu.remove_target(("us-east-1", "openai", WIRE_MODEL))


def test_with_every_bedrock_target_down_the_openai_target_serves_everything(mixed: LocalWorld) -> None:
    bedrock = [t for t in mixed.by_id.values() if t.kind == "bedrock"]
    assert len(bedrock) >= 4
    for target in bedrock:
        mixed.set_fault(target.id, Fault.error_response("unavailable"))
    served = []
    for i in range(30):
        body = {"model": FEATURE, "messages": [{"role": "user", "content": f"request {i}"}]}
        reply = mixed.http.request("POST", "/v1/chat/completions", json.dumps(body).encode(), JSON)
        assert reply.status == 200
        served.append(reply.target)
        assert reply.json()["choices"][0]["message"]["content"] == f"request {i}"  # the emulator echoes
    assert served == [GPT] * 30  # nothing dropped, every answer from the other kind
    # The breakers opened: later requests stop trying the dead Bedrock targets.
    last = mixed.http.converse(FEATURE, {"messages": [{"role": "user", "content": [{"text": "after"}]}]})
    assert last.target == GPT
    assert last.header("x-spillway-attempts") == "1"

"""The OpenAI front door and the openai backend kind in the one-process world: the `openai` package (SigV4-signed)
against the router, and a hierarchy mixing kinds (Claude on PT, on demand, then a model on an OpenAI-compatible
endpoint) that keeps serving when every Bedrock target is down."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from emulator import Fault, TargetSpec
from emulator.openai_compat import base_path
from emulator.targets import Kind
from localrun import LocalWorld
from tools.openai_client import client

GPT = "gpt-oss/on_demand/us-east-1"
WIRE_MODEL = "openai.gpt-oss-120b-1-0"
FEATURE = "summarize-thread"


def _with_openai_target(world: LocalWorld) -> dict[str, Any]:
    """The example's table plus an openai target as the feature's last model (its endpoint on the emulator)."""
    world.emu.add_target(TargetSpec("us-east-1", Kind.OPENAI, WIRE_MODEL, name=GPT, echo=True))
    table = world.table_copy()
    base_url = world.emu.endpoint_url("us-east-1").rstrip("/") + base_path(WIRE_MODEL)
    backend = {"kind": "openai", "base_url": base_url, "model": WIRE_MODEL, "auth": "sigv4"}
    table["targets"][GPT] = {"model": "gpt-oss", "capacity": "on_demand", "region": "us-east-1", "backend": backend}
    feature = table["features"][FEATURE]
    feature["models"] = [*feature["models"], "gpt-oss"]
    feature["max_attempts"] = len(table["targets"])  # room to try every Bedrock target, then the other kind
    return table


@pytest.fixture
def mixed(world: LocalWorld) -> LocalWorld:
    world.deploy_table(_with_openai_target(world))
    world.await_config()
    yield world
    world.emu.remove_target(("us-east-1", "openai", WIRE_MODEL))


def test_the_openai_package_calls_the_router_signed_with_sigv4(world: LocalWorld) -> None:
    sent: list[httpx2.Request] = []
    oa = client(world.url, "us-east-1", event_hooks={"request": [sent.append]})
    completion = oa.chat.completions.create(
        model=FEATURE, messages=[{"role": "user", "content": "hello from openai"}], max_completion_tokens=32
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    authorization = sent[0].headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/us-east-1/execute-api/aws4_request" in authorization
    models = [m.id for m in oa.models.list()]
    assert FEATURE in models


def test_the_openai_package_sees_the_routers_errors(world: LocalWorld) -> None:
    oa = client(world.url, "us-east-1")
    with pytest.raises(openai.NotFoundError) as caught:
        oa.chat.completions.create(model="no-such-feature", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model=FEATURE, messages=[{"role": "user", "content": "x"}], logit_bias={"1": 1})
    assert bad.value.param == "logit_bias"  # type: ignore[attr-defined]


def test_with_every_bedrock_target_down_the_openai_target_serves_everything(mixed: LocalWorld) -> None:
    bedrock = [t for t in mixed.by_id.values() if t.kind == "bedrock"]
    assert len(bedrock) >= 4
    for target in bedrock:
        mixed.set_fault(target.id, Fault.error_response("unavailable"))
    oa = client(mixed.url, "us-east-1")
    served = []
    for i in range(30):
        completion = oa.chat.completions.with_raw_response.create(
            model=FEATURE, messages=[{"role": "user", "content": f"request {i}"}]
        )
        served.append(completion.headers["x-spillway-target"])
        assert completion.parse().choices[0].message.content == f"request {i}"  # the emulator echoes
    assert served == [GPT] * 30  # nothing dropped, every answer from the other kind
    # The breakers opened: later requests stop trying the dead Bedrock targets.
    last = mixed.http.converse(FEATURE, {"messages": [{"role": "user", "content": [{"text": "after"}]}]})
    assert last.target == GPT
    assert last.header("x-spillway-attempts") == "1"

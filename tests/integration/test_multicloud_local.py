"""The example platform's models in other clouds, end to end on loopback: the routing table CDK renders, pointed at
the emulator; Vertex AI reached with a token from the role's workload identity federation (the STS and Google STS
stand-ins), Azure OpenAI with the key from its Secrets Manager secret (moto). With Bedrock out in every region, the
other clouds serve everything."""

from __future__ import annotations

import json

import pytest

from local.emulator import Fault
from local.localrun import LocalWorld

SUMMARIZE, RECAP = "summarize-thread", "nightly-recap"
GEMINI = "gemini-flash/on_demand/us-east-1"
AZURE_IDS = {"gpt-azure/on_demand/us-east-1", "gpt-azure/on_demand/us-west-2"}
JSON = {"Content-Type": "application/json"}


def _bedrock_down(world: LocalWorld) -> None:
    for target in world.by_id.values():
        if target.kind == "bedrock":
            world.set_fault(target.id, Fault.error_response("unavailable"))


def _chat(world: LocalWorld, feature: str, text: str) -> tuple[int, str | None, str]:
    body = {"model": feature, "messages": [{"role": "user", "content": text}]}
    reply = world.http.request("POST", "/v1/chat/completions", json.dumps(body).encode(), JSON)
    content = reply.json()["choices"][0]["message"]["content"] if reply.status == 200 else ""
    return reply.status, reply.target, content


def test_the_rendered_table_names_the_other_clouds_and_the_world_points_them_at_loopback(world: LocalWorld) -> None:
    backend = world.table_doc["targets"][GEMINI]["backend"]
    assert backend["auth"] == "workload_identity"
    assert backend["base_url"].startswith("http://127.0.0.1:")
    assert backend["token_url"].startswith("http://127.0.0.1:")
    azure = world.table_doc["targets"]["gpt-azure/on_demand/us-east-1"]["backend"]
    assert (azure["auth"], azure["secret_id"]) == ("secret", "spillway/providers/azure/api-key")


def test_with_bedrock_down_everywhere_vertex_serves_through_workload_identity(world: LocalWorld) -> None:
    identity = world.providers.identity
    assert identity is not None
    before = identity.exchanges
    _bedrock_down(world)
    served = [_chat(world, SUMMARIZE, f"request {i}") for i in range(25)]
    assert [status for status, _, _ in served] == [200] * 25  # nothing dropped
    assert {target for _, target, _ in served} == {GEMINI}
    assert 1 <= identity.exchanges - before <= 2  # one token, cached (the fresh router of a reset asks again)


def test_a_revoked_vertex_token_costs_no_request(world: LocalWorld) -> None:
    identity = world.providers.identity
    assert identity is not None
    _bedrock_down(world)
    assert _chat(world, SUMMARIZE, "warm")[0] == 200
    identity.expire_all()  # the provider revokes every token: a 401, a fresh exchange, the same attempt serves
    statuses = [_chat(world, SUMMARIZE, f"after {i}")[0] for i in range(5)]
    assert statuses == [200] * 5


def test_with_bedrock_down_azure_serves_with_the_secrets_key_and_survives_a_rotation(world: LocalWorld) -> None:
    _bedrock_down(world)
    first = [_chat(world, RECAP, f"recap {i}") for i in range(10)]
    assert [status for status, _, _ in first] == [200] * 10
    assert {target for _, target, _ in first} <= AZURE_IDS
    world.providers.rotate("spillway/providers/azure/api-key", world.table_doc)
    after = [_chat(world, RECAP, f"rotated {i}") for i in range(10)]
    assert [status for status, _, _ in after] == [200] * 10  # a 401 drops the cached key; the next read has the new


@pytest.mark.parametrize("feature", [SUMMARIZE, RECAP])
def test_healthy_bedrock_still_serves_first(world: LocalWorld, feature: str) -> None:
    status, target, _ = _chat(world, feature, "hello")
    assert status == 200
    assert target is not None
    assert world.by_id[target].kind == "bedrock"

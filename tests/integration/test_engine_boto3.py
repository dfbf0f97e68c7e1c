"""The engine with the real backends (boto3 bedrock-runtime and sagemaker-runtime clients) against the emulator."""

from __future__ import annotations

from local.emulator import Fault
from local.localrun import LocalWorld
from spillway.backends import ClientPool
from spillway.backends.bedrock import BedrockBackend
from spillway.backends.sagemaker import SageMakerBackend
from spillway.config import parse_routing_table
from spillway.engine import Engine, Status

REQUEST = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}


def _engine(world: LocalWorld) -> Engine:
    pool = ClientPool()
    backends = {"bedrock": BedrockBackend(pool), "sagemaker": SageMakerBackend(pool)}
    return Engine(parse_routing_table(world.table_doc), backends)


def test_engine_serves_each_backend_kind(world: LocalWorld) -> None:
    engine = _engine(world)
    bedrock = engine.handle("summarize-thread", REQUEST)
    sagemaker = engine.handle("redact-escrow", REQUEST)
    assert (bedrock.status, bedrock.target) == (Status.SERVED, "claude-sonnet/provisioned/us-east-1")
    assert (sagemaker.status, sagemaker.target) == (Status.SERVED, "llama-escrow/provisioned/us-east-1")
    assert sagemaker.response is not None
    assert sagemaker.response["output"]["message"]["content"]


def test_engine_sagemaker_failure_falls_back_to_bedrock(world: LocalWorld) -> None:
    for region in ("us-east-1", "us-west-2"):
        world.emu.set_fault((region, "sagemaker", "spillway-llama-escrow"), Fault.error_response("internal"))
    result = _engine(world).handle("redact-escrow", REQUEST)
    assert result.status is Status.SERVED
    assert result.fell_back
    assert result.target is not None
    assert result.target.startswith("claude-sonnet/")

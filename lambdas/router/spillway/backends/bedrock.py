"""Bedrock Runtime Converse, one client per region (and timeout tier), reused across invocations.

The target's ``model_id`` goes into ``modelId`` unchanged: a foundation model id, an inference profile id or a
Provisioned Throughput ARN (never parsed, never rebuilt). The caller's messages, system, inferenceConfig and
toolConfig pass through as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..backend import BackendReply, Usage
from ..config import BedrockRef, Target
from ..errors import BackendError, ErrorClass
from . import PooledBackend, backend_error, malformed, usage_int

SERVICE = "bedrock-runtime"
PASS_THROUGH = ("messages", "system", "inferenceConfig", "toolConfig")
# Converse response members returned to the caller (ResponseMetadata and anything new are dropped).
RESPONSE_KEYS = ("output", "stopReason", "usage", "metrics", "additionalModelResponseFields", "trace")


class BedrockBackend(PooledBackend):
    SERVICE = SERVICE

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        ref = target.backend
        if not isinstance(ref, BedrockRef):
            raise BackendError(ErrorClass.OURS, "WrongBackendKind")
        client = self.client(target, timeout_s)
        params: dict[str, Any] = {"modelId": ref.model_id}
        for key in PASS_THROUGH:
            if key in request:
                params[key] = request[key]
        t0 = self._clock()
        try:
            raw = client.converse(**params)
        except Exception as exc:  # every failure leaves as a BackendError, message dropped
            raise backend_error(exc) from None
        elapsed_ms = (self._clock() - t0) * 1000.0
        return _reply(raw, elapsed_ms)


def _reply(raw: Any, elapsed_ms: float) -> BackendReply:
    if not isinstance(raw, Mapping):
        raise malformed("Converse")
    output = raw.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, list) or not isinstance(raw.get("stopReason"), str):
        raise malformed("Converse")
    usage_raw = raw.get("usage")
    usage_map: Mapping[str, Any] = usage_raw if isinstance(usage_raw, Mapping) else {}
    usage = Usage(usage_int(usage_map.get("inputTokens")), usage_int(usage_map.get("outputTokens")))
    metrics_raw = raw.get("metrics")
    latency = metrics_raw.get("latencyMs") if isinstance(metrics_raw, Mapping) else None
    latency_ms = float(latency) if isinstance(latency, int | float) and not isinstance(latency, bool) else elapsed_ms
    response = {key: raw[key] for key in RESPONSE_KEYS if key in raw}
    response["usage"] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.input_tokens + usage.output_tokens,
        **{k: v for k, v in usage_map.items() if k not in ("inputTokens", "outputTokens", "totalTokens")},
    }
    response["metrics"] = {"latencyMs": round(latency_ms)}
    return BackendReply(response=response, latency_ms=latency_ms, ttft_ms=None, usage=usage)

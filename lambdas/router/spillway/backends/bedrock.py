"""Bedrock Runtime Converse, one client per region (and timeout tier), reused across invocations.

The target's ``model_id`` goes into ``modelId`` unchanged: a foundation model id, an inference profile id or a
Provisioned Throughput ARN (never parsed, never rebuilt). Every member of the caller's request (api.py admits the
ConverseRequest members but modelId and promptVariables) passes through as it is, with one translation: a blob
member arrives in the router's JSON body as base64 text, and boto3 wants raw bytes (given a str it would encode it
again), so blobs are decoded by walking botocore's own ConverseRequest shape, wherever the model puts them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from ..config import SERVICE_TIERS, Target
from ..errors import INVALID_BASE64, BackendError, ErrorClass, from_exception
from ..streaming import BackendStream
from . import PooledBackend, malformed, usage_int
from .contract import BackendReply, Usage
from .kinds import KINDS, BedrockRef

SERVICE = KINDS["bedrock"].service
OPERATION = "Converse"


class BedrockBackend(PooledBackend):
    SERVICE = SERVICE

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        ref = target.backend
        if not isinstance(ref, BedrockRef):
            raise BackendError(ErrorClass.OURS, "WrongBackendKind")
        client = self.client(target, timeout_s)
        shape = client.meta.service_model.operation_model(OPERATION).input_shape
        params: dict[str, Any] = {**dict(ref.defaults), **{k: v for k, v in request.items() if k != "modelId"}}
        params = decode_blobs(params, shape)
        params["modelId"] = ref.model_id
        t0 = self._clock()
        try:
            raw = client.converse(**params)
        except Exception as exc:  # every failure leaves as a BackendError, message dropped
            raise from_exception(exc) from None
        elapsed_ms = (self._clock() - t0) * 1000.0
        # Converse's response members go back to the caller as botocore parsed them (ResponseMetadata is not one).
        members = client.meta.service_model.operation_model(OPERATION).output_shape.members
        return _reply(raw, elapsed_ms, tuple(members))

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendStream:
        """ConverseStream (spillway/backends/streams.py)."""
        from .streams import open_bedrock_stream  # noqa: PLC0415 (streams imports this module)

        return open_bedrock_stream(self, target, request, timeout_s)


def decode_blobs(value: Any, shape: Any) -> Any:
    """`value` with every blob member of botocore `shape` decoded from base64 (a copy where anything changes).

    A blob that is not valid base64 is the caller's error (InvalidBase64), answered before any call. Members the
    shape does not know are left for botocore's parameter validation to refuse; documents are not descended."""
    kind = shape.type_name
    if kind == "blob":
        if not isinstance(value, str):
            return value
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BackendError(ErrorClass.CLIENT, INVALID_BASE64, 400) from None
    if kind == "structure" and isinstance(value, Mapping) and not shape.metadata.get("document"):
        members = shape.members
        return {key: decode_blobs(item, members[key]) if key in members else item for key, item in value.items()}
    if kind == "list" and isinstance(value, list):
        return [decode_blobs(item, shape.member) for item in value]
    if kind == "map" and isinstance(value, Mapping):
        return {key: decode_blobs(item, shape.value) for key, item in value.items()}
    return value


def _reply(raw: Any, elapsed_ms: float, response_keys: tuple[str, ...]) -> BackendReply:
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
    response = {key: raw[key] for key in response_keys if key in raw}
    response["usage"] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.input_tokens + usage.output_tokens,
        **{k: v for k, v in usage_map.items() if k not in ("inputTokens", "outputTokens", "totalTokens")},
    }
    response["metrics"] = {"latencyMs": round(latency_ms)}
    tier_raw = raw.get("serviceTier")
    tier = tier_raw.get("type") if isinstance(tier_raw, Mapping) else None
    return BackendReply(
        response=response,
        latency_ms=latency_ms,
        ttft_ms=None,
        usage=usage,
        service_tier=tier if tier in SERVICE_TIERS else None,  # a closed vocabulary: it goes into metrics
    )

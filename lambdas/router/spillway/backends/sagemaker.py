"""SageMaker InvokeEndpoint with the messages API of current LLM serving containers (LMI/vLLM, TGI).

The payload is chat-completions JSON, translated from and to Converse's shape by spillway/backends/chat.py. What
that API cannot express is in the registry (kinds.py), and such a request never reaches this backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..config import Target
from ..errors import BackendError, ErrorClass, from_exception
from ..streaming import BackendStream
from . import PooledBackend, malformed
from .chat import from_chat, to_chat
from .contract import BackendReply
from .kinds import KINDS, SageMakerRef

SERVICE = KINDS["sagemaker"].service


class SageMakerBackend(PooledBackend):
    SERVICE = SERVICE

    def invoke(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendReply:
        ref, payload = endpoint_and_payload(target, request)
        client = self.client(target, timeout_s)
        t0 = self._clock()
        try:
            raw = client.invoke_endpoint(
                EndpointName=ref.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(payload, separators=(",", ":")).encode(),
            )
            body = raw["Body"].read()
        except Exception as exc:  # every failure leaves as a BackendError, message dropped
            raise from_exception(exc) from None
        elapsed_ms = (self._clock() - t0) * 1000.0
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise malformed("SageMaker") from None
        return from_chat(answer, elapsed_ms)

    def open_stream(self, target: Target, request: Mapping[str, Any], timeout_s: float) -> BackendStream:
        """InvokeEndpointWithResponseStream, chat chunks as ConverseStream events (spillway/backends/streams.py)."""
        from .streams import open_sagemaker_stream  # noqa: PLC0415 (streams imports this module)

        return open_sagemaker_stream(self, target, request, timeout_s)


def endpoint_and_payload(target: Target, request: Mapping[str, Any]) -> tuple[SageMakerRef, dict[str, Any]]:
    """The target's endpoint and the request as the container's chat-completions payload (buffered or streamed)."""
    ref = target.backend
    if not isinstance(ref, SageMakerRef):
        raise BackendError(ErrorClass.OURS, "WrongBackendKind")
    try:
        return ref, to_chat(request)
    except BackendError:
        raise
    except (TypeError, AttributeError, ValueError, KeyError):
        # A request that passed the router's validation but that this container's API cannot express: the
        # caller's request, not the endpoint's health (it must not feed the breaker).
        raise BackendError(ErrorClass.CLIENT, "InvalidRequestForTarget", 400) from None

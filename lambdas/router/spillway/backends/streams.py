"""Streaming calls: Bedrock ConverseStream and SageMaker InvokeEndpointWithResponseStream, as ConverseStream events.

Both take the same request as their buffered twins (the same pass-through, blob decoding and chat translation) and
answer a spillway.streaming.BackendStream. Failures leave as BackendError, messages dropped: before the stream
starts from the call itself, inside it from the modeled exception events botocore raises while iterating. Those
events are named in lowerCamelCase on the wire (``throttlingException``); they are classified under the name of the
operation error they mirror (``ThrottlingException``), so a throttle inside a stream is capacity, not a failure.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from ..config import Target
from ..errors import BackendError, ErrorClass
from ..errors import from_exception as backend_error
from ..streaming import BackendStream, StreamEvent
from . import PooledBackend
from .bedrock import decode_blobs
from .chat_stream import translate
from .kinds import BedrockRef
from .sagemaker import endpoint_and_payload


def stream_backend_error(exc: BaseException) -> BackendError:
    """An exception raised while reading a stream, with a stream exception named as its operation error."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    if isinstance(code, str) and code[:1].islower():
        return BackendError.of(code[0].upper() + code[1:])
    return backend_error(exc)


class _BotocoreStream:
    """A botocore EventStream read as ConverseStream events; close() drops its connection."""

    def __init__(self, raw: Any, events: Iterator[StreamEvent]) -> None:
        self._raw = raw
        self._events = events

    def __iter__(self) -> Iterator[StreamEvent]:
        try:
            yield from self._events
        except BackendError:
            raise
        except Exception as exc:  # every failure leaves as a BackendError, message dropped
            raise stream_backend_error(exc) from None

    def close(self) -> None:
        # Closing a response does not wake a read blocked on its socket in another thread (the pump's): shut the
        # socket down first, so that read ends now and the connection is dropped, not returned to the pool.
        raw_stream = getattr(self._raw, "_raw_stream", None)
        connection = getattr(raw_stream, "_connection", None) or getattr(raw_stream, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._raw.close()


def _converse_events(raw: Any) -> Iterator[StreamEvent]:
    for item in raw:
        if not isinstance(item, Mapping) or len(item) != 1:
            raise BackendError(ErrorClass.UNAVAILABLE, "MalformedConverseStream", 200)
        ((name, members),) = item.items()
        yield name, members


def open_bedrock_stream(
    backend: PooledBackend, target: Target, request: Mapping[str, Any], timeout_s: float
) -> BackendStream:
    ref = target.backend
    if not isinstance(ref, BedrockRef):
        raise BackendError(ErrorClass.OURS, "WrongBackendKind")
    client = backend.client(target, timeout_s)
    shape = client.meta.service_model.operation_model("ConverseStream").input_shape
    params: dict[str, Any] = {**dict(ref.defaults), **{k: v for k, v in request.items() if k != "modelId"}}
    params = decode_blobs(params, shape)
    params["modelId"] = ref.model_id
    try:
        raw = client.converse_stream(**params)["stream"]
    except Exception as exc:  # every failure leaves as a BackendError, message dropped
        raise backend_error(exc) from None
    return _BotocoreStream(raw, _converse_events(raw))


def _payload_parts(raw: Any) -> Iterator[bytes]:
    for item in raw:
        part = item.get("PayloadPart") if isinstance(item, Mapping) else None
        data = part.get("Bytes") if isinstance(part, Mapping) else None
        if not isinstance(data, bytes):
            raise BackendError(ErrorClass.UNAVAILABLE, "MalformedSageMakerStream", 200)
        yield data


def open_sagemaker_stream(
    backend: PooledBackend, target: Target, request: Mapping[str, Any], timeout_s: float
) -> BackendStream:
    ref, payload = endpoint_and_payload(target, request)
    payload.update(stream=True, stream_options={"include_usage": True})
    client = backend.client(target, timeout_s)
    try:
        raw = client.invoke_endpoint_with_response_stream(
            EndpointName=ref.endpoint_name,
            ContentType="application/json",
            Accept="text/event-stream",
            Body=json.dumps(payload, separators=(",", ":")).encode(),
        )["Body"]
    except Exception as exc:  # every failure leaves as a BackendError, message dropped
        raise backend_error(exc) from None
    return _BotocoreStream(raw, translate(_payload_parts(raw)))

"""AWS's binary event-stream framing (application/vnd.amazon.eventstream), encoder side.

A message is: a 12-byte prelude (total length, headers length, both big-endian uint32, then the CRC32 of
those 8 bytes), the headers, the payload, and the CRC32 of everything before it. A header is its name's
length (1 byte), the name, a value type (7 = string), the value's length (2 bytes) and the value. botocore's
``EventStreamBuffer`` reads exactly this; the emulator's tests decode with it.

Events carry ``:message-type event``, ``:event-type`` (the member name of the stream's union, e.g.
``contentBlockDelta`` or ``PayloadPart``) and ``:content-type``. Modeled errors inside a stream are
``:message-type exception`` with ``:exception-type`` (e.g. ``throttlingException``) and a JSON payload.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BEDROCK_STREAM_EXCEPTIONS",
    "SAGEMAKER_STREAM_EXCEPTIONS",
    "encode_message",
    "event",
    "exception",
    "stream_exception_for",
]

_STRING = 7
_PRELUDE = struct.Struct(">II")

# alias -> ConverseStream's modeled stream exceptions (bedrock-runtime 2023-09-30, ConverseStreamOutput).
BEDROCK_STREAM_EXCEPTIONS: dict[str, str] = {
    "throttling": "throttlingException",
    "model_stream_error": "modelStreamErrorException",
    "model_error": "modelStreamErrorException",
    "internal": "internalServerException",
    "unavailable": "serviceUnavailableException",
    "validation": "validationException",
}
# alias -> InvokeEndpointWithResponseStream's (sagemaker-runtime 2017-05-13, ResponseStream): two only.
SAGEMAKER_STREAM_EXCEPTIONS: dict[str, str] = {
    "throttling": "ModelStreamError",
    "model_stream_error": "ModelStreamError",
    "model_error": "ModelStreamError",
    "validation": "ModelStreamError",
    "internal": "InternalStreamFailure",
    "unavailable": "InternalStreamFailure",
}


def stream_exception_for(name: str | None, bedrock: bool) -> str:
    """The stream exception a fault's ``error`` names on a Bedrock or a SageMaker stream."""
    catalog = BEDROCK_STREAM_EXCEPTIONS if bedrock else SAGEMAKER_STREAM_EXCEPTIONS
    name = name or "model_stream_error"
    if name in catalog:
        return catalog[name]
    if name in catalog.values():
        return name
    raise ValueError(
        f"unknown stream error {name!r}; one of: {', '.join(sorted(set(catalog) | set(catalog.values())))}"
    )


def validate_stream_error(name: str) -> None:
    """Raise ValueError unless ``name`` is a stream error of either service."""
    known = set(BEDROCK_STREAM_EXCEPTIONS) | set(BEDROCK_STREAM_EXCEPTIONS.values())
    known |= set(SAGEMAKER_STREAM_EXCEPTIONS.values())
    if name not in known:
        raise ValueError(f"unknown stream error {name!r}; one of: {', '.join(sorted(known))}")


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return bytes([len(raw_name)]) + raw_name + bytes([_STRING]) + struct.pack(">H", len(raw_value)) + raw_value


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One framed message: prelude, prelude CRC, headers, payload, message CRC."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude))
    body = head + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: Mapping[str, Any] | bytes, content_type: str = "application/json") -> bytes:
    """An event of the stream's union: a JSON member structure, or raw bytes (an ``eventpayload`` blob)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    headers = {":event-type": event_type, ":content-type": content_type, ":message-type": "event"}
    return encode_message(headers, data)


def exception(exception_type: str, body: Mapping[str, Any]) -> bytes:
    """A modeled exception inside the stream (botocore raises ``EventStreamError`` with this code)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps(body, separators=(",", ":")).encode())

"""The largest request the router takes, derived in one place from AWS's documented limits.

A request travels caller -> API Gateway (REST, Lambda proxy integration) -> the router Lambda, invoked
synchronously -> the model runtime. The tightest of those limits decides:

- API Gateway REST APIs take a payload of up to 10 MB ("Amazon API Gateway quotas": payload size).
- Lambda takes a synchronous invocation payload of up to 6 MB (6,291,456 bytes; "Lambda quotas": invocation
  payload, request and response). That payload is the whole proxy event, not the body: the body rides in it as a
  JSON string, so every ``"``, ``\\``, newline, carriage return and tab of the body is escaped (two bytes for one),
  next to the headers (twice: ``headers`` and ``multiValueHeaders``; at most 10,240 bytes of request line and
  headers on a REST API) and the request context.
- Bedrock Converse takes images of up to 3.75 MB and documents of up to 4.5 MB ("Converse" API reference,
  ImageBlock and DocumentBlock), base64 in the JSON body (4 bytes for 3). One image at Bedrock's largest fits the
  event (5,000,000 bytes as base64), and so does one document at its largest (6,000,000 bytes, about 250 KB to
  spare); several large ones together do not, and go by ``s3Location``.

So the body limit is what fits inside Lambda's payload next to the event's envelope, measured as the event carries
the body (`carried_size`). A body within it is never refused for its size; a larger one answers 413 (or never
reaches the router, when Lambda refuses the event first). A routing table may set a lower limit, never a higher.
"""

from __future__ import annotations

MB = 1024 * 1024
API_GATEWAY_PAYLOAD_BYTES = 10 * MB
LAMBDA_SYNC_PAYLOAD_BYTES = 6 * MB
API_GATEWAY_HEADERS_BYTES = 10_240  # request line and headers together, REST APIs
# Around the body in the proxy event: the headers twice, the request context (identity, ids, path, stage: about
# 2 KB), the resource, path and parameters. 16 KiB beyond the headers leaves room for long paths and identities.
EVENT_ENVELOPE_BYTES = 2 * API_GATEWAY_HEADERS_BYTES + 16 * 1024
MAX_REQUEST_BYTES = min(API_GATEWAY_PAYLOAD_BYTES, LAMBDA_SYNC_PAYLOAD_BYTES - EVENT_ENVELOPE_BYTES)

BEDROCK_IMAGE_BYTES = 3_750_000  # 3.75 MB per image
BEDROCK_DOCUMENT_BYTES = 4_500_000  # 4.5 MB per document

_ESCAPED = (b'"', b"\\", b"\n", b"\r", b"\t")  # JSON whitespace and string escapes: one byte more each


def carried_size(body: bytes, *, base64_encoded: bool = False) -> int:
    """The bytes `body` takes inside the Lambda event: base64 when API Gateway encoded it, else a JSON string
    (UTF-8, escapes counted; control characters other than JSON's whitespace are not valid in a JSON body)."""
    if base64_encoded:
        return 4 * ((len(body) + 2) // 3)
    return len(body) + sum(body.count(char) for char in _ESCAPED)

"""The request size limit, derived from AWS's documented limits (spillway/limits.py), checked against the event."""

from __future__ import annotations

import base64
import json

import pytest

from spillway import limits
from spillway.config import RoutingConfigError, parse_routing_table
from tests.unit.helpers import table_dict


def _event(body: str, header_bytes: int) -> dict[str, object]:
    """An API Gateway REST proxy event at its largest: headers at the REST limit, repeated as multiValueHeaders."""
    headers = {"Content-Type": "application/json", "X-Filler": "h" * (header_bytes - 40)}
    return {
        "resource": "/v1/features/{feature}/converse",
        "path": "/v1/features/" + "f" * 64 + "/converse",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "pathParameters": {"feature": "f" * 64},
        "requestContext": {
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"userArn": "arn:aws:sts::111122223333:assumed-role/" + "r" * 64 + "/" + "s" * 64},
            "resourcePath": "/v1/features/{feature}/converse",
            "path": "/prod/v1/features/" + "f" * 64 + "/converse",
            "accountId": "111122223333",
            "apiId": "abcdef1234",
            "stage": "prod",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def _image_request(raw_bytes: int, text: str = "") -> bytes:
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(b"\x89" * raw_bytes).decode()}}}
    message = {"role": "user", "content": [{"text": text or "describe"}, image]}
    return json.dumps({"messages": [message]}).encode()


def test_the_limit_is_lambdas_payload_less_the_envelope_and_under_api_gateways() -> None:
    assert limits.MAX_REQUEST_BYTES == limits.LAMBDA_SYNC_PAYLOAD_BYTES - limits.EVENT_ENVELOPE_BYTES
    assert limits.MAX_REQUEST_BYTES < limits.API_GATEWAY_PAYLOAD_BYTES


@pytest.mark.parametrize("quote_heavy", [False, True])
def test_a_body_at_the_limit_fits_in_lambdas_payload_with_the_largest_headers(quote_heavy: bool) -> None:
    unit = json.dumps('say "hi"\n' if quote_heavy else "abcdefgh")[1:-1].encode()  # as it sits in the body
    skeleton = json.dumps({"messages": [{"role": "user", "content": [{"text": "TEXT"}]}]}).encode()
    room = limits.MAX_REQUEST_BYTES - limits.carried_size(skeleton.replace(b"TEXT", b""))
    units, pad = divmod(room, limits.carried_size(unit))
    body = skeleton.replace(b"TEXT", unit * units + b"a" * pad)
    assert limits.carried_size(body) == limits.MAX_REQUEST_BYTES
    event = _event(body.decode(), limits.API_GATEWAY_HEADERS_BYTES)
    assert len(json.dumps(event, separators=(",", ":")).encode()) <= limits.LAMBDA_SYNC_PAYLOAD_BYTES


@pytest.mark.parametrize(
    "body", [b"{}", b'{"a": "b\\"c"}', b'{\n\t"k": "\\\\x"\r\n}', '{"t": "caf\u00e9 \u2603"}'.encode()]
)
def test_carried_size_is_the_bodys_length_inside_the_event(body: bytes) -> None:
    assert limits.carried_size(body) == len(json.dumps(body.decode(), ensure_ascii=False).encode()) - 2
    assert limits.carried_size(body, base64_encoded=True) == len(base64.b64encode(body))


def test_bedrocks_largest_image_and_document_fit_but_not_two_of_them() -> None:
    for largest in (limits.BEDROCK_IMAGE_BYTES, limits.BEDROCK_DOCUMENT_BYTES):
        assert limits.carried_size(_image_request(largest)) <= limits.MAX_REQUEST_BYTES
    assert limits.carried_size(_image_request(2 * limits.BEDROCK_IMAGE_BYTES)) > limits.MAX_REQUEST_BYTES


def test_a_routing_table_may_lower_the_limit_but_not_raise_it() -> None:
    doc = table_dict()
    del doc["limits"]
    assert parse_routing_table(doc).limits.max_request_bytes == limits.MAX_REQUEST_BYTES
    doc["limits"] = {"max_request_bytes": limits.MAX_REQUEST_BYTES + 1}
    with pytest.raises(RoutingConfigError) as raised:
        parse_routing_table(doc)
    assert raised.value.path == "limits.max_request_bytes"

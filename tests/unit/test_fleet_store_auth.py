"""The fleet store's IAM token and URL parsing against their contracts: botocore's own SigV4 query presigner gives
the same token for the same request and instant (AWS's ElastiCache IAM authentication: a presigned GET of
http://<cache>/?Action=connect&User=<user>[&ResourceType=ServerlessCache] for the service "elasticache")."""

from __future__ import annotations

import datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spillway.fleet_store import elasticache_iam_token, iam_credentials
from spillway.resp import Address, encode, parse_url

MOMENT = datetime.datetime(2026, 12, 4, 14, 30, 5, tzinfo=datetime.UTC)


def botocore_token(cache: str, user: str, region: str, creds: Credentials, *, serverless: bool) -> str:
    params = {"Action": "connect", "User": user}
    if serverless:
        params["ResourceType"] = "ServerlessCache"
    request = AWSRequest(method="GET", url=f"http://{cache}/", params=params)
    botocore.auth.SigV4QueryAuth(creds, "elasticache", region, expires=900).add_auth(request)
    return str(request.prepare().url).removeprefix("http://")


@pytest.mark.parametrize("serverless", [True, False])
@pytest.mark.parametrize("session_token", [None, "IQoJb3JpZ2luX2VjE/+=session"])
def test_the_token_is_what_botocores_presigner_signs(
    monkeypatch: pytest.MonkeyPatch, serverless: bool, session_token: str | None
) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: MOMENT.replace(tzinfo=None))
    creds = Credentials("AKIAEXAMPLE", "wJalr/XUtnFEMI+K7MDENG", session_token)
    ours = elasticache_iam_token(
        user_id="spillway-router",
        cache_name="spillway-fleet-use1",
        region="us-east-1",
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        session_token=session_token,
        serverless=serverless,
        now=MOMENT,
    )
    theirs = botocore_token("spillway-fleet-use1", "spillway-router", "us-east-1", creds, serverless=serverless)
    host, _, query = ours.partition("/?")
    assert host == "spillway-fleet-use1"
    # The same parameters, signature included (the server canonicalises the order; botocore keeps its own).
    assert sorted(query.split("&")) == sorted(theirs.partition("/?")[2].split("&"))
    assert "X-Amz-Signature=" in query


def test_the_token_changes_with_the_instant_and_the_credentials() -> None:
    base = {"user_id": "u", "cache_name": "c", "region": "us-east-1", "access_key": "A", "secret_key": "S"}
    first = elasticache_iam_token(**base, now=MOMENT)
    assert first != elasticache_iam_token(**base, now=MOMENT + datetime.timedelta(seconds=1))
    assert first != elasticache_iam_token(**{**base, "secret_key": "T"}, now=MOMENT)


def test_credentials_come_from_the_role_environment_at_each_connection() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "tok"}
    make = iam_credentials(user_id="router", cache_name="cache", region="eu-west-1", environ=env)
    user, token = make()
    assert user == "router"
    assert "X-Amz-Credential=AKIA1%2F" in token
    assert "X-Amz-Security-Token=tok" in token
    env["AWS_ACCESS_KEY_ID"] = "AKIA2"  # rotated role credentials are picked up by the next connection
    assert "X-Amz-Credential=AKIA2%2F" in make()[1]


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1:6390/0", Address("127.0.0.1", 6390, tls=False, db=0)),
        ("redis://127.0.0.1:6390/2", Address("127.0.0.1", 6390, tls=False, db=2)),
        (
            "rediss://fleet-abc.serverless.use1.cache.amazonaws.com:6379",
            Address("fleet-abc.serverless.use1.cache.amazonaws.com", 6379, tls=True),
        ),
        ("redis://localhost", Address("localhost", 6379)),
    ],
)
def test_store_urls(url: str, address: Address) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize("url", ["http://x:1", "redis://user:pw@x:1", "redis://:1", "redis://x:0", "redis://x:port"])
def test_bad_store_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (int() and parse_url both say ValueError)
        parse_url(url)


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings() -> None:
    assert (
        encode(["SET", "k", b"\x00v", 5, 0.5])
        == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$1\r\n5\r\n$3\r\n0.5\r\n"
    )

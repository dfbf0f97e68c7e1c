"""Workload identity federation: another cloud's access token from the function's own AWS role, no stored secret.

Two calls, both over private paths: AWS STS ``GetWebIdentityToken`` (through the cell's STS interface endpoint)
signs a short-lived JWT for the function's role whose audience is the provider's workload identity pool provider;
the provider's security token service (Google's ``sts.googleapis.com/v1/token``, reached through Private Service
Connect) exchanges it (RFC 8693) for an access token. The access token is cached until shortly before it expires,
so a warm environment pays the exchange about once an hour per provider; a 401 from the model endpoint drops it.

Errors keep the router's taxonomy: STS refusing us, or the exchange answering 4xx, is ours (a deployment bug: the
pool's trust, the role's permission, the account's outbound federation switch); a timeout, a 5xx or a malformed
answer is unavailable. Neither service's message is kept.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from ..errors import BackendError, ErrorClass
from .kinds import OpenAIRef

TOKEN_TIMEOUT_S = 2.0
JWT_LIFETIME_S = 300  # the web identity token only has to live through the exchange (IAM pins the maximum)
SIGNING_ALGORITHM = "RS256"
REFRESH_MARGIN_S = 120.0  # refresh this long before the access token expires: no attempt carries a dying token
MAX_ANSWER_BYTES = 64 * 1024
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN, not a secret)
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN, not a secret)
JWT = "urn:ietf:params:oauth:token-type:jwt"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def jwt_audience(audience: str) -> str:
    """The audience of the AWS-signed JWT: Google's default allowed audience for a pool provider ("https:" + name)."""
    return "https:" + audience


def exchange_form(audience: str, subject_token: str) -> dict[str, str]:
    """The RFC 8693 token exchange request, as Google's STS takes it (form-encoded)."""
    return {
        "grant_type": TOKEN_EXCHANGE,
        "audience": audience,
        "scope": CLOUD_PLATFORM_SCOPE,
        "requested_token_type": ACCESS_TOKEN,
        "subject_token_type": JWT,
        "subject_token": subject_token,
    }


# (url, form fields, timeout) -> (status, body)
FormPoster = Callable[[str, Mapping[str, str], float], tuple[int, bytes]]


def post_form(url: str, fields: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
    parts = urlsplit(url)
    make = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = make(parts.netloc, timeout=timeout_s)
    try:
        body = urlencode(dict(fields)).encode()
        conn.request(
            "POST", parts.path or "/", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = conn.getresponse()
        return response.status, response.read(MAX_ANSWER_BYTES + 1)
    except TimeoutError:
        raise BackendError(ErrorClass.UNAVAILABLE, "TokenExchangeTimeout") from None
    except (OSError, http.client.HTTPException) as exc:
        raise BackendError(ErrorClass.UNAVAILABLE, type(exc).__name__) from None
    finally:
        conn.close()


class FederatedTokens:
    """Access tokens per (audience, token URL), from the function's role. ``make_sts(region)`` gives a boto3 STS
    client of the target's region (GetWebIdentityToken is regional only)."""

    def __init__(
        self,
        make_sts: Callable[[str], Any],
        *,
        post: FormPoster = post_form,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_sts = make_sts
        self._post = post
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}

    def token(self, ref: OpenAIRef, region: str) -> str:
        if ref.audience is None or ref.token_url is None:
            raise BackendError(ErrorClass.OURS, "NoWorkloadIdentity")
        key = (ref.audience, ref.token_url)
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        subject = self._web_identity_token(ref.audience, region)
        status, raw = self._post(ref.token_url, exchange_form(ref.audience, subject), TOKEN_TIMEOUT_S)
        if status != 200:
            if status in {408, 429} or status >= 500:
                raise BackendError(ErrorClass.UNAVAILABLE, f"TokenExchangeHttp{status}", status)
            raise BackendError(ErrorClass.OURS, f"TokenExchangeHttp{status}", status)
        access, lifetime = _access_token(raw)
        with self._lock:
            self._cache[key] = (access, self._clock() + max(0.0, lifetime - REFRESH_MARGIN_S))
        return access

    def forget(self, ref: OpenAIRef) -> None:
        if ref.audience is not None and ref.token_url is not None:
            with self._lock:
                self._cache.pop((ref.audience, ref.token_url), None)

    def _web_identity_token(self, audience: str, region: str) -> str:
        try:
            answer = self._make_sts(region).get_web_identity_token(
                Audience=[jwt_audience(audience)], DurationSeconds=JWT_LIFETIME_S, SigningAlgorithm=SIGNING_ALGORITHM
            )
            return str(answer["WebIdentityToken"])
        except BackendError:
            raise
        except Exception as exc:  # AccessDenied, outbound federation off, no endpoint: ours; its message is dropped
            unavailable = type(exc).__name__ in ("ConnectTimeoutError", "ReadTimeoutError", "EndpointConnectionError")
            if unavailable:
                raise BackendError(ErrorClass.UNAVAILABLE, "WebIdentityTokenTimeout") from None
            raise BackendError(ErrorClass.OURS, "WebIdentityTokenUnavailable") from None


def _access_token(raw: bytes) -> tuple[str, float]:
    """(access token, seconds it lives) from the exchange's answer; a malformed answer is unavailable."""
    if len(raw) > MAX_ANSWER_BYTES:
        raise BackendError(ErrorClass.UNAVAILABLE, "MalformedTokenExchange")
    try:
        answer = json.loads(raw)
        token, lifetime = answer["access_token"], answer.get("expires_in", 0)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise BackendError(ErrorClass.UNAVAILABLE, "MalformedTokenExchange") from None
    if not isinstance(token, str) or not token or isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
        raise BackendError(ErrorClass.UNAVAILABLE, "MalformedTokenExchange")
    return token, float(lifetime)

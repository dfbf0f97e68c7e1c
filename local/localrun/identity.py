"""Workload identity federation on loopback: AWS STS's GetWebIdentityToken and Google's token exchange, one server.

The router's ``workload_identity`` auth (lambdas/router/spillway/backends/workload_identity.py) makes two calls,
and this server answers both, so the whole path runs in tests, chaos and the demo with no account anywhere:

- ``POST /`` with ``Action=GetWebIdentityToken``: AWS STS's query protocol, reached by a real boto3 STS client
  (``AWS_ENDPOINT_URL_STS``) and answered in STS's XML (botocore's model parses it: the contract is AWS's). The
  request must be SigV4-signed for ``sts``; the JWT names the role, the audiences asked for, and expires after
  ``DurationSeconds``. AWS signs with RS256 or ES384 from the account's issuer; this stand-in signs HS256 with a key
  of its own: nothing outside this process has to verify it.
- ``POST /v1/token``: Google STS's RFC 8693 token exchange. It takes the JWT only for the pool provider it is set
  up with (the JWT's audience must be ``https:`` + that name), unexpired and signed by this server, and issues an
  access token valid ``access_lifetime_s``. Errors are OAuth's (``{"error", "error_description"}``, 400 or 401).

:meth:`IdentityStandIns.valid` tells the emulator which access tokens it may accept (``Emulator.require_bearer``).
:meth:`down` makes the exchange answer 503, as an outage of the provider's token service would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

LOCAL_ISSUER = "https://local-issuer.tokens.sts.global.api.aws"  # the account's outbound federation issuer, locally
LOCAL_ROLE = "arn:aws:iam::111122223333:role/spillway-router-local"
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
SIGNING_ALGORITHMS = ("RS256", "ES384")  # what GetWebIdentityToken accepts
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN, not a secret)
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN, not a secret)
JWT = "urn:ietf:params:oauth:token-type:jwt"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class IdentityStandIns:
    """STS's GetWebIdentityToken and Google's STS token exchange on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *audiences: str,
        access_lifetime_s: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audiences = frozenset(audiences)  # the workload identity pool providers the exchange serves
        self.access_lifetime_s = access_lifetime_s
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._access: dict[str, float] = {}  # access token -> expiry
        self._down = False
        self.web_identity_tokens = 0  # JWTs issued
        self.exchanges = 0  # access tokens issued
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> Self:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="identity-stand-ins", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-ins are not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def sts_url(self) -> str:
        """AWS STS's regional endpoint, locally (``AWS_ENDPOINT_URL_STS``)."""
        return self.url

    @property
    def token_url(self) -> str:
        """Google's token exchange, locally (a routing table's ``token_url``)."""
        return self.url + "/v1/token"

    # -- faults and checks --------------------------------------------------------------------------------------

    def down(self) -> None:
        self._down = True

    def up(self) -> None:
        self._down = False

    def valid(self, access_token: str) -> bool:
        """Whether the exchange issued this access token and it has not expired (the emulator's bearer check)."""
        with self._lock:
            expiry = self._access.get(access_token)
        return expiry is not None and self.clock() < expiry

    def expire_all(self) -> None:
        """Every access token issued so far expires now (a provider revoking them, or an hour passing)."""
        with self._lock:
            self._access.clear()

    # -- the two services ---------------------------------------------------------------------------------------

    def _jwt(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def _claims(self, token: str) -> dict[str, Any] | None:
        """The JWT's claims if this server signed it, else None."""
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(signature)):
                return None
            claims = json.loads(_unb64(payload))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) else None

    def get_web_identity_token(self, form: dict[str, list[str]], authorization: str) -> tuple[int, str]:
        """STS GetWebIdentityToken: (status, XML)."""
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or "/sts/aws4_request" not in authorization:
            return 403, _sts_error("Sender", "MissingAuthenticationToken", "Request is missing Authentication Token")
        audiences = [v[0] for k, v in sorted(form.items()) if k.startswith("Audience.member.")]
        if not audiences:
            return 400, _sts_error("Sender", "ValidationError", "Audience is required")
        algorithm = (form.get("SigningAlgorithm") or [""])[0]
        if algorithm not in SIGNING_ALGORITHMS:
            return 400, _sts_error("Sender", "ValidationError", "SigningAlgorithm must be RS256 or ES384")
        try:
            duration = int((form.get("DurationSeconds") or ["300"])[0])
        except ValueError:
            duration = -1
        if not 60 <= duration <= 3600:
            return 400, _sts_error("Sender", "ValidationError", "DurationSeconds must be between 60 and 3600")
        now = int(self.clock())
        claims = {"iss": LOCAL_ISSUER, "sub": LOCAL_ROLE, "aud": audiences if len(audiences) > 1 else audiences[0]}
        token = self._jwt({**claims, "iat": now, "exp": now + duration, "jti": uuid.uuid4().hex})
        with self._lock:
            self.web_identity_tokens += 1
        expiration = datetime.fromtimestamp(now + duration, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = (
            f'<GetWebIdentityTokenResponse xmlns="{STS_NAMESPACE}"><GetWebIdentityTokenResult>'
            f"<WebIdentityToken>{token}</WebIdentityToken><Expiration>{expiration}</Expiration>"
            f"</GetWebIdentityTokenResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
            "</ResponseMetadata></GetWebIdentityTokenResponse>"
        )
        return 200, body

    def exchange(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:  # noqa: PLR0911 (one per refusal)
        """Google STS token exchange: (status, JSON)."""
        if self._down:
            return 503, {"error": "temporarily_unavailable", "error_description": "The service is unavailable."}
        field = {k: v[0] for k, v in form.items()}
        if field.get("grant_type") != TOKEN_EXCHANGE:
            return 400, _oauth_error("unsupported_grant_type", "grant_type must be token-exchange")
        if field.get("requested_token_type") != ACCESS_TOKEN or field.get("subject_token_type") != JWT:
            return 400, _oauth_error("invalid_request", "requested or subject token type is not supported")
        audience = field.get("audience", "")
        if audience not in self.audiences:
            return 400, _oauth_error("invalid_target", "The target service indicated by the audience is invalid")
        claims = self._claims(field.get("subject_token", ""))
        if claims is None or claims.get("iss") != LOCAL_ISSUER:
            return 400, _oauth_error("invalid_grant", "The subject token is invalid")
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if "https:" + audience not in audiences:
            return 400, _oauth_error("invalid_grant", "The audience of the subject token does not match")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self.clock():
            return 400, _oauth_error("invalid_grant", "The subject token has expired")
        access = "ya29.local-" + secrets.token_urlsafe(24)
        with self._lock:
            self._access[access] = self.clock() + self.access_lifetime_s
            self.exchanges += 1
        return 200, {
            "access_token": access,
            "issued_token_type": ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": self.access_lifetime_s,
        }


def _sts_error(kind: str, code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{STS_NAMESPACE}"><Error><Type>{kind}</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def _oauth_error(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description}


def _handler_for(stand_ins: IdentityStandIns) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:  # quiet: no access log lines
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace")) if length else {}
            if self.path == "/v1/token":
                status, answer = stand_ins.exchange(form)
                self._reply(status, json.dumps(answer).encode(), "application/json")
            elif self.path == "/" and form.get("Action") == ["GetWebIdentityToken"]:
                status, xml = stand_ins.get_web_identity_token(form, self.headers.get("Authorization") or "")
                self._reply(status, xml.encode(), "text/xml")
            else:
                self._reply(404, b'{"error": "not_found"}', "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler

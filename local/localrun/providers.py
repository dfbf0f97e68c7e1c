"""The other clouds of the platform file on loopback: what an ``openai`` target needs besides the emulator.

The routing table CDK renders names the providers' real endpoints (Vertex AI, Azure OpenAI, Google's STS). Locally:

- each openai target's ``base_url`` becomes its emulator endpoint (``emulator.openai_compat.base_path``), and a
  Vertex target's ``token_url`` the token exchange of :class:`~localrun.identity.IdentityStandIns`;
- the router's STS client reaches the same stand-ins (``AWS_ENDPOINT_URL_STS``) and its Secrets Manager client a
  moto server on loopback (``AWS_ENDPOINT_URL_SECRETS_MANAGER``, started only when a provider keeps a key), where
  each provider secret is created with a key;
- the emulator accepts, per target, only what the real provider would: a Vertex target a live access token from
  the exchange, an Azure or self-hosted target the key in its secret (``Emulator.require_bearer``). Bedrock's
  OpenAI-compatible targets are signed with SigV4, which the emulator does not check (as for Converse).

So the whole path (role -> web identity token -> exchange -> bearer; secret -> bearer) runs with no account.
"""

from __future__ import annotations

import copy
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from local.emulator import Emulator, TargetKey
from local.emulator.openai_compat import base_path
from local.emulator.targets import Kind
from local.localrun.identity import IdentityStandIns

REFUSED = "http://127.0.0.1:1"  # nothing listens: a call there fails at once, on this machine


class LocalProviders:
    """Stand-ins for the providers an (already rendered) routing table's openai targets use."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self.backends: dict[str, dict[str, Any]] = {
            target_id: dict(target["backend"])
            for target_id, target in table["targets"].items()
            if target["backend"]["kind"] == "openai"
        }
        audiences = sorted({b["audience"] for b in self.backends.values() if b["auth"] == "workload_identity"})
        self.identity: IdentityStandIns | None = IdentityStandIns(*audiences) if audiences else None
        self.keys: dict[str, str] = {}  # secret id -> the key the secret holds (and the emulator accepts)
        self._secrets_url: str | None = None
        self._moto: Any = None

    def start(self, emu: Emulator, table: Mapping[str, Any], *, with_secrets: bool = True) -> None:
        """Start the token exchange and (``with_secrets``, when a provider keeps a key) moto's Secrets Manager with
        the keys in it, and set the emulator's checks. Without them a key read is refused on loopback."""
        if self.identity is not None:
            self.identity.start()
        if with_secrets and self._secrets(table):
            self._start_moto()
        secrets_url = self._secrets_url
        # One secret per cell that uses it, as the stacks create them (the router reads its target's region's).
        for secret_id, region in self._secrets(table):
            self.keys.setdefault(secret_id, "local-" + secrets.token_urlsafe(24))
            if secrets_url is not None:
                self._put_secret(region, secret_id, create=True)
        for target_id, backend in self.backends.items():
            key = TargetKey(table["targets"][target_id]["region"], Kind.OPENAI, backend["model"])
            if backend["auth"] == "workload_identity" and self.identity is not None:
                emu.require_bearer(key, self.identity.valid)
            elif backend["auth"] == "secret":
                emu.require_bearer(key, lambda token, s=backend["secret_id"]: token == self.keys.get(s))

    def stop(self) -> None:
        if self.identity is not None:
            self.identity.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def _start_moto(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: no access log lines
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 (only where a provider keeps a key)

        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        self._secrets_url = f"http://127.0.0.1:{self._moto.get_host_and_port()[1]}"

    def localize(self, table: Mapping[str, Any], emu: Emulator) -> dict[str, Any]:
        """``table`` with each openai target pointed at its loopback stand-ins."""
        out = copy.deepcopy(dict(table))
        for target in out["targets"].values():
            backend = target["backend"]
            if backend["kind"] != "openai":
                continue
            backend["base_url"] = emu.endpoint_url(target["region"]).rstrip("/") + base_path(backend["model"])
            if backend["auth"] == "workload_identity" and self.identity is not None:
                backend["token_url"] = self.identity.token_url
        return out

    def env(self) -> dict[str, str]:
        """The router's environment for the stand-ins: botocore's own per-service endpoint settings. Both always
        point at loopback: without moto, a secret read is refused at once (port 1), never sent to AWS."""
        return {
            "AWS_ENDPOINT_URL_STS": self.identity.sts_url if self.identity is not None else REFUSED,
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": self._secrets_url or REFUSED,
        }

    def rotate(self, secret_id: str, table: Mapping[str, Any]) -> str:
        """A rotation: the provider takes a new key (the old one stops working) and every cell's secret gets it."""
        self.keys[secret_id] = "local-" + secrets.token_urlsafe(24)
        for name, region in self._secrets(table):
            if name == secret_id:
                self._put_secret(region, secret_id, create=False)
        return self.keys[secret_id]

    def _put_secret(self, region: str, secret_id: str, *, create: bool) -> None:
        """Create the secret with its key, or give it a new value (moto's state outlives a world in one process)."""
        client = self._secrets_client(region)
        if create:
            try:
                client.create_secret(Name=secret_id, SecretString=self.keys[secret_id])
                return
            except client.exceptions.ResourceExistsException:
                pass
        client.put_secret_value(SecretId=secret_id, SecretString=self.keys[secret_id])

    def _secrets(self, table: Mapping[str, Any]) -> list[tuple[str, str]]:
        return sorted(
            {
                (backend["secret_id"], table["targets"][target_id]["region"])
                for target_id, backend in self.backends.items()
                if backend["auth"] == "secret"
            }
        )

    def _secrets_client(self, region: str) -> Any:
        import boto3  # noqa: PLC0415 (only where a secret is used)

        return boto3.session.Session().client(
            "secretsmanager",
            region_name=region,
            endpoint_url=self._secrets_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106
        )

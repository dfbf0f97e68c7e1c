"""The router's settings: every environment variable it reads, parsed and checked once, into one typed object.

A value that does not parse or is out of range is a :class:`SettingsError` naming the variable, raised when the
router is built (at Lambda init), never a silent default. Unset or empty means the default.

- ``AWS_REGION`` (set by Lambda; else ``AWS_DEFAULT_REGION``, else us-east-1): this cell's region.
- ``SPILLWAY_APPCONFIG_APPLICATION``, ``SPILLWAY_APPCONFIG_ENVIRONMENT``, ``SPILLWAY_APPCONFIG_PROFILE``: where the
  AppConfig extension finds the routing table. Unset: the bundled table only.
- ``SPILLWAY_APPCONFIG_FLAGS_PROFILE``: optional profile of flags (canary), ``{"canary": {feature: {model, share}}}``.
- ``SPILLWAY_APPCONFIG_URL``: the extension's base URL (default ``http://localhost:<AWS_APPCONFIG_EXTENSION_HTTP_PORT
  or 2772>``); the local emulator's address in tests and demos.
- ``SPILLWAY_CONFIG_TTL_S`` (default 5, >= 0): the in-process config cache; a canary moves within about this long.
- ``SPILLWAY_CONFIG_TIMEOUT_S`` (default 0.5, > 0): one fetch from the extension.
- ``SPILLWAY_BUNDLED_TABLE``: the routing table bundled in the asset (default ``routing.json`` beside handler.py).
- ``SPILLWAY_FLEET_STORE_URL``: the fleet store (Valkey): ``redis://127.0.0.1:PORT/0`` locally, ``rediss://HOST:PORT``
  in AWS. Set, breakers and provisioned occupancy are decided on the fleet's shared state (spillway/fleet.py); unset,
  each instance keeps its own (local state only). ``SPILLWAY_FLEET_STORE_USER`` and ``SPILLWAY_FLEET_STORE_CACHE``:
  the ElastiCache IAM user id and cache name (rediss:// with IAM authentication). ``SPILLWAY_FLEET_STORE_TIMEOUT_S``
  (default 0.25, > 0): connect and read timeouts; ``SPILLWAY_FLEET_STORE_BACKOFF_S`` (default 5, >= 0): local state
  only for this long after a store error.
- ``SPILLWAY_ENDPOINT_URL_<REGION>`` (e.g. ``SPILLWAY_ENDPOINT_URL_US_EAST_1``) and ``SPILLWAY_ENDPOINT_URL``: model
  runtime endpoint overrides (the local emulator), handed to the backends' client pool. Unset in AWS.
- ``SPILLWAY_DEADLINE_MARGIN_MS`` (default 500, >= 0): kept back from the Lambda's remaining time to answer in. Keep
  the Lambda timeout at or under API Gateway's integration timeout (29 s by default), so the router answers 504.
- ``AWS_LAMBDA_FUNCTION_NAME`` (set by Lambda): when present, the router is built at init (so a bad setting fails
  the init) and warmed (routing table, runtime clients, fleet store) so the first request does not pay for it;
  ``SPILLWAY_WARM_AT_INIT=0`` turns the warming off (``1``, the default, leaves it on; anything else is an error).

Read elsewhere, because they are set per invocation or belong to a library: ``_X_AMZN_TRACE_ID`` and
``AWS_XRAY_DAEMON_ADDRESS`` (spillway/tracing.py), ``POWERTOOLS_SERVICE_NAME`` (default spillway-router),
``POWERTOOLS_METRICS_NAMESPACE`` (default Spillway) and ``POWERTOOLS_LOG_LEVEL`` (spillway/telemetry.py).
``POWERTOOLS_LOGGER_LOG_EVENT`` and ``POWERTOOLS_DEV`` are ignored on purpose: the event holds the prompt.
``AWS_LAMBDA_EXEC_WRAPPER``, ``SPILLWAY_STREAM_HANDLER`` and ``SPILLWAY_STREAM_ROUTES`` start the router's runtime loop
and name what it streams: runtime_loop.py reads them, before the router exists.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROUTER_DIR = Path(__file__).resolve().parents[1]
ENDPOINT_URL_PREFIX = "SPILLWAY_ENDPOINT_URL"


class SettingsError(ValueError):
    """An environment variable the router cannot use; the message names it and says what it takes."""


@dataclass(frozen=True)
class Settings:
    region: str = "us-east-1"
    appconfig_application: str | None = None
    appconfig_environment: str | None = None
    appconfig_profile: str | None = None
    appconfig_flags_profile: str | None = None
    appconfig_url: str = "http://localhost:2772"
    config_ttl_s: float = 5.0
    config_timeout_s: float = 0.5
    bundled_table: Path = ROUTER_DIR / "routing.json"
    fleet_store_url: str | None = None
    fleet_store_user: str | None = None
    fleet_store_cache: str | None = None
    fleet_store_timeout_s: float = 0.25
    fleet_store_backoff_s: float = 5.0
    endpoint_urls: Mapping[str, str] = field(default_factory=dict)
    deadline_margin_ms: float = 500.0
    in_lambda: bool = False
    warm_at_init: bool = True

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Reader(os.environ if environ is None else environ)
        port = env.number("AWS_APPCONFIG_EXTENSION_HTTP_PORT", 2772, minimum=1, integer=True)
        return cls(
            region=env.text("AWS_REGION") or env.text("AWS_DEFAULT_REGION") or cls.region,
            appconfig_application=env.text("SPILLWAY_APPCONFIG_APPLICATION"),
            appconfig_environment=env.text("SPILLWAY_APPCONFIG_ENVIRONMENT"),
            appconfig_profile=env.text("SPILLWAY_APPCONFIG_PROFILE"),
            appconfig_flags_profile=env.text("SPILLWAY_APPCONFIG_FLAGS_PROFILE"),
            appconfig_url=env.url("SPILLWAY_APPCONFIG_URL") or f"http://localhost:{port:.0f}",
            config_ttl_s=env.number("SPILLWAY_CONFIG_TTL_S", cls.config_ttl_s, minimum=0.0),
            config_timeout_s=env.number("SPILLWAY_CONFIG_TIMEOUT_S", cls.config_timeout_s, minimum=0.001),
            bundled_table=Path(env.text("SPILLWAY_BUNDLED_TABLE") or cls.bundled_table),
            fleet_store_url=env.store_url("SPILLWAY_FLEET_STORE_URL"),
            fleet_store_user=env.text("SPILLWAY_FLEET_STORE_USER"),
            fleet_store_cache=env.text("SPILLWAY_FLEET_STORE_CACHE"),
            fleet_store_timeout_s=env.number(
                "SPILLWAY_FLEET_STORE_TIMEOUT_S", cls.fleet_store_timeout_s, minimum=0.001
            ),
            fleet_store_backoff_s=env.number("SPILLWAY_FLEET_STORE_BACKOFF_S", cls.fleet_store_backoff_s, minimum=0.0),
            endpoint_urls=env.endpoint_urls(),
            deadline_margin_ms=env.number("SPILLWAY_DEADLINE_MARGIN_MS", cls.deadline_margin_ms, minimum=0.0),
            in_lambda=env.text("AWS_LAMBDA_FUNCTION_NAME") is not None,
            warm_at_init=env.flag("SPILLWAY_WARM_AT_INIT", default=True),
        )


class _Reader:
    """Typed reads of one environment mapping; every failure names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env = environ

    def text(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def number(self, name: str, default: float, *, minimum: float, integer: bool = False) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        kind = "an integer" if integer else "a number"
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: not {kind}") from None
        if not math.isfinite(value) or value < minimum:
            raise SettingsError(f"{name}={raw!r}: must be {kind} >= {minimum:g}")
        return float(value)

    def flag(self, name: str, *, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw not in ("0", "1"):
            raise SettingsError(f"{name}={raw!r}: must be 0 or 1")
        return raw == "1"

    def url(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is not None and not raw.startswith(("http://", "https://")):
            raise SettingsError(f"{name}={raw!r}: must be an http:// or https:// URL")
        return raw

    def store_url(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is not None and not raw.startswith(("redis://", "rediss://")):
            raise SettingsError(f"{name}={raw!r}: must be a redis:// or rediss:// URL")
        return raw

    def endpoint_urls(self) -> dict[str, str]:
        """``SPILLWAY_ENDPOINT_URL`` and ``SPILLWAY_ENDPOINT_URL_<REGION>``, as the client pool looks them up."""
        urls: dict[str, str] = {}
        for name in sorted(self._env):
            if name == ENDPOINT_URL_PREFIX or name.startswith(ENDPOINT_URL_PREFIX + "_"):
                url = self.url(name)
                if url is not None:
                    urls[name] = url
        return urls

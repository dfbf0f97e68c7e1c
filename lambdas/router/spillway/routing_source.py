"""Live routing config: the AppConfig Lambda extension, then the last known good, then the bundled file.

CDK renders each cell's routing table into an AppConfig configuration profile. In Lambda, the AppConfig Agent
extension polls AppConfig and serves the latest deployed version on a local HTTP interface::

    GET http://localhost:2772/applications/{app}/environments/{env}/configurations/{profile}

The router reads it through its own short in-process cache (``ttl_s``, a few seconds): a fetch that fails, times
out or returns a table that does not validate keeps the last known good table; with none, the table bundled in the
asset (``routing.json``) serves. Nothing here raises for a bad or missing config while a table is known.

Flags (a second, optional profile, deployed on its own without a synth)::

    {"canary": {"summarize-thread": {"model": "nova-lite", "share": 0.1}}}

moves ``share`` (0..1) of the feature's requests onto ``model`` first (the rest of its hierarchy after it);
``"enabled": false`` in an entry parks it. An entry with any other key is invalid (and skipped), as a table's
unknown key is; spillway/schema.py renders the flags' JSON Schema from ``FLAGS_KEYS`` and ``CANARY_KEYS``. Buckets
are a hash of the request id, so a given request always lands on the same side and shares are exact over many ids.
Removing the entry, or a share of 0, takes traffic back within one cache TTL.

Shadow traffic (spillway/shadow.py) is set the same way, per feature, over the table's own ``shadow``::

    {"shadow": {"summarize-thread": {"target": "nova-lite/on_demand/us-east-1", "share": 0.05}}}

An entry replaces the feature's ``shadow`` of the table (``grace_ms`` and ``judge`` optional); ``"enabled": false``
or a share of 0 turns that feature's shadowing off, whatever the table says. An entry naming a target the table does
not have (or a judge the table's would refuse) is refused (event ``shadow_rejected``) and the table's own shadow
stays.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Keys, RoutingConfigError, RoutingTable, parse_routing_table, parse_shadow

CANARY_SUFFIX = "..canary"  # a routed-variant feature name no config can declare (".." is rejected below)
DEFAULT_EXTENSION_URL = "http://localhost:2772"
Fetch = Callable[[str, float], tuple[int, bytes, str | None]]  # (url, timeout) -> (status, body, version)
FLAGS_KEYS = Keys(frozenset(), frozenset({"canary", "shadow"}))
SHADOW_FLAG_KEYS = Keys(frozenset({"target", "share"}), frozenset({"grace_ms", "judge", "enabled"}))
CANARY_KEYS = Keys(frozenset({"model", "share"}), frozenset({"enabled"}))


@dataclass(frozen=True, slots=True)
class Canary:
    model: str
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "share": self.share}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the router routes with: the table (with canary variants), where it came from, and the canaries."""

    table: RoutingTable | None
    source: str  # appconfig | last_known_good | bundled | none
    version: str | None
    canaries: Mapping[str, Canary] = field(default_factory=dict)
    flags_version: str | None = None
    generation: int = 0  # changes whenever table or canaries change

    def route_name(self, feature: str, request_id: str) -> str:
        """The feature name to hand the engine: its canary variant for the canary's share of request ids."""
        canary = self.canaries.get(feature)
        if canary is None or canary.share <= 0:
            return feature
        return feature + CANARY_SUFFIX if bucket(request_id) < canary.share else feature


def bucket(request_id: str) -> float:
    """A request id's place in [0, 1): the first 8 bytes of its SHA-256."""
    digest = hashlib.sha256(request_id.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def http_fetch(url: str, timeout_s: float) -> tuple[int, bytes, str | None]:
    request = urllib.request.Request(url, method="GET")  # noqa: S310 (a fixed http://localhost URL)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            return int(answer.status), answer.read(), answer.headers.get("Configuration-Version")
    except urllib.error.HTTPError as exc:
        return int(exc.code), b"", None


class RoutingSource:
    def __init__(
        self,
        *,
        application: str | None,
        environment: str | None,
        profile: str | None,
        flags_profile: str | None = None,
        bundled_path: str | Path | None = None,
        base_url: str = DEFAULT_EXTENSION_URL,
        ttl_s: float = 5.0,
        timeout_s: float = 0.5,
        fetch: Fetch = http_fetch,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self._app, self._env = application, environment
        self._profile, self._flags_profile = profile, flags_profile
        self._bundled_path = Path(bundled_path) if bundled_path else None
        self._base = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._fetch = fetch
        self._clock = clock
        self._on_event = on_event or _ignore
        self._lock = threading.Lock()
        self._expires = -1.0
        self._raw: dict[str, Any] | None = None  # the last good table document
        self._raw_source = "none"
        self._raw_version: str | None = None
        self._flags: dict[str, Canary] = {}
        self._shadows: dict[str, dict[str, Any] | None] = {}  # feature -> its shadow entry, None = off
        self._flags_version: str | None = None
        self._snapshot = Snapshot(None, "none", None)
        self._generation = 0

    # -- public -------------------------------------------------------------------------------------------------

    def get(self) -> Snapshot:
        now = self._clock()
        if now < self._expires:
            return self._snapshot
        with self._lock:
            if now < self._expires:
                return self._snapshot
            self._refresh()
            self._expires = self._clock() + self.ttl_s
            return self._snapshot

    def invalidate(self) -> None:
        self._expires = -1.0

    # -- internals ----------------------------------------------------------------------------------------------

    def _refresh(self) -> None:  # noqa: PLR0912 (one decision table: fetched, last known good, bundled)
        changed = False
        table_doc, version = self._fetch_json(self._profile, "routing")
        if table_doc is not None and not _valid_table(table_doc):
            self._on_event("routing_invalid", "schema")  # the path of the error could name a key: not logged
            table_doc = None
        if table_doc is not None:
            if table_doc != self._raw or self._raw_source != "appconfig":
                changed = True
            self._raw, self._raw_source, self._raw_version = table_doc, "appconfig", version
        elif self._raw is not None:
            if self._raw_source == "appconfig":
                self._raw_source = "last_known_good"
                changed = True
            if self._profile:
                self._on_event("config_fallback", self._raw_source)
        else:
            bundled = self._bundled()
            if bundled is not None:
                self._raw, self._raw_source, self._raw_version = bundled, "bundled", "bundled"
                changed = True
            self._on_event("config_fallback", "bundled" if bundled is not None else "none")
        if self._flags_profile:
            flags_doc, flags_version = self._fetch_json(self._flags_profile, "flags")
            if flags_doc is not None:
                flags = _canaries(flags_doc, self._on_event)
                if flags is not None:
                    if flags != self._flags:
                        changed = True
                    self._flags, self._flags_version = flags, flags_version
                shadows = _shadow_flags(flags_doc, self._on_event)
                if shadows is not None and shadows != self._shadows:
                    self._shadows, changed = shadows, True
        if changed or self._snapshot.table is None:
            self._rebuild()

    def _rebuild(self) -> None:
        if self._raw is None:
            self._snapshot = Snapshot(None, "none", None)
            return
        raw = _with_shadows(self._raw, self._shadows, self._on_event)
        canaries: dict[str, Canary] = {}
        variants: dict[str, Any] = {}
        for feature, canary in self._flags.items():
            variant = _variant(raw, feature, canary)
            if variant is None:
                self._on_event("canary_rejected", feature if feature in raw["features"] else "unknown")
                continue
            variants[feature + CANARY_SUFFIX] = variant
            canaries[feature] = canary
        table = parse_routing_table(raw)
        if variants:
            try:
                table = parse_routing_table({**raw, "features": {**raw["features"], **variants}})
            except RoutingConfigError:
                canaries = {}
                self._on_event("canary_rejected", "table")
        self._generation += 1
        self._snapshot = Snapshot(
            table, self._raw_source, self._raw_version, canaries, self._flags_version, self._generation
        )

    def _fetch_json(self, profile: str | None, what: str) -> tuple[dict[str, Any] | None, str | None]:
        if not (profile and self._app and self._env):
            return None, None
        url = f"{self._base}/applications/{self._app}/environments/{self._env}/configurations/{profile}"
        try:
            status, body, version = self._fetch(url, self.timeout_s)
        except Exception as exc:  # refused, reset, timeout: the cached table serves
            self._on_event(f"{what}_fetch_failed", type(exc).__name__)
            return None, None
        if status != 200:
            self._on_event(f"{what}_fetch_failed", f"http_{status}")
            return None, None
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self._on_event(f"{what}_invalid", "not_json")
            return None, None
        if not isinstance(doc, dict):
            self._on_event(f"{what}_invalid", "not_an_object")
            return None, None
        return doc, version

    def _bundled(self) -> dict[str, Any] | None:
        if self._bundled_path is None:
            return None
        try:
            doc = json.loads(self._bundled_path.read_bytes())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and _valid_table(doc) else None


def _ignore(kind: str, detail: str) -> None:
    del kind, detail


def _valid_table(doc: dict[str, Any]) -> bool:
    try:
        table = parse_routing_table(doc)
    except RoutingConfigError:
        return False
    return not any(CANARY_SUFFIX in name for name in table.features)


def _canaries(doc: dict[str, Any], on_event: Callable[[str, str], None]) -> dict[str, Canary] | None:
    raw = doc.get("canary", {})
    if not isinstance(raw, dict):
        on_event("flags_invalid", "canary")
        return None
    out: dict[str, Canary] = {}
    for feature, entry in raw.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("model"), str)
            or not isinstance(entry.get("enabled", True), bool)
            or not entry.keys() <= CANARY_KEYS.all
        ):
            on_event("flags_invalid", "entry")
            continue
        share = entry.get("share")
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            on_event("flags_invalid", "share")
            continue
        if entry.get("enabled", True) is False or share == 0:
            continue
        out[str(feature)] = Canary(entry["model"], float(share))
    return out


def _shadow_flags(doc: dict[str, Any], on_event: Callable[[str, str], None]) -> dict[str, dict[str, Any] | None] | None:
    """The flags' shadow entries: feature -> its table entry, or None where the flag turns shadowing off."""
    raw = doc.get("shadow", {})
    if not isinstance(raw, dict):
        on_event("flags_invalid", "shadow")
        return None
    out: dict[str, dict[str, Any] | None] = {}
    for feature, entry in raw.items():
        if not isinstance(entry, dict) or not entry.keys() <= SHADOW_FLAG_KEYS.all:
            on_event("flags_invalid", "shadow_entry")
            continue
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            on_event("flags_invalid", "shadow_entry")
            continue
        table_entry = {key: value for key, value in entry.items() if key != "enabled"}
        out[str(feature)] = table_entry if enabled and table_entry.get("share") != 0 else None
    return out


def _with_shadows(
    raw: dict[str, Any], shadows: Mapping[str, dict[str, Any] | None], on_event: Callable[[str, str], None]
) -> dict[str, Any]:
    """The table document with the flags' shadow entries in place of the features' own (each checked first)."""
    if not shadows:
        return raw
    features = dict(raw["features"])
    table = parse_routing_table(raw)
    for feature, entry in shadows.items():
        base = features.get(feature)
        if not isinstance(base, dict):
            on_event("shadow_rejected", "unknown")
            continue
        if entry is None:
            features[feature] = {key: value for key, value in base.items() if key != "shadow"}
            continue
        settings = table.features[feature]
        try:
            parse_shadow(entry, f"flags.shadow.{feature}", table.targets, settings.home_region, settings.invoke_ids)
        except RoutingConfigError:
            on_event("shadow_rejected", feature)
            continue
        features[feature] = {**base, "shadow": entry}
    return {**raw, "features": features}


def _variant(raw: Mapping[str, Any], feature: str, canary: Canary) -> dict[str, Any] | None:
    """The feature's routing with the canary model first; None when the model cannot serve the feature."""
    base = raw["features"].get(feature)
    if not isinstance(base, dict):
        return None
    targets = raw["targets"]
    regions = [base["home_region"], *base.get("failover_regions", [])]
    models = [canary.model, *(m for m in base["models"] if m != canary.model)]
    first = base["first_capacity"]
    if f"{canary.model}/{first}/{base['home_region']}" not in targets:
        first = "on_demand"  # a canary model without bought capacity here starts on-demand
    if not any(t.get("model") == canary.model and t.get("region") in regions for t in targets.values()):
        return None
    if f"{canary.model}/{first}/{base['home_region']}" not in targets:
        return None
    variant = {**base, "models": models, "first_capacity": first}
    if first == "on_demand" and "spill" in variant.get("order", []):
        variant["order"] = [d for d in variant["order"] if d != "spill"]
    return variant

"""The planner's inputs: the traffic profile (config/traffic.yaml) and the price file (config/prices.yaml).

Both are validated before any replay starts; every problem is one InputError naming the file and the key, e.g.
`config/traffic.yaml: features.summarize-thread.days.sat: 23 hours, expected 24`.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS_PER_WEEK = 168
TERMS = ("no_commitment", "one_month", "six_months")
TIERS = ("standard", "priority", "flex")


class InputError(Exception):
    """A bad input, reported as one line: file, key, what is wrong."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


@dataclass(frozen=True)
class Goals:
    min_pt_share: float = 0.0
    max_spill_share: float = 1.0
    max_throttled_share: float = 1.0
    max_drop_share: float = 0.0


@dataclass(frozen=True)
class FeatureTraffic:
    name: str
    requests_per_hour: tuple[float, ...]  # 168 values, hour 0 = Monday 00:00 UTC
    input_tokens: int
    output_tokens: int
    batch: bool
    goals: Goals

    @property
    def peak_requests_per_hour(self) -> float:
        return max(self.requests_per_hour)

    @property
    def tokens_per_request(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def peak_tokens_per_minute(self) -> float:
        return self.peak_requests_per_hour * self.tokens_per_request / 60.0


@dataclass(frozen=True)
class ModelCapacity:
    tokens_per_minute_per_unit: int
    max_in_flight_per_unit: int
    ttft_ms: float
    ms_per_output_token: float
    on_demand_tokens_per_minute: int | None

    def latency_s(self, output_tokens: int) -> float:
        return (self.ttft_ms + self.ms_per_output_token * output_tokens) / 1000.0


@dataclass(frozen=True)
class Traffic:
    source: str
    features: dict[str, FeatureTraffic]
    capacity: dict[str, ModelCapacity]
    pt_term: str
    sample_minutes: float
    seed: int


@dataclass(frozen=True)
class TokenPrice:
    input_per_mtok: float
    output_per_mtok: float
    source: str
    date: str
    confirmed: bool

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True)
class UnitPrice:
    per_unit_hour: float
    source: str
    date: str
    confirmed: bool


@dataclass(frozen=True)
class ReservedPrice:
    per_1k_tpm_month: float
    min_tpm: int
    source: str
    date: str
    confirmed: bool


@dataclass(frozen=True)
class Prices:
    source: str
    currency: str
    on_demand: dict[str, dict[str, TokenPrice]]  # model -> tier -> price
    batch: dict[str, TokenPrice]
    provisioned: dict[str, dict[str, UnitPrice]]  # model -> term -> price
    reserved: dict[str, ReservedPrice]

    def on_demand_price(self, model: str, tier: str = "standard") -> TokenPrice:
        try:
            return self.on_demand[model][tier]
        except KeyError:
            raise InputError(self.source, f"on_demand.{model}.{tier}", "no price for this model and tier") from None

    def pt_price(self, model: str, term: str) -> UnitPrice:
        try:
            return self.provisioned[model][term]
        except KeyError:
            raise InputError(self.source, f"provisioned.{model}.{term}", "no price for this model and term") from None


# -- reading ------------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(source, "", f"cannot read the file ({error.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "the document"
        raise InputError(source, where, "not valid YAML") from None


def _mapping(value: Any, source: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(source, key, "expected a mapping")
    return value


def _keys(
    obj: Mapping[str, Any], source: str, key: str, required: set[str], optional: set[str] | frozenset[str] = frozenset()
) -> None:
    prefix = f"{key}." if key else ""
    for name in sorted(required - set(obj)):
        raise InputError(source, f"{prefix}{name}", "missing")
    for name in sorted(set(obj) - required - set(optional)):
        raise InputError(source, f"{prefix}{name}", f"unknown key (expected: {', '.join(sorted(required | optional))})")


def _number(
    value: Any, source: str, key: str, *, low: float = 0.0, high: float = math.inf, integer: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise InputError(source, key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value < low:
        raise InputError(source, key, f"must be >= {low:g}, got {value!r}")
    if value > high:
        raise InputError(source, key, f"must be <= {high:g}, got {value!r}")
    return float(value)


def load_traffic(path: Path, features: Mapping[str, Any]) -> Traffic:
    """`features`: the platform's features by name (only the names are checked here)."""
    source = str(path)
    doc = _mapping(_read_yaml(path), source, "")
    _keys(doc, source, "", {"features", "capacity"}, {"replay"})
    feats = _mapping(doc["features"], source, "features")
    if not feats:
        raise InputError(source, "features", "names no feature")
    out: dict[str, FeatureTraffic] = {}
    for name, raw in feats.items():
        key = f"features.{name}"
        if name not in features:
            raise InputError(source, key, f"unknown feature (platform features: {', '.join(sorted(features))})")
        out[name] = _feature(name, _mapping(raw, source, key), source, key)
    cap = _mapping(doc["capacity"], source, "capacity")
    _keys(cap, source, "capacity", {"models"}, {"pt_term"})
    models: dict[str, ModelCapacity] = {}
    for model, raw in _mapping(cap["models"], source, "capacity.models").items():
        key = f"capacity.models.{model}"
        m = _mapping(raw, source, key)
        _keys(
            m,
            source,
            key,
            {"tokens_per_minute_per_unit", "max_in_flight_per_unit", "ttft_ms", "ms_per_output_token"},
            {"on_demand_tokens_per_minute"},
        )
        od = m.get("on_demand_tokens_per_minute")
        models[model] = ModelCapacity(
            int(
                _number(
                    m["tokens_per_minute_per_unit"], source, f"{key}.tokens_per_minute_per_unit", low=1, integer=True
                )
            ),
            int(_number(m["max_in_flight_per_unit"], source, f"{key}.max_in_flight_per_unit", low=1, integer=True)),
            _number(m["ttft_ms"], source, f"{key}.ttft_ms"),
            _number(m["ms_per_output_token"], source, f"{key}.ms_per_output_token"),
            None if od is None else int(_number(od, source, f"{key}.on_demand_tokens_per_minute", low=1, integer=True)),
        )
    term = cap.get("pt_term", "one_month")
    if term not in TERMS:
        raise InputError(source, "capacity.pt_term", f"expected one of {', '.join(TERMS)}, got {term!r}")
    replay = _mapping(doc.get("replay", {}), source, "replay")
    _keys(replay, source, "replay", set(), {"sample_minutes", "seed"})
    sample = _number(replay.get("sample_minutes", 3), source, "replay.sample_minutes", low=0.5, high=60)
    seed = int(_number(replay.get("seed", 16), source, "replay.seed", integer=True))
    return Traffic(source, out, models, term, sample, seed)


def _feature(name: str, f: Mapping[str, Any], source: str, key: str) -> FeatureTraffic:
    _keys(f, source, key, {"days", "input_tokens", "output_tokens"}, {"batch", "goals"})
    days = _mapping(f["days"], source, f"{key}.days")
    _keys(days, source, f"{key}.days", set(DAYS))
    hours: list[float] = []
    for day in DAYS:
        values = days[day]
        dkey = f"{key}.days.{day}"
        if not isinstance(values, list):
            raise InputError(source, dkey, "expected a list of 24 hourly request counts")
        if len(values) != 24:
            raise InputError(source, dkey, f"{len(values)} hours, expected 24")
        hours.extend(_number(v, source, f"{dkey}[{i}]") for i, v in enumerate(values))
    batch = f.get("batch", False)
    if not isinstance(batch, bool):
        raise InputError(source, f"{key}.batch", f"expected true or false, got {batch!r}")
    g = _mapping(f.get("goals", {}), source, f"{key}.goals")
    fields = ("min_pt_share", "max_spill_share", "max_throttled_share", "max_drop_share")
    _keys(g, source, f"{key}.goals", set(), set(fields))
    goals = Goals(**{k: _number(g[k], source, f"{key}.goals.{k}", high=1.0) for k in fields if k in g})
    return FeatureTraffic(
        name,
        tuple(hours),
        int(_number(f["input_tokens"], source, f"{key}.input_tokens", low=1, integer=True)),
        int(_number(f["output_tokens"], source, f"{key}.output_tokens", low=1, integer=True)),
        batch,
        goals,
    )


def _provenance(p: Mapping[str, Any], source: str, key: str) -> tuple[str, str, bool]:
    src = p.get("source")
    if not isinstance(src, str) or not src.strip():
        raise InputError(source, f"{key}.source", "every price needs its source (the page it comes from)")
    date = p.get("date")
    if isinstance(date, datetime.date):
        date = date.isoformat()
    try:
        datetime.date.fromisoformat(str(date))
    except ValueError:
        raise InputError(
            source, f"{key}.date", f"every price needs the date it was read (YYYY-MM-DD), got {date!r}"
        ) from None
    confirmed = p.get("confirmed", False)
    if not isinstance(confirmed, bool):
        raise InputError(source, f"{key}.confirmed", f"expected true or false, got {confirmed!r}")
    return src, str(date), confirmed


_PROVENANCE = {"source", "date", "confirmed", "note"}


def _token_price(raw: Any, source: str, key: str) -> TokenPrice:
    p = _mapping(raw, source, key)
    _keys(p, source, key, {"input_per_mtok", "output_per_mtok", "source", "date"}, _PROVENANCE)
    return TokenPrice(
        _number(p["input_per_mtok"], source, f"{key}.input_per_mtok"),
        _number(p["output_per_mtok"], source, f"{key}.output_per_mtok"),
        *_provenance(p, source, key),
    )


def load_prices(path: Path, models: set[str]) -> Prices:
    """`models`: the platform's model names; a price for another model is an error."""
    source = str(path)
    doc = _mapping(_read_yaml(path), source, "")
    _keys(doc, source, "", {"on_demand"}, {"currency", "batch", "provisioned", "reserved"})

    def model_map(section: str) -> Mapping[str, Any]:
        m = _mapping(doc.get(section, {}), source, section)
        for model in m:
            if model not in models:
                raise InputError(source, f"{section}.{model}", f"unknown model (models: {', '.join(sorted(models))})")
        return m

    on_demand: dict[str, dict[str, TokenPrice]] = {}
    for model, tiers in model_map("on_demand").items():
        t = _mapping(tiers, source, f"on_demand.{model}")
        _keys(t, source, f"on_demand.{model}", set(), set(TIERS))
        on_demand[model] = {tier: _token_price(v, source, f"on_demand.{model}.{tier}") for tier, v in t.items()}
    batch = {m: _token_price(v, source, f"batch.{m}") for m, v in model_map("batch").items()}
    provisioned: dict[str, dict[str, UnitPrice]] = {}
    for model, terms in model_map("provisioned").items():
        t = _mapping(terms, source, f"provisioned.{model}")
        _keys(t, source, f"provisioned.{model}", set(), set(TERMS))
        provisioned[model] = {}
        for term, raw in t.items():
            key = f"provisioned.{model}.{term}"
            p = _mapping(raw, source, key)
            _keys(p, source, key, {"per_unit_hour", "source", "date"}, _PROVENANCE)
            provisioned[model][term] = UnitPrice(
                _number(p["per_unit_hour"], source, f"{key}.per_unit_hour"), *_provenance(p, source, key)
            )
    reserved: dict[str, ReservedPrice] = {}
    for model, raw in model_map("reserved").items():
        key = f"reserved.{model}"
        p = _mapping(raw, source, key)
        _keys(p, source, key, {"per_1k_tpm_month", "source", "date"}, _PROVENANCE | {"min_tpm"})
        reserved[model] = ReservedPrice(
            _number(p["per_1k_tpm_month"], source, f"{key}.per_1k_tpm_month"),
            int(_number(p.get("min_tpm", 0), source, f"{key}.min_tpm", integer=True)),
            *_provenance(p, source, key),
        )
    currency = doc.get("currency", "USD")
    if not isinstance(currency, str):
        raise InputError(source, "currency", f"expected a currency code, got {currency!r}")
    return Prices(source, currency, on_demand, batch, provisioned, reserved)

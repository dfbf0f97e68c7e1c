"""The platform config schema: config/platform.yaml, read and validated once, before any construct exists.

Every problem is reported as one PlatformConfigError that names the file and the dotted key
(`config/platform.yaml: features.summarize-thread.models[1]: unknown model 'nova-pro'`), so a platform engineer
never reads a Python or jsii traceback to find a typo. The dataclasses below are the only view of the config
that stacks get: frozen, typed, and already cross-checked (references resolve, CIDRs do not overlap).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

Capacity = Literal["provisioned", "on_demand"]
CAPACITIES: tuple[Capacity, ...] = ("provisioned", "on_demand")
ModelKind = Literal["bedrock", "sagemaker"]

# Regions a cell may be placed in: AWS commercial regions with Bedrock runtime and SageMaker, plus GovCloud.
KNOWN_REGIONS: frozenset[str] = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
        "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1",
        "eu-south-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
        "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "me-central-1",
        "us-gov-west-1", "us-gov-east-1",
    }
)  # fmt: skip

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_PROVISIONED_ARN = re.compile(
    r"^arn:aws(-us-gov)?:bedrock:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):provisioned-model/[a-z0-9]{1,64}$"
)
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9.:-]{2,127}$")
_IMAGE_URI = re.compile(r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/[a-z0-9._/-]+[:@][A-Za-z0-9._:-]+$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)


class PlatformConfigError(ValueError):
    """One clear message naming the file and the key; raised before any construct exists."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.detail = source, key, message
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


def partition_of(region: str) -> str:
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    vpc_cidr: str
    availability_zones: tuple[str, ...]

    @property
    def partition(self) -> str:
        return partition_of(self.name)


@dataclass(frozen=True, slots=True)
class InferenceProfile:
    """A cross-region inference profile and the regions it may route a request to."""

    id: str
    regions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Provisioned:
    """Bedrock Provisioned Throughput: an existing ARN. Creating one is a paid commitment (opt-in, see models)."""

    arn: str
    max_in_flight: int


@dataclass(frozen=True, slots=True)
class EscrowEndpoint:
    """A SageMaker endpoint we size ourselves, inside the escrow VPC."""

    image_uri: str
    model_data_url: str
    instance_type: str
    min_instances: int
    max_instances: int
    max_in_flight: int


@dataclass(frozen=True, slots=True)
class ModelRegion:
    """What one model offers in one region: its capacities."""

    on_demand: bool
    provisioned: Provisioned | None
    endpoint: EscrowEndpoint | None

    @property
    def capacities(self) -> tuple[Capacity, ...]:
        offered: list[Capacity] = []
        if self.provisioned is not None or self.endpoint is not None:
            offered.append("provisioned")
        if self.on_demand:
            offered.append("on_demand")
        return tuple(offered)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    kind: ModelKind
    model_id: str | None
    inference_profile: InferenceProfile | None
    regions: Mapping[str, ModelRegion]


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    first_capacity: Capacity
    models: tuple[str, ...]
    home_region: str
    failover_regions: tuple[str, ...]
    deadline_ms: int
    max_attempts: int
    # Router knobs (attempt timeouts, expansion order, breaker thresholds), passed through to the routing table
    # and validated there by the router's own loader (stacks/routing.py), so the two schemas cannot drift.
    routing: Mapping[str, Any]

    @property
    def regions(self) -> tuple[str, ...]:
        return (self.home_region, *self.failover_regions)


@dataclass(frozen=True, slots=True)
class Platform:
    source: str
    name: str
    account: str
    log_retention_days: int
    regions: Mapping[str, Region]
    models: Mapping[str, Model]
    features: Mapping[str, Feature]

    @property
    def region_names(self) -> tuple[str, ...]:
        """Regions in a stable order: the order of deployment and of every generated list."""
        return tuple(sorted(self.regions))

    def features_served_in(self, region: str) -> tuple[Feature, ...]:
        """A cell serves the features that name its region as home or failover."""
        return tuple(f for f in self.features.values() if region in f.regions)


# --- reading -------------------------------------------------------------------------------------------------

T = TypeVar("T")


class _Reader:
    """Walks the parsed YAML with the dotted path of every value, so each error can name its key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> PlatformConfigError:
        return PlatformConfigError(self.source, key, message)

    def mapping(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {_type_name(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.fail(key, f"keys must be strings, got {_type_name(name)} {name!r}")
        return value

    def fields(
        self, value: object, key: str, required: Sequence[str], optional: Sequence[str] = ()
    ) -> Mapping[str, Any]:
        data = self.mapping(value, key)
        for name in required:
            if name not in data or data[name] is None:
                raise self.fail(_join(key, name), "missing required field")
        unknown = sorted(set(data) - set(required) - set(optional))
        if unknown:
            allowed = ", ".join(sorted((*required, *optional)))
            raise self.fail(_join(key, unknown[0]), f"unknown field (allowed here: {allowed})")
        return data

    def string(self, value: object, key: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_type_name(value)}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"{value!r} is not a valid {what or 'value'}")
        return value

    def integer(self, value: object, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {_type_name(value)}")
        if not low <= value <= high:
            raise self.fail(key, f"{value} is out of range [{low}, {high}]")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_type_name(value)}")
        return value

    def strings(
        self, value: object, key: str, item: Callable[[object, str], str], *, min_items: int = 0
    ) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_type_name(value)}")
        if len(value) < min_items:
            raise self.fail(key, f"needs at least {min_items} item(s), got {len(value)}")
        items = tuple(item(v, f"{key}[{i}]") for i, v in enumerate(value))
        for i, v in enumerate(items):
            if v in items[:i]:
                raise self.fail(f"{key}[{i}]", f"duplicate {v!r}")
        return items

    def region(self, value: object, key: str) -> str:
        name = self.string(value, key)
        if name not in KNOWN_REGIONS:
            raise self.fail(key, f"unknown region {name!r}")
        return name


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def load_platform(path: str | Path) -> Platform:
    """Read and validate a platform file; every problem is a PlatformConfigError naming the file and key."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PlatformConfigError(source, "", f"cannot read the file ({error.strerror})") from None
    return parse_platform(text, source)


def parse_platform(text: str, source: str = "<platform>") -> Platform:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise PlatformConfigError(source, "", f"{where}{problem}") from None
    read = _Reader(source)
    top = read.fields(document, "", required=("platform", "regions", "models", "features"))
    settings = read.fields(top["platform"], "platform", ("name", "account"), ("log_retention_days",))
    name = read.string(settings["name"], "platform.name", _NAME, "name (lowercase letters, digits, dashes)")
    account = read.string(settings["account"], "platform.account", _ACCOUNT, "12-digit account id")
    retention = read.integer(settings.get("log_retention_days", 365), "platform.log_retention_days", 1, 3653)
    if retention not in _RETENTION_DAYS:
        raise read.fail("platform.log_retention_days", f"{retention} is not a CloudWatch Logs retention period")

    regions = _regions(read, top["regions"])
    models = _models(read, top["models"], regions, account)
    features = _features(read, top["features"], regions, models)
    return Platform(source, name, account, retention, regions, models, features)


def _regions(read: _Reader, value: object) -> dict[str, Region]:
    raw = read.mapping(value, "regions")
    if not raw:
        raise read.fail("regions", "needs at least one region")
    regions: dict[str, Region] = {}
    networks: dict[str, ipaddress.IPv4Network] = {}
    for name, body in raw.items():
        key = f"regions.{name}"
        read.region(name, key)
        data = read.fields(body, key, ("vpc_cidr", "availability_zones"))
        cidr_text = read.string(data["vpc_cidr"], f"{key}.vpc_cidr")
        try:
            network = ipaddress.IPv4Network(cidr_text, strict=True)
        except ValueError:
            raise read.fail(f"{key}.vpc_cidr", f"{cidr_text!r} is not an IPv4 CIDR block") from None
        if not (network.is_private and 16 <= network.prefixlen <= 24):
            raise read.fail(f"{key}.vpc_cidr", f"{cidr_text} must be a private range between /16 and /24")
        for other, other_network in networks.items():
            if network.overlaps(other_network):
                raise read.fail(f"{key}.vpc_cidr", f"{cidr_text} overlaps regions.{other}.vpc_cidr ({other_network})")
        networks[name] = network
        zones = read.strings(data["availability_zones"], f"{key}.availability_zones", read.string, min_items=2)
        for i, zone in enumerate(zones):
            if not re.fullmatch(re.escape(name) + r"[a-z]", zone):
                raise read.fail(f"{key}.availability_zones[{i}]", f"{zone!r} is not a zone of {name}")
        regions[name] = Region(name, str(network), zones)
    return regions


def _models(read: _Reader, value: object, regions: Mapping[str, Region], account: str) -> dict[str, Model]:
    raw = read.mapping(value, "models")
    if not raw:
        raise read.fail("models", "needs at least one model")
    models: dict[str, Model] = {}
    for name, body in raw.items():
        key = f"models.{name}"
        read.string(name, key, _NAME, "model name (lowercase letters, digits, dashes)")
        kind = read.mapping(body, key).get("kind")
        if kind == "bedrock":
            models[name] = _bedrock_model(read, name, body, regions, account)
        elif kind == "sagemaker":
            models[name] = _sagemaker_model(read, name, body, regions)
        else:
            raise read.fail(f"{key}.kind", f"expected 'bedrock' or 'sagemaker', got {kind!r}")
    return models


def _model_regions(read: _Reader, key: str, value: object, regions: Mapping[str, Region]) -> Mapping[str, Any]:
    raw = read.mapping(value, f"{key}.regions")
    if not raw:
        raise read.fail(f"{key}.regions", "needs at least one region")
    for region in raw:
        read.region(region, f"{key}.regions.{region}")
        if region not in regions:
            raise read.fail(f"{key}.regions.{region}", f"region {region!r} has no cell (add it under regions)")
    return raw


def _bedrock_model(
    read: _Reader, name: str, body: object, regions: Mapping[str, Region], account: str
) -> Model:
    key = f"models.{name}"
    data = read.fields(body, key, ("kind", "model_id", "regions"), ("inference_profile",))
    model_id = read.string(data["model_id"], f"{key}.model_id", _MODEL_ID, "Bedrock model id")
    profile = None
    if data.get("inference_profile") is not None:
        pkey = f"{key}.inference_profile"
        raw_profile = read.fields(data["inference_profile"], pkey, ("id", "regions"))
        profile_id = read.string(raw_profile["id"], f"{pkey}.id", _MODEL_ID, "inference profile id")
        if not profile_id.endswith(model_id):
            raise read.fail(f"{pkey}.id", f"{profile_id!r} is not a profile of model {model_id!r}")
        profile = InferenceProfile(profile_id, read.strings(raw_profile["regions"], f"{pkey}.regions", read.region, min_items=1))
    per_region: dict[str, ModelRegion] = {}
    for region, raw in _model_regions(read, key, data["regions"], regions).items():
        rkey = f"{key}.regions.{region}"
        entry = read.fields(raw, rkey, (), ("on_demand", "provisioned"))
        on_demand = read.boolean(entry.get("on_demand", False), f"{rkey}.on_demand")
        if on_demand and profile is not None and region not in profile.regions:
            raise read.fail(f"{rkey}.on_demand", f"inference profile {profile.id!r} does not serve {region}")
        provisioned = None
        if entry.get("provisioned") is not None:
            pkey = f"{rkey}.provisioned"
            raw_pt = read.fields(entry["provisioned"], pkey, ("arn",), ("max_in_flight",))
            arn = read.string(raw_pt["arn"], f"{pkey}.arn", _PROVISIONED_ARN, "provisioned-model ARN")
            match = _PROVISIONED_ARN.match(arn)
            assert match is not None  # checked just above
            if match["region"] != region or match["account"] != account:
                raise read.fail(f"{pkey}.arn", f"must be in {region} and account {account}")
            in_flight = read.integer(raw_pt.get("max_in_flight", 8), f"{pkey}.max_in_flight", 1, 10_000)
            provisioned = Provisioned(arn, in_flight)
        if not on_demand and provisioned is None:
            raise read.fail(rkey, "offers no capacity: set on_demand: true or provisioned")
        per_region[region] = ModelRegion(on_demand, provisioned, None)
    return Model(name, "bedrock", model_id, profile, per_region)


def _sagemaker_model(read: _Reader, name: str, body: object, regions: Mapping[str, Region]) -> Model:
    key = f"models.{name}"
    data = read.fields(body, key, ("kind", "regions"))
    per_region: dict[str, ModelRegion] = {}
    for region, raw in _model_regions(read, key, data["regions"], regions).items():
        rkey = f"{key}.regions.{region}"
        ekey = f"{rkey}.endpoint"
        endpoint = read.fields(read.fields(raw, rkey, ("endpoint",))["endpoint"], ekey,
                               ("image_uri", "model_data_url", "instance_type"),
                               ("min_instances", "max_instances", "max_in_flight"))  # fmt: skip
        image = read.string(endpoint["image_uri"], f"{ekey}.image_uri", _IMAGE_URI, "ECR image URI")
        if f".dkr.ecr.{region}." not in image:
            raise read.fail(f"{ekey}.image_uri", f"the image must come from ECR in {region} (no cross-region pulls)")
        artifact = read.string(endpoint["model_data_url"], f"{ekey}.model_data_url", _S3_URI, "s3:// URI")
        instance = read.string(endpoint["instance_type"], f"{ekey}.instance_type", _INSTANCE_TYPE, "SageMaker instance type")
        low = read.integer(endpoint.get("min_instances", 2), f"{ekey}.min_instances", 2, 100)
        high = read.integer(endpoint.get("max_instances", low), f"{ekey}.max_instances", low, 100)
        in_flight = read.integer(endpoint.get("max_in_flight", 8), f"{ekey}.max_in_flight", 1, 10_000)
        per_region[region] = ModelRegion(False, None, EscrowEndpoint(image, artifact, instance, low, high, in_flight))
    return Model(name, "sagemaker", None, None, per_region)


def _features(
    read: _Reader, value: object, regions: Mapping[str, Region], models: Mapping[str, Model]
) -> dict[str, Feature]:
    raw = read.mapping(value, "features")
    if not raw:
        raise read.fail("features", "needs at least one feature")
    features: dict[str, Feature] = {}
    for name, body in raw.items():
        key = f"features.{name}"
        read.string(name, key, _NAME, "feature name (lowercase letters, digits, dashes)")
        data = read.fields(body, key, ("first_capacity", "models", "home_region"),
                           ("failover_regions", "deadline_ms", "max_attempts", "routing"))  # fmt: skip
        first = data["first_capacity"]
        if first not in CAPACITIES:
            raise read.fail(f"{key}.first_capacity", f"expected 'provisioned' or 'on_demand', got {first!r}")

        def model_ref(item: object, item_key: str) -> str:
            model = read.string(item, item_key)
            if model not in models:
                raise read.fail(item_key, f"unknown model {model!r} (models: {', '.join(sorted(models))})")
            return model

        def cell_ref(item: object, item_key: str) -> str:
            region = read.region(item, item_key)
            if region not in regions:
                raise read.fail(item_key, f"region {region!r} has no cell (add it under regions)")
            return region

        hierarchy = read.strings(data["models"], f"{key}.models", model_ref, min_items=1)
        home = cell_ref(data["home_region"], f"{key}.home_region")
        failover = read.strings(data.get("failover_regions", []), f"{key}.failover_regions", cell_ref)
        if home in failover:
            raise read.fail(f"{key}.failover_regions", f"repeats the home region {home!r}")
        feature = Feature(
            name=name,
            first_capacity=first,
            models=hierarchy,
            home_region=home,
            failover_regions=failover,
            deadline_ms=read.integer(data.get("deadline_ms", 30_000), f"{key}.deadline_ms", 100, 900_000),
            max_attempts=read.integer(data.get("max_attempts", 4), f"{key}.max_attempts", 1, 20),
            routing=read.mapping(data.get("routing", {}), f"{key}.routing"),
        )
        if not any(region in models[m].regions for m in hierarchy for region in feature.regions):
            raise read.fail(f"{key}.models", "no model of the hierarchy is offered in the feature's regions")
        features[name] = feature
    return features

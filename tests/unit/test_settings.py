"""The router's settings: read once from the environment, typed, and a bad value is an error naming its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from spillway.settings import ROUTER_DIR, Settings, SettingsError


def test_defaults_outside_lambda() -> None:
    settings = Settings.from_environ({})
    assert settings == Settings()
    assert settings.region == "us-east-1"
    assert settings.appconfig_url == "http://localhost:2772"
    assert settings.bundled_table == ROUTER_DIR / "routing.json"
    assert (settings.in_lambda, settings.warm_at_init) == (False, True)
    assert settings.fleet_store_url is None  # local state only


def test_every_variable_is_read() -> None:
    environ = {
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_APPCONFIG_EXTENSION_HTTP_PORT": "2999",
        "SPILLWAY_APPCONFIG_APPLICATION": "spillway",
        "SPILLWAY_APPCONFIG_ENVIRONMENT": "eu-west-1",
        "SPILLWAY_APPCONFIG_PROFILE": "routing",
        "SPILLWAY_APPCONFIG_FLAGS_PROFILE": "flags",
        "SPILLWAY_CONFIG_TTL_S": "0",
        "SPILLWAY_CONFIG_TIMEOUT_S": "0.25",
        "SPILLWAY_BUNDLED_TABLE": "/tmp/table.json",
        "SPILLWAY_FLEET_STORE_URL": "rediss://cache.example:6379",
        "SPILLWAY_FLEET_STORE_USER": "spillway-router",
        "SPILLWAY_FLEET_STORE_CACHE": "spillway-fleet",
        "SPILLWAY_FLEET_STORE_TIMEOUT_S": "0.5",
        "SPILLWAY_FLEET_STORE_BACKOFF_S": "7",
        "SPILLWAY_ENDPOINT_URL": "http://127.0.0.1:9000",
        "SPILLWAY_ENDPOINT_URL_EU_WEST_1": "http://127.0.0.1:9001",
        "SPILLWAY_DEADLINE_MARGIN_MS": "250",
        "AWS_LAMBDA_FUNCTION_NAME": "spillway-router",
        "SPILLWAY_WARM_AT_INIT": "0",
    }
    assert Settings.from_environ(environ) == Settings(
        region="eu-west-1",
        appconfig_application="spillway",
        appconfig_environment="eu-west-1",
        appconfig_profile="routing",
        appconfig_flags_profile="flags",
        appconfig_url="http://localhost:2999",
        config_ttl_s=0.0,
        config_timeout_s=0.25,
        bundled_table=Path("/tmp/table.json"),
        fleet_store_url="rediss://cache.example:6379",
        fleet_store_user="spillway-router",
        fleet_store_cache="spillway-fleet",
        fleet_store_timeout_s=0.5,
        fleet_store_backoff_s=7.0,
        endpoint_urls={
            "SPILLWAY_ENDPOINT_URL": "http://127.0.0.1:9000",
            "SPILLWAY_ENDPOINT_URL_EU_WEST_1": "http://127.0.0.1:9001",
        },
        deadline_margin_ms=250.0,
        in_lambda=True,
        warm_at_init=False,
    )


def test_explicit_appconfig_url_and_default_region() -> None:
    settings = Settings.from_environ({"AWS_DEFAULT_REGION": "us-west-2", "SPILLWAY_APPCONFIG_URL": "http://e:1"})
    assert (settings.region, settings.appconfig_url) == ("us-west-2", "http://e:1")


def test_empty_means_unset() -> None:
    assert Settings.from_environ({"SPILLWAY_CONFIG_TTL_S": "", "SPILLWAY_FLEET_STORE_URL": " "}) == Settings()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SPILLWAY_CONFIG_TTL_S", "five", "not a number"),
        ("SPILLWAY_CONFIG_TTL_S", "-1", "must be a number >= 0"),
        ("SPILLWAY_CONFIG_TTL_S", "nan", "must be a number >= 0"),
        ("SPILLWAY_CONFIG_TIMEOUT_S", "0", "must be a number >= 0.001"),
        ("SPILLWAY_FLEET_STORE_TIMEOUT_S", "inf", "must be a number >= 0.001"),
        ("SPILLWAY_FLEET_STORE_BACKOFF_S", "1s", "not a number"),
        ("SPILLWAY_DEADLINE_MARGIN_MS", "-5", "must be a number >= 0"),
        ("AWS_APPCONFIG_EXTENSION_HTTP_PORT", "27.5", "not an integer"),
        ("AWS_APPCONFIG_EXTENSION_HTTP_PORT", "0", "must be an integer >= 1"),
        ("SPILLWAY_WARM_AT_INIT", "false", "must be 0 or 1"),
        ("SPILLWAY_APPCONFIG_URL", "localhost:2772", "must be an http:// or https:// URL"),
        ("SPILLWAY_FLEET_STORE_URL", "http://127.0.0.1:6379", "must be a redis:// or rediss:// URL"),
        ("SPILLWAY_ENDPOINT_URL_US_EAST_1", "emulator", "must be an http:// or https:// URL"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ({name: value})
    assert str(raised.value) == f"{name}={value!r}: {says}"

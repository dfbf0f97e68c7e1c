"""The base of every stack of a cell: one region's stacks share their account, region, zones and naming."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.platform import Platform


class CellStack(cdk.Stack):
    """A stack of one cell, named `<platform>-<kind>-<region>`, with an explicit account and region.

    Its availability zones are the config's: an environment-specific stack would otherwise ask for a lookup, and
    synthesis must make none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: Platform,
        region: str,
        kind: str,
        description: str,
        **kwargs: Any,
    ) -> None:
        self._zones = list(platform.regions[region].availability_zones)
        kwargs.setdefault("stack_name", f"{platform.name}-{kind}-{region}")
        kwargs.setdefault("description", description)
        kwargs["env"] = cdk.Environment(account=platform.account, region=region)
        super().__init__(scope, construct_id, **kwargs)
        self.platform = platform
        self.region_name = region

    @property
    def availability_zones(self) -> list[str]:
        return list(self._zones)

"""The base of every stack of a cell: one region's stacks share their account, region, zones and naming, and
compute logical ids without their `Concern` constructs (stacks/constructs/concern.py)."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.constructs.concern import make_unique_id, path_without_concerns
from stacks.naming import stack_name
from stacks.platform import Platform


class CellStack(cdk.Stack):
    """A stack of one cell, named `<platform>-<kind>-<region>`, with an explicit account and region.

    Its availability zones are the config's: an environment-specific stack would otherwise ask for a lookup, and
    synthesis must make none. Logical ids leave `Concern` constructs out, so grouping resources by concern never
    replaces a deployed resource.
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
        kwargs.setdefault("stack_name", stack_name(platform, kind, region))
        kwargs.setdefault("description", description)
        # Deleting a cell's stack would take its keys, tables and endpoints with it: a deliberate act, not a typo.
        kwargs.setdefault("termination_protection", True)
        kwargs["env"] = cdk.Environment(account=platform.account, region=region)
        super().__init__(scope, construct_id, **kwargs)
        self.platform = platform
        self.region_name = region
        # Construct ids some L2s build from another construct's unique id (API Gateway's Lambda permissions name
        # their API): that id as it reads with concerns -> as it read before them.
        self.flat_unique_ids: dict[str, str] = {}

    def _allocate_logical_id(self, cfn_element: cdk.CfnElement) -> str:
        components = path_without_concerns(cfn_element, self)
        for current, flat in self.flat_unique_ids.items():
            components = [part.replace(current, flat) for part in components]
        return make_unique_id(components)

    @property
    def availability_zones(self) -> list[str]:
        return list(self._zones)

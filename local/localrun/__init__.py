"""Spillway on loopback: the router behind a local API Gateway-shaped HTTP endpoint, the emulator and redis.

from local.localrun import make_world

with make_world("fleet", reserved_concurrency=16, warm=4) as world:  # or "process": one process, for quick tests
    reply = world.http.converse("summarize-thread")
"""

from local.localrun.apigw import LocalContext, to_event
from local.localrun.client import Client, Reply, converse_body
from local.localrun.fleet_world import SHAPES, FleetWorld, make_world
from local.localrun.server import LocalEndpoint, error_body_ok
from local.localrun.world import Latency, LocalWorld, RouterTarget, World, iter_classify

__all__ = [
    "SHAPES",
    "Client",
    "FleetWorld",
    "Latency",
    "LocalContext",
    "LocalEndpoint",
    "LocalWorld",
    "Reply",
    "RouterTarget",
    "World",
    "converse_body",
    "error_body_ok",
    "iter_classify",
    "make_world",
    "to_event",
]

"""Spillway on loopback: the router behind a local API Gateway-shaped HTTP endpoint, the emulator and moto.

from localrun import LocalWorld

with LocalWorld() as world:
    reply = world.http.converse("summarize-thread")
"""

from localrun.apigw import LocalContext, to_event
from localrun.client import Client, Reply, converse_body
from localrun.server import LocalEndpoint, error_body_ok
from localrun.world import Latency, LocalWorld, RouterTarget, iter_classify

__all__ = [
    "Client",
    "Latency",
    "LocalContext",
    "LocalEndpoint",
    "LocalWorld",
    "Reply",
    "RouterTarget",
    "converse_body",
    "error_body_ok",
    "iter_classify",
    "to_event",
]

"""The fleet store's two candidates side by side, in one run: the round trips of a request's shared-state
operations, with the real clients, against real servers on loopback.

- Valkey: Debian's redis-server (the RESP protocol ElastiCache Serverless for Valkey speaks), reached with the
  router's own store (``spillway.fleet_store.ValkeyFleetStore`` on ``spillway.resp``): its scripts, one round trip
  per operation.
- DynamoDB: moto's ThreadedMotoServer, reached with boto3 (retries off, as the router's clients), a table this
  benchmark creates (``pk``: S, the schema of the health table the router had before the fleet store; the router
  no longer has a DynamoDB store, so this arm is the benchmark's own); conditional updates as that alternative
  design would run them.

Operations (what a request does to the store; docs/design-notes.md has the request mix and the costs):
- ``read``: the fleet state of the feature's targets (4 here): Valkey, the store's read script; DynamoDB, one
  strongly consistent BatchGetItem.
- ``evidence_write``: one attempt's outcome into its target's window: Valkey, the store's report script; DynamoDB,
  one UpdateItem (ADD + SET expires_at).
- ``lease_acquire``: a PT slot with an expiry, refused when the target is full: Valkey, the store's lease script
  (drop expired leases, count, add); DynamoDB, a consistent GetItem of the lease map then an UpdateItem conditional
  on the version read (a condition cannot count only unexpired entries: two round trips when uncontended, more
  when another environment wins the race).
- ``report_and_release`` (Valkey): the report script giving the lease back in the same round trip, as the router
  does; ``lease_release`` (DynamoDB): an UpdateItem REMOVE (another item than the window's, so another call, or a
  TransactWriteItems at twice the write price).
- ``on_demand_request`` and ``provisioned_request``: those operations in the router's order (`SHAPES`), timed end
  to end; their round trips are `OP_ROUND_TRIPS` summed.
- ``boto3_round_trip_floor``: one UpdateItem through boto3 to a server that answers ``{}`` at once: the DynamoDB
  client's own cost per round trip (validate, serialize, SigV4-sign, send, parse), without moto's server time.

Loopback figures are not AWS's: there is no network here, redis-server is C while moto is a Python (Flask) server,
so they show the clients' and servers' own cost and the round-trip count, not the latency inside a VPC. AWS's
documented figures sit beside them in docs/design-notes.md.

Merges the key "fleet_store" into local/benchmarks/results.json.
Usage: python local/benchmarks/bench_store.py [--quick]
[--no-write]
"""

# ruff: noqa: PLC0415  (the router's store, moto and boto3 are imported where they are used)
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from local.benchmarks.results import merge_result, percentiles  # noqa: E402
from stacks.platform import FLEET_LEASE_ECPU, FLEET_READ_ECPU, FLEET_WRITE_ECPU  # noqa: E402

TARGETS = tuple(f"claude-sonnet/{capacity}/{region}" for capacity in ("provisioned", "on_demand")
                for region in ("us-east-1", "us-west-2"))  # fmt: skip
PT_TARGET = TARGETS[0]
MAX_IN_FLIGHT = 1_000_000  # never full here: the benchmark times the uncontended path
LEASE_S = 30.0
WINDOW_S = 10.0
TABLE = "spillway-health"  # the benchmark's own table, named as the removed health table was


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --- Valkey side ---------------------------------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[int]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("bench_store: needs redis-server (Debian: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def valkey_operations(port: int) -> dict[str, Callable[[], object]]:
    """The router's own fleet store (spillway.fleet_store on spillway.resp), one script per operation."""
    from spillway.fleet import Report
    from spillway.fleet_store import ValkeyFleetStore
    from spillway.health import Verdict

    store = ValkeyFleetStore.from_url(f"redis://127.0.0.1:{port}/0", connect_timeout_s=2, read_timeout_s=2)
    holder = uuid.uuid4().hex

    def report(target: str, lease: str | None) -> object:
        return store.report(target, Report(epoch=0, verdict=Verdict.OK, window_s=WINDOW_S, lease=lease))

    def do_acquire() -> object:
        granted = store.acquire_lease(PT_TARGET, holder, MAX_IN_FLIGHT, LEASE_S, force=False)
        assert granted, granted
        return granted

    return {
        "read": lambda: store.read(TARGETS, WINDOW_S),
        "evidence_write": lambda: report(TARGETS[1], None),
        "lease_acquire": do_acquire,
        # The router gives the lease back inside the attempt's report: one script, one round trip for both.
        "report_and_release": lambda: report(PT_TARGET, holder),
    }


# --- DynamoDB side -------------------------------------------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for(port)
        yield port
    finally:
        server.stop()


def dynamodb_operations(port: int) -> dict[str, Callable[[], object]]:
    import boto3
    from botocore.config import Config

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")  # moto's server checks no signature; boto3 still signs
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2),
    )
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for target in TARGETS:
        client.put_item(TableName=TABLE, Item={"pk": {"S": f"b#{target}"}, "state": {"N": "0"}})
    lease_pk = {"pk": {"S": f"l#{PT_TARGET}"}}
    client.put_item(TableName=TABLE, Item={**lease_pk, "version": {"N": "0"}, "leases": {"M": {}}})
    holder = uuid.uuid4().hex

    def do_read() -> object:
        keys = [{"pk": {"S": f"b#{t}"}} for t in TARGETS]
        return client.batch_get_item(RequestItems={TABLE: {"Keys": keys, "ConsistentRead": True}})

    def do_write() -> object:
        return client.update_item(
            TableName=TABLE,
            Key={"pk": {"S": f"w#{TARGETS[1]}"}},
            UpdateExpression="ADD served :one SET expires_at = :expiry",
            ExpressionAttributeValues={":one": {"N": "1"}, ":expiry": {"N": str(int(time.time() + WINDOW_S))}},
        )

    def do_acquire() -> object:
        # Read the lease map and its version, drop the expired and count locally, then write on that version.
        item = client.get_item(TableName=TABLE, Key=lease_pk, ConsistentRead=True)["Item"]
        now_ms = int(time.time() * 1000)
        live = {k: v for k, v in item["leases"]["M"].items() if int(v["N"]) > now_ms}
        if len(live) >= MAX_IN_FLIGHT:
            raise AssertionError("never full here")
        live[holder] = {"N": str(now_ms + int(LEASE_S * 1000))}
        return client.update_item(
            TableName=TABLE,
            Key=lease_pk,
            UpdateExpression="SET leases = :leases, version = version + :one",
            ConditionExpression="version = :seen",
            ExpressionAttributeValues={":leases": {"M": live}, ":one": {"N": "1"}, ":seen": item["version"]},
        )

    def do_release() -> object:
        return client.update_item(
            TableName=TABLE,
            Key=lease_pk,
            UpdateExpression="REMOVE leases.#holder SET version = version + :one",
            ExpressionAttributeNames={"#holder": holder},
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    return {"read": do_read, "evidence_write": do_write, "lease_acquire": do_acquire, "lease_release": do_release}


@contextmanager
def canned_http_server() -> Iterator[int]:
    """An HTTP/1.1 server that answers every request at once with DynamoDB's empty success (``{}``): what is left of
    a round trip is boto3's own work (validate, serialize, sign, send, parse) and the loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: bench\r\n"
              b"Content-Length: 2\r\n\r\n{}")  # fmt: skip

    def serve(connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as stream:
            while True:
                length = 0
                while (line := stream.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if not line:
                    return
                stream.read(length)
                connection.sendall(answer)

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield port
    finally:
        listener.close()


def boto3_round_trip(port: int) -> Callable[[], object]:
    """One UpdateItem through boto3 to the canned server: the client's floor per DynamoDB round trip."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2),
    )
    return lambda: client.update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"w#{TARGETS[1]}"}},
        UpdateExpression="ADD served :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )


# --- cost per million requests, from AWS's published prices --------------------------------------------------

# US East (N. Virginia); US West (Oregon), the example's other cell, has the same prices for these dimensions.
PRICES = {
    "region": "us-east-1 (us-west-2 alike)",
    "checked": "2026-12-04, against copies of the pages (this machine cannot reach aws.amazon.com): verify there",
    "dynamodb": {
        "page": "https://aws.amazon.com/dynamodb/pricing/on-demand/",
        "usd_per_million_wru": 0.625,  # standard table class, on-demand, since the November 2024 reduction
        "usd_per_million_rru": 0.125,  # a strongly consistent read of up to 4 KB is one RRU
        "usd_per_million_replicated_wru": 0.625,  # per replica region of a global table
    },
    "elasticache_serverless_valkey": {
        "page": "https://aws.amazon.com/elasticache/pricing/",
        "usd_per_million_ecpu": 0.0023,
        "usd_per_gb_hour": 0.084,
        "minimum_metered_gb": 0.1,  # 100 MB per cache for Valkey
    },
}
HOURS_PER_MONTH = 730


def costs(replica_regions: int = 2, targets_read: int = len(TARGETS)) -> dict[str, Any]:
    """USD per million requests of each kind, one attempt each (and per further attempt), for both designs.

    DynamoDB: a global table like the health table the router had before the fleet store (`replica_regions`
    replicas: every write is also a replicated write in each other region); the read is a strongly consistent
    BatchGetItem of the feature's targets (1 RRU each, items under 4 KB); writes are under 1 KB (1 WRU); the lease
    is a consistent GetItem and a conditional UpdateItem, the release an UpdateItem (a failed conditional write is
    billed too).
    Valkey: the ECPU budget the platform schema sizes the usage limit with (stacks/platform.py: a read, an evidence
    write per attempt, two lease operations), plus the cache's minimum metered storage, a fixed monthly floor.
    """
    d, v = PRICES["dynamodb"], PRICES["elasticache_serverless_valkey"]
    write = d["usd_per_million_wru"] + (replica_regions - 1) * d["usd_per_million_replicated_wru"]
    read = targets_read * d["usd_per_million_rru"]
    acquire = d["usd_per_million_rru"] + write
    dynamodb = {"on_demand": read + write, "provisioned": read + write + acquire + write, "per_further_attempt": write}
    ecpu = v["usd_per_million_ecpu"]
    valkey = {
        "on_demand": (FLEET_READ_ECPU + FLEET_WRITE_ECPU) * ecpu,
        "provisioned": (FLEET_READ_ECPU + FLEET_WRITE_ECPU + 2 * FLEET_LEASE_ECPU) * ecpu,
        "per_further_attempt": FLEET_WRITE_ECPU * ecpu,
    }
    floor = v["minimum_metered_gb"] * v["usd_per_gb_hour"] * HOURS_PER_MONTH
    return {
        "usd_per_million_requests": {
            "dynamodb_health_table": {k: round(x, 4) for k, x in dynamodb.items()},
            "valkey_serverless": {k: round(x, 4) for k, x in valkey.items()},
        },
        "valkey_fixed_usd_per_cell_month": round(floor, 2),
        "break_even_on_demand_requests_per_cell_month_millions": round(
            floor / (dynamodb["on_demand"] - valkey["on_demand"]), 2
        ),
        "request_mix": (
            f"one read of {targets_read} targets per request, one evidence write per attempt, two lease operations "
            f"per provisioned request; DynamoDB writes replicated to {replica_regions - 1} other region(s)"
        ),
        "prices": PRICES,
    }


# --- measurement ---------------------------------------------------------------------------------------------

# Round trips of each operation (DynamoDB's lease: a consistent GetItem, then the conditional UpdateItem).
OP_ROUND_TRIPS = {
    "valkey": {"read": 1, "evidence_write": 1, "lease_acquire": 1, "report_and_release": 1},
    "dynamodb": {"read": 1, "evidence_write": 1, "lease_acquire": 2, "lease_release": 1},
}
# A request's operations in the router's order, one attempt each (each further attempt adds one evidence write).
SHAPES = {
    "valkey": {
        "on_demand_request": ("read", "evidence_write"),
        "provisioned_request": ("read", "lease_acquire", "report_and_release"),
    },
    "dynamodb": {
        "on_demand_request": ("read", "evidence_write"),
        "provisioned_request": ("read", "lease_acquire", "evidence_write", "lease_release"),
    },
}


def round_trips(store: str) -> dict[str, int]:
    trips = OP_ROUND_TRIPS[store]
    shapes = SHAPES[store]
    return {
        "on_demand": sum(trips[op] for op in shapes["on_demand_request"]),
        "provisioned": sum(trips[op] for op in shapes["provisioned_request"]),
        "per_further_attempt": trips["evidence_write"],
    }


def measure(steps: Sequence[Callable[[], object]], warmup: int, iterations: int) -> dict[str, float]:
    clock = time.perf_counter_ns
    for _ in range(warmup):
        for step in steps:
            step()
    samples = [0] * iterations
    for i in range(iterations):
        t0 = clock()
        for step in steps:
            step()
        samples[i] = clock() - t0
    return percentiles(samples)


def run(warmup: int, iterations: int) -> dict[str, Any]:
    with redis_server() as redis_port, moto_server() as moto_port, canned_http_server() as canned_port:
        stores = {"valkey": valkey_operations(redis_port), "dynamodb": dynamodb_operations(moto_port)}
        figures: dict[str, Any] = {store: {} for store in stores}
        # Interleaved, one operation or shape at a time for both stores, so a busy moment of the machine hits both.
        steps = {store: {**{op: (op,) for op in ops}, **SHAPES[store]} for store, ops in stores.items()}
        for name in sorted(set(steps["valkey"]) | set(steps["dynamodb"])):
            for store, ops in stores.items():
                if name in steps[store]:
                    figures[store][f"{name}_us"] = measure([ops[op] for op in steps[store][name]], warmup, iterations)
        figures["dynamodb"]["boto3_round_trip_floor_us"] = measure((boto3_round_trip(canned_port),), warmup, iterations)
    per_request = {store: round_trips(store) for store in OP_ROUND_TRIPS}
    valkey_pt, dynamo_pt = (figures[s]["provisioned_request_us"]["p50"] for s in ("valkey", "dynamodb"))
    return {
        **figures,
        "round_trips_per_request": per_request,
        "cost": costs(),
        "provisioned_request_p50_ratio_dynamodb_over_valkey": round(dynamo_pt / valkey_pt, 1),
        "valkey_client": "spillway.fleet_store.ValkeyFleetStore on spillway.resp (the router's own)",
        "dynamodb_client": "boto3 (retries off)",
        "servers": "redis-server (Debian) and moto ThreadedMotoServer, both on 127.0.0.1",
        "note": "loopback, no network: not AWS latency; AWS's documented figures are in docs/design-notes.md",
        "iterations": iterations,
        "load_average_1m": round(os.getloadavg()[0], 1),  # the machine is shared: how busy it was at the end
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.system()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json alone")
    args = parser.parse_args()
    warmup, iterations = (5, 30) if args.quick else (100, 1000)
    figures = run(warmup, iterations)
    print(f"fleet_store: {figures}")
    if not args.no_write:
        merge_result("fleet_store", figures)


if __name__ == "__main__":
    main()

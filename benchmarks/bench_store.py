"""The fleet store's two candidates side by side, in one run: the round trips of a request's shared-state
operations, with the real clients, against real servers on loopback.

- Valkey: Debian's redis-server (the RESP protocol ElastiCache Serverless for Valkey speaks), reached with the
  router's own RESP client (``spillway.resp``) when this tree has it, else the minimal RESP client below; the
  operations are Lua scripts of the shape the fleet store runs (one round trip each).
- DynamoDB: moto's ThreadedMotoServer, reached with boto3 (retries off, as the router's clients), a table of the
  health table's schema (``pk``: S); conditional updates as the alternative design would run them.

Operations (what a request does to the store; docs/design-notes.md has the request mix and the costs):
- ``read``: the breaker state of the feature's targets (4 here): Valkey, one script (HMGET each); DynamoDB, one
  strongly consistent BatchGetItem.
- ``evidence_write``: one attempt's outcome into its target's window: Valkey, one script (HINCRBY + PEXPIRE);
  DynamoDB, one UpdateItem (ADD + SET expires_at).
- ``lease_acquire``: a PT slot with an expiry, refused when the target is full: Valkey, one script (drop expired
  leases, count, add); DynamoDB, a consistent GetItem of the lease map then an UpdateItem conditional on the version
  read (DynamoDB cannot count only unexpired entries in a condition: two round trips when uncontended, more when
  another environment wins the race).
- ``lease_release``: Valkey ZREM; DynamoDB UpdateItem REMOVE.
- ``on_demand_request`` = read + one evidence write; ``provisioned_request`` = read + lease acquire + one evidence
  write + lease release; each timed end to end.
- ``boto3_round_trip_floor``: one UpdateItem through boto3 to a server that answers ``{}`` at once: the DynamoDB
  client's own cost per round trip (validate, serialize, SigV4-sign, send, parse), without moto's server time.

Loopback figures are not AWS's: there is no network here, redis-server is C while moto is a Python (Flask) server,
so they show the clients' and servers' own cost and the round-trip count, not the latency inside a VPC. AWS's
documented figures sit beside them in docs/design-notes.md.

Merges the key "fleet_store" into benchmarks/results.json. Usage: python benchmarks/bench_store.py [--quick]
[--no-write]
"""

# ruff: noqa: PLC0415  (the router's client is imported only when this tree has it)
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambdas" / "router"), str(ROOT)]

from benchmarks.results import merge_result, percentiles  # noqa: E402
from stacks.platform import FLEET_LEASE_ECPU, FLEET_READ_ECPU, FLEET_WRITE_ECPU  # noqa: E402

TARGETS = tuple(f"claude-sonnet/{capacity}/{region}" for capacity in ("provisioned", "on_demand")
                for region in ("us-east-1", "us-west-2"))  # fmt: skip
PT_TARGET = TARGETS[0]
MAX_IN_FLIGHT = 1_000_000  # never full here: the benchmark times the uncontended path
LEASE_MS = 30_000
WINDOW_MS = 10_000
TABLE = "spillway-health"

READ = "local out = {} for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, 'state', 'until', 'epoch') end return out"  # noqa: E501
WRITE = "redis.call('HINCRBY', KEYS[1], ARGV[1], 1) redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1"
ACQUIRE = (
    "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end "
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) redis.call('PEXPIRE', KEYS[1], ARGV[3]) return 1"
)


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


class MinimalResp:
    """One RESP2 connection (used only where the tree has no spillway.resp): write a command, read one reply."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, *args: str | bytes | int | float) -> Any:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2]
        return None if int(rest) < 0 else [self._read() for _ in range(int(rest))]


def valkey_client(port: int) -> tuple[Any, str]:
    try:
        from spillway.resp import Connection, parse_url
    except ImportError:
        return MinimalResp(port), "benchmarks' minimal RESP client (this tree has no spillway.resp)"
    return Connection(parse_url(f"redis://127.0.0.1:{port}/0"), connect_timeout_s=2, read_timeout_s=2), "spillway.resp"


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


def valkey_operations(client: Any) -> dict[str, Callable[[], object]]:
    read, write, acquire = (client.call("SCRIPT", "LOAD", script) for script in (READ, WRITE, ACQUIRE))
    keys = [f"{{spillway}}:b:{t}" for t in TARGETS]
    lease_key = f"{{spillway}}:l:{PT_TARGET}"
    window_key = f"{{spillway}}:w:{TARGETS[1]}"
    holder = uuid.uuid4().hex

    def do_read() -> object:
        return client.call("EVALSHA", read, len(keys), *keys)

    def do_write() -> object:
        return client.call("EVALSHA", write, 1, window_key, "served", WINDOW_MS)

    def do_acquire() -> object:
        granted = client.call("EVALSHA", acquire, 1, lease_key, holder, MAX_IN_FLIGHT, LEASE_MS)
        assert granted == 1, granted
        return granted

    def do_release() -> object:
        return client.call("ZREM", lease_key, holder)

    return {"read": do_read, "evidence_write": do_write, "lease_acquire": do_acquire, "lease_release": do_release}


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
            ExpressionAttributeValues={":one": {"N": "1"}, ":expiry": {"N": str(int(time.time()) + 10)}},
        )

    def do_acquire() -> object:
        # Read the lease map and its version, drop the expired and count locally, then write on that version.
        item = client.get_item(TableName=TABLE, Key=lease_pk, ConsistentRead=True)["Item"]
        now_ms = int(time.time() * 1000)
        live = {k: v for k, v in item["leases"]["M"].items() if int(v["N"]) > now_ms}
        if len(live) >= MAX_IN_FLIGHT:
            raise AssertionError("never full here")
        live[holder] = {"N": str(now_ms + LEASE_MS)}
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

    DynamoDB: the existing health table (a global table of `replica_regions` replicas: every write is also a
    replicated write in each other region); the read is a strongly consistent BatchGetItem of the feature's targets
    (1 RRU each, items under 4 KB); writes are under 1 KB (1 WRU); the lease is a consistent GetItem and a
    conditional UpdateItem, the release an UpdateItem (a failed conditional write is billed too).
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

ROUND_TRIPS = {
    "valkey": {"read": 1, "evidence_write": 1, "lease_acquire": 1, "lease_release": 1},
    "dynamodb": {"read": 1, "evidence_write": 1, "lease_acquire": 2, "lease_release": 1},
}


def sequences(ops: dict[str, Callable[[], object]]) -> dict[str, Sequence[Callable[[], object]]]:
    return {
        **{name: (op,) for name, op in ops.items()},
        "on_demand_request": (ops["read"], ops["evidence_write"]),
        "provisioned_request": (ops["read"], ops["lease_acquire"], ops["evidence_write"], ops["lease_release"]),
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
        client, client_name = valkey_client(redis_port)
        stores = {"valkey": valkey_operations(client), "dynamodb": dynamodb_operations(moto_port)}
        figures: dict[str, Any] = {store: {} for store in stores}
        # Interleaved, one operation at a time for both stores, so a busy moment of the machine hits both.
        for name in sequences(stores["valkey"]):
            for store, ops in stores.items():
                figures[store][f"{name}_us"] = measure(sequences(ops)[name], warmup, iterations)
        figures["dynamodb"]["boto3_round_trip_floor_us"] = measure((boto3_round_trip(canned_port),), warmup, iterations)
    per_request = {
        store: {
            "on_demand": trips["read"] + trips["evidence_write"],
            "provisioned": sum(trips.values()),
            "per_extra_attempt": trips["evidence_write"],
        }
        for store, trips in ROUND_TRIPS.items()
    }
    valkey_pt, dynamo_pt = (figures[s]["provisioned_request_us"]["p50"] for s in ("valkey", "dynamodb"))
    return {
        **figures,
        "round_trips_per_request": per_request,
        "cost": costs(),
        "provisioned_request_p50_ratio_dynamodb_over_valkey": round(dynamo_pt / valkey_pt, 1),
        "valkey_client": client_name,
        "dynamodb_client": "boto3 (retries off)",
        "servers": "redis-server (Debian) and moto ThreadedMotoServer, both on 127.0.0.1",
        "note": "loopback, no network: not AWS latency; AWS's documented figures are in docs/design-notes.md",
        "iterations": iterations,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.system()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json alone")
    args = parser.parse_args()
    warmup, iterations = (10, 100) if args.quick else (100, 1000)
    figures = run(warmup, iterations)
    print(f"fleet_store: {figures}")
    if not args.no_write:
        merge_result("fleet_store", figures)


if __name__ == "__main__":
    main()

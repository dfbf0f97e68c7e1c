"""Shared breaker state in DynamoDB (a global table across the cells), behind a small interface; fails open.

Writes: the local HealthBoard's breaker transitions that matter to others (trip and reopen: the breaker is open
until ``cooldown_until``; closed: the target recovered) are written as one item per target. Reads: before routing,
``sync()`` reads every target's item at most once per ``cache_ttl_s`` (one BatchGetItem) and folds open breakers into
the local board with ``HealthBoard.merge``, which never shortens a local cooldown. So every instance learns of an
open breaker within about ``cache_ttl_s`` plus the global table's replication lag.

Item (pk is the target id, ``<model>/<capacity>/<region>``)::

    pk              S  target id
    state           S  open | closed (half_open and ramping are one instance's local progress: not written)
    opened_at       N  epoch s of the trip
    cooldown_until  N  epoch s; no instance sends ordinary traffic before it
    cooldown_s      N  the trip's cooldown (doubles on a failed recovery)
    trips           N  trips so far (as the writer counted them)
    writer          S  the writing instance (log stream name or a random id)
    version         N  +1 on every accepted write
    updated_at      N  epoch s
    expires_at      N  TTL attribute: cooldown_until + retention_s

Conditional write, the rule that keeps a stale writer from shortening a cooldown::

    attribute_not_exists(pk) OR cooldown_until <= :floor      with :floor = max(new cooldown_until, now)

- an open write is accepted when the stored cooldown ends no later than the new one: a longer cooldown is never
  replaced by a shorter one, whatever the order the writes arrive in;
- a closed write (its cooldown_until is in the past) is accepted only once the stored cooldown has passed: a
  recovered instance can close a breaker, but cannot close one another instance has just re-opened.

A rejected write is not an error: the stored item is stronger, and the next sync adopts it.

Writes leave the request path. The board's listener only enqueues the record (``enqueue``: a lock and a dict
assignment, no I/O); one daemon writer thread, started lazily on the first enqueue, makes the conditional UpdateItem
calls in order. The queue holds one record per target (a later transition supersedes a pending one for the same
target and keeps its place: the item is the target's latest state, not a log) and at most ``queue_size`` targets;
on overflow the oldest pending ``closed`` record is dropped first (a lost close only keeps the others out until the
stored cooldown runs out by itself), else the oldest record, and every drop is counted as ``on_error("write",
"QueueFull")``. ``flush(timeout_s)`` waits until the queue is empty and no write is in flight: for tests, local runs
and shutdown, never for the request path. ``write()`` stays synchronous and public; it is what the writer thread
calls.

In Lambda, the writer thread is frozen with the execution environment between invocations and resumes on the next
one; a write still queued or in flight when an invocation ends lands during the next invocation (or never, if the
environment is retired), and a write frozen mid-call may time out on thaw, which counts as an error and starts a
backoff. That is acceptable: shared state is best effort and the local breakers are authoritative; the writer
usually drains within the invocation that tripped, which goes on to its fallback target anyway.

Failure: every DynamoDB error is swallowed, counted (``on_error(operation, code)``) and logged by code only; the
store then stays quiet for ``backoff_s`` (no read, and writes dequeued meanwhile are skipped); routing goes on with
local state.

What a request can pay for the store: a write, nothing (it is enqueued). A read (``sync``), at most once per
``cache_ttl_s`` and, after any error, at most once per ``backoff_s``; concurrent callers never read twice (the next
read time is claimed under a lock before the call). Each BatchGetItem makes one attempt (no retries) with a 0.3 s
connect timeout and a 0.5 s read timeout, and no further call starts once ``read_budget_s`` (0.5 s) has passed
since the sync began. So in an outage one request per ``backoff_s`` pays about 0.3 s (blackhole: the connect times
out; a refused port fails at once) or 0.8 s (connects, never answers), every other request nothing; with DynamoDB
slow but answering, a sync pays at most ``read_budget_s`` plus one call (0.3 s + 0.5 s), 1.3 s, once per
``cache_ttl_s``. Not bounded by these timeouts: the DNS lookup (getaddrinfo; the resolver's own timeout), a server
trickling bytes (the read timeout bounds each socket read, not the whole answer), and the one-off creation of the
boto3 client on first use (imports and endpoint resolution, which ``warm`` pays at init).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from .health import BreakerRecord, BreakerState, HealthBoard, Transition

WRITE_CAUSES = frozenset({"trip", "reopen", "closed"})
QUEUE_FULL = "QueueFull"  # the on_error code of a record dropped because the write queue was full
CONNECT_TIMEOUT_S = 0.3
READ_TIMEOUT_S = 0.5
ErrorHook = Callable[[str, str], None]  # (operation, error code)
_CONDITION = "attribute_not_exists(pk) OR cooldown_until <= :floor"
_UPDATE = (
    "SET #state = :state, opened_at = :opened_at, cooldown_until = :until, cooldown_s = :cooldown_s, "
    "trips = :trips, writer = :writer, updated_at = :now, expires_at = :expires, "
    "version = if_not_exists(version, :zero) + :one"
)


class HealthStore:
    def __init__(
        self,
        table_name: str,
        board: HealthBoard,
        client: Any | Callable[[], Any],
        *,
        cache_ttl_s: float = 2.0,
        backoff_s: float = 5.0,
        retention_s: float = 86400.0,
        writer: str | None = None,
        on_error: ErrorHook | None = None,
        on_write: Callable[[str, bool], None] | None = None,
        queue_size: int = 64,
        read_budget_s: float = 0.5,
    ) -> None:
        """`client` is a boto3 DynamoDB client or a zero-argument factory of one (created on first use)."""
        self.table_name = table_name
        self.board = board
        self._client_or_factory = client
        self._client: Any = None if callable(client) and not hasattr(client, "batch_get_item") else client
        self.cache_ttl_s = cache_ttl_s
        self.backoff_s = backoff_s
        self.retention_s = retention_s
        self.writer = writer or uuid.uuid4().hex[:12]
        self._on_error = on_error
        self._on_write = on_write
        self.queue_size = max(1, queue_size)
        self.read_budget_s = read_budget_s
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._next_sync = 0.0
        self._quiet_until = 0.0
        self.last_sync: float | None = None
        self.last_error: str | None = None
        # The write queue: one pending record per target, oldest first; guarded by _queue.
        self._queue = threading.Condition(threading.Lock())
        self._pending: OrderedDict[str, BreakerRecord] = OrderedDict()
        self._in_flight = 0
        self._writer: threading.Thread | None = None
        self.dropped = 0
        board.add_listener(self._on_transition)

    # -- reading ------------------------------------------------------------------------------------------------

    def sync(self, target_ids: Iterable[str], *, force: bool = False) -> bool:
        """Fold the shared open breakers of `target_ids` into the board, at most once per cache TTL.
        Returns True when it read the table."""
        now = self.board.clock()
        with self._lock:
            if not force and (now < self._next_sync or now < self._quiet_until):
                return False
            self._next_sync = now + self.cache_ttl_s
        ids = sorted(set(target_ids))
        items: list[dict[str, Any]] = []
        try:
            client = self._get_client()
            budget_ends = time.monotonic() + self.read_budget_s  # no call starts after it; the rest waits a TTL
            for start in range(0, len(ids), 100):
                keys = [{"pk": {"S": tid}} for tid in ids[start : start + 100]]
                request: dict[str, Any] = {self.table_name: {"Keys": keys}}
                for _ in range(3):  # unprocessed keys: bounded follow-ups, never a loop
                    answer = client.batch_get_item(RequestItems=request)
                    items.extend(answer.get("Responses", {}).get(self.table_name, []))
                    request = answer.get("UnprocessedKeys") or {}
                    if not request or time.monotonic() >= budget_ends:
                        break
                if time.monotonic() >= budget_ends:
                    break
        except Exception as exc:
            self._failed("read", exc)
            return False
        for item in items:
            record = _record(item)
            if record is not None:
                self.board.merge(record)
        self.last_sync = now
        self.last_error = None
        return True

    def invalidate(self) -> None:
        with self._lock:
            self._next_sync = 0.0

    # -- writing ------------------------------------------------------------------------------------------------

    def _on_transition(self, event: Transition) -> None:
        if event.remote or event.cause not in WRITE_CAUSES:
            return
        self.enqueue(event.record)

    def enqueue(self, record: BreakerRecord) -> None:
        """Queue `record` for the writer thread and return at once (no I/O, whatever the state of DynamoDB)."""
        dropped = False
        with self._queue:
            if record.target not in self._pending and len(self._pending) >= self.queue_size:
                victim = next((t for t, r in self._pending.items() if r.state is not BreakerState.OPEN), None)
                if victim is None:
                    victim = next(iter(self._pending))
                del self._pending[victim]
                self.dropped += 1
                dropped = True
            self._pending[record.target] = record  # a pending record of the same target is superseded in place
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._drain, name="spillway-store-writer", daemon=True)
                self._writer.start()
            self._queue.notify_all()
        if dropped and self._on_error is not None:
            with contextlib.suppress(Exception):
                self._on_error("write", QUEUE_FULL)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued record is written (or skipped) and no write is in flight. True: drained; False:
        `timeout_s` passed first. For tests, local runs and shutdown: never call it on the request path."""
        with self._queue:
            return self._queue.wait_for(lambda: not self._pending and self._in_flight == 0, timeout=timeout_s)

    def pending(self) -> int:
        with self._queue:
            return len(self._pending) + self._in_flight

    def _drain(self) -> None:
        """The writer thread: one conditional write at a time, oldest target first, forever."""
        while True:
            with self._queue:
                while not self._pending:
                    self._queue.wait()
                _, record = self._pending.popitem(last=False)
                self._in_flight += 1
            try:
                with contextlib.suppress(Exception):  # a raising hook must not end the writer
                    self.write(record)
            finally:
                with self._queue:
                    self._in_flight -= 1
                    self._queue.notify_all()

    def write(self, record: BreakerRecord) -> bool | None:
        """Conditionally write one record, synchronously (the writer thread's call; the request path enqueues).
        True: written; False: the stored item is stronger; None: failed, or skipped during a backoff."""
        now = self.board.clock()
        if now < self._quiet_until:
            return None
        state = BreakerState.OPEN if record.state is BreakerState.OPEN else BreakerState.CLOSED
        floor = max(record.cooldown_until, now)
        try:
            self._get_client().update_item(
                TableName=self.table_name,
                Key={"pk": {"S": record.target}},
                UpdateExpression=_UPDATE,
                ConditionExpression=_CONDITION,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":state": {"S": state.value},
                    ":opened_at": _n(record.opened_at),
                    ":until": _n(record.cooldown_until),
                    ":cooldown_s": _n(record.cooldown_s),
                    ":trips": _n(record.trips),
                    ":writer": {"S": self.writer},
                    ":now": _n(now),
                    ":expires": _n(int(max(record.cooldown_until, now) + self.retention_s)),
                    ":floor": _n(floor),
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                },
            )
        except Exception as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                self.invalidate()  # the stored item is stronger: adopt it on the next request
                if self._on_write is not None:
                    self._on_write(record.target, False)
                return False
            self._failed("write", exc)
            return None
        if self._on_write is not None:
            self._on_write(record.target, True)
        return True

    # -- internals ----------------------------------------------------------------------------------------------

    def _get_client(self) -> Any:
        if self._client is None:
            with self._client_lock:  # the request path and the writer thread may both be first
                if self._client is None:
                    factory = self._client_or_factory
                    assert callable(factory)
                    self._client = factory()
        return self._client

    def _failed(self, operation: str, exc: BaseException) -> None:
        code = _code(exc)
        now = self.board.clock()
        with self._lock:
            self._quiet_until = now + self.backoff_s
            self._next_sync = max(self._next_sync, self._quiet_until)
        self.last_error = code
        if self._on_error is not None:
            self._on_error(operation, code)

    def status(self) -> dict[str, Any]:
        now = self.board.clock()
        return {
            "enabled": True,
            "last_sync_age_s": None if self.last_sync is None else round(now - self.last_sync, 3),
            "last_error": self.last_error,
            "backing_off": now < self._quiet_until,
            "cache_ttl_s": self.cache_ttl_s,
            "pending_writes": self.pending(),
            "dropped_writes": self.dropped,
        }


def _n(value: float) -> dict[str, str]:
    number = Decimal(str(round(float(value), 3))).normalize()
    return {"N": format(number, "f")}


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def _record(item: dict[str, Any]) -> BreakerRecord | None:
    try:
        state = BreakerState(item["state"]["S"])
        return BreakerRecord(
            target=item["pk"]["S"],
            state=state,
            opened_at=float(item.get("opened_at", {}).get("N", 0)),
            cooldown_until=float(item["cooldown_until"]["N"]),
            cooldown_s=float(item.get("cooldown_s", {}).get("N", 0)),
            capacity_until=0.0,
            trips=int(float(item.get("trips", {}).get("N", 0))),
            updated_at=float(item.get("updated_at", {}).get("N", 0)),
        )
    except (KeyError, ValueError, TypeError):
        return None  # an item this version cannot read is ignored, never fatal


def default_client_factory(region: str, endpoint_url: str | None = None) -> Callable[[], Any]:
    def make() -> Any:
        boto3: Any = importlib.import_module("boto3")
        config = importlib.import_module("botocore.config").Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # one attempt: the backoff is the retry
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            tcp_keepalive=True,
        )
        return boto3.session.Session().client("dynamodb", region_name=region, config=config, endpoint_url=endpoint_url)

    return make

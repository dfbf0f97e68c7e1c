"""Shared breaker state in DynamoDB, against moto: conditional writes, read-through cache, and outages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spillway.config import BreakerPolicy
from spillway.health import Admission, BreakerRecord, BreakerState, HealthBoard, Verdict
from spillway.store import QUEUE_FULL, HealthStore, default_client_factory
from tests.router.conftest import FakeClock

TABLE = "spillway-health"
T1 = "claude-sonnet/provisioned/us-east-1"
T2 = "claude-sonnet/on_demand/us-east-1"
T3 = "claude-sonnet/on_demand/us-west-2"
T4 = "claude-haiku/on_demand/us-east-1"
T5 = "claude-haiku/on_demand/us-west-2"
POLICY = BreakerPolicy(consecutive_failures=2, cooldown_s=10.0, max_cooldown_s=120.0, ramp_steps=())


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.update_time_to_live(
            TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        yield client


class Instance:
    """One Lambda instance: its own board and store, sharing the table and an epoch clock."""

    def __init__(self, client: Any, clock: FakeClock, name: str, **kw: Any) -> None:
        self.board = HealthBoard(clock=clock)
        self.errors: list[tuple[str, str]] = []
        self.writes: list[tuple[str, bool]] = []
        self.store = HealthStore(
            TABLE,
            self.board,
            client,
            writer=name,
            on_error=lambda op, code: self.errors.append((op, code)),
            on_write=lambda target, ok: self.writes.append((target, ok)),
            **kw,
        )

    def fail(self, target: str, times: int = 2) -> None:
        for _ in range(times):
            admission = self.board.begin(target, POLICY)
            self.board.finish(target, POLICY, Verdict.FAILURE, admission)


def _item(client: Any, target: str) -> dict[str, Any]:
    return client.get_item(TableName=TABLE, Key={"pk": {"S": target}}, ConsistentRead=True)["Item"]  # type: ignore[no-any-return]


def _record(target: str, state: BreakerState, until: float, now: float) -> BreakerRecord:
    return BreakerRecord(target, state, now, until, until - now, 0.0, 1, now)


@pytest.fixture
def epoch() -> FakeClock:
    return FakeClock(1_800_000_000.0)


def test_a_trip_is_written_with_its_schema(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    a.fail(T1)
    assert a.board.state(T1) is BreakerState.OPEN
    assert a.store.flush() is True
    item = _item(ddb, T1)
    assert item["state"] == {"S": "open"}
    assert float(item["cooldown_until"]["N"]) == epoch.now + 10
    assert float(item["cooldown_s"]["N"]) == 10
    assert float(item["opened_at"]["N"]) == epoch.now
    assert item["writer"] == {"S": "a"}
    assert item["version"] == {"N": "1"}
    assert int(item["expires_at"]["N"]) == int(epoch.now + 10 + 86400)
    assert a.writes == [(T1, True)]


def test_another_instance_learns_of_an_open_breaker_within_the_cache_ttl(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    b = Instance(ddb, epoch, "b", cache_ttl_s=2.0)
    assert b.store.sync([T1, T2]) is True  # first read: nothing shared yet
    a.fail(T1)
    assert a.store.flush() is True
    assert b.store.sync([T1, T2]) is False  # within the cache TTL: no read
    assert b.board.state(T1) is BreakerState.CLOSED
    epoch.advance(2.0)
    assert b.store.sync([T1, T2]) is True
    assert b.board.state(T1) is BreakerState.OPEN
    assert b.board.begin(T1, POLICY).admission is Admission.REFUSED
    assert b.board.record_of(T1).cooldown_until == epoch.now - 2.0 + 10
    assert b.board.state(T2) is BreakerState.CLOSED
    # The remote open is not written back by b.
    assert _item(ddb, T1)["writer"] == {"S": "a"}


def test_a_stale_writer_cannot_shorten_a_cooldown(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    now = epoch.now
    assert a.store.write(_record(T1, BreakerState.OPEN, now + 60, now)) is True
    assert a.store.write(_record(T1, BreakerState.OPEN, now + 5, now)) is False  # shorter: rejected
    assert float(_item(ddb, T1)["cooldown_until"]["N"]) == now + 60
    assert a.store.write(_record(T1, BreakerState.OPEN, now + 90, now)) is True  # longer: accepted
    item = _item(ddb, T1)
    assert float(item["cooldown_until"]["N"]) == now + 90
    assert item["version"] == {"N": "2"}


def test_close_is_accepted_only_once_the_stored_cooldown_has_passed(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    start = epoch.now
    a.store.write(_record(T1, BreakerState.OPEN, start + 10, start))
    # Another instance re-opened it for longer meanwhile.
    a.store.write(_record(T1, BreakerState.OPEN, start + 30, start + 1))
    epoch.advance(15)  # a's own cooldown is over; the stored one is not
    closed = _record(T1, BreakerState.CLOSED, start + 10, start)
    assert a.store.write(closed) is False
    assert _item(ddb, T1)["state"] == {"S": "open"}
    epoch.advance(20)  # now the stored cooldown has passed too
    assert a.store.write(closed) is True
    assert _item(ddb, T1)["state"] == {"S": "closed"}


def test_breaker_recovery_on_one_instance_closes_the_item(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    a.fail(T1)
    epoch.advance(10)
    admission = a.board.begin(T1, POLICY)
    assert admission.admission is Admission.PROBE
    a.board.finish(T1, POLICY, Verdict.OK, admission)  # no ramp steps: closes at once
    assert a.board.state(T1) is BreakerState.CLOSED
    assert a.store.flush() is True
    assert _item(ddb, T1)["state"] == {"S": "closed"}
    # A closed item does not re-open anyone.
    b = Instance(ddb, epoch, "b")
    b.store.sync([T1])
    assert b.board.state(T1) is BreakerState.CLOSED


def test_a_remote_record_never_shortens_a_local_cooldown(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    b = Instance(ddb, epoch, "b")
    now = epoch.now
    b.board.merge(_record(T1, BreakerState.OPEN, now + 100, now))
    a.store.write(_record(T1, BreakerState.OPEN, now + 20, now))
    b.store.sync([T1], force=True)
    assert b.board.record_of(T1).cooldown_until == now + 100


def test_a_rejected_write_makes_the_next_sync_read(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    now = epoch.now
    a.store.sync([T1])
    ddb.put_item(
        TableName=TABLE,
        Item={"pk": {"S": T1}, "state": {"S": "open"}, "cooldown_until": {"N": str(now + 300)},
              "opened_at": {"N": str(now)}, "cooldown_s": {"N": "300"}},
    )  # fmt: skip
    a.fail(T1)  # local trip for 10 s: the write is rejected, the stored 300 s wins
    assert a.store.flush() is True
    assert a.writes == [(T1, False)]
    assert a.store.sync([T1]) is True  # invalidated: reads despite the cache TTL
    assert a.board.record_of(T1).cooldown_until == now + 300


def test_unreadable_items_are_ignored(ddb: Any, epoch: FakeClock) -> None:
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": T1}, "state": {"S": "weird"}})
    a = Instance(ddb, epoch, "a")
    assert a.store.sync([T1]) is True
    assert a.board.state(T1) is BreakerState.CLOSED


class _Counting:
    """A DynamoDB client whose endpoint refuses connections, counting calls."""

    def __init__(self) -> None:
        self.client = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:9",
            config=__import__("botocore.config").config.Config(
                retries={"total_max_attempts": 1}, connect_timeout=0.2, read_timeout=0.2
            ),
        )
        self.calls = 0

    def batch_get_item(self, **kw: Any) -> Any:
        self.calls += 1
        return self.client.batch_get_item(**kw)

    def update_item(self, **kw: Any) -> Any:
        self.calls += 1
        return self.client.update_item(**kw)


def test_an_outage_is_swallowed_counted_and_backed_off(epoch: FakeClock) -> None:
    refused = _Counting()
    a = Instance(refused, epoch, "a", backoff_s=5.0)
    assert a.store.sync([T1]) is False
    assert a.errors == [("read", "EndpointConnectionError")]
    assert a.store.status()["backing_off"] is True
    a.fail(T1)  # the trip is local; the write is skipped during the backoff
    assert a.board.state(T1) is BreakerState.OPEN
    assert a.store.flush() is True
    assert refused.calls == 1
    epoch.advance(5.0)
    assert a.store.sync([T1]) is False
    assert refused.calls == 2
    assert a.store.status()["last_error"] == "EndpointConnectionError"


def test_missing_table_is_an_error_not_a_crash(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    a.store.table_name = "no-such-table"
    assert a.store.sync([T1]) is False
    assert a.errors == [("read", "ResourceNotFoundException")]


def test_client_factory_is_called_lazily_once(ddb: Any, epoch: FakeClock) -> None:
    made: list[int] = []

    def factory() -> Any:
        made.append(1)
        return ddb

    board = HealthBoard(clock=epoch)
    store = HealthStore(TABLE, board, factory)
    assert made == []
    store.sync([T1])
    store.sync([T1], force=True)
    assert made == [1]


# -- the write queue: transitions leave the request path ------------------------------------------------------------


class _Gated:
    """A DynamoDB client whose update_item records its call, then waits for `release` while `gate` is set."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gate = True
        self.written: list[tuple[str, str]] = []  # (target, state) in call order
        self.writers: set[threading.Thread] = set()  # the threads that called update_item

    def batch_get_item(self, **kw: Any) -> Any:
        return self.inner.batch_get_item(**kw) if self.inner is not None else {"Responses": {}}

    def update_item(self, **kw: Any) -> Any:
        self.written.append((kw["Key"]["pk"]["S"], kw["ExpressionAttributeValues"][":state"]["S"]))
        self.writers.add(threading.current_thread())
        self.entered.set()
        if self.gate:
            assert self.release.wait(10.0), "the test never released the writer"
            self.gate = False
        return self.inner.update_item(**kw) if self.inner is not None else {}


def test_a_write_never_blocks_the_caller(epoch: FakeClock) -> None:
    gated = _Gated()
    a = Instance(gated, epoch, "a")
    # The trip's listener only enqueues: a write on the caller's thread would hold it at the gate until the 10 s
    # wait gives up and fails the test.
    a.fail(T1)
    assert a.board.state(T1) is BreakerState.OPEN
    assert gated.entered.wait(5.0)  # the writer thread is inside update_item, blocked
    assert threading.current_thread() not in gated.writers
    assert a.store.flush(timeout_s=0.05) is False
    assert a.store.pending() == 1
    assert a.store.status()["pending_writes"] == 1
    gated.release.set()
    assert a.store.flush() is True
    assert a.writes == [(T1, True)]
    assert a.store.pending() == 0
    assert gated.written == [(T1, "open")]


def test_the_queue_keeps_target_order_and_a_later_record_supersedes_a_pending_one(epoch: FakeClock) -> None:
    gated = _Gated()
    a = Instance(gated, epoch, "a")
    now = epoch.now
    a.store.enqueue(_record(T1, BreakerState.OPEN, now + 10, now))
    assert gated.entered.wait(5.0)  # T1 is in flight; the rest queues behind it
    a.store.enqueue(_record(T2, BreakerState.OPEN, now + 10, now))
    a.store.enqueue(_record(T3, BreakerState.OPEN, now + 10, now))
    a.store.enqueue(_record(T2, BreakerState.CLOSED, now + 10, now))  # supersedes T2's open, keeps its place
    a.store.enqueue(_record(T1, BreakerState.CLOSED, now + 10, now))  # T1's in-flight write is not recalled
    gated.release.set()
    assert a.store.flush() is True
    assert gated.written == [(T1, "open"), (T2, "closed"), (T3, "open"), (T1, "closed")]
    assert a.errors == []
    assert a.store.dropped == 0


def test_overflow_drops_a_pending_close_first_then_the_oldest_and_counts_each_drop(epoch: FakeClock) -> None:
    gated = _Gated()
    a = Instance(gated, epoch, "a", queue_size=2)
    now = epoch.now
    a.store.enqueue(_record(T1, BreakerState.OPEN, now + 10, now))
    assert gated.entered.wait(5.0)  # in flight: not in the queue
    a.store.enqueue(_record(T2, BreakerState.OPEN, now + 10, now))
    a.store.enqueue(_record(T3, BreakerState.CLOSED, now + 10, now))
    a.store.enqueue(_record(T3, BreakerState.CLOSED, now + 11, now))  # a target already queued: no drop
    assert a.errors == []
    a.store.enqueue(_record(T4, BreakerState.OPEN, now + 10, now))  # full: T3's close goes, though T2 is older
    assert a.errors == [("write", QUEUE_FULL)]
    a.store.enqueue(_record(T5, BreakerState.OPEN, now + 10, now))  # full, no close pending: the oldest, T2
    assert a.errors == [("write", QUEUE_FULL)] * 2
    assert a.store.dropped == 2
    assert a.store.status()["dropped_writes"] == 2
    gated.release.set()
    assert a.store.flush() is True
    assert gated.written == [(T1, "open"), (T4, "open"), (T5, "open")]


def test_the_stale_writer_rule_holds_through_the_queue(ddb: Any, epoch: FakeClock) -> None:
    a = Instance(ddb, epoch, "a")
    b = Instance(ddb, epoch, "b")
    now = epoch.now
    # Queued out of order: b's longer cooldown lands first, a's shorter one after it, and is rejected.
    b.store.enqueue(_record(T1, BreakerState.OPEN, now + 60, now))
    assert b.store.flush() is True
    a.fail(T1)  # a's own trip: 10 s
    assert a.store.flush() is True
    assert a.writes == [(T1, False)]
    assert float(_item(ddb, T1)["cooldown_until"]["N"]) == now + 60
    # a recovers after its 10 s; its queued close cannot close the breaker b holds open for 60 s.
    epoch.advance(10)
    admission = a.board.begin(T1, POLICY)
    a.board.finish(T1, POLICY, Verdict.OK, admission)
    assert a.board.state(T1) is BreakerState.CLOSED
    assert a.store.flush() is True
    assert a.writes == [(T1, False), (T1, False)]
    assert _item(ddb, T1)["state"] == {"S": "open"}
    # Once the stored cooldown has passed, a close through the queue is accepted.
    epoch.advance(60)
    a.store.enqueue(a.board.record_of(T1))
    assert a.store.flush() is True
    assert a.writes[-1] == (T1, True)
    assert _item(ddb, T1)["state"] == {"S": "closed"}


def test_a_raising_hook_does_not_stop_the_writer(ddb: Any, epoch: FakeClock) -> None:
    board = HealthBoard(clock=epoch)
    seen: list[str] = []

    def on_write(target: str, accepted: bool) -> None:
        seen.append(target)
        raise RuntimeError("a broken metrics hook")

    store = HealthStore(TABLE, board, ddb, on_write=on_write)
    now = epoch.now
    store.enqueue(_record(T1, BreakerState.OPEN, now + 10, now))
    assert store.flush() is True
    store.enqueue(_record(T2, BreakerState.OPEN, now + 10, now))
    assert store.flush() is True
    assert seen == [T1, T2]
    assert _item(ddb, T2)["state"] == {"S": "open"}


def test_a_failed_write_silences_reads_for_the_backoff(epoch: FakeClock) -> None:
    refused = _Counting()
    a = Instance(refused, epoch, "a", backoff_s=5.0)
    a.fail(T1)
    assert a.store.flush() is True
    assert a.errors == [("write", "EndpointConnectionError")]
    assert a.store.sync([T1]) is False  # backing off: no call
    assert refused.calls == 1
    epoch.advance(5.0)
    assert a.store.sync([T1]) is False
    assert refused.calls == 2


class _Unprocessed:
    """A DynamoDB client that never processes a key: every answer asks for a follow-up."""

    def __init__(self) -> None:
        self.calls = 0

    def batch_get_item(self, RequestItems: Any) -> Any:
        self.calls += 1
        return {"Responses": {TABLE: []}, "UnprocessedKeys": RequestItems}


def test_a_sync_makes_no_call_after_its_read_budget(epoch: FakeClock) -> None:
    slow = _Unprocessed()
    store = HealthStore(TABLE, HealthBoard(clock=epoch), slow, read_budget_s=0.0)
    assert store.sync([T1, T2]) is True
    assert slow.calls == 1  # the budget was spent by the first call: no follow-up
    generous = _Unprocessed()
    store = HealthStore(TABLE, HealthBoard(clock=epoch), generous, read_budget_s=60.0)
    assert store.sync([T1, T2]) is True
    assert generous.calls == 3  # follow-ups stay bounded without a budget too


def test_default_client_has_short_timeouts_and_no_retries() -> None:
    client = default_client_factory("us-east-1")()
    config = client.meta.config
    assert config.connect_timeout <= 0.3
    assert config.read_timeout <= 0.5
    assert config.retries["total_max_attempts"] == 1

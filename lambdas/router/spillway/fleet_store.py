"""The fleet store on Valkey (ElastiCache Serverless in AWS, redis-server locally): one Lua script per operation,
so that each operation is one round trip and atomic on the server.

Keys (every key under the hash tag ``{spillway}``, so all of them live in one slot and a script may touch any of
them: ElastiCache Serverless runs in cluster mode)::

    {spillway}:b:<target>   hash: epoch, state (0 closed, 1 open, 2 ramping), until (server ms), cool (ms), trips,
                            step, rok (ramp successes), run (consecutive failures), cap (capacity cooldown end, ms),
                            probes (half-open probes taken so far: one per cooldown, whatever the fleet's size),
                            lim and limat (a PT concurrency learned from throttles, and when: capacity.py's rule),
                            and w<n>, a ring of RING one-second buckets "second:epoch:total:failures:slow",
                            beside t<n>, the same seconds' first tokens "second:epoch:measured:over" (over: later
                            than the reporting feature's ttft_ms; a field of its own, so a router of the release
                            before, which reads w<n> only, keeps reading its buckets during a rolling deploy)
    {spillway}:p:<target>   string: the half-open probe's holder (SET NX PX: expires with its attempt)
    {spillway}:l:<target>   sorted set: the leases in flight on a provisioned target, scored by their expiry (ms)

Times are the server's (TIME inside the scripts). The breaker hash expires RETAIN_S after its last write (longer
than any cooldown the config allows); the probe and leases expire with their attempts.

Failure: connect and read timeouts are short (0.25 s each by default); nothing is retried; any error (refused,
timeout, an error reply, a reply this code cannot read) raises FleetUnavailable and starts a backoff
(`backoff_s`) during which every call raises at once without I/O, so a request pays at most one connect plus one
read timeout per backoff period, and the engine routes on local state meanwhile. The connection is kept across
invocations; one found closed by the server on first use after a pause is reopened once (resp.Connection).

Authentication: none for redis:// (local); with `credentials` (iam_credentials: the handler passes them when
SPILLWAY_FLEET_STORE_USER and SPILLWAY_FLEET_STORE_CACHE are set), AUTH with an ElastiCache IAM token, a SigV4
presigned "connect" request signed anew at each connection (tokens last 15 minutes; ElastiCache closes a
connection after 12 hours, and the next call reopens it with a fresh token). TLS for rediss://, verified against the
system's certificate authorities.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .fleet import Change, FleetState, FleetUnavailable, Report, Snapshot, TargetState
from .health import Verdict
from .resp import Address, Connection, Credentials, Reply, RespError, parse_url

PREFIX = "{spillway}"
# The commands this store runs, as a Valkey ACL access string: reads and writes of strings, hashes and sorted sets,
# EVAL/EVALSHA, TIME (the scripts' one clock: it is in no read/write category) and SELECT 0; minus the dangerous
# commands (FLUSHALL, KEYS, CONFIG, DEBUG, ...). The stack gives its IAM user exactly this (stacks/constructs/
# fleet_store.py), and tests/router/test_fleet_store.py runs every operation as a user with it.
ACCESS_STRING = "on ~* -@all +@read +@write +@scripting +@connection +time +select -@dangerous"
RING = 120  # one-second buckets kept per target: a window longer than this is read as this long
RETAIN_S = 7200  # > the longest cooldown the config allows (3600 s)
LEARN_TTL_S = 30.0  # a PT limit learned from a throttle is forgotten this long after it (InflightTracker's default)
_VERDICT_CODE = {Verdict.OK: "o", Verdict.FAILURE: "f", Verdict.SLOW: "s", Verdict.CAPACITY: "c"}

# What every script shares: the server's clock, and one target's state (TargetState's fields, in order).
_LIB = """
local RING = @RING@
local RETAIN = @RETAIN@
local LEARN_TTL = @LEARN@
local function learned(b, now)
  local h = redis.call('HMGET', b, 'lim', 'limat')
  local lim, at = tonumber(h[1]), tonumber(h[2])
  if lim and at and now - at < LEARN_TTL then return lim end
  return 0
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function bucket(v)
  if not v then return nil end
  local s, e, t, f, sl = string.match(v, '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
  if not s then return nil end
  return tonumber(s), tonumber(e), tonumber(t), tonumber(f), tonumber(sl)
end
local function firsts(v)
  if not v then return nil end
  local s, e, n, o = string.match(v, '^(%d+):(%d+):(%d+):(%d+)$')
  if not s then return nil end
  return tonumber(s), tonumber(e), tonumber(n), tonumber(o)
end
local function state(b, p, l, now, window)
  local h = redis.call('HMGET', b, 'epoch', 'state', 'until', 'cool', 'trips', 'step', 'rok', 'run', 'cap', 'probes')
  local epoch = tonumber(h[1]) or 0
  local sec = math.floor(now / 1000)
  local total, fails, slow, ttft, over = 0, 0, 0, 0, 0
  if window > RING then window = RING end
  if window > 0 then
    local fields = {}
    for i = 0, window - 1 do
      fields[#fields + 1] = 'w' .. ((sec - i) % RING)
      fields[#fields + 1] = 't' .. ((sec - i) % RING)
    end
    local values = redis.call('HMGET', b, unpack(fields))
    for i = 1, window do
      local s, e, t, f, sl = bucket(values[2 * i - 1])
      if s == sec - (i - 1) and e == epoch then
        total = total + t; fails = fails + f; slow = slow + sl
      end
      local s2, e2, n, o = firsts(values[2 * i])
      if s2 == sec - (i - 1) and e2 == epoch then
        ttft = ttft + n; over = over + o
      end
    end
  end
  return {epoch, tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0, tonumber(h[5]) or 0,
          tonumber(h[6]) or 0, tonumber(h[7]) or 0, tonumber(h[8]) or 0, tonumber(h[9]) or 0,
          total, fails, slow, redis.call('EXISTS', p), redis.call('ZCOUNT', l, '(' .. now, '+inf'), learned(b, now),
          tonumber(h[10]) or 0, ttft, over}
end
"""
for _name, _value in (("@RING@", RING), ("@RETAIN@", RETAIN_S), ("@LEARN@", int(LEARN_TTL_S * 1000))):
    _LIB = _LIB.replace(_name, str(_value))

# KEYS: b, p, l per target. ARGV[1]: window (s). Returns {now_ms, state...}.
READ = (
    _LIB
    + """
local now = now_ms()
local window = math.ceil(tonumber(ARGV[1]))
local out = {now}
for i = 1, #KEYS, 3 do out[#out + 1] = state(KEYS[i], KEYS[i + 1], KEYS[i + 2], now, window) end
return out
"""
)

# KEYS: b, p, l. ARGV: epoch, verdict (o f s c n), window (s), capacity pause (ms), lease token, probe token,
# level (the live leases when this attempt's lease was taken; 0 without one), first token ('o' after the feature's
# ttft_ms, 'u' within it, '' not measured).
REPORT = (
    _LIB
    + """
local b, p, l = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms()
local epoch, verdict = tonumber(ARGV[1]), ARGV[2]
if ARGV[5] ~= '' then redis.call('ZREM', l, ARGV[5]) end
if ARGV[6] ~= '' and redis.call('GET', p) == ARGV[6] then redis.call('DEL', p) end
local current = tonumber(redis.call('HGET', b, 'epoch')) or 0
local level = tonumber(ARGV[7]) or 0
if level > 0 then  -- capacity.py's rule, fleet-wide: a throttle at n in flight means PT holds fewer than n
  local lim = learned(b, now)
  if verdict == 'c' then
    local new = math.max(1, level - 1)
    if lim > 0 then new = math.max(1, math.min(lim, level - 1)) end
    redis.call('HSET', b, 'lim', new, 'limat', now)
  elseif verdict == 'o' and lim > 0 and level >= lim then
    redis.call('HSET', b, 'lim', level + 1)  -- additive increase: one above what just worked
  end
end
if verdict == 'c' then
  local until_ms = now + tonumber(ARGV[4])
  if until_ms > (tonumber(redis.call('HGET', b, 'cap')) or 0) then redis.call('HSET', b, 'cap', until_ms) end
  redis.call('EXPIRE', b, RETAIN)
elseif verdict ~= 'n' and epoch == current then
  local st = tonumber(redis.call('HGET', b, 'state')) or 0
  if st == 0 then
    local sec = math.floor(now / 1000)
    local field = 'w' .. (sec % RING)
    local s, e, t, f, sl = bucket(redis.call('HGET', b, field))
    if s ~= sec or e ~= current then t, f, sl = 0, 0, 0 end
    t = t + 1
    if verdict == 'f' then f = f + 1; redis.call('HINCRBY', b, 'run', 1) else redis.call('HSET', b, 'run', 0) end
    if verdict == 's' then sl = sl + 1 end
    redis.call('HSET', b, field, sec .. ':' .. current .. ':' .. t .. ':' .. f .. ':' .. sl)
    if ARGV[8] == 'o' or ARGV[8] == 'u' then
      local tfield = 't' .. (sec % RING)
      local s2, e2, n, o = firsts(redis.call('HGET', b, tfield))
      if s2 ~= sec or e2 ~= current then n, o = 0, 0 end
      n = n + 1
      if ARGV[8] == 'o' then o = o + 1 end
      redis.call('HSET', b, tfield, sec .. ':' .. current .. ':' .. n .. ':' .. o)
    end
    redis.call('EXPIRE', b, RETAIN)
  elseif st == 2 and verdict == 'o' then
    redis.call('HINCRBY', b, 'rok', 1)
    redis.call('EXPIRE', b, RETAIN)
  end
end
return {now, state(b, p, l, now, math.ceil(tonumber(ARGV[3])))}
"""
)

# KEYS: b, p. ARGV: expected epoch, kind (open ramp close), cooldown (ms), ramp step. Returns {applied, now_ms}.
TRANSITION = (
    _LIB
    + """
local b, p = KEYS[1], KEYS[2]
local now = now_ms()
local current = tonumber(redis.call('HGET', b, 'epoch')) or 0
if current ~= tonumber(ARGV[1]) then return {0, now} end
local kind = ARGV[2]
if kind == 'open' then
  local cool = tonumber(ARGV[3])
  local until_ms = tonumber(redis.call('HGET', b, 'until')) or 0
  local st = tonumber(redis.call('HGET', b, 'state')) or 0
  if st ~= 1 or now >= until_ms then redis.call('HINCRBY', b, 'trips', 1) end
  if now + cool > until_ms then until_ms = now + cool end  -- never shorten a running cooldown
  redis.call('HSET', b, 'state', 1, 'until', until_ms, 'cool', cool, 'step', 0, 'rok', 0, 'run', 0)
  redis.call('DEL', p)
elseif kind == 'ramp' then
  redis.call('HSET', b, 'state', 2, 'step', tonumber(ARGV[4]), 'rok', 0, 'run', 0)
elseif kind == 'close' then
  redis.call('HSET', b, 'state', 0, 'cool', 0, 'step', 0, 'rok', 0, 'run', 0)
else
  return redis.error_reply('ERR unknown transition')
end
redis.call('HSET', b, 'epoch', current + 1)
redis.call('EXPIRE', b, RETAIN)
return {1, now}
"""
)

# KEYS: b, p. ARGV: token, ttl (ms). Takes the half-open probe if nobody holds it (SET NX PX) and counts it.
PROBE = """
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return 0 end
redis.call('HINCRBY', KEYS[1], 'probes', 1)
redis.call('EXPIRE', KEYS[1], @RETAIN@)
return 1
""".replace("@RETAIN@", str(RETAIN_S))

# KEYS: b, l. ARGV: token, limit, ttl (ms), force (1/0). Returns the live count including this lease, or 0 when full
# (at the configured limit, or at a lower one learned from throttles).
LEASE = (
    _LIB
    + """
local b, l = KEYS[1], KEYS[2]
local now = now_ms()
local ttl = tonumber(ARGV[3])
local limit = tonumber(ARGV[2])
local lim = learned(b, now)
if lim > 0 and lim < limit then limit = lim end
redis.call('ZREMRANGEBYSCORE', l, '-inf', now)
local n = redis.call('ZCARD', l)
if n >= limit and ARGV[4] ~= '1' then return 0 end
redis.call('ZADD', l, now + ttl, ARGV[1])
if redis.call('PTTL', l) < ttl + 1000 then redis.call('PEXPIRE', l, ttl + 1000) end
return n + 1
"""
)


class _Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


ErrorHook = Callable[[str, str], None]  # (operation, error code)
_T = TypeVar("_T")


class ValkeyFleetStore:
    """FleetStore on one Valkey/Redis connection. Thread-safe (one lock around the connection)."""

    def __init__(
        self,
        address: Address,
        *,
        connect_timeout_s: float = 0.25,
        read_timeout_s: float = 0.25,
        backoff_s: float = 5.0,
        credentials: Credentials | None = None,
        ssl_context: ssl.SSLContext | None = None,
        prefix: str = PREFIX,
        clock: Callable[[], float] = time.monotonic,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.address = address
        self.backoff_s = backoff_s
        self.prefix = prefix
        self._clock = clock
        self._on_error = on_error
        self._conn = Connection(
            address,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            credentials=credentials,
            ssl_context=ssl_context,
        )
        self._lock = threading.Lock()
        self._quiet_until = 0.0
        self._scripts = {
            name: _Script(src)
            for name, src in (
                ("read", READ),
                ("report", REPORT),
                ("transition", TRANSITION),
                ("lease", LEASE),
                ("probe", PROBE),
            )
        }
        self.round_trips = 0
        self.errors = 0
        self.last_error: str | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ValkeyFleetStore:
        return cls(parse_url(url), **kwargs)

    # -- FleetStore ---------------------------------------------------------------------------------------------

    def read(self, targets: Sequence[str], window_s: float) -> Snapshot:
        keys: list[str] = []
        for tid in targets:
            keys.extend(self._keys(tid))

        def parse(reply: Reply) -> Snapshot:
            rows = _list(reply)
            if len(rows) != len(targets) + 1:
                raise FleetUnavailable("BadReply")
            return Snapshot(_int(rows[0]) / 1000.0, {t: _state(r) for t, r in zip(targets, rows[1:], strict=True)})

        return self._eval("read", keys, [max(0.0, float(window_s))], parse)

    def report(self, target: str, outcome: Report) -> tuple[float, TargetState]:
        args: list[str | int | float] = [
            outcome.epoch,
            _VERDICT_CODE.get(outcome.verdict, "n"),
            max(0.0, float(outcome.window_s)),
            int(max(0.0, outcome.capacity_pause_s) * 1000),
            outcome.lease or "",
            outcome.probe or "",
            outcome.level,
            "" if outcome.ttft_over is None else ("o" if outcome.ttft_over else "u"),
        ]

        def parse(reply: Reply) -> tuple[float, TargetState]:
            now, state = _list(reply)
            return _int(now) / 1000.0, _state(state)

        return self._eval("report", self._keys(target), args, parse)

    def transition(self, target: str, *, epoch: int, change: Change) -> bool:
        b, p, _ = self._keys(target)
        args: list[str | int | float] = [epoch, change.kind, int(change.cooldown_s * 1000), change.ramp_step]
        return self._eval("transition", [b, p], args, lambda reply: _int(_list(reply)[0]) == 1)

    def acquire_probe(self, target: str, token: str, ttl_s: float) -> bool:
        b, p, _ = self._keys(target)
        return self._eval("probe", [b, p], [token, max(1, int(ttl_s * 1000))], lambda reply: _int(reply) == 1)

    def acquire_lease(self, target: str, token: str, limit: int, ttl_s: float, *, force: bool) -> int | None:
        b, _, lease_key = self._keys(target)
        args: list[str | int | float] = [token, limit, max(1, int(ttl_s * 1000)), int(force)]
        return self._eval("lease", [b, lease_key], args, lambda reply: _int(reply) or None)

    def prepare(self) -> None:
        """Connect and load every script in one round trip, so that no request meets NOSCRIPT (one extra round trip
        per script on a server that has not seen it)."""
        with self._lock:
            if self._clock() < self._quiet_until:
                raise FleetUnavailable("BackingOff", sent=False)
            try:
                self.round_trips += 1
                replies = self._conn.pipeline([("SCRIPT", "LOAD", s.source) for s in self._scripts.values()])
            except Exception as exc:
                self._failed("prepare", type(exc).__name__)
                raise FleetUnavailable(type(exc).__name__) from exc
        for reply, script in zip(replies, self._scripts.values(), strict=True):
            if reply != script.sha.encode():
                code = reply.code if isinstance(reply, RespError) else "BadReply"
                with self._lock:
                    self._failed("prepare", code)
                raise FleetUnavailable(code)

    # -- status -------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "kind": "valkey",
            "tls": self.address.tls,
            "connected": self._conn.connected,
            "connects": self._conn.connects,
            "round_trips": self.round_trips,
            "errors": self.errors,
            "last_error": self.last_error,
            "backing_off": self._clock() < self._quiet_until,
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- internals ----------------------------------------------------------------------------------------------

    def _keys(self, target: str) -> tuple[str, str, str]:
        return (f"{self.prefix}:b:{target}", f"{self.prefix}:p:{target}", f"{self.prefix}:l:{target}")

    def _eval(
        self, name: str, keys: Sequence[str], args: Sequence[str | int | float], parse: Callable[[Reply], _T]
    ) -> _T:
        """Run a script (by its digest; whole if the server does not have it) and read its reply with `parse`. A
        reply of another shape is a store failure like any other (backoff included)."""
        script = self._scripts[name]
        try:
            reply = self._command("EVALSHA", script.sha, len(keys), *keys, *args)
        except _NoScript:
            reply = self._command("EVAL", script.source, len(keys), *keys, *args)
        try:
            return parse(reply)
        except (FleetUnavailable, ValueError, TypeError, IndexError) as exc:
            with self._lock:
                self._failed(name, "BadReply")
            raise FleetUnavailable("BadReply") from exc

    def _command(self, *args: str | int | float) -> Reply:
        with self._lock:
            if self._clock() < self._quiet_until:
                raise FleetUnavailable("BackingOff", sent=False)
            try:
                self.round_trips += 1
                return self._conn.call(*args)
            except RespError as exc:
                if exc.code == "NOSCRIPT":
                    raise _NoScript from exc
                self._failed(args[0], exc.code)
                raise FleetUnavailable(exc.code) from exc
            except Exception as exc:
                self._failed(args[0], type(exc).__name__)
                raise FleetUnavailable(type(exc).__name__) from exc

    def _failed(self, operation: str | int | float, code: str) -> None:
        self._quiet_until = self._clock() + self.backoff_s
        self.errors += 1
        self.last_error = code
        if self._on_error is not None:
            with contextlib.suppress(Exception):  # a metrics hook never breaks routing
                self._on_error(str(operation).lower(), code)


class _NoScript(Exception):
    pass


def _list(reply: Reply) -> list[Reply]:
    if not isinstance(reply, list):
        raise FleetUnavailable("BadReply")
    return reply


def _int(reply: Reply) -> int:
    if isinstance(reply, int):
        return reply
    if isinstance(reply, bytes):
        try:
            return int(reply)
        except ValueError:
            pass
    raise FleetUnavailable("BadReply")


def _state(row: Reply) -> TargetState:
    values = [_int(v) for v in _list(row)]
    if len(values) != 18:
        raise FleetUnavailable("BadReply")
    (epoch, state, until, cool, trips, step, rok, run, cap, total, fails, slow, probe, leases, learned, probes) = (
        values[:16]
    )
    ttft, ttft_over = values[16:]
    return TargetState(
        epoch=epoch,
        state=FleetState(state) if state in (0, 1, 2) else FleetState.CLOSED,
        until=until / 1000.0,
        cooldown_s=cool / 1000.0,
        trips=trips,
        ramp_step=step,
        ramp_ok=rok,
        run=run,
        capacity_until=cap / 1000.0,
        total=total,
        failures=fails,
        slow=slow,
        ttft=ttft,
        ttft_over=ttft_over,
        probe_held=bool(probe),
        leases=leases,
        learned_limit=learned,
        probes=probes,
    )


# -- ElastiCache IAM authentication -------------------------------------------------------------------------------


def elasticache_iam_token(
    *,
    user_id: str,
    cache_name: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    serverless: bool = True,
    now: datetime.datetime | None = None,
    expires_s: int = 900,
) -> str:
    """The password for `AUTH user_id <token>`: a SigV4-presigned GET of
    ``http://<cache_name>/?Action=connect&User=<user_id>[&ResourceType=ServerlessCache]`` for the service
    "elasticache", without its scheme (AWS's ElastiCache IAM authentication). Signed by hand with hashlib and
    hmac (botocore's presigner gives the same bytes: tests/unit/test_fleet_store_auth.py), so the router loads no
    botocore for it."""
    moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    scope = f"{day}/{region}/elasticache/aws4_request"
    query: dict[str, str] = {"Action": "connect", "User": user_id}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    query.update(
        {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{access_key}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires_s),
            "X-Amz-SignedHeaders": "host",
        }
    )
    if session_token:
        query["X-Amz-Security-Token"] = session_token
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    canonical_request = "\n".join(
        ["GET", "/", canonical_query, f"host:{cache_name}\n", "host", hashlib.sha256(b"").hexdigest()]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "elasticache", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{cache_name}/?{canonical_query}&X-Amz-Signature={signature}"


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


def iam_credentials(
    *, user_id: str, cache_name: str, region: str, environ: Mapping[str, str] = os.environ
) -> Credentials:
    """AUTH credentials from the Lambda's role (its AWS_ACCESS_KEY_ID / SECRET / SESSION_TOKEN), signed anew at
    every connection."""

    def make() -> tuple[str, str]:
        token = elasticache_iam_token(
            user_id=user_id,
            cache_name=cache_name,
            region=region,
            access_key=environ["AWS_ACCESS_KEY_ID"],
            secret_key=environ["AWS_SECRET_ACCESS_KEY"],
            session_token=environ.get("AWS_SESSION_TOKEN") or None,
        )
        return user_id, token

    return make

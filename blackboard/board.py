"""`Board`: one blackboard in Redis, and every operation on it (its finishing operations are in
`blackboard.finishing`, its reads in `blackboard.reading`).

Each state change is one Lua script (`blackboard/lua/`), so it is atomic, and fenced where it
comes from a claim. Reads are plain commands. Redis errors are retried with backoff for up to
`reconnect_timeout` seconds and then raised as `BoardUnavailable`; every write is safe to repeat
(posts by id, completions and failures by token), which is what makes that retry safe.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from blackboard import connection, kinds, policy, posting, tracing
from blackboard.backoff import Backoff
from blackboard.codec import decode_item
from blackboard.errors import (
    BoardUnavailable,
    InvalidInput,
    InvalidState,
    ItemNotFound,
    LeaseLost,
    UnknownItem,
)
from blackboard.finishing import BoardFinisher
from blackboard.keys import Keyspace, check_shards, shard_keyspaces
from blackboard.kinds import KindRegistry, Schema, check_kind
from blackboard.models import Claim, Item, NewItem
from blackboard.policy import Policy
from blackboard.scripts import Scripts
from blackboard.sharding import stored_shard_count
from blackboard.waker import Waker

T = TypeVar("T")

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


class Board(BoardFinisher):
    """An async handle on one board. Create with `await Board.connect(url, board=...)`."""

    def __init__(
        self,
        client: Any,
        board: str = "default",
        *,
        url: str = "",
        strict: bool = False,
        max_payload_bytes: int = 1 << 20,
        half_life: float = 60.0,
        backoff: Backoff | None = None,
        events_maxlen: int = 100_000,
        reconnect_timeout: float = 30.0,
        clock: Callable[[], float] | None = None,
        on_redis_error: Callable[[BaseException], None] | None = None,
        on_lease_expired: Callable[[str, int], None] | None = None,
        shards: int = 1,
    ) -> None:
        if half_life < 1:
            raise InvalidInput("half_life", f"expected seconds >= 1, got {half_life!r}")
        if max_payload_bytes < 1:
            raise InvalidInput("max_payload_bytes", f"expected > 0, got {max_payload_bytes!r}")
        self.name = board
        self.url = url
        self.shards = check_shards(shards)
        # Every shard's keys; a goal lives on `keys_of(its id)`. Board-wide settings (schemas,
        # guards' source of truth, policy, presence, rate limits) live on the first, the home.
        self.shard_keys = shard_keyspaces(board, shards)
        self.keys = self.shard_keys[0]
        self._next_shard = 0  # where the next claim starts, so every shard is served in turn
        self._in_flight = anyio.Semaphore(connection.MAX_IN_FLIGHT, fast_acquire=True)
        self.registry = KindRegistry()
        self.strict = strict
        self.max_payload_bytes = max_payload_bytes
        self.half_life = half_life
        self.backoff = backoff or Backoff()
        self.events_maxlen = events_maxlen
        self.reconnect_timeout = reconnect_timeout
        self.clock = clock
        self.on_redis_error = on_redis_error
        self.daemon_id: str | None = None  # set by a daemon: its id goes on every audit record
        self.policy: Policy | None = None  # the rules in force (None: open); see blackboard.policy
        self.on_denied: Callable[[str, str, str], None] | None = None  # (action, kind, rule) of each denial
        self.on_budget_exceeded: Callable[[str], None] | None = None  # (reason) of each refusal
        self.on_lease_expired = on_lease_expired
        self.redis = client
        self._scripts = Scripts.register(client)
        self.waker = Waker(self)

    @classmethod
    async def connect(
        cls, url: str = "memory://", board: str = "default", shards: int | None = None, **options: Any
    ) -> Board:
        """Connect to `board` at `url` (see `blackboard.connection`) and load its kind schemas.

        `shards=K` spreads the board's goals over K hash tags (K Redis Cluster slots, so up to
        K masters). A board keeps the count it was first used with: None (the default) takes
        that count (1 for a new board), another raises `InvalidInput` (see `check_shard_count`).
        """
        self = cls(connection.connect(url), board, url=url, shards=shards or 1, **options)
        try:
            if (
                shards is None
                and (found := await self.retrying(lambda: stored_shard_count(self.redis, board))) > 1
            ):
                self = cls(self.redis, board, url=url, shards=found, **options)
            await self.check_shard_count()
            await self.load_kinds()
        except BaseException:  # refused or unreachable: don't leave the client's connections open
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    async def close(self) -> None:
        await connection.close(self.redis)

    async def __aenter__(self) -> Board:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------

    async def retrying(self, op: Callable[[], Awaitable[T]], *, blocking: bool = False) -> T:
        """Run `op`, retrying connection errors with capped exponential backoff.

        An `op` that doesn't block waits for one of `connection.MAX_IN_FLIGHT` slots first: ten
        thousand agents on one handle queue for Redis instead of draining the connection pool
        (a cluster client fails at once when a node's pool is empty). A `blocking` one (BLPOP,
        XREAD BLOCK) takes none, so long reads never hold up the others.
        """
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.02
        while True:
            try:
                if blocking:
                    result = await op()
                else:
                    async with self._in_flight:
                        result = await op()
                # fakeredis never yields: without this a loop on memory:// can't be cancelled.
                await anyio.lowlevel.checkpoint()
                return result
            except _RETRYABLE as e:
                if self.on_redis_error is not None:
                    self.on_redis_error(e)
                if time.monotonic() + delay > deadline:
                    raise BoardUnavailable(
                        f"Redis at {self.url or 'the board URL'} unreachable for "
                        f"{self.reconnect_timeout:.0f}s: {e}"
                    ) from e
                await anyio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 1.0)

    async def _run(
        self,
        script: Any,
        kind_list: Iterable[str],
        args: dict[str, Any],
        actor: str | None = None,
        extra_keys: Sequence[str] = (),
        *,
        keys: Keyspace | None = None,
    ) -> Any:
        """Run an operation script on one shard (`keys`, default the first), supplying the
        per-kind keys it asks for.

        KEYS are the fixed keys, four per kind, then `extra_keys` (see each script's header).
        """
        ks = keys or self.keys
        wanted = list(dict.fromkeys(kind_list))
        for _ in range(5):
            ctx: dict[str, Any] = {"kinds": wanted, "maxlen": self.events_maxlen}
            if self.clock is not None:
                ctx["now"] = int(self.clock() * 1000)
            if actor:
                ctx["actor"] = actor
            if self.daemon_id:
                ctx["daemon"] = self.daemon_id
            if self.policy is not None:
                ctx["policy"] = self.policy.version
            if self.shards > 1:
                ctx["shard"] = ks.index
            names = [*ks.fixed, *(k for kind in wanted for k in ks.kind_keys(kind)), *extra_keys]
            argv = [json.dumps(ctx), json.dumps(args)]
            raw = await self.retrying(lambda: script(keys=names, args=argv))  # noqa: B023
            if isinstance(raw, list):
                return raw
            out = json.loads(raw)
            if "needkinds" not in out:
                return out
            wanted.extend(k for k in out["needkinds"] if k not in wanted)
        raise RuntimeError("script kept asking for more kinds")  # pragma: no cover

    # -- kinds ----------------------------------------------------------------------------

    async def register_kind(self, kind: str, schema: Schema) -> None:
        """Validate payloads of `kind` against `schema` (a pydantic model or a JSON schema).

        The JSON schema is stored on the board so other processes validate the same way.
        """
        json_schema = self.registry.register(kind, schema)
        text = json.dumps(json_schema)
        await self.retrying(lambda: self.redis.hset(self.keys.schemas, kind, text))

    async def load_kinds(self) -> None:
        """Adopt the kind schemas stored on the board (keeps locally registered models)."""
        stored = await self.retrying(lambda: self.redis.hgetall(self.keys.schemas))
        for k, v in stored.items():
            name = k.decode()
            if name not in self.registry:
                self.registry.load(name, json.loads(v))

    async def kinds(self) -> list[str]:
        """Every kind ever posted to this board (on any shard)."""
        found = await self.each_shard(self.shard_kinds)
        return sorted(set().union(*found))

    async def shard_kinds(self, keys: Keyspace) -> list[str]:
        """Every kind ever posted to one shard."""
        raw = await self.retrying(lambda: self.redis.smembers(keys.kinds))
        return sorted(k.decode() for k in raw)

    async def expand_kinds(self, patterns: Sequence[str]) -> list[str]:
        """Kind names for `patterns`, globs matched against the kinds known on the board."""
        checked = [kinds.check_pattern(p, f"kinds[{i}]") for i, p in enumerate(patterns)]
        if not any(kinds.is_glob(p) for p in checked):
            return checked
        return kinds.expand(checked, await self.kinds())

    # -- posting --------------------------------------------------------------------------

    async def post(self, kind: str, payload: Any = None, *, actor: str | None = None, **fields: Any) -> Item:
        """Post one item; returns it as stored (the existing item on a repeated id/key).

        `fields`: priority (0-1000, higher first), parent, after (ids to wait for), delay
        (seconds) or not_before (unix seconds), max_attempts, idempotency_key, tags, id.
        """
        item = posting.new_item("", kind=kind, payload=payload, **fields)
        return (await self.post_many([item], actor=actor))[0]

    async def post_many(self, items: Sequence[NewItem], *, actor: str | None = None) -> list[Item]:
        """Post a batch in one atomic step: all written, or (on bad input) none."""
        posted = await self._post_specs(posting.with_ids(items, shards=self.shards), actor, "items")
        return [it for it in await self.get_many([p[0] for p in posted]) if it is not None]

    async def _post_specs(self, items: Sequence[NewItem], actor: str | None, field: str) -> Any:
        if not tracing.enabled:
            return await self._write_posts(items, actor, field)
        items, spans = tracing.start_posts(self, items, actor)
        try:
            posted = await self._write_posts(items, actor, field)
        except BaseException as e:
            tracing.end_spans(spans, e)
            raise
        tracing.end_spans(spans)
        return posted

    async def _write_posts(self, items: Sequence[NewItem], actor: str | None, field: str) -> Any:
        await policy.enforce(self, actor, "post", (it.kind for it in items))
        specs = posting.encode_batch(
            items,
            self.registry,
            strict=self.strict,
            max_payload_bytes=self.max_payload_bytes,
            actor=actor,
            field=field,
        )
        posting.check_shards(items, self.shards, field)
        policy.annotate(self.policy, specs, items)
        ids = [spec["id"] for spec in specs]
        if len(self.by_shard(ids)) > 1:  # written shard by shard: refuse unknown references first
            await self._check_references(items, field if len(items) > 1 else None)

        async def write(keys: Keyspace, positions: list[int]) -> list[Any]:
            group = [specs[n] for n in positions]
            out = await self._run(
                self._scripts.post, (s["kind"] for s in group), {"items": group}, actor, keys=keys
            )
            if "err" in out:
                raise self._refused(out) or self._unknown_item(
                    out, group, items, field if len(items) > 1 else None
                )
            return list(out["ok"])  # in the specs' order; an existing idempotency key maps to another id

        # One atomic step per shard: a goal is never half-posted (all of it is on one shard).
        by_spec = dict(zip(ids, await self.per_shard(ids, write), strict=True))
        return [by_spec[str(it.id)] for it in items]

    async def _check_references(self, items: Sequence[NewItem], field: str | None) -> None:
        """Raise `UnknownItem` for the first parent or dependency that is neither in the batch
        nor on the board (the post script checks the same, but only on its own shard)."""
        batch = {it.id for it in items}
        refs = [r for it in items for r in (it.parent, *it.after) if r is not None and r not in batch]
        known = {r for r, it in zip(refs, await self.get_many(refs), strict=True) if it is not None}
        for n, it in enumerate(items):
            for what, ref in [("parent", it.parent), *(("after", dep) for dep in it.after)]:
                if ref is not None and ref not in batch and ref not in known:
                    raise UnknownItem(
                        f"{field}[{n}].{what}" if field else what,
                        f"no item with id {ref!r} on board {self.name!r}; post it first",
                    )

    # -- claiming -------------------------------------------------------------------------

    async def claim(self, agent: str, kinds: Sequence[str], n: int = 1, lease: float = 30.0) -> list[Claim]:
        """Lease up to `n` of the best claimable items of `kinds` (names or globs) to `agent`."""
        claims, _ = await self.claim_with_due(agent, kinds, n, lease)
        return claims

    async def claim_with_due(
        self, agent: str, kinds: Sequence[str], n: int = 1, lease: float = 30.0
    ) -> tuple[list[Claim], float | None]:
        """Like `claim`; also returns when (unix s) a delayed item or lease next comes due."""
        if not isinstance(n, int) or n < 1:
            raise InvalidInput("n", f"expected a batch size >= 1, got {n!r}")
        if not lease > 0:
            raise InvalidInput("lease", f"expected seconds > 0, got {lease!r}")
        await policy.enforce(self, agent, "claim", kinds)
        names = await self.expand_kinds(kinds)
        if not names:
            return [], None
        started_ns = time.time_ns() if tracing.enabled else 0
        # Right after a wake-up, the shard the token came from alone (see `waker`). Otherwise
        # shards in turn, from one further on each call, so none starves: take what the first
        # has, the rest from the next, and so on (an idle board costs one call per shard).
        woken = self.waker.take_woken_shard() if self.shards > 1 else None
        if woken is not None:
            order = [woken]
        else:
            start = self._next_shard
            self._next_shard = (start + 1) % self.shards
            order = [(start + step) % self.shards for step in range(self.shards)]
        claims: list[Claim] = []
        due: float | None = None
        for shard in order:
            keys = self.shard_keys[shard]
            got, shard_due = await self._claim_shard(keys, agent, names, n - len(claims), lease)
            claims += got
            if shard_due is not None and (due is None or shard_due < due):
                due = shard_due
            if len(claims) == n:
                break
        if tracing.enabled and claims:
            claims = tracing.claimed(self, claims, started_ns)
        return claims, due

    async def _claim_shard(
        self, keys: Keyspace, agent: str, names: list[str], n: int, lease: float
    ) -> tuple[list[Claim], float | None]:
        args = {"agent": agent, "n": n, "lease_ms": int(lease * 1000), "kinds": names}
        # A request id makes the claim safe to resend after a lost reply (see claim.lua).
        request = f"{keys.tag}:claimreq:{uuid.uuid4().hex}"
        raw = await self._run(self._scripts.claim, names, args, agent, extra_keys=[request], keys=keys)
        due = float(raw[0]) / 1000 if raw[0] else None
        if raw[1]:
            self._expired(dict(pair.split("=") for pair in raw[1].decode().split(",")))
        claims = []
        for i in range(2, len(raw), 4):
            item = decode_item(raw[i].decode(), raw[i + 1], raw[i + 2], raw[i + 3])
            claims.append(
                Claim(item=item, token=item.lease_token or "", agent=agent, deadline=item.lease_deadline or 0)
            )
        return claims, due

    async def wait_for_work(self, kinds: Sequence[str], timeout: float) -> bool:
        """Block until a post (or a due retry) may have made work for `kinds`, or `timeout`.

        True when woken by a signal. Wake-ups are a hint: claim afterwards and expect nothing.
        All waiters on this handle share one blocking Redis read (see `blackboard.waker`).
        """
        names = await self.expand_kinds(kinds)
        if not names or timeout <= 0:
            return False
        return await self.waker.wait(names, min(timeout, connection.MAX_BLOCK))

    async def heartbeat(self, claims: Sequence[Claim], lease: float = 30.0) -> list[Claim | LeaseLost]:
        """Extend the leases of `claims`; a claim no longer held comes back as `LeaseLost`."""

        async def beat(keys: Keyspace, positions: list[int]) -> list[Claim | LeaseLost]:
            mine = [claims[n] for n in positions]
            held = [{"id": c.id, "token": c.token} for c in mine]
            out = await self._run(
                self._scripts.heartbeat,
                (c.item.kind for c in mine),
                {"lease_ms": int(lease * 1000), "held": held},
                keys=keys,
            )
            return [
                c.model_copy(update={"deadline": r}) if isinstance(r, int) else self._lost(c, r)
                for c, r in zip(mine, out["ok"], strict=True)
            ]

        return await self.per_shard([c.id for c in claims], beat)

    @staticmethod
    def _lost(claim: Claim, r: dict[str, Any]) -> LeaseLost:
        return LeaseLost(claim.id, claim.token, r.get("status"))

    async def cancel(self, item_id: str, reason: str = "cancelled", *, actor: str | None = None) -> int:
        """Cancel an item and its unfinished descendants (claimed ones are fenced out).

        Items waiting on a cancelled one are cancelled too. Returns how many were cancelled.
        """
        posting.check_id(item_id, "id")
        if self.policy is not None:
            await policy.enforce(self, actor, "cancel", [(await self.get(item_id)).kind])
        args = {"id": item_id, "reason": reason}
        out = await self._run(self._scripts.cancel, [], args, actor, keys=self.keys_of(item_id))
        if "err" in out:
            raise ItemNotFound(item_id)
        return int(out["ok"])

    async def mark(self, item_id: str, strength: float = 1.0, *, actor: str | None = None) -> float:
        """Reinforce an item's mark; it decays with the board's half-life. Returns the strength."""
        posting.check_id(item_id, "id")
        if not (isinstance(strength, int | float) and 0 < strength < 1e12):
            raise InvalidInput("strength", f"expected a number > 0, got {strength!r}")
        args = {"id": item_id, "strength": float(strength), "half_life_ms": int(self.half_life * 1000)}
        out = await self._run(self._scripts.mark, [], args, actor, keys=self.keys_of(item_id))
        if "err" in out:
            raise ItemNotFound(item_id)
        return float(out["ok"])

    async def requeue(self, ids: Sequence[str], *, actor: str | None = None) -> int:
        """Give dead-lettered items a fresh set of attempts. Returns how many were requeued.
        Under a policy, `actor` needs `post` on their kinds (a requeue puts work back)."""
        for i, item_id in enumerate(ids):
            posting.check_id(item_id, f"ids[{i}]")
        if self.policy is not None:
            await policy.enforce(self, actor, "post", (it.kind for it in await self.get_many(ids) if it))

        async def requeue(keys: Keyspace, positions: list[int]) -> list[dict[str, Any]]:
            args = {"ids": [ids[n] for n in positions]}
            return list((await self._run(self._scripts.requeue, [], args, actor, keys=keys))["ok"])

        done = await self.per_shard(ids, requeue)
        for r in done:
            if r.get("err") == "not_found":
                raise ItemNotFound(r["id"])
            if "err" in r:
                raise InvalidState(r["id"], r["status"], "dead")
        return len(done)

    # -- guards -----------------------------------------------------------------------------

    async def guard(self, kind: str, review_kind: str) -> None:
        """From now on, every item of `kind` waits for a review item of `review_kind` (posted
        with it, atomically) to be done before it can be claimed. A critic consumes those."""
        check_kind(kind, "kind")
        check_kind(review_kind, "review_kind")
        if review_kind == kind:
            raise InvalidInput("review_kind", "expected a kind other than the guarded one")
        await self.each_shard(lambda ks: self.retrying(lambda: self.redis.hset(ks.guards, kind, review_kind)))

    async def unguard(self, kind: str) -> None:
        """Items of `kind` posted from now on are claimable without review."""
        await self.each_shard(lambda ks: self.retrying(lambda: self.redis.hdel(ks.guards, kind)))

"""Finishing claims: complete (with outputs posted in the same step), fail, release, reap.

The write side of `Board` that settles what a claim started, kept apart so each file stays
readable. Every operation is fenced by the claim's token in its script, so a stale claim (its
lease expired and taken over, or its item cancelled) writes nothing and comes back as
`LeaseLost`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from blackboard import policy, posting, tracing
from blackboard.backoff import Backoff
from blackboard.codec import dumps
from blackboard.errors import BlackboardError, InvalidInput, LeaseLost, UnknownItem
from blackboard.keys import Keyspace
from blackboard.kinds import KindRegistry
from blackboard.models import Claim, Item, ModelCall, NewItem, Status
from blackboard.policy import Policy
from blackboard.reading import BoardReader

if TYPE_CHECKING:
    from blackboard.board import Board

Outcome = list[Item] | BaseException


class BoardFinisher(BoardReader):
    """The finishing operations of `Board` (mixed into it)."""

    registry: KindRegistry
    strict: bool
    max_payload_bytes: int
    policy: Policy | None
    on_lease_expired: Callable[[str, int], None] | None
    on_budget_exceeded: Callable[[str], None] | None
    _scripts: Any
    _run: Callable[..., Awaitable[Any]]
    backoff: Backoff
    kinds: Callable[[], Awaitable[list[str]]]
    _lost: Callable[[Claim, dict[str, Any]], LeaseLost]

    @property
    def _board(self) -> Board:
        return cast("Board", self)  # this class is only ever a part of Board

    async def complete(
        self,
        claim: Claim,
        result: Any = None,
        outputs: Sequence[NewItem] = (),
        *,
        fetch_outputs: bool = True,
        usage: Sequence[ModelCall] = (),
    ) -> list[Item]:
        """Finish `claim` with `result`, posting `outputs` as its children. Returns the outputs.

        Output ids derive from the claim's item id and position, so repeating a completion (say
        after a lost reply) posts nothing twice. Raises `LeaseLost` if the claim is stale.
        `fetch_outputs=False` skips reading the outputs back (one round trip less; returns []).
        `usage`: model calls made for this attempt, recorded on the item and its goal's totals.
        """
        outcome = (
            await self.complete_many([(claim, result, outputs)], fetch_outputs=fetch_outputs, usage=[usage])
        )[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def complete_many(
        self,
        batch: Sequence[tuple[Claim, Any, Sequence[NewItem]]],
        *,
        fetch_outputs: bool = True,
        usage: Sequence[Sequence[ModelCall]] = (),
    ) -> list[Outcome]:
        """Complete many claims in one step; each gets its outputs (with `fetch_outputs`; else
        []) or its own exception. `usage[i]` are the model calls of `batch[i]`, if any."""
        if not tracing.enabled:
            return await self._complete_batch(batch, fetch_outputs, usage)
        spans = tracing.start_settle(self._board, [b[0] for b in batch], "complete")
        try:
            # Outputs without a trace context of their own are children of their completion.
            batch = [
                (claim, result, tracing.inherit([self._as_new(o) for o in outputs], span))
                for (claim, result, outputs), span in zip(batch, spans, strict=True)
            ]
            results = await self._complete_batch(batch, fetch_outputs, usage)
        except BaseException as e:
            tracing.end_spans(spans, e)
            raise
        tracing.end_completions(spans, [len(b[2]) for b in batch], results)
        return results

    async def _complete_batch(
        self,
        batch: Sequence[tuple[Claim, Any, Sequence[NewItem]]],
        fetch_outputs: bool,
        usage: Sequence[Sequence[ModelCall]],
    ) -> list[Outcome]:
        for claim, _, outputs in batch if self.policy is not None else ():  # outputs are posts
            await policy.enforce(self._board, claim.agent, "post", (self._as_new(o).kind for o in outputs))
        done: list[dict[str, Any]] = []
        kinds_used: list[list[str]] = []
        new_outputs: list[list[NewItem]] = []
        for i, (claim, result, outputs) in enumerate(batch):
            specs: list[dict[str, Any]] = []
            outs = posting.with_ids([self._as_new(o) for o in outputs], parent=claim.id)
            posting.check_shards(outs, self._board.shards, "outputs")
            new_outputs.append(outs)
            if outs:
                specs = posting.encode_batch(
                    outs,
                    self.registry,
                    strict=self.strict,
                    max_payload_bytes=self.max_payload_bytes,
                    actor=claim.agent,
                    field="outputs",
                )
                policy.annotate(self.policy, specs, outs)
            done.append(
                {
                    "id": claim.id,
                    "token": claim.token,
                    "outputs": specs,
                    "result": dumps(result, "result" if len(batch) == 1 else f"batch[{i}].result"),
                }
            )
            if i < len(usage) and usage[i]:
                done[-1]["usage"] = _calls(usage[i])
            kinds_used.append([claim.item.kind, *(s["kind"] for s in specs)])
        outcome = await self._settle(
            self._scripts.complete, "done", done, kinds_used, batch[0][0].agent if batch else None
        )
        wanted = [p[0] for r in outcome if isinstance(r.get("ok"), list) for p in r["ok"]]
        fetched = {it.id: it for it in await self.get_many(wanted) if it is not None} if fetch_outputs else {}
        results: list[Outcome] = []
        for (claim, _, _), r, sent, outs in zip(batch, outcome, done, new_outputs, strict=True):
            if r.get("err") in ("stale", "not_found"):
                results.append(self._lost(claim, r))
            elif refused := self._refused(r):
                results.append(refused)
            elif "err" in r:
                results.append(self._unknown_item(r, sent["outputs"], outs, "outputs"))
            elif not fetch_outputs:
                results.append([])
            elif r["ok"] == "already":
                results.append(list((await self.query(parent=claim.id, limit=10_000)).items))
            elif r["ok"]:  # outputs posted (an empty list may come back from cjson as {})
                results.append([fetched[p[0]] for p in r["ok"]])
            else:
                results.append([])
        return results

    async def _settle(
        self,
        script: Any,
        field: str,
        entries: list[dict[str, Any]],
        kinds: list[list[str]],
        actor: str | None,
    ) -> list[dict[str, Any]]:
        """Run a batch operation (`{field: entries}`) one step per shard of the entries' items;
        the results come back in the entries' order."""

        async def run(keys: Keyspace, positions: list[int]) -> list[dict[str, Any]]:
            used = [k for n in positions for k in kinds[n]]
            out = await self._run(script, used, {field: [entries[n] for n in positions]}, actor, keys=keys)
            return list(out["ok"])

        return await self._board.per_shard([e["id"] for e in entries], run)

    def _refused(self, err: dict[str, Any]) -> BlackboardError | None:
        """A post the goal's budget or the repeat guard refused (see lua/lib.lua check_posts)."""
        if err.get("err") == "budget":
            if self.on_budget_exceeded is not None:
                self.on_budget_exceeded(err["reason"])
            return policy.BudgetExceeded(err["root"], err["reason"])
        if err.get("err") == "repeat":
            return policy.RepeatedPost(err["root"], err["kind"])
        return None

    def _unknown_item(
        self, err: dict[str, Any], specs: list[dict[str, Any]], items: Sequence[NewItem], field: str | None
    ) -> UnknownItem:
        """The script's unknown parent/dependency error, naming the item by its place in the call
        (`err["index"]` counts the specs, which are sorted so dependencies come first)."""
        what = "parent" if err["err"] == "unknown_parent" else "after"
        position = [it.id for it in items].index(specs[err["index"]]["id"])
        return UnknownItem(
            f"{field}[{position}].{what}" if field else what,
            f"no item with id {err['id']!r} on board {self.name!r}; post it first",
        )

    @staticmethod
    def _as_new(o: NewItem | dict[str, Any]) -> NewItem:
        return o if isinstance(o, NewItem) else posting.new_item("outputs", **o)

    async def fail(
        self,
        claim: Claim,
        error: str,
        retry: bool | float | None = None,
        *,
        usage: Sequence[ModelCall] = (),
    ) -> Status:
        """Record a failed attempt. Returns the item's new status.

        `retry`: None retries with the board's backoff while attempts remain; a number retries
        after that many seconds (attempts still count); False dead-letters now. `usage`: model
        calls the attempt made (a failed attempt's tokens are spent all the same).
        """
        if retry is None or retry is True:
            delay = self.backoff.delay(claim.item.attempts)
        elif retry is False:
            delay = 0.0
        else:
            if not (isinstance(retry, int | float) and retry >= 0):
                raise InvalidInput("retry", f"expected None, a bool or seconds >= 0, got {retry!r}")
            delay = float(retry)
        args = {
            "failed": [
                {
                    "id": claim.id,
                    "token": claim.token,
                    "error": str(error)[:10_000],
                    "delay": int(delay * 1000),
                    "dead": retry is False,
                }
            ]
        }
        if usage:
            args["failed"][0]["usage"] = _calls(usage)
        if not tracing.enabled:
            return await self._fail(claim, args)
        spans = tracing.start_settle(self._board, [claim], "fail")
        try:
            status = await self._fail(claim, args)
        except BaseException as e:
            tracing.end_spans(spans, e)
            raise
        tracing.end_fail(spans[0], status.value, delay)
        return status

    async def _fail(self, claim: Claim, args: dict[str, Any]) -> Status:
        keys = self._board.keys_of(claim.id)
        r = (await self._run(self._scripts.fail, [claim.item.kind], args, claim.agent, keys=keys))["ok"][0]
        if "err" in r:
            raise self._lost(claim, r)
        if r["ok"] == "already":
            return (await self.get(claim.id)).status
        return Status(r["ok"])

    async def release(self, claims: Sequence[Claim]) -> list[LeaseLost | None]:
        """Give claims back untouched (the attempt is not counted); stale ones are reported."""
        if not claims:
            return []
        entries = [{"id": c.id, "token": c.token} for c in claims]
        out = await self._settle(
            self._scripts.release, "released", entries, [[c.item.kind] for c in claims], claims[0].agent
        )
        return [self._lost(c, r) if "err" in r else None for c, r in zip(claims, out, strict=True)]

    async def reap(self, limit: int = 1000) -> dict[str, int]:
        """Return expired leases to open (or dead) and promote due retries, on every kind.

        Claims do this for their own kinds as they go; run it periodically as a backstop.
        """
        totals = {"expired": 0, "promoted": 0}

        async def reap(keys: Keyspace) -> None:
            names = await self._board.shard_kinds(keys)
            for i in range(0, len(names), 50):
                args = {"limit": limit}
                out = (await self._run(self._scripts.reap, names[i : i + 50], args, keys=keys))["ok"]
                for k in totals:
                    totals[k] += out[k]
                if out["by_kind"]:  # cjson may give [] for an empty table
                    self._expired(out["by_kind"])

        await self._board.each_shard(reap)
        return totals

    def _expired(self, by_kind: dict[str, Any]) -> None:
        if self.on_lease_expired is not None:
            for kind, n in by_kind.items():
                self.on_lease_expired(kind, int(n))


def _calls(calls: Sequence[ModelCall]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", exclude_defaults=True) | {"model": c.model} for c in calls]

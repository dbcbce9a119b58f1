"""Structural invariants of a board, checked against its raw Redis structures.

`check_invariants(board)` reads every key of one board (see `blackboard/lua/lib.lua` for the
layout) and raises `AssertionError` listing every broken invariant; it returns {id: status}.
`snapshot(board)` dumps every key of the board, to show that an operation changed nothing.

Which ordering index holds an item, by status:
    waiting                -> the board's waiting zset
    claimed                -> its kind's leased zset (score = lease deadline), with a token
    open, failed           -> its kind's ready zset or its delayed zset (exactly one)
    done, dead, cancelled  -> none of them
Besides the fixed and per-kind keys, a board holds `claimreq:<request id>` strings (what one
claim request took, "id=token,...", so a resent request gets the same answer); they expire.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from blackboard import Board
from blackboard.keys import Keyspace
from blackboard.posting import ID_RE

STATUSES = ("waiting", "open", "claimed", "done", "failed", "dead", "cancelled")
TERMINAL = frozenset({"done", "dead", "cancelled"})
KIND_INDEXES = ("ready", "delayed", "leased")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _zset(pairs: list[tuple[Any, float]]) -> dict[str, float]:
    return {_s(m): float(score) for m, score in pairs}


@dataclass
class Raw:
    """The board's structures, decoded."""

    kind: dict[str, str]
    items: dict[str, str]
    state: dict[str, dict[str, Any]]
    results: dict[str, str]
    status: list[str]
    waiting: dict[str, float]
    deps: list[str]
    children: list[str]
    lineage: list[str]
    counts: dict[str, int]
    kinds: set[str]
    keys: set[str]
    # claimreq key -> (value, pttl ms)
    requests: dict[str, tuple[str, int]] = field(default_factory=dict)
    # kind -> {"ready": {...}, "delayed": {...}, "leased": {...}}
    per_kind: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


async def _keys(board: Board, k: Keyspace | None = None) -> set[str]:
    shards = [k] if k is not None else board.shard_keys
    return {_s(key) for ks in shards async for key in board.redis.scan_iter(match=ks.tag + ":*", count=1000)}


async def read_raw(board: Board, k: Keyspace | None = None) -> Raw:
    """Every structure of the board (of shard `k`; default the first), read in one MULTI
    (kinds found first)."""
    k = k or board.keys
    keys = await _keys(board, k)
    kinds = {_s(x) for x in await board.redis.smembers(k.kinds)}
    kinds |= {_s(x) for x in await board.redis.hvals(k.kind)}
    prefixes = {f"{k.tag}:{name}:": name for name in (*KIND_INDEXES, "wake")}
    for key in keys:
        for prefix in prefixes:
            if key.startswith(prefix):
                kinds.add(key[len(prefix) :])
    names = sorted(kinds)
    requests = sorted(key for key in keys if key.startswith(f"{k.tag}:claimreq:"))
    async with board.redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(k.kind)
        pipe.hgetall(k.items)
        pipe.hgetall(k.state)
        pipe.hgetall(k.results)
        pipe.zrange(k.status, 0, -1)
        pipe.zrange(k.waiting, 0, -1, withscores=True)
        pipe.zrange(k.deps, 0, -1)
        pipe.zrange(k.children, 0, -1)
        pipe.zrange(k.lineage, 0, -1)
        pipe.hgetall(k.counts)
        pipe.smembers(k.kinds)
        for name in names:
            ready, delayed, leased, _ = k.kind_keys(name)
            for key in (ready, delayed, leased):
                pipe.zrange(key, 0, -1, withscores=True)
        for key in requests:
            pipe.get(key)
            pipe.pttl(key)
        out = await pipe.execute()
    fixed, zs, reqs = out[:11], out[11 : 11 + 3 * len(names)], out[11 + 3 * len(names) :]
    raw = Raw(
        kind={_s(a): _s(b) for a, b in fixed[0].items()},
        items={_s(a): _s(b) for a, b in fixed[1].items()},
        state={_s(a): json.loads(b) for a, b in fixed[2].items()},
        results={_s(a): _s(b) for a, b in fixed[3].items()},
        status=[_s(m) for m in fixed[4]],
        waiting=_zset(fixed[5]),
        deps=[_s(m) for m in fixed[6]],
        children=[_s(m) for m in fixed[7]],
        lineage=[_s(m) for m in fixed[8]],
        counts={_s(a): int(b) for a, b in fixed[9].items()},
        kinds={_s(m) for m in fixed[10]},
        keys=keys,
        requests={
            key: (_s(reqs[2 * i]) if reqs[2 * i] is not None else "", int(reqs[2 * i + 1]))
            for i, key in enumerate(requests)
        },
    )
    for i, name in enumerate(names):
        raw.per_kind[name] = {idx: _zset(zs[3 * i + j]) for j, idx in enumerate(KIND_INDEXES)}
    return raw


def _check_ids(raw: Raw, errors: list[str]) -> None:
    if set(raw.kind) != set(raw.state):
        errors.append(
            f"kind and state hashes disagree: only in kind {sorted(set(raw.kind) - set(raw.state))},"
            f" only in state {sorted(set(raw.state) - set(raw.kind))}"
        )
    if set(raw.kind) != set(raw.items):
        errors.append(f"kind and items hashes disagree: {sorted(set(raw.kind) ^ set(raw.items))}")
    for i, st in raw.state.items():
        if st.get("status") not in STATUSES:
            errors.append(f"{i}: state has unknown status {st.get('status')!r}")
    for i, kind in raw.kind.items():
        if kind not in raw.kinds:
            errors.append(f"{i}: kind {kind!r} missing from the kinds set")


def _check_status_index(raw: Raw, errors: list[str]) -> None:
    seen: Counter[str] = Counter()
    for m in raw.status:
        status, _, rest = m.partition("|")
        kind, _, i = rest.rpartition("|")
        seen[i] += 1
        st = raw.state.get(i)
        if st is None:
            errors.append(f"status index member {m!r} names no item")
        elif st.get("status") != status or raw.kind.get(i) != kind:
            errors.append(
                f"status index member {m!r} disagrees with state "
                f"(status {st.get('status')!r}, kind {raw.kind.get(i)!r})"
            )
    for i in raw.state:
        if seen[i] != 1:
            errors.append(f"{i}: {seen[i]} members in the status index, expected exactly 1")


def _where(raw: Raw, i: str) -> list[str]:
    """Every ordering index that holds `i`, as 'waiting' or 'ready:<kind>' and so on."""
    out = ["waiting"] if i in raw.waiting else []
    for kind, idx in raw.per_kind.items():
        out += [f"{name}:{kind}" for name, members in idx.items() if i in members]
    return out


def _expected_places(st: dict[str, Any], kind: str) -> tuple[set[str], str]:
    """The ordering indexes an item of this status may be in, and a description."""
    status = st.get("status")
    if status == "waiting":
        return {"waiting"}, "exactly the waiting zset"
    if status == "claimed":
        return {f"leased:{kind}"}, f"exactly leased:{kind}"
    if status in ("open", "failed"):
        return {f"ready:{kind}", f"delayed:{kind}"}, f"exactly one of ready:{kind} / delayed:{kind}"
    return set(), "no ordering index"


def _check_lease(i: str, st: dict[str, Any], kind: str, raw: Raw, errors: list[str]) -> None:
    if st.get("status") == "claimed":
        score = raw.per_kind.get(kind, {}).get("leased", {}).get(i)
        if not st.get("token") or st.get("deadline") is None:
            errors.append(f"{i} is claimed without a token/deadline: {st}")
        elif score is not None and score != float(st["deadline"]):
            errors.append(f"{i}: leased score {score} != state deadline {st['deadline']}")
    elif st.get("token") is not None or st.get("deadline") is not None:
        errors.append(f"{i} is {st.get('status')} but still carries a lease: {st}")


def _check_ordering(raw: Raw, errors: list[str]) -> None:
    for i, st in raw.state.items():
        kind = raw.kind.get(i, "?")
        places = _where(raw, i)
        allowed, what = _expected_places(st, kind)
        if (allowed and len(places) != 1) or not set(places) <= allowed:
            errors.append(f"{i} ({st.get('status')}, kind {kind}) is in {places}; expected {what}")
        _check_lease(i, st, kind, raw, errors)
        if f"delayed:{kind}" in places:
            score = raw.per_kind[kind]["delayed"][i]
            if st.get("not_before") is None or score != float(st["not_before"]):
                errors.append(f"{i}: delayed score {score} != not_before {st.get('not_before')}")
    # Members that name no item (the loop above only sees items that exist).
    strays = [("waiting", i) for i in raw.waiting if i not in raw.state]
    for kind, idx in raw.per_kind.items():
        strays += [(f"{name}:{kind}", i) for name, ms in idx.items() for i in ms if i not in raw.state]
    errors += [f"{where} holds {i}, which is not an item" for where, i in strays]


def _check_counts(raw: Raw, errors: list[str]) -> None:
    tally = Counter(f"{raw.kind.get(i)}|{st.get('status')}" for i, st in raw.state.items())
    for key in set(tally) | set(raw.counts):
        if tally.get(key, 0) != raw.counts.get(key, 0):
            errors.append(f"counts[{key!r}] = {raw.counts.get(key, 0)}, items say {tally.get(key, 0)}")


def _check_attempts_and_results(raw: Raw, errors: list[str]) -> None:
    for i, st in raw.state.items():
        status, attempts, most = st.get("status"), st.get("attempts"), st.get("max_attempts")
        if not (isinstance(attempts, int) and isinstance(most, int) and 0 <= attempts <= most):
            errors.append(f"{i}: attempts {attempts!r} outside 0..max_attempts {most!r}")
        elif status in ("open", "failed") and attempts >= most:
            errors.append(f"{i} is {status} with no attempts left ({attempts}/{most})")
        if status == "done" and i not in raw.results:
            errors.append(f"{i} is done but has no result")
        if status in TERMINAL and st.get("finished_at") is None:
            errors.append(f"{i} is {status} without finished_at")
    for i in raw.results:
        if raw.state.get(i, {}).get("status") != "done":
            errors.append(f"{i} has a result but is {raw.state.get(i, {}).get('status')}")


def _check_tree(raw: Raw, errors: list[str]) -> None:
    want_lineage, want_children = set(), set()
    for i, st in raw.state.items():
        root, parent = st.get("root"), st.get("parent")
        want_lineage.add(f"{root}|{i}")
        if parent is None:
            if root != i:
                errors.append(f"{i} has no parent but root {root!r}")
        else:
            want_children.add(f"{parent}|{i}")
            pst = raw.state.get(parent)
            if pst is None:
                errors.append(f"{i}: parent {parent} is not an item")
            elif pst.get("root") != root:
                errors.append(f"{i}: root {root} differs from its parent's root {pst.get('root')}")
            elif st.get("depth") != pst.get("depth", 0) + 1:
                errors.append(f"{i}: depth {st.get('depth')} != parent's depth + 1")
    got_lineage, got_children = set(raw.lineage), set(raw.children)
    if got_lineage != want_lineage:
        errors.append(
            f"lineage index: missing {sorted(want_lineage - got_lineage)}, "
            f"extra {sorted(got_lineage - want_lineage)}"
        )
    if got_children != want_children:
        errors.append(
            f"children index: missing {sorted(want_children - got_children)}, "
            f"extra {sorted(got_children - want_children)}"
        )


def _check_deps(raw: Raw, errors: list[str]) -> None:
    waits_on: dict[str, list[str]] = {}
    for m in raw.deps:
        dep, _, dependant = m.partition("|")
        if dep not in raw.state or dependant not in raw.state:
            errors.append(f"deps entry {m!r} names an item that does not exist")
            continue
        waits_on.setdefault(dependant, []).append(dep)
    for i, st in raw.state.items():
        if st.get("status") != "waiting" or st.get("reason") != "dependencies":
            continue
        unmet = [d for d in waits_on.get(i, []) if raw.state[d].get("status") != "done"]
        if st.get("pending") != len(unmet) or not unmet:
            errors.append(
                f"{i} waits with pending={st.get('pending')} but its unmet dependencies in deps are {unmet}"
            )
        finished = [d for d in waits_on.get(i, []) if raw.state[d].get("status") in TERMINAL]
        if finished:
            errors.append(f"{i} waits on finished dependencies {finished}: it can never open")


def _check_keys(board: Board, raw: Raw, errors: list[str], k: Keyspace) -> None:
    allowed = set(k.fixed) | {k.schemas} | set(raw.requests)
    for name in raw.kinds:
        allowed.update(k.kind_keys(name))
    for key, (value, ttl) in raw.requests.items():
        if ttl == -1:  # (-2: it expired between SCAN and the read)
            errors.append(f"claim request {key} has no expiry (pttl {ttl}): it would never go")
        for pair in filter(None, value.split(",")):
            i, _, token = pair.partition("=")
            # The item may be gone (retention purged its goal): a resent request skips it.
            if not ID_RE.match(i) or not token.replace(".", "", 1).isdigit():  # "n" or "shard.n"
                errors.append(f"claim request {key} records {pair!r}, not an item=token pair")
    allowed.add(k.policy)
    stray = {key for key in raw.keys - allowed if not key.startswith(f"{k.tag}:memory:")}
    if stray:
        errors.append(f"keys outside the board layout (or of a kind not in the kinds set): {stray}")


async def check_invariants(board: Board) -> dict[str, str]:
    """Assert the board's structural invariants, on every shard; return {id: status} of every
    item (each item where its id says it lives)."""
    out: dict[str, str] = {}
    for k in board.shard_keys:
        statuses = check_raw(board, await read_raw(board, k), k)
        misplaced = [i for i in statuses if board.keys_of(i) != k]
        assert not misplaced, f"items on shard {k.index} whose ids route elsewhere: {misplaced}"
        out.update(statuses)
    return out


def check_raw(board: Board, raw: Raw, k: Keyspace | None = None) -> dict[str, str]:
    """`check_invariants` on structures already read with `read_raw` (of shard `k`)."""
    errors: list[str] = []
    _check_ids(raw, errors)
    _check_status_index(raw, errors)
    _check_ordering(raw, errors)
    _check_counts(raw, errors)
    _check_attempts_and_results(raw, errors)
    _check_tree(raw, errors)
    _check_deps(raw, errors)
    _check_keys(board, raw, errors, k or board.keys)
    if errors:
        raise AssertionError(
            f"board {board.name!r} breaks {len(errors)} invariant(s):\n  " + "\n  ".join(errors)
        )
    return {i: st["status"] for i, st in raw.state.items()}


async def snapshot(board: Board) -> dict[str, Any]:
    """Every key of the board and its full contents (to compare before/after an operation)."""
    out: dict[str, Any] = {}
    for key in sorted(await _keys(board)):
        kind = _s(await board.redis.type(key))
        if kind == "hash":
            value: Any = {_s(a): _s(b) for a, b in (await board.redis.hgetall(key)).items()}
        elif kind == "zset":
            value = [(_s(m), s) for m, s in await board.redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            value = sorted(_s(m) for m in await board.redis.smembers(key))
        elif kind == "string":
            value = _s(await board.redis.get(key))
        elif kind == "list":
            value = [_s(m) for m in await board.redis.lrange(key, 0, -1)]
        elif kind == "stream":
            value = [(_s(i), f) for i, f in await board.redis.xrange(key)]
        else:
            value = kind
        out[key] = (kind, value)
    return out

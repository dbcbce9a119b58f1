"""Checks and encoding for posts, done in Python before one script writes the batch.

Everything that can be decided without the board's state is decided here, so bad input
raises before any round trip; what needs the state (does the parent exist?) the script checks
before it writes anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from blackboard import ids
from blackboard.codec import dumps
from blackboard.errors import DependencyCycle, InvalidInput
from blackboard.kinds import KindRegistry, check_kind
from blackboard.models import NewItem

ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def new_item(field: str, **fields: Any) -> NewItem:
    """A NewItem from keyword fields, with pydantic's error turned into `InvalidInput`."""
    try:
        return NewItem.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{field}.{where}" if field else where, err["msg"]) from None


def check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise InvalidInput(field, f"expected an item id (1-128 of A-Z a-z 0-9 _ . : -), got {value!r}")
    return value


def order_batch(items: Sequence[NewItem], field: str = "items") -> list[int]:
    """Indexes of `items` ordered so parents and dependencies inside the batch come first.

    Raises `DependencyCycle` naming an item on the cycle.
    """
    index = {it.id: i for i, it in enumerate(items)}
    order: list[int] = []
    state: dict[int, int] = {}  # 1 = visiting, 2 = done

    def visit(i: int, path: tuple[int, ...]) -> None:
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            raise DependencyCycle(
                f"{field}[{i}].after",
                "dependencies form a cycle: " + " -> ".join(str(items[j].id) for j in path),
            )
        state[i] = 1
        it = items[i]
        for ref in (it.parent, *it.after):
            if ref in index:
                visit(index[ref], (*path, index[ref]))
        state[i] = 2
        order.append(i)

    for i in range(len(items)):
        visit(i, (i,))
    return order


def encode_batch(
    items: Sequence[NewItem],
    registry: KindRegistry,
    *,
    strict: bool,
    max_payload_bytes: int,
    actor: str | None,
    field: str = "items",
) -> list[dict[str, Any]]:
    """Validate a batch and return the post script's specs, in dependency order.

    Items must already carry ids (`with_ids`). Errors name the field as `items[i].field`
    (just `field` for a single post).
    """
    specs = []
    seen: set[str] = set()
    for i, it in enumerate(items):
        pre = f"{field}[{i}]." if len(items) > 1 or field != "items" else ""
        spec = _encode_one(it, pre, registry, strict, max_payload_bytes, actor)
        if spec["id"] in seen:
            raise InvalidInput(pre + "id", f"id {it.id!r} appears twice in one batch")
        seen.add(spec["id"])
        specs.append(spec)
    return [specs[i] for i in order_batch(items, field)]


def _check_refs(it: NewItem, pre: str) -> None:
    """Ids named by one item: well-formed, no self-dependency, no repeats."""
    if it.parent is not None:
        check_id(it.parent, pre + "parent")
    for j, dep in enumerate(it.after):
        check_id(dep, f"{pre}after[{j}]")
        if dep == it.id:
            raise DependencyCycle(f"{pre}after[{j}]", "an item cannot depend on itself")
    if len(set(it.after)) != len(it.after):
        raise InvalidInput(pre + "after", "lists the same dependency twice")


def _encode_one(
    it: NewItem, pre: str, registry: KindRegistry, strict: bool, max_payload_bytes: int, actor: str | None
) -> dict[str, Any]:
    check_kind(it.kind, pre + "kind")
    check_id(it.id, pre + "id")
    _check_refs(it, pre)
    payload = registry.validate(it.kind, it.payload, strict=strict, field=pre + "payload")
    extra = {
        "after": list(it.after),
        "tags": list(it.tags),
        "visibility": list(it.visibility),
        "created_by": actor,
        "idempotency_key": it.idempotency_key,
        "traceparent": it.traceparent,  # absent unless tracing is on (blackboard.tracing)
    }
    extra = {k: v for k, v in extra.items() if v}
    payload_json = dumps(payload, pre + "payload", max_payload_bytes)
    rest = "," + dumps(extra, pre + "payload")[1:] if extra else "}"
    spec: dict[str, Any] = {
        "id": it.id,
        "kind": it.kind,
        "doc": '{"payload":' + payload_json + rest,
        "priority": it.priority,
        "max_attempts": it.max_attempts,
        "parent": it.parent,
        "after": list(it.after) or None,
        "delay": int(it.delay * 1000) if it.delay else None,
        "not_before": int(it.not_before * 1000) if it.not_before is not None else None,
        "idem": it.idempotency_key,
    }
    return {k: v for k, v in spec.items() if v is not None}


def with_ids(
    items: Sequence[NewItem], parent: str | None = None, slot: str = "o", shards: int = 1
) -> list[NewItem]:
    """Give every item an id: deterministic under `parent` (slot + index), else a new one.

    A new id starts like the item's parent's, or its first dependency's, so the item lands on
    their shard; on a board of `shards` shards a goal posted with an idempotency key lands on
    the key's shard, so posting it again finds the first.
    """
    out = []
    for i, it in enumerate(items):
        update: dict[str, Any] = {}
        if parent is not None:
            update["parent"] = parent
            if it.id is None:
                update["id"] = ids.child_id(parent, f"{slot}{i}")
        elif it.id is None:
            ref = it.parent if it.parent is not None else (it.after[0] if it.after else None)
            if ref is not None and ID_RE.match(ref):  # (a malformed one is named by encode_batch)
                update["id"] = ids.near_id(ref)
            elif it.idempotency_key and shards > 1:
                update["id"] = ids.id_on_shard(ids.key_shard(it.idempotency_key, shards), shards)
            else:
                update["id"] = ids.new_id()
        out.append(it.model_copy(update=update) if update else it)
    return out


def check_shards(items: Sequence[NewItem], shards: int, field: str = "items") -> None:
    """On a board of `shards` shards an item must live on the shard of its parent and of every
    item it waits for: joins, budgets and cancels stay one single-shard step."""
    if shards == 1:
        return
    for i, it in enumerate(items):
        pre = f"{field}[{i}]." if len(items) > 1 or field != "items" else ""
        assert it.id is not None  # with_ids ran first
        here = ids.shard_of(it.id, shards)
        refs = [("parent", it.parent)] if it.parent is not None else []
        refs += [(f"after[{j}]", dep) for j, dep in enumerate(it.after)]
        for where, ref in refs:
            there = ids.shard_of(ref, shards)
            if there != here:
                raise InvalidInput(
                    pre + where,
                    f"on a board of {shards} shards an item lives on the shard of its parent and of "
                    f"what it waits for, but {ref!r} is on shard {there} and id {it.id!r} on shard "
                    f"{here}; leave id unset (it then follows its parent or first dependency), or "
                    "wait only on items of the same goal",
                )

"""Policies: who may post and claim which kinds, read from YAML files, enforced by the board.

A policy folder holds YAML files (`*.yaml`, `*.yml`) of this shape:

    roles:
      researcher: {claim: [research.task], post: [research.finding]}
      operator: {post: ["*"], claim: ["*"], cancel: ["*"]}
    principals:
      research-worker: [researcher]     # an agent, by its name
      cli: [operator]                   # the command line
      "ops-*": [operator]               # a glob of principals

A principal is whoever acts: an agent (its name), `cli`, `http`, or the `actor` a caller names.
Actions are `post`, `claim`, `read`, `cancel` and `approve`, each a list of kind globs (`post`
and `claim` are enforced now). With no policy files a board runs *open*: everything is allowed
(the daemon says so in its log). With any, it runs *strict*: an action needs a role that grants
it, and a denial names the rule that decided (`PolicyDenied`). A file that fails to load is
reported with its line; the daemon then keeps the policy it had, and a daemon that never had
one denies everything: policy never fails open.

A loaded policy is stored on the board in Redis under a version (a digest of its rules) by the
same script that writes its audit record, and every daemon on the board enforces the version
stored there; every audit record carries the version in force.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blackboard.errors import BlackboardError

if TYPE_CHECKING:
    from blackboard.board import Board

Action = Literal["post", "claim", "read", "cancel", "approve", "tool"]
ACTIONS: tuple[Action, ...] = ("post", "claim", "read", "cancel", "approve")  # actions on kinds
SUFFIXES = (".yaml", ".yml")
DEFAULT_DENY = "default deny: no role of this principal grants it"


class PolicyError(BlackboardError):
    """A policy file that does not load: names the file, the line and the problem."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


class PolicyDenied(BlackboardError):
    """The board's policy does not let `principal` do `action` with `kind`."""

    def __init__(self, principal: str, action: str, kind: str, rule: str) -> None:
        self.principal, self.action, self.kind, self.rule = principal, action, kind, rule
        super().__init__(f"policy denies {principal!r} to {action} {kind!r} ({rule})")


class BudgetExceeded(BlackboardError):
    """The goal reached a budget limit: it takes no more posts (`reason` says which)."""

    def __init__(self, goal: str, reason: str) -> None:
        self.goal, self.reason = goal, reason
        super().__init__(f"goal {goal} is over its budget ({reason}); it takes no more posts")


class RepeatedPost(BlackboardError):
    """The same kind and payload was already posted under this goal (a loop guard)."""

    def __init__(self, goal: str, kind: str) -> None:
        self.goal, self.kind = goal, kind
        super().__init__(
            f"a {kind} with this payload was already posted under goal {goal} "
            "(a loop guard: list the kind under allow_repeats to allow it)"
        )


class Grant(BaseModel):
    """What one role may do: kind globs per action."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    post: tuple[str, ...] = ()
    claim: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()
    approve: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()  # tools (names or globs) an LLM agent may call
    sees: tuple[str, ...] = ()  # visibility labels (or globs) of items it may read


class Budget(BaseModel):
    """Limits of one goal (the root of a tree), checked by the board in the script that posts.

    A goal that reaches one stops growing: further posts under it are refused with
    `BudgetExceeded`, and the goal is marked with the reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_items: int | None = Field(None, ge=1, description="Items in the goal's tree, the goal included.")
    max_depth: int | None = Field(None, ge=0, description="Levels below the goal.")
    max_fanout: int | None = Field(None, ge=1, description="Children of any one item.")
    max_seconds: float | None = Field(
        None, gt=0, description="Seconds from the goal's post to the last post."
    )
    max_tokens: int | None = Field(None, ge=1, description="Model tokens (prompt + completion) of the tree.")
    max_cost_usd: float | None = Field(None, gt=0, description="Model cost of the tree, in USD.")
    max_posts_per_minute: int | None = Field(None, ge=1, description="Posts under the goal per minute.")


class ApprovalRule(BaseModel):
    """Items of `kind` (a glob) wait for a principal with `approve` on the kind to approve them
    before any agent may claim them; `when` limits that to payloads it holds for (a sandboxed
    Jinja2 expression over `payload`, e.g. `payload.amount > 500`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    when: str | None = None
    timeout_seconds: float | None = Field(None, gt=0, description="Decide it unattended after this long.")
    on_timeout: Literal["reject", "escalate"] = "reject"

    def applies(self, kind: str, payload: Any) -> bool:
        if not fnmatch.fnmatchcase(kind, self.kind):
            return False
        if self.when is None:
            return True
        from blackboard.llm.templates import environment

        try:
            return bool(environment().compile_expression(self.when)(payload=payload))
        except Exception:  # a payload the expression can't read needs a human all the more
            return True


class PolicyFile(BaseModel):
    """One policy file, as written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    roles: dict[str, Grant] = {}
    principals: dict[str, tuple[str, ...]] = {}
    budgets: dict[str, Budget] = {}  # goal kind (or glob) -> its budget
    allow_repeats: tuple[str, ...] = ()  # kinds that may be posted twice with one payload in a goal
    approvals: tuple[ApprovalRule, ...] = ()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # which rule decided, for errors, audit records and `policy explain`
    code: str = "default-deny"  # the rule as a short, bounded name (a metric label)


@dataclass(frozen=True)
class Policy:
    """The rules in force: every loaded file's roles and principals."""

    roles: dict[str, Grant] = field(default_factory=dict)
    principals: dict[str, tuple[str, ...]] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)  # "role:NAME" / "principal:NAME" -> file
    sources: tuple[str, ...] = ()
    budgets: dict[str, Budget] = field(default_factory=dict)
    allow_repeats: tuple[str, ...] = ()
    approvals: tuple[ApprovalRule, ...] = ()

    @property
    def version(self) -> str:
        """A digest of the rules (not of where they came from): equal rules, equal version."""
        return hashlib.sha256(self.rules_json().encode()).hexdigest()[:16]

    def rules_json(self) -> str:
        rules = {
            "roles": {n: g.model_dump() for n, g in sorted(self.roles.items())},
            "principals": {p: list(r) for p, r in sorted(self.principals.items())},
            "budgets": {k: b.model_dump(exclude_none=True) for k, b in self.budgets.items()},
            "allow_repeats": list(self.allow_repeats),
            "approvals": [a.model_dump(exclude_none=True) for a in self.approvals],
        }
        return json.dumps(rules, sort_keys=True, separators=(",", ":"))

    def to_json(self) -> str:
        return json.dumps(
            {"rules": json.loads(self.rules_json()), "where": self.where, "sources": self.sources}
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Policy:
        data = json.loads(text)
        rules = PolicyFile.model_validate(data["rules"])
        return cls(
            dict(rules.roles),
            dict(rules.principals),
            data.get("where", {}),
            tuple(data.get("sources", ())),
            dict(rules.budgets),
            rules.allow_repeats,
            rules.approvals,
        )

    def roles_of(self, principal: str) -> list[tuple[str, str]]:
        """(role, the principals entry that gives it), for every entry matching `principal`."""
        out = []
        for pattern, roles in self.principals.items():
            if pattern == principal or fnmatch.fnmatchcase(principal, pattern):
                out += [(role, pattern) for role in roles]
        return out

    def decide(self, principal: str, action: Action, kind: str) -> Decision:
        """Whether `principal` may `action` items of `kind` (a name, or a glob it asks for)."""
        field = "tools" if action == "tool" else action
        for role, entry in self.roles_of(principal):
            for pattern in getattr(self.roles[role], field):
                if fnmatch.fnmatchcase(kind, pattern):
                    where = self.where.get(f"role:{role}", "")
                    grant = f"role {role!r} ({where}) grants {action} {pattern!r} to {entry!r}"
                    return Decision(True, grant, f"role:{role}")
        return Decision(False, DEFAULT_DENY)

    def explain(self, principal: str, kind: str) -> dict[str, Decision]:
        return {action: self.decide(principal, action, kind) for action in ACTIONS}

    def visible(self, principal: str, item: Any) -> Decision:
        """Whether `principal` may read `item`: `read` on its kind and, for an item with
        visibility labels, a role that `sees` one of them."""
        decision = self.decide(principal, "read", item.kind)
        if not decision.allowed or not item.visibility:
            return decision
        for role, entry in self.roles_of(principal):
            for pattern in self.roles[role].sees:
                if any(fnmatch.fnmatchcase(label, pattern) for label in item.visibility):
                    return Decision(True, f"role {role!r} sees {pattern!r} ({entry!r})", f"sees:{role}")
        labels = list(item.visibility)
        return Decision(False, f"no role of this principal sees its labels {labels}", "visibility")

    def budget_for(self, kind: str) -> Budget | None:
        """The budget of a goal of `kind`: the entry naming it, else the first glob matching it."""
        if kind in self.budgets:
            return self.budgets[kind]
        return next((b for k, b in self.budgets.items() if fnmatch.fnmatchcase(kind, k)), None)

    def approval_for(self, kind: str, payload: Any) -> ApprovalRule | None:
        return next((a for a in self.approvals if a.applies(kind, payload)), None)

    def repeats_allowed(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, k) for k in self.allow_repeats)


DENY_ALL = Policy(sources=("(no policy could be loaded: everything is denied)",))


# -- loading ----------------------------------------------------------------------------------


def policy_files(folders: Iterable[Path]) -> list[Path]:
    """The policy files of `folders`, in name order (a folder that does not exist has none)."""
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found += sorted(
                p for p in folder.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".")
            )
        elif folder.suffix in SUFFIXES and folder.is_file():
            found.append(folder)
    return found


def load_file(path: Path) -> PolicyFile:
    """One file, validated; `PolicyError` with the line of the first problem."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise PolicyError(
            str(path), mark.line + 1 if mark else None, f"not YAML: {getattr(e, 'problem', e)}"
        ) from None
    try:
        return PolicyFile.model_validate(data if data is not None else {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PolicyError(str(path), _line(node, first["loc"]), f"{where}: {first['msg']}") from None


def _line(node: Any, loc: Sequence[Any]) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of the deepest parent that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if found is None:
                break
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load(folders: Iterable[Path]) -> Policy | None:
    """The policy of `folders`' files, or None when there are none (the board runs open).
    Raises `PolicyError` for the first file or rule that is wrong."""
    paths = policy_files(folders)
    if not paths:
        return None
    roles: dict[str, Grant] = {}
    principals: dict[str, tuple[str, ...]] = {}
    budgets: dict[str, Budget] = {}
    repeats: list[str] = []
    approvals: list[ApprovalRule] = []
    where: dict[str, str] = {}
    files = [(path, load_file(path)) for path in paths]
    for path, f in files:
        for name, grant in f.roles.items():
            if name in roles:
                raise PolicyError(
                    str(path), None, f"roles.{name}: already defined in {where['role:' + name]}"
                )
            roles[name], where[f"role:{name}"] = grant, path.name
        for kind, budget in f.budgets.items():
            if kind in budgets:
                raise PolicyError(
                    str(path), None, f"budgets.{kind}: already set in {where['budget:' + kind]}"
                )
            budgets[kind], where[f"budget:{kind}"] = budget, path.name
        repeats += f.allow_repeats
        approvals += f.approvals
    for path, f in files:
        for principal, wanted in f.principals.items():
            for role in wanted:
                if role not in roles:
                    line = _line(
                        yaml.compose(path.read_text(), Loader=yaml.SafeLoader), ["principals", principal]
                    )
                    raise PolicyError(str(path), line, f"principals.{principal}: no role {role!r} is defined")
            principals[principal] = tuple(dict.fromkeys((*principals.get(principal, ()), *wanted)))
            where.setdefault(f"principal:{principal}", path.name)
    repeats_ = tuple(dict.fromkeys(repeats))
    return Policy(roles, principals, where, tuple(str(p) for p in paths), budgets, repeats_, tuple(approvals))


# -- on the board -----------------------------------------------------------------------------


async def store(board: Board, policy: Policy, actor: str | None = None) -> None:
    """Make `policy` the board's: stored under its version with its audit record, one step."""
    args = {"version": policy.version, "doc": policy.to_json(), "sources": ", ".join(policy.sources)}
    await board._run(board._scripts.policy_load, (), args, actor, extra_keys=[board.keys.policy])
    board.policy = policy


async def clear(board: Board, note: str = "", actor: str | None = None) -> str:
    """Reopen the board: no stored policy in force (audited, one step). Under a policy it needs
    the grant that pausing the whole board needs (`cancel` on `*`). Daemons that follow the
    board's policy run open from their next beat; a daemon with policy files of its own stores
    them again (policy never fails open while one is configured). Returns the version cleared."""
    await enforce(board, actor, "cancel", ["*"])
    out = await board._run(board._scripts.policy_clear, (), {"note": note}, actor)
    board.policy = None
    return str(out["ok"])


async def fetch(board: Board) -> Policy | None:
    """The policy stored on the board (the version in force), or None when it runs open."""
    keys = board.keys

    async def read() -> Any:
        version = await board.redis.hget(keys.meta, "policy_version")
        return None if not version else await board.redis.hget(keys.policy, version)

    doc = await board.retrying(read)
    return Policy.from_json(doc) if doc else None


def annotate(policy: Policy | None, specs: list[dict[str, Any]], items: Sequence[Any]) -> None:
    """Give the post specs what the post script checks: a goal's budget (`budget`), and for the
    repeat guard a digest of each item's kind and payload (`phash`), unless its kind may repeat."""
    if policy is None:
        return
    by_id = {it.id: it for it in items}
    for spec in specs:
        item = by_id[spec["id"]]
        if item.parent is None and (budget := policy.budget_for(item.kind)) is not None:
            spec["budget"] = budget.model_dump(exclude_none=True)
        if (rule := policy.approval_for(item.kind, item.payload)) is not None:
            timeout = int(rule.timeout_seconds * 1000) if rule.timeout_seconds else None
            spec["approval"] = {"on_timeout": rule.on_timeout, **({"timeout_ms": timeout} if timeout else {})}
        if not policy.repeats_allowed(item.kind):
            payload = json.dumps(item.payload, sort_keys=True, separators=(",", ":"), default=str)
            spec["phash"] = hashlib.sha1(f"{item.kind}\n{payload}".encode()).hexdigest()


async def tokens_left(board: Board, goal: str) -> int | None:
    """Model tokens the goal may still spend, or None when its budget sets no token limit. What
    goal's calls in flight will use is not counted until they finish: concurrent calls can
    overrun the budget by at most what they use between them."""
    if board.policy is None or not board.policy.budgets:
        return None
    keys = board.keys_of(goal)

    async def read() -> list[Any]:
        async with board.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.budgets, goal)
            pipe.hget(keys.totals, goal)
            return list(await pipe.execute())

    budget, totals = await board.retrying(read)
    limit = json.loads(budget).get("max_tokens") if budget else None
    if limit is None:
        return None
    used = json.loads(totals) if totals else {}
    return int(limit) - int(used.get("prompt_tokens", 0)) - int(used.get("completion_tokens", 0))


async def enforce(board: Board, principal: str | None, action: Action, kinds: Iterable[str]) -> None:
    """Raise `PolicyDenied` (after writing the denial's audit record) unless the board's policy
    lets `principal` do `action` with every one of `kinds`. Open boards allow everything."""
    policy = board.policy
    if policy is None:
        return
    who = principal or "anonymous"
    for kind in dict.fromkeys(kinds):
        decision = policy.decide(who, action, kind)
        if not decision.allowed:
            detail = f"{action} {kind}: {decision.rule}"
            await record_denial(board, who, action, kind, detail, rule=decision.code)
            raise PolicyDenied(who, action, kind, decision.rule)


async def record_denial(
    board: Board,
    principal: str,
    action: str,
    kind: str,
    detail: str,
    item_id: str = "",
    rule: str = "default-deny",
) -> None:
    """The audit record of a refused action (and nothing else), counted by the daemon under
    `rule` (a `Decision.code`)."""
    await board._run(board._scripts.deny, (), {"kind": kind, "id": item_id, "detail": detail}, principal)
    if board.on_denied is not None:
        board.on_denied(action, kind, rule)

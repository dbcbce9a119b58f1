"""Policies: files that load or say where they are wrong; least privilege enforced by the board,
each denial writing only its audit record; the version in force on every record; hot reload
that never fails open; and a real pack running under least privilege."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from blackboard import Board, NewItem, audit, policy
from blackboard.cli import app
from blackboard.errors import InvalidInput
from blackboard.policy import DEFAULT_DENY, PolicyDenied, PolicyError
from tests.conftest import unique_board
from tests.support.packs import PACKS, daemon_settings

pytestmark = pytest.mark.anyio

RULES = """\
roles:
  worker: {claim: [t.task], post: [t.result]}
  planner: {claim: [t.goal], post: ["t.task"]}
  operator: {post: [t.goal], cancel: ["*"]}
principals:
  worker: [worker]
  planner: [planner]
  "ops-*": [operator]
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def rules(tmp_path: Path) -> policy.Policy:
    write(tmp_path / "p", "rules.yaml", RULES)
    loaded = policy.load([tmp_path / "p"])
    assert loaded is not None
    return loaded


# -- files ----------------------------------------------------------------------------------


def test_decisions_name_the_rule_that_decides(rules: policy.Policy) -> None:
    ok = rules.decide("worker", "claim", "t.task")
    assert ok.allowed and ok.rule == "role 'worker' (rules.yaml) grants claim 't.task' to 'worker'"
    assert rules.decide("ops-alice", "post", "t.goal").allowed  # a glob of principals
    assert rules.decide("ops-alice", "cancel", "anything.at.all").allowed
    denied = rules.decide("worker", "post", "t.goal")
    assert not denied.allowed and denied.rule == DEFAULT_DENY
    assert not rules.decide("stranger", "claim", "t.task").allowed
    assert not rules.decide("worker", "claim", "t.*").allowed  # a glob wider than the grant
    assert {a: d.allowed for a, d in rules.explain("planner", "t.task").items()} == {
        "post": True,
        "claim": False,
        "read": False,
        "cancel": False,
        "approve": False,
    }
    assert rules.version == policy.Policy.from_json(rules.to_json()).version


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("roles:\n  a: {claim: [x]\n", 3, "not YAML"),
        (
            "roles:\n  a:\n    claim: [x]\n    steal: [y]\n",
            4,
            "roles.a.steal: Extra inputs are not permitted",
        ),
        ("roles:\n  a: {claim: x}\n", 2, "roles.a.claim"),
        ("roles:\n  a: {claim: [x]}\nprincipals:\n  bob: [a]\n  eve: [root]\n", 5, "no role 'root'"),
        ("rules: []\n", 1, "rules: Extra inputs"),
    ],
)
def test_a_bad_file_is_named_with_its_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(PolicyError) as e:
        policy.load([tmp_path])
    assert e.value.path == str(path) and e.value.line == line and message in e.value.message
    assert str(e.value).startswith(f"{path}:{line}: ")


def test_a_role_defined_twice_is_an_error_and_no_files_means_open(tmp_path: Path) -> None:
    assert policy.load([tmp_path]) is None and policy.load([tmp_path / "missing"]) is None
    write(tmp_path, "a.yaml", "roles:\n  r: {post: [x]}\n")
    write(tmp_path, "b.yaml", "roles:\n  r: {post: [y]}\n")
    with pytest.raises(PolicyError, match=r"roles\.r: already defined in a\.yaml"):
        policy.load([tmp_path])


# -- enforced by the board ------------------------------------------------------------------


async def test_denied_posts_and_claims_write_nothing_but_their_audit_record(
    board: Board, rules: policy.Policy
) -> None:
    await policy.store(board, rules, actor="test")
    goal = await board.post("t.goal", {}, actor="ops-alice")
    before = (await board.stats()).kinds, await audit.head(board)
    with pytest.raises(PolicyDenied) as e:
        await board.post("t.goal", {"sneaky": True}, actor="worker")
    assert e.value.rule == DEFAULT_DENY and "policy denies 'worker' to post 't.goal'" in str(e.value)
    with pytest.raises(PolicyDenied, match=r"to claim 't\.goal'"):
        await board.claim("worker", ["t.goal"])
    with pytest.raises(PolicyDenied, match="'anonymous' to post"):
        await board.post_many([NewItem(kind="t.goal", payload={})])
    assert (await board.stats()).kinds == before[0]  # nothing was written
    assert (await board.get(goal.id)).status.value == "open"  # and nothing was claimed
    denials = [r for r in await audit.tail(board, 3)]
    assert [(r.op, r.actor, r.kind) for r in denials] == [
        ("denied", "worker", "t.goal"),
        ("denied", "worker", "t.goal"),
        ("denied", "anonymous", "t.goal"),
    ]
    assert denials[0].detail == f"post t.goal: {DEFAULT_DENY}" and denials[0].seq == before[1].seq + 1
    assert all(r.policy == rules.version for r in denials)
    assert (await audit.verify_board(board))[0] is None


async def test_an_agents_outputs_are_its_posts(board: Board, rules: policy.Policy) -> None:
    await policy.store(board, rules)
    await board.post("t.goal", {}, actor="ops-alice")
    [claim] = await board.claim("planner", ["t.goal"])
    with pytest.raises(PolicyDenied, match=r"'planner' to post 't\.result'"):
        await board.complete(claim, "done", outputs=[NewItem(kind="t.result", payload={})])
    assert (await board.get(claim.id)).status.value == "claimed"  # the completion wrote nothing
    [task] = await board.complete(claim, "done", outputs=[NewItem(kind="t.task", payload={})])
    assert task.kind == "t.task"


async def test_the_policy_version_is_on_every_record_and_its_load_is_audited(
    board: Board, rules: policy.Policy, tmp_path: Path
) -> None:
    await board.post("t.goal", {}, actor="ops-alice")  # open: no policy yet
    await policy.store(board, rules, actor="daemon:one")
    await board.post("t.goal", {}, actor="ops-alice")
    records = await audit.tail(board, 3)
    assert [(r.op, r.policy) for r in records] == [
        ("posted", ""),
        ("policy_loaded", rules.version),
        ("posted", rules.version),
    ]
    assert records[1].actor == "daemon:one" and records[1].detail == ", ".join(rules.sources)
    assert records[1].digest  # of the policy's JSON, stored on the board
    fetched = await policy.fetch(board)
    assert fetched is not None and fetched.version == rules.version
    # another handle on the same board enforces the stored version once it fetches it
    async with await Board.connect(board.url or "", board=board.name) as other:
        other.policy = await policy.fetch(other)
        with pytest.raises(PolicyDenied):
            await other.post("t.task", {}, actor="worker")


# -- in the daemon --------------------------------------------------------------------------


AGENT = """
from blackboard import agent

@agent(name="worker", consumes=["t.task"], produces=["t.result", "t.task"])
async def work(item, ctx):
    await ctx.post("t.task" if item.payload.get("again") else "t.result", {})
    return "ok"
"""


async def test_a_daemon_enforces_its_policy_and_a_bad_reload_keeps_it(board_url: str, tmp_path: Path) -> None:
    from blackboard.daemon import Daemon

    write(tmp_path / "agents", "worker.py", AGENT)
    folder = tmp_path / "policies"
    write(folder, "rules.yaml", RULES)
    name = unique_board()
    daemon = Daemon(
        daemon_settings(
            board_url, name, [tmp_path / "agents"], policies=[folder], reload=True, presence_interval=0.1
        )
    )
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        good = daemon.board.policy
        assert good is not None and good.version == policy.load([folder]).version  # type: ignore[union-attr]
        async with await Board.connect(board_url, board=name) as b:
            b.policy = await policy.fetch(b)
            # the worker may post t.result, not t.task: its handler's ctx.post is refused
            denied = await b.post_many([NewItem(kind="t.task", payload={"again": True})], actor="planner")
            fine = await b.post_many([NewItem(kind="t.task", payload={})], actor="planner")
            with anyio.fail_after(10):
                while (await b.get(denied[0].id)).status.value not in ("failed", "dead", "open") or (  # noqa: ASYNC110 - the condition lives in Redis
                    await b.get(fine[0].id)
                ).status.value != "done":
                    await anyio.sleep(0.02)
            item = await b.get(denied[0].id)
            assert "PolicyDenied" in (item.error or "") and "'worker' to post 't.task'" in (item.error or "")
            metric = daemon.metrics.registry.get_sample_value
            assert (
                metric(
                    "blackboard_policy_denials_total",
                    {"action": "post", "kind": "t.task", "rule": "default-deny"},
                )
                or 0
            ) >= 1
            # a broken edit: reported, and the policy in force stays
            (folder / "rules.yaml").write_text("roles:\n  worker: {claim: [t.task]\n")
            with anyio.fail_after(10):
                while not metric("blackboard_policy_load_errors_total"):  # noqa: ASYNC110 - the watcher counts it
                    await anyio.sleep(0.05)
            assert daemon.board.policy is good and daemon.ready
            with pytest.raises(PolicyDenied):
                await b.post("t.result", {}, actor="planner")
        daemon.stop()


async def test_a_daemon_without_files_follows_the_boards_policy_and_broken_files_deny_all(
    board_url: str, tmp_path: Path, rules: policy.Policy
) -> None:
    from blackboard.daemon import Daemon

    name = unique_board()
    async with await Board.connect(board_url, board=name) as b:
        await policy.store(b, rules)
    empty = tmp_path / "none"
    empty.mkdir()
    follower = Daemon(daemon_settings(board_url, name, [], policies=[empty]))
    broken = tmp_path / "broken"
    write(broken, "x.yaml", "roles: [\n")
    fresh = unique_board()
    closed = Daemon(daemon_settings(board_url, fresh, [], policies=[broken]))
    async with anyio.create_task_group() as tg:
        await tg.start(follower.run)
        await tg.start(closed.run)
        assert follower.board.policy is not None and follower.board.policy.version == rules.version
        assert closed.board.policy is policy.DENY_ALL  # never fails open
        with pytest.raises(PolicyDenied):
            await closed.board.post("anything", {}, actor="cli")
        follower.stop()
        closed.stop()


@pytest.mark.timeout(90)
async def test_the_research_pack_runs_under_its_least_privilege_policy(board_url: str) -> None:
    from tests.support.packs import run_pack

    example = PACKS.parent / "policies" / "examples"
    goal = json.loads((PACKS / "research" / "goal.json").read_text())
    research = [PACKS / "research"]
    run = await run_pack(board_url, research, goal["kind"], goal["payload"], actor="cli", policies=[example])
    assert run.goal.status.value == "done"
    assert all(it.status.value == "done" for it in run.items), [
        (i.kind, i.status, i.error) for i in run.items
    ]
    assert {it.kind for it in run.items} >= {"research.goal", "research.question", "research.synthesis"}


def test_policy_check_and_explain(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = tmp_path / "p"
    write(folder, "rules.yaml", RULES)
    r = runner.invoke(app, ["policy", "check", str(folder)])
    assert r.exit_code == 0 and "ok: 1 file(s), 3 role(s), 3 principal(s)" in r.output, r.output
    r = runner.invoke(
        app, ["policy", "explain", "--agent", "worker", "--kind", "t.task", str(folder), "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["claim"]["allowed"] and not out["post"]["allowed"] and out["post"]["rule"] == DEFAULT_DENY
    write(folder, "zz.yaml", "principals:\n  x: [nope]\n")
    r = runner.invoke(app, ["policy", "check", str(folder)])
    assert r.exit_code == 1 and f"{folder / 'zz.yaml'}:2: principals.x: no role 'nope'" in r.output
    r = runner.invoke(app, ["policy", "check", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no such folder" in r.output
    r = runner.invoke(app, ["policy", "check", str(PACKS.parent / "policies" / "examples")])
    assert r.exit_code == 0 and "ok:" in r.output


async def test_cancel_needs_the_cancel_grant(board: Board, rules: policy.Policy) -> None:
    await policy.store(board, rules)
    goal = await board.post("t.goal", {}, actor="ops-alice")
    with pytest.raises(PolicyDenied, match="to cancel"):
        await board.cancel(goal.id, actor="worker")
    assert (await board.get(goal.id)).status.value == "open"
    assert await board.cancel(goal.id, actor="ops-alice") == 1


MEMORY_AGENTS = """
from blackboard import agent

@agent(name="counter", consumes=["m.tick"])
async def count(item, ctx):
    seen = await ctx.memory.get("seen", 0) + 1
    await ctx.memory.set("seen", seen)
    return seen

@agent(name="snoop", consumes=["m.snoop"])
async def snoop(item, ctx):
    return {"seen": await ctx.memory.get("seen"), "mine": await ctx.memory.items()}
"""


async def test_an_agents_memory_is_its_own(board_url: str, tmp_path: Path) -> None:
    from blackboard.daemon import Daemon
    from blackboard.memory import Memory

    write(tmp_path / "agents", "mem.py", MEMORY_AGENTS)
    name = unique_board()
    daemon = Daemon(daemon_settings(board_url, name, [tmp_path / "agents"], policies=[tmp_path / "none"]))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        board = daemon.board
        ticks = [await board.post("m.tick", {"n": i}) for i in range(3)]
        results = [(await board.wait(t.id, timeout=10)).result for t in ticks]
        assert sorted(results) == [1, 2, 3]  # kept across items
        snooped = await board.wait((await board.post("m.snoop", {})).id, timeout=10)
        assert snooped.result == {"seen": None, "mine": {}}  # another agent sees none of it
        assert await Memory(board, "counter").items() == {"seen": 3}
        with pytest.raises(InvalidInput, match=r"memory\.x"):
            await Memory(board, "counter").set("x", {1, 2})
        daemon.stop()


READERS = """\
roles:
  analyst: {claim: [r.task.*], read: ["r.*"], sees: [finance]}
  intern: {claim: [r.task.*], read: ["r.*"]}
  op: {post: ["*"]}
principals:
  analyst: [analyst]
  intern: [intern]
  cli: [op]
  http: [intern]
"""

READER_AGENTS = """
from blackboard import agent
from blackboard.policy import PolicyDenied

def make(name):
    @agent(name=name, consumes=[f"r.task.{name}"])
    async def read(item, ctx):
        page = await ctx.query(kind="r.doc")
        try:
            secret = (await ctx.get(item.payload["secret"])).payload
        except PolicyDenied as e:
            secret = f"denied: {e.rule}"
        return {"listed": sorted(it.payload["n"] for it in page.items), "secret": secret}
    return read

analyst, intern = make("analyst"), make("intern")
"""


async def test_reads_need_the_read_grant_and_labels_limit_who_sees_an_item(
    board_url: str, tmp_path: Path
) -> None:
    from blackboard.daemon import Daemon

    write(tmp_path / "agents", "readers.py", READER_AGENTS)
    write(tmp_path / "policies", "p.yaml", READERS)
    name = unique_board()
    daemon = Daemon(daemon_settings(board_url, name, [tmp_path / "agents"], policies=[tmp_path / "policies"]))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        board = daemon.board
        [public, secret] = await board.post_many(
            [
                NewItem(kind="r.doc", payload={"n": 1}),
                NewItem(kind="r.doc", payload={"n": 2}, visibility=("finance",)),
            ],
            actor="cli",
        )
        by_agent = {}
        for who in ("analyst", "intern"):
            task = await board.post(f"r.task.{who}", {"secret": secret.id}, actor="cli")
            done = await board.wait(task.id, timeout=10)
            assert done.handled_by == who
            by_agent[who] = done.result
        assert by_agent["analyst"] == {"listed": [1, 2], "secret": {"n": 2}}
        assert by_agent["intern"]["listed"] == [1]  # the labelled item is filtered out
        assert by_agent["intern"]["secret"].startswith("denied: no role of this principal sees")
        denied = [r for r in await audit.tail(board, 50) if r.op == "denied"]
        assert denied and all(r.actor == "intern" and r.id == secret.id for r in denied)
        assert (await board.get(public.id)).visibility == ()  # the board itself is not filtered
        assert (await board.get(secret.id)).visibility == ("finance",)
        daemon.stop()


# -- clearing ---------------------------------------------------------------------------------


def test_policy_clear_reopens_the_board_only_for_a_principal_allowed_to(
    board_url: str, tmp_path: Path
) -> None:
    name = unique_board()
    where = ["--url", board_url, "--board", name]
    folder = tmp_path / "p"
    write(folder, "rules.yaml", RULES + "  cli: [operator]\n")
    write(tmp_path / "q", "rules.yaml", RULES)  # no role for cli: it may not clear

    async def store(which: Path) -> str:
        async with await Board.connect(board_url, board=name) as b:
            loaded = policy.load([which])
            assert loaded is not None
            await policy.store(b, loaded)
            return loaded.version

    runner = CliRunner()
    anyio.run(store, tmp_path / "q")
    r = runner.invoke(app, ["policy", "clear", *where])
    assert r.exit_code == 2 and "--yes" in r.output
    r = runner.invoke(app, ["policy", "clear", "--yes", *where])
    assert r.exit_code == 1 and "policy denies 'cli' to cancel '*'" in r.output, r.output
    version = anyio.run(store, folder)
    r = runner.invoke(app, ["policy", "clear", "--yes", "--note", "incident 7 over", *where])
    assert r.exit_code == 0 and f"was {version}" in r.output, r.output

    async def after() -> tuple[policy.Policy | None, audit.AuditRecord]:
        async with await Board.connect(board_url, board=name) as b:
            return await policy.fetch(b), (await audit.tail(b, 1))[0]

    stored, record = anyio.run(after)
    assert stored is None  # open: the CLI (and any daemon following the board) allows everything
    assert (record.op, record.actor, record.detail, record.policy) == (
        "policy_cleared",
        "cli",
        "incident 7 over",
        "",
    )
    r = runner.invoke(app, ["post", "anything.goes", *where])
    assert r.exit_code == 0, r.output


async def test_daemons_follow_a_clear_unless_they_have_policy_files(board_url: str, tmp_path: Path) -> None:
    from blackboard.daemon import Daemon

    write(tmp_path / "p", "rules.yaml", RULES)
    name = unique_board()
    with_files = Daemon(
        daemon_settings(board_url, name, [], policies=[tmp_path / "p"], presence_interval=0.1)
    )
    follower = Daemon(
        daemon_settings(board_url, name, [], policies=[tmp_path / "none"], presence_interval=0.1)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(with_files.run)
        version = with_files.board.policy.version if with_files.board.policy else None
        await tg.start(follower.run)
        assert follower.board.policy is not None and follower.board.policy.version == version
        with_files.stop()  # only the follower is left: a clear opens it
        async with await Board.connect(board_url, board=name) as b:
            b.policy = await policy.fetch(b)
            await policy.clear(b, actor="ops-alice")
        with anyio.fail_after(10):
            while follower.board.policy is not None:  # noqa: ASYNC110 - its presence beat follows the board
                await anyio.sleep(0.02)
        restarted = Daemon(
            daemon_settings(board_url, name, [], policies=[tmp_path / "p"], presence_interval=0.1)
        )
        await tg.start(restarted.run)  # a daemon with files stores them again
        with anyio.fail_after(10):
            while follower.board.policy is None:  # noqa: ASYNC110 - it adopts what the board stores
                await anyio.sleep(0.02)
        assert follower.board.policy.version == version
        async with await Board.connect(board_url, board=name) as b:
            await policy.clear(b, actor="ops-alice")  # with a daemon that has files: undone at its beat
            with anyio.fail_after(10):
                while await policy.fetch(b) is None:  # noqa: ASYNC110 - the daemon stores its files
                    await anyio.sleep(0.02)
        follower.stop()
        restarted.stop()

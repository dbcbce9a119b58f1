"""The debate pack through a real daemon on the offline model, and its consensus rule alone."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from blackboard import Item, Status
from tests.support.packs import PACKS, PackRun, pack_module, run_pack

pytestmark = pytest.mark.anyio

GOAL = json.loads((PACKS / "debate" / "goal.json").read_text())["payload"]
DEBATERS = ("empiricist", "skeptic", "pragmatist", "theorist")


def _debater(turn: Item) -> str:
    return turn.kind.removeprefix("debate.turn.")


def _votes(turns: list[Item]) -> dict[str, str]:
    return {_debater(t): t.result["choice"] for t in turns}


async def _debate(board_url: str, monkeypatch: pytest.MonkeyPatch, goal: dict[str, Any]) -> PackRun:
    monkeypatch.setenv("BLACKBOARD_OFFLINE_LATENCY", "0.2")  # so overlapping turns show up as such
    return await run_pack(board_url, [PACKS / "debate"], "debate.question", goal)


def _rounds(run: PackRun, options: list[str]) -> list[tuple[Item, list[Item]]]:
    """Each round item with its four turns, in round order, checking each round's structure."""
    assert run.goal.status is Status.DONE and run.goal.handled_by == "debate-moderator"
    rounds = sorted(run.of_kind("debate.round"), key=lambda r: r.payload["round"])
    assert [r.payload["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    turns = [it for it in run.items if it.kind.startswith("debate.turn.")]
    assert len(turns) == 4 * len(rounds)
    out = []
    for n, rnd in enumerate(rounds, 1):
        mine = sorted(
            (t for t in turns if t.payload["round"] == n), key=lambda t: DEBATERS.index(_debater(t))
        )
        assert [_debater(t) for t in mine] == list(DEBATERS)
        assert [t.handled_by for t in mine] == [f"debate-{d}" for d in DEBATERS]
        assert all(t.status is Status.DONE for t in mine) and rnd.status is Status.DONE
        # round 1 hangs off the goal, round n+1 off round n: the lineage is the debate's history
        opener = run.goal if n == 1 else rounds[n - 2]
        assert {t.parent for t in mine} == {rnd.parent} == {opener.id}
        assert set(rnd.after) == {t.id for t in mine}
        assert run.overlapping(mine)  # the four debaters of a round argued at the same time
        assert rnd.claimed_at and rnd.claimed_at >= max(t.finished_at or 0 for t in mine)
        assert rnd.handled_by == "debate-consensus"
        for t in mine:
            assert set(t.result) == {"choice", "argument", "critique_of_others"}
            assert t.result["choice"] in options and t.result["argument"]
        out.append((rnd, mine))
    return out


def _check_usage(run: PackRun, rounds: int) -> None:
    assert run.usage.calls == 4 * rounds and run.usage.errors == 0
    assert set(run.usage.by_model) == {f"offline/debate-{d}" for d in DEBATERS}
    assert all(m.calls == rounds for m in run.usage.by_model.values())
    assert run.usage.tokens > 0 and run.usage.cost > 0


async def test_rounds_continue_until_consensus_or_the_round_limit(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await _debate(board_url, monkeypatch, GOAL)
    rounds = _rounds(run, GOAL["options"])
    for (rnd, turns), (following, later) in itertools.pairwise(rounds):
        # a round that opened another had no consensus; its answers are what the next one debates
        votes = _votes(turns)
        assert len(set(votes.values())) > 1
        n = rnd.payload["round"]
        assert rnd.result == {"consensus": False, "round": n, "votes": votes, "opened": following.id}
        previous = [
            {"debater": _debater(t), "choice": t.result["choice"], "argument": t.result["argument"]}
            for t in turns
        ]
        for t in later:
            assert sorted(t.payload["previous"], key=str) == sorted(previous, key=str)
    assert all(t.payload["previous"] == [] for t in rounds[0][1])
    final, turns = rounds[-1]
    votes = _votes(turns)
    if len(set(votes.values())) == 1:
        assert final.result == {
            "consensus": True,
            "choice": turns[0].result["choice"],
            "rounds": len(rounds),
            "votes": votes,
        }
    else:
        assert len(rounds) == GOAL["max_rounds"]
        assert final.result["consensus"] is False and final.result["rounds"] == len(rounds)
        assert final.result["votes"] == votes
    _check_usage(run, len(rounds))


async def test_max_rounds_one_stops_after_the_first_round_without_consensus(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await _debate(board_url, monkeypatch, GOAL | {"max_rounds": 1})
    ((final, turns),) = _rounds(run, GOAL["options"])
    votes = _votes(turns)
    # the offline model is deterministic: on this question its four debaters disagree in round 1
    assert len(set(votes.values())) > 1
    tally: dict[str, int] = {}
    for choice in votes.values():
        tally[choice] = tally.get(choice, 0) + 1
    assert final.result == {"consensus": False, "rounds": 1, "votes": votes, "tally": tally}
    _check_usage(run, 1)


async def test_consensus_stops_the_debate_before_the_round_limit(
    board_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one option every debater must choose it: consensus in round 1 of at most 3."""
    run = await _debate(board_url, monkeypatch, GOAL | {"options": ["61"], "max_rounds": 3})
    ((final, turns),) = _rounds(run, ["61"])
    votes = dict.fromkeys(DEBATERS, "61")
    assert _votes(turns) == votes
    assert final.result == {"consensus": True, "choice": "61", "rounds": 1, "votes": votes}
    _check_usage(run, 1)


@pytest.mark.parametrize(
    "payload",
    [
        {"question": "q", "options": []},
        {"question": "q", "options": ["a", "a"]},
        {"question": "q", "options": ["a", "b"], "max_rounds": 0},
    ],
)
async def test_a_malformed_question_is_dead_lettered_without_a_round(
    board_url: str, payload: dict[str, Any]
) -> None:
    run = await run_pack(board_url, [PACKS / "debate"], "debate.question", payload)
    assert run.goal.status is Status.DEAD and run.goal.error
    assert run.items == [run.goal] and run.usage.calls == 0


# -- the consensus rule alone --------------------------------------------------------------


def _decide() -> Any:
    return pack_module("debate", "moderator.py").decide


def test_the_consensus_rule() -> None:
    decide = _decide()
    same = dict.fromkeys(DEBATERS, "b")
    split = {"empiricist": "a", "skeptic": "b", "pragmatist": "b", "theorist": "c"}
    assert decide(same, 2, 3) == {"consensus": True, "choice": "b", "rounds": 2, "votes": same}
    assert decide(same, 3, 3)["consensus"] is True  # agreeing in the last round is still consensus
    assert decide(split, 2, 3) is None  # another round
    assert decide(split, 3, 3) == {
        "consensus": False,
        "rounds": 3,
        "votes": split,
        "tally": {"a": 1, "b": 2, "c": 1},
    }

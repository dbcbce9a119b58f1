"""The debate's two plain Python agents: the moderator opens round 1, the consensus agent judges
each round and opens the next. Neither needs a model: both only move answers around the board."""

from __future__ import annotations

from collections import Counter
from typing import Any

from blackboard import Context, Fail, Item, Status, agent

DEBATERS = ("empiricist", "skeptic", "pragmatist", "theorist")  # kinds debate.turn.<debater>
DEFAULT_MAX_ROUNDS = 3


async def _open_round(ctx: Context, debate: dict[str, Any], n: int, previous: list[dict[str, Any]]) -> str:
    """Post one turn per debater and the round item that waits for all four (the join); its id."""
    turn = {"question": debate["question"], "options": debate["options"], "round": n, "previous": previous}
    turns = [await ctx.post(f"debate.turn.{d}", turn) for d in DEBATERS]
    rnd = await ctx.post("debate.round", debate | {"round": n}, after=[t.id for t in turns if t.id])
    return rnd.id or ""


def decide(votes: dict[str, str], n: int, max_rounds: int) -> dict[str, Any] | None:
    """The consensus rule: the debate's outcome after round `n`, or None to debate another round."""
    choices = set(votes.values())
    if len(choices) == 1:
        return {"consensus": True, "choice": choices.pop(), "rounds": n, "votes": votes}
    if n >= max_rounds:
        return {"consensus": False, "rounds": n, "votes": votes, "tally": dict(Counter(votes.values()))}
    return None


@agent(name="debate-moderator", consumes=["debate.question"], produces=["debate.turn.*", "debate.round"])
async def moderate(item: Item, ctx: Context) -> dict[str, Any]:
    """Check the question and open round 1."""
    p = item.payload if isinstance(item.payload, dict) else {}
    options = p.get("options")
    if not (isinstance(options, list) and options and all(isinstance(o, str) and o for o in options)):
        raise Fail("debate.question needs 'options': a non-empty list of strings")
    if len(set(options)) != len(options):
        raise Fail("debate.question 'options' must be distinct")
    max_rounds = p.get("max_rounds", DEFAULT_MAX_ROUNDS)
    if not (isinstance(max_rounds, int) and max_rounds >= 1):
        raise Fail("debate.question 'max_rounds' must be an integer >= 1")
    debate = {"question": str(p.get("question", "")), "options": options, "max_rounds": max_rounds}
    return {"round": 1, "opened": await _open_round(ctx, debate, 1, [])}


@agent(name="debate-consensus", consumes=["debate.round"], produces=["debate.turn.*", "debate.round"])
async def judge(item: Item, ctx: Context) -> dict[str, Any]:
    """Read the round's four answers (its dependencies); finish the debate or open the next round."""
    deps = await ctx.board.get_many(list(item.after))
    turns = [t for t in deps if t is not None and t.status is Status.DONE]
    answers = [
        {"debater": t.kind.removeprefix("debate.turn."), **{k: t.result[k] for k in ("choice", "argument")}}
        for t in turns
    ]
    votes = {a["debater"]: a["choice"] for a in answers}
    if len(votes) != len(DEBATERS):
        raise Fail(
            f"round {item.payload['round']} has answers only from {sorted(votes)}, not {list(DEBATERS)}"
        )
    n = item.payload["round"]
    outcome = decide(votes, n, item.payload["max_rounds"])
    if outcome is not None:
        return outcome
    debate = {k: item.payload[k] for k in ("question", "options", "max_rounds")}
    opened = await _open_round(ctx, debate, n + 1, answers)
    return {"consensus": False, "round": n, "votes": votes, "opened": opened}

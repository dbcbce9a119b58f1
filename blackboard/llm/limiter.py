"""Requests and tokens per minute per model, shared by every daemon on a board.

The buckets live in Redis under the board's hash tag and one script takes from them, so ten
daemons with a 500 rpm limit make 500 requests a minute between them, not 5,000. A 429 from the
provider sets a cool-down on the model for everyone, instead of each daemon finding out alone.

A model with no limits set is held back only by a cool-down, so its calls don't each ask Redis:
the shared cool-down is looked up at most once every `COOL_DOWN_LOOK` seconds per model (a 429
this daemon sees holds it back at once). Another daemon's 429 reaches it within that second;
until then it may make a few calls that meet the 429 themselves.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping

import anyio
from pydantic import BaseModel, ConfigDict, Field

from blackboard.board import Board

MAX_WAIT = 5.0  # seconds between looks while a model is over its limit
COOL_DOWN_LOOK = 1.0  # seconds: how old a model without limits may let its view of a cool-down get


class ModelLimit(BaseModel):
    """Limits of one model (or a glob of models, e.g. `openai/*`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Prompt + completion tokens per minute.")


class RateLimiter:
    """Takes from a model's shared buckets before a call and settles the real token count after."""

    def __init__(self, board: Board, limits: Mapping[str, ModelLimit]) -> None:
        self.board = board
        self.limits = dict(limits)
        # Models without limits: monotonic time of the next look at the shared cool-down, and
        # the end of the cool-down last seen.
        self._next_look: dict[str, float] = {}
        self._cool_until: dict[str, float] = {}

    def limit_for(self, model: str) -> ModelLimit | None:
        if model in self.limits:
            return self.limits[model]
        for pattern, limit in self.limits.items():
            if fnmatch.fnmatchcase(model, pattern):
                return limit
        return None

    async def _op(self, model: str, limit: ModelLimit, **args: object) -> int:
        out = await self.board._run(
            self.board._scripts.ratelimit,
            (),
            {k: v for k, v in {"rpm": limit.rpm, "tpm": limit.tpm, **args}.items() if v is not None},
            extra_keys=[self.board.keys.ratelimit(model)],
        )
        return int(out["ok"])

    async def take(self, model: str, tokens: int) -> float:
        """Wait until `model` may be called with about `tokens` tokens. Returns seconds waited."""
        limit = self.limit_for(model)
        if limit is None:
            return await self._cooled(model)
        waited = 0.0
        while (wait_ms := await self._op(model, limit, op="take", tokens=tokens)) > 0:
            pause = min(wait_ms / 1000, MAX_WAIT)
            await anyio.sleep(pause)  # over the limit: wait for the bucket to refill
            waited += pause
        return waited

    async def _cooled(self, model: str) -> float:
        """Wait out a 429 cool-down of `model` (which has no limits). Returns seconds waited."""
        waited = 0.0
        while True:
            now = time.monotonic()
            if now >= self._next_look.get(model, 0.0):
                self._next_look[model] = now + COOL_DOWN_LOOK  # before the await: one look at a time
                wait_ms = await self._op(model, ModelLimit(), op="take", tokens=0)
                self._cool_until[model] = max(self._cool_until.get(model, 0.0), now + wait_ms / 1000)
            pause = min(self._cool_until.get(model, 0.0) - now, MAX_WAIT)
            if pause <= 0:
                return waited
            await anyio.sleep(pause)
            waited += pause
            self._next_look[model] = 0.0  # look again: another 429 may have made it longer

    async def settle(self, model: str, estimated: int, actual: int) -> None:
        """Charge the difference between the estimate taken and the tokens really used."""
        limit = self.limit_for(model)
        if limit is not None and limit.tpm and actual != estimated:
            await self._op(model, limit, op="adjust", tokens=actual - estimated)

    async def cool_down(self, model: str, seconds: float) -> None:
        """The provider said 429: no daemon calls `model` for `seconds`."""
        self._cool_until[model] = max(self._cool_until.get(model, 0.0), time.monotonic() + seconds)
        await self._op(model, self.limit_for(model) or ModelLimit(), op="cooldown", ms=int(seconds * 1000))

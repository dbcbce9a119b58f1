"""Retry delays: exponential, capped, with jitter so retries of a burst don't land together."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field


class Backoff(BaseModel):
    """Delay before retry n (1-based): min(cap, base * factor**(n-1)), scaled by jitter.

    With jitter j the delay is drawn uniformly from [(1-j) * d, d] ("equal jitter" at 0.5).
    """

    model_config = ConfigDict(frozen=True)

    base: float = Field(default=1.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    cap: float = Field(default=300.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt`."""
        d = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        return d * (1 - self.jitter * random.random())

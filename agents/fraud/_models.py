"""The specialists' shared answer shape (a pydantic model referenced from their YAML files)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CheckResult(BaseModel):
    risk: float = Field(ge=0, le=1, description="0 = no concern, 1 = certainly fraudulent")
    signals: list[str] = Field(max_length=4, description="What was noticed")
    summary: str

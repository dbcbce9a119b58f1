"""LLM agents: declared in YAML, called through litellm, checked before they touch the board.

Importing this package does not import litellm; the first model call does.
"""

from blackboard.llm.limiter import ModelLimit, RateLimiter

__all__ = ["ModelLimit", "RateLimiter"]

"""blackboard: a runtime for multi-agent systems that coordinate through a shared Redis board."""

from blackboard.agents import Agent, AgentSpec, Fail, Retry, agent
from blackboard.backoff import Backoff
from blackboard.board import Board
from blackboard.context import Context
from blackboard.errors import (
    BlackboardError,
    BoardUnavailable,
    DependencyCycle,
    InvalidInput,
    InvalidKind,
    InvalidState,
    InvalidURL,
    ItemNotFound,
    LeaseLost,
    PayloadTooLarge,
    SchemaViolation,
    UnknownItem,
    UnknownKind,
)
from blackboard.models import (
    TERMINAL_STATUSES,
    Claim,
    Event,
    Item,
    KindStats,
    ModelCall,
    NewItem,
    Page,
    Stats,
    Status,
    TreeNode,
    UsageTotals,
)

__version__ = "0.1.0"

__all__ = [
    # the board
    "Board",
    "Backoff",
    # agents
    "Agent",
    "AgentSpec",
    "agent",
    "Context",
    "Retry",
    "Fail",
    # data
    "Item",
    "NewItem",
    "Claim",
    "Status",
    "TERMINAL_STATUSES",
    "Event",
    "Page",
    "Stats",
    "ModelCall",
    "UsageTotals",
    "KindStats",
    "TreeNode",
    # errors
    "BlackboardError",
    "InvalidInput",
    "InvalidKind",
    "UnknownKind",
    "SchemaViolation",
    "PayloadTooLarge",
    "UnknownItem",
    "DependencyCycle",
    "InvalidURL",
    "ItemNotFound",
    "InvalidState",
    "LeaseLost",
    "BoardUnavailable",
]

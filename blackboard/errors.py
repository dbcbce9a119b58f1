"""Every error the runtime raises, under one base class.

    BlackboardError
    ├── InvalidInput (also ValueError): bad input, nothing was written
    │   ├── InvalidKind          empty or malformed kind name
    │   ├── UnknownKind          a strict board has no schema for the kind
    │   ├── SchemaViolation      payload does not match the kind's schema
    │   ├── PayloadTooLarge      payload over the board's size limit
    │   ├── UnknownItem          parent or dependency that is not on the board
    │   ├── DependencyCycle      `after` dependencies that form a cycle
    │   └── InvalidURL           a board URL that cannot be used
    ├── ItemNotFound (also KeyError): no item with that id
    ├── InvalidState: the item is not in a status that allows the operation
    ├── LeaseLost: fencing rejected a write from a claim that is no longer current
    └── BoardUnavailable: Redis could not be reached, even after retries

Each message names the field and what was expected, so it can be shown to a user as is.
"""

from __future__ import annotations


class BlackboardError(Exception):
    """Base class of every error raised by blackboard."""


class InvalidInput(BlackboardError, ValueError):
    """Raised when input is rejected before anything is written.

    `field` names the offending input (dotted for nested fields, e.g. ``items[2].after``).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidKind(InvalidInput):
    """Raised when a kind name is empty or malformed."""


class UnknownKind(InvalidInput):
    """Raised when a strict board is asked to accept a kind with no registered schema."""


class SchemaViolation(InvalidInput):
    """Raised when a payload fails its kind's schema; `field` points into the payload."""


class PayloadTooLarge(InvalidInput):
    """Raised when an encoded payload is over the board's `max_payload_bytes`."""


class UnknownItem(InvalidInput):
    """Raised when a parent or `after` dependency names an item that does not exist."""


class DependencyCycle(InvalidInput):
    """Raised when `after` dependencies within a batch form a cycle."""


class InvalidURL(InvalidInput):
    """Raised when a board URL has an unsupported scheme or missing parts."""


class ItemNotFound(BlackboardError, KeyError):
    """Raised when no item has the given id."""

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        super().__init__(item_id)

    def __str__(self) -> str:
        return f"no item with id {self.item_id!r}"


class InvalidState(BlackboardError):
    """Raised when an item's status does not allow the operation (e.g. requeue of a live item)."""

    def __init__(self, item_id: str, status: str, expected: str) -> None:
        self.item_id, self.status = item_id, status
        super().__init__(f"item {item_id} is {status}; expected {expected}")


class LeaseLost(BlackboardError):
    """Raised when a write comes from a claim that is no longer current (fencing).

    The lease expired and the item was reclaimed, or it was cancelled or finished by someone
    else. Nothing was written. `status` is the item's status now.
    """

    def __init__(self, item_id: str, token: str, status: str | None) -> None:
        self.item_id, self.token, self.status = item_id, token, status
        super().__init__(
            f"claim {token} on item {item_id} is no longer current "
            f"(item is {status or 'gone'}); nothing was written"
        )


class BoardUnavailable(BlackboardError):
    """Raised when Redis cannot be reached after the configured retries."""

"""Kind names, kind globs, and the registry of kinds with payload schemas."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from blackboard.errors import InvalidKind, SchemaViolation, UnknownKind

KIND_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
GLOB_RE = re.compile(r"^[a-z0-9_.*?\[\]!-]+$")
MAX_KIND_LENGTH = 200


def check_kind(kind: object, field: str = "kind") -> str:
    """Return `kind` if it is a valid kind name, else raise `InvalidKind` naming `field`."""
    if not isinstance(kind, str) or not kind:
        raise InvalidKind(field, "expected a non-empty kind name such as 'research.task'")
    if len(kind) > MAX_KIND_LENGTH:
        raise InvalidKind(field, f"kind names are at most {MAX_KIND_LENGTH} characters")
    if not KIND_RE.match(kind):
        raise InvalidKind(
            field,
            f"{kind!r} is not a kind name: expected dot-separated lowercase words "
            "(letters, digits, '_' or '-', each starting with a letter), e.g. 'research.task'",
        )
    return kind


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def check_pattern(pattern: object, field: str = "kinds") -> str:
    """A kind name or a glob over kind names (`research.*`)."""
    if isinstance(pattern, str) and is_glob(pattern):
        if not GLOB_RE.match(pattern):
            raise InvalidKind(field, f"{pattern!r} is not a kind glob such as 'research.*'")
        return pattern
    return check_kind(pattern, field)


def expand(patterns: Iterable[str], known: Iterable[str]) -> list[str]:
    """The kinds that `patterns` name: exact names as given, globs matched against `known`."""
    out: dict[str, None] = {}
    known = sorted(known)
    for p in patterns:
        if is_glob(p):
            out.update(dict.fromkeys(k for k in known if fnmatch.fnmatchcase(k, p)))
        else:
            out[p] = None
    return list(out)


Schema = type[BaseModel] | Mapping[str, Any]


class KindRegistry:
    """Kinds with payload schemas: a pydantic model or a JSON schema.

    Registered JSON schemas are also stored on the board, so every process that connects to it
    validates the same way; pydantic models validate in the process that registered them.
    """

    def __init__(self) -> None:
        self._models: dict[str, type[BaseModel]] = {}
        self._schemas: dict[str, dict[str, Any]] = {}
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def register(self, kind: str, schema: Schema) -> dict[str, Any]:
        """Register `schema` for `kind`; returns its JSON schema."""
        check_kind(kind)
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            self._models[kind] = schema
            json_schema = schema.model_json_schema()
        elif isinstance(schema, Mapping):
            json_schema = dict(schema)
            try:
                jsonschema.validators.validator_for(json_schema).check_schema(json_schema)
            except jsonschema.SchemaError as e:
                raise InvalidKind("schema", f"not a valid JSON schema: {e.message}") from None
        else:
            raise InvalidKind("schema", "expected a pydantic model class or a JSON schema dict")
        self.load(kind, json_schema)
        return json_schema

    def load(self, kind: str, json_schema: dict[str, Any]) -> None:
        """Adopt a JSON schema read from the board (keeps a local pydantic model if any)."""
        self._schemas[kind] = json_schema
        cls = jsonschema.validators.validator_for(json_schema)
        self._validators[kind] = cls(json_schema)

    def __contains__(self, kind: object) -> bool:
        return kind in self._schemas

    def kinds(self) -> dict[str, dict[str, Any]]:
        return dict(self._schemas)

    def validate(self, kind: str, payload: Any, *, strict: bool, field: str = "payload") -> Any:
        """Check `payload` against `kind`'s schema; returns the JSON-ready payload."""
        model = self._models.get(kind)
        if model is not None:
            try:
                if isinstance(payload, model):
                    return payload.model_dump(mode="json")
                return model.model_validate(payload).model_dump(mode="json")
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise SchemaViolation(
                    f"{field}.{where}" if where else field,
                    f"{err['msg']} (kind {kind!r} expects {model.__name__})",
                ) from None
        validator = self._validators.get(kind)
        if validator is not None:
            error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
            if error is not None:
                where = ".".join(str(p) for p in error.absolute_path)
                raise SchemaViolation(
                    f"{field}.{where}" if where else field,
                    f"{error.message} (kind {kind!r} schema)",
                )
            return payload
        if strict:
            raise UnknownKind(
                "kind",
                f"{kind!r} is not registered on this strict board; "
                f"registered kinds: {', '.join(sorted(self._schemas)) or 'none'}",
            )
        return payload

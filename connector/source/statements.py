"""Statements built once per shape with bound parameters, reused by the passes that follow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa


class Statements:
    """The statements of one mapping's passes, each built once per shape with bound
    parameters and reused by the passes that follow (the runtime keeps one per mapping).

    Building a query costs SQLAlchemy more than running it on an idle pass (and a new statement
    object must have its cache key computed before the compiled form is found); the values
    themselves change every pass. Each parameter gets the type SQLAlchemy would give the value
    as a literal, and the shape of a statement includes the values' Python types and which of
    them are None, so the SQL and the bound values are what the literal query would give."""

    def __init__(self) -> None:
        self._built: dict[tuple[Any, ...], Any] = {}

    def get(
        self, kind: str, build: Callable[..., Any], **values: Any
    ) -> tuple[Any, dict[str, Any]]:
        """The statement ``build(**parameters)`` gives for the shape of ``values`` (a None
        value is passed as None, not as a parameter), and the parameters to run it with."""
        shape = (kind, *((name, type(v)) for name, v in values.items()))
        stmt = self._built.get(shape)
        if stmt is None:
            binds = {
                name: None if v is None else sa.bindparam(name, type_=sa.literal(v).type)
                for name, v in values.items()
            }
            stmt = self._built[shape] = build(**binds)
        return stmt, {name: v for name, v in values.items() if v is not None}

    def once(self, kind: str, build: Callable[[], Any]) -> Any:
        """The statement ``build()`` gives, built once (its parameters are given at each run,
        e.g. an expanding IN)."""
        stmt = self._built.get((kind,))
        if stmt is None:
            stmt = self._built[(kind,)] = build()
        return stmt


def named(prefix: str, values: Sequence[Any] | None) -> dict[str, Any]:
    """``values`` as keyword arguments ``<prefix>0``, ``<prefix>1``... (none for None)."""
    return {} if values is None else {f"{prefix}{i}": v for i, v in enumerate(values)}


def key_of(named: dict[str, Any]) -> tuple[Any, ...] | None:
    """The tuple ``named`` made keyword arguments of (None when there were none)."""
    return tuple(named.values()) or None

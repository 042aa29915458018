"""Mapping files of the other kinds: dispatch and the small parsing helpers they share.

``kind = "custom_data"`` (:mod:`connector.mapping.custom`): a custom data definition and the
rows that become its records. ``kind = "event"`` (:mod:`connector.mapping.event`): an event type
and the rows whose arrival fires it. Without ``kind`` (or ``kind = "resource"``) a file maps a
registry resource, parsed by :mod:`connector.mapping.load` exactly as before.
"""

from __future__ import annotations

from typing import Any

from connector.mapping.load import _Ctx
from connector.mapping.spec import Mapping, SourceSpec


def parse_extended(data: dict[str, Any], kind: Any, *, name: str, ctx: _Ctx) -> Mapping | None:
    if kind == "custom_data":
        from connector.mapping.custom import parse_custom

        return parse_custom(data, name, ctx)
    if kind == "event":
        from connector.mapping.event import parse_event

        return parse_event(data, name, ctx)
    ctx.err(
        "kind",
        f"unknown kind {kind!r}; expected 'resource' (the default), 'custom_data' or 'event'",
    )
    return None


def _top(data: dict[str, Any], allowed: set[str], ctx: _Ctx) -> bool:
    for k in data:
        if k not in allowed:
            ctx.err(k, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        ctx.err("enabled", "must be true or false")
        return True
    return enabled


def _no_deletes(source: SourceSpec | None, what: str, ctx: _Ctx) -> None:
    if source is not None and source.deleted is not None:
        ctx.err("source.deleted", f"{what}; leave deleted rows out with a query source instead")


def _table(data: dict[str, Any], key: str, ctx: _Ctx) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        ctx.err(key, "must be a table of field = column or spec")
        return {}
    return value


def _text(value: Any, path: str, ctx: _Ctx, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        ctx.err(path, "must be a non-empty string" if value is not None else "missing")
        return None
    return value


def _entries(value: Any, path: str, ctx: _Ctx) -> list[tuple[str, dict[str, Any]]]:
    """A TOML array of inline tables, each with its key path (``definition.fields[2]``)."""
    if value is None:
        return []
    if not isinstance(value, list):
        ctx.err(path, "must be an array of tables like [ { name = ..., type = ... } ]")
        return []
    out = []
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(entry, dict):
            ctx.err(where, "must be a table like { name = ..., type = ... }")
        else:
            out.append((where, entry))
    return out


def _unknown(entry: dict[str, Any], allowed: set[str], where: str, ctx: _Ctx) -> None:
    for k in entry:
        if k not in allowed:
            ctx.err(f"{where}.{k}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")

"""Load mapping files: TOML → validated ``Mapping`` objects, every problem reported at once."""

from __future__ import annotations

import re
import string
import tomllib
from pathlib import Path
from typing import Any

from connector import registry, timeutil
from connector.errors import MappingError, Problem
from connector.mapping.convert import CONVERSIONS
from connector.mapping.spec import (
    NO_DEFAULT,
    ChildSpec,
    DeletedSpec,
    Mapping,
    ObjectSpec,
    SourceSpec,
    ValueSpec,
)
from connector.registry import Field, Resource

_TOP_KEYS = {"resource", "source", "fields", "children", "changes", "enabled", "description"}
_SOURCE_KEYS = {
    "table",
    "query",
    "key",
    "cursor",
    "cursor_fallback",
    "lookback",
    "page_size",
    "deleted",
}
_VALUE_KEYS = {
    "column",
    "const",
    "concat",
    "coalesce",
    "sep",
    "template",
    "default",
    "map",
    "convert",
    "timezone",
}
_CHILD_KEYS = {"table", "query", "parent_key", "order_by", "cursor", "fields", "value"}
_CHANGES_KEYS = {"table", "query", "parent_key", "cursor"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_LINE = re.compile(r"at line (\d+)")


class _Ctx:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def err(self, path: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(self.file, path, message, line))


def load_mappings(directory: Path, only: list[str] | None = None) -> list[Mapping]:
    """Every ``*.toml`` in ``directory``, sorted by the API's dependency order.

    Raises MappingError listing every problem of every file.
    """
    if not directory.is_dir():
        raise MappingError([Problem(str(directory), "", "mappings directory does not exist")])
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise MappingError([Problem(str(directory), "", "no mapping files (*.toml) found")])
    problems: list[Problem] = []
    mappings: list[Mapping] = []
    for f in files:
        try:
            mappings.append(load_mapping_file(f))
        except MappingError as exc:
            problems.extend(exc.problems)
    if only:
        known = {m.name for m in mappings}
        for name in only:
            if name not in known and not any(p.file.endswith(f"{name}.toml") for p in problems):
                problems.append(Problem(str(directory), "", f"no mapping named {name!r}"))
        mappings = [m for m in mappings if m.name in only]
    if problems:
        raise MappingError(problems)
    return sorted(mappings, key=lambda m: (m.resource.rank, m.name))


def mapping_named(directory: Path, name: str) -> Mapping:
    """The mapping ``name`` of the folder (all files validated), or a MappingError naming the
    ones that exist."""
    mappings = {m.name: m for m in load_mappings(directory)}
    if name not in mappings:
        known = ", ".join(sorted(mappings))
        raise MappingError(
            [Problem(str(directory), "", f"no mapping named {name!r}; known: {known}")]
        )
    return mappings[name]


def load_mapping_file(path: Path) -> Mapping:
    ctx = _Ctx(path.name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError([Problem(path.name, "", f"cannot read: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        m = _LINE.search(str(exc))
        raise MappingError(
            [Problem(path.name, "", f"TOML syntax error: {exc}", int(m.group(1)) if m else None)]
        ) from None
    mapping = parse_mapping(data, name=path.stem, ctx=ctx)
    if ctx.problems or mapping is None:
        raise MappingError(ctx.problems)
    return mapping


def parse_mapping(data: dict[str, Any], *, name: str, ctx: _Ctx) -> Mapping | None:
    kind = data.get("kind", "resource")
    if kind != "resource":  # custom data definitions and events: connector.mapping.kinds
        from connector.mapping.kinds import parse_extended

        return parse_extended(data, kind, name=name, ctx=ctx)
    data = {k: v for k, v in data.items() if k != "kind"}
    for k in data:
        if k not in _TOP_KEYS:
            ctx.err(k, f"unknown key (expected one of: {', '.join(sorted(_TOP_KEYS))})")
    res_name = data.get("resource")
    resource = registry.get(res_name) if isinstance(res_name, str) else None
    if resource is None:
        ctx.err(
            "resource",
            f"unknown resource {res_name!r}; known resources: {', '.join(registry.names())}"
            if res_name is not None
            else "missing: name the ShopiMind resource this file feeds",
        )
    source = _source(data.get("source"), ctx)
    fields_data = data.get("fields", {})
    children_data = data.get("children", {})
    if not isinstance(fields_data, dict):
        ctx.err("fields", "must be a table of API field = column or spec")
        fields_data = {}
    if not isinstance(children_data, dict):
        ctx.err("children", "must be a table of child collections")
        children_data = {}
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        ctx.err("enabled", "must be true or false")
    if resource is None or source is None:
        return None
    fields = _fields(resource.fields, fields_data, "fields", ctx, allow_objects=True)
    children = {}
    for cname, cdata in children_data.items():
        child = _child(resource, cname, cdata, source, ctx)
        if child is not None:
            children[cname] = child
    changes = _changes(data.get("changes", {}), source, ctx)
    mapped = set(fields) | set(children)
    for f in resource.fields:
        if f.name in fields and f.name in children:
            ctx.err(f"children.{f.name}", "also mapped under [fields]; map it in one place only")
        if f.required and f.name not in mapped:
            ctx.err("fields", f"required API field {f.name!r} of {resource.name} is not mapped")
    for fname, spec in fields.items():
        if isinstance(spec, ObjectSpec):
            fdef = resource.field(fname)
            assert fdef is not None
            for sub in fdef.fields:
                if sub.required and sub.name not in spec.fields:
                    ctx.err(f"fields.{fname}", f"required API field {sub.name!r} is not mapped")
    if ctx.problems:
        return None
    return Mapping(
        name=name,
        file=ctx.file,
        resource=resource,
        source=source,
        fields=fields,
        children=children,
        enabled=bool(enabled),
        changes=changes,
    )


def _names(value: Any, path: str, ctx: _Ctx, *, required: bool = True) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (required and not value):
        if required or value is not None:
            ctx.err(path, "must be a column name or a list of column names")
        return ()
    out = []
    for v in value:
        if not isinstance(v, str) or not _IDENT.match(v):
            ctx.err(path, f"{v!r} is not a column name")
        else:
            out.append(v)
    return tuple(out)


def _source(data: Any, ctx: _Ctx) -> SourceSpec | None:
    if not isinstance(data, dict):
        ctx.err("source", "missing [source] table (table or query, key, cursor)")
        return None
    for k in data:
        if k not in _SOURCE_KEYS:
            ctx.err(
                f"source.{k}", f"unknown key (expected one of: {', '.join(sorted(_SOURCE_KEYS))})"
            )
    table, query = _table_or_query(data, "source", ctx)
    key = _names(data.get("key"), "source.key", ctx)
    cursor = data.get("cursor")
    if not isinstance(cursor, str) or not _IDENT.match(cursor):
        ctx.err("source.cursor", "must name the watermark column (e.g. 'updated_at')")
        cursor = ""
    fallback = data.get("cursor_fallback")
    if fallback is not None and (not isinstance(fallback, str) or not _IDENT.match(fallback)):
        ctx.err("source.cursor_fallback", "must be a column name")
        fallback = None
    lookback = 300.0
    if "lookback" in data:
        try:
            lookback = timeutil.parse_duration(data["lookback"])
        except ValueError as exc:
            ctx.err("source.lookback", str(exc))
    page_size = data.get("page_size")
    if page_size is not None and (not isinstance(page_size, int) or page_size < 1):
        ctx.err("source.page_size", "must be a positive integer")
        page_size = None
    deleted = _deleted(data.get("deleted"), ctx) if "deleted" in data else None
    if not key or not cursor:
        return None
    return SourceSpec(table, query, key, cursor, fallback, lookback, page_size, deleted)


def _table_or_query(data: dict[str, Any], path: str, ctx: _Ctx) -> tuple[str | None, str | None]:
    table, query = data.get("table"), data.get("query")
    if (table is None) == (query is None):
        ctx.err(path, "set exactly one of 'table' or 'query'")
        return None, None
    if table is not None and (not isinstance(table, str) or not _IDENT.match(table)):
        ctx.err(f"{path}.table", f"{table!r} is not a table name")
        return None, None
    if query is not None:
        if not isinstance(query, str) or not query.strip().lower().startswith(("select", "with")):
            ctx.err(f"{path}.query", "must be a SELECT statement")
            return None, None
        query = query.strip().rstrip(";")
    return table, query


def _deleted(data: Any, ctx: _Ctx) -> DeletedSpec | None:
    path = "source.deleted"
    if not isinstance(data, dict) or not isinstance(data.get("column"), str):
        ctx.err(path, "must be { column = '...', when = 'not_null' | 'true' | { equals = value } }")
        return None
    when = data.get("when", "not_null")
    extra = set(data) - {"column", "when"}
    if extra:
        ctx.err(path, f"unknown key(s): {', '.join(sorted(extra))}")
    if isinstance(when, dict) and set(when) == {"equals"}:
        return DeletedSpec(data["column"], "equals", when["equals"])
    if when in ("not_null", "true"):
        return DeletedSpec(data["column"], when)
    ctx.err(f"{path}.when", "must be 'not_null', 'true' or { equals = value }")
    return None


def _fields(
    defs: tuple[Field, ...],
    data: dict[str, Any],
    prefix: str,
    ctx: _Ctx,
    *,
    allow_objects: bool,
) -> dict[str, Any]:
    known = {f.name: f for f in defs}
    out: dict[str, Any] = {}
    for name, spec in data.items():
        path = f"{prefix}.{name}"
        fdef = known.get(name)
        if fdef is None:
            ctx.err(path, f"unknown API field {name!r}; fields: {', '.join(known)}")
            continue
        if fdef.type == "object":
            if not allow_objects or not isinstance(spec, dict):
                ctx.err(path, f"{name!r} is an object: map it as a [{path}] table of sub-fields")
                continue
            sub = _fields(fdef.fields, spec, path, ctx, allow_objects=False)
            out[name] = ObjectSpec(path, sub)
            continue
        if fdef.type == "objects" or (
            fdef.type in registry.LIST_TYPES
            and isinstance(spec, dict)
            and "column" not in spec
            and "const" not in spec
        ):
            ctx.err(path, f"{name!r} is a list: map it under [children.{name}]")
            continue
        value = _value(spec, path, ctx)
        if value is not None:
            out[name] = value
    return out


def _value(spec: Any, path: str, ctx: _Ctx) -> ValueSpec | None:
    if isinstance(spec, str):
        if not _IDENT.match(spec):
            ctx.err(path, f"{spec!r} is not a column name (use {{ const = ... }} for a constant)")
            return None
        return ValueSpec(path, "column", column=spec)
    if not isinstance(spec, dict):
        ctx.err(path, "must be a column name or a table like { column = ..., convert = ... }")
        return None
    for k in spec:
        if k not in _VALUE_KEYS:
            ctx.err(
                f"{path}.{k}", f"unknown key (expected one of: {', '.join(sorted(_VALUE_KEYS))})"
            )
    sources = [k for k in ("column", "const", "concat", "coalesce", "template") if k in spec]
    if len(sources) != 1:
        ctx.err(path, "set exactly one of column, const, concat, coalesce or template")
        return None
    kind = sources[0]
    converts: tuple[str, ...] = ()
    if "convert" in spec:
        raw = spec["convert"]
        raw = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
            ctx.err(f"{path}.convert", "must be a conversion name or a list of them")
        else:
            for c in raw:
                if c not in CONVERSIONS:
                    ctx.err(
                        f"{path}.convert",
                        f"unknown conversion {c!r}; known: {', '.join(sorted(CONVERSIONS))}",
                    )
            converts = tuple(raw)
    value_map = None
    map_default = NO_DEFAULT
    if "map" in spec:
        if not isinstance(spec["map"], dict):
            ctx.err(f"{path}.map", "must be a table of shop value = API value")
        else:
            value_map = {str(k): v for k, v in spec["map"].items()}
    default = spec.get("default", NO_DEFAULT)
    if value_map is not None and default is not NO_DEFAULT:
        map_default, default = default, NO_DEFAULT
    tz = spec.get("timezone")
    if tz is not None:
        try:
            timeutil.zone(str(tz))
        except ValueError as exc:
            ctx.err(f"{path}.timezone", str(exc))
    common: dict[str, Any] = dict(
        default=default,
        value_map=value_map,
        map_default=map_default,
        converts=converts,
        timezone=tz,
    )
    if kind == "column":
        col = spec["column"]
        if not isinstance(col, str) or not _IDENT.match(col):
            ctx.err(f"{path}.column", f"{col!r} is not a column name")
            return None
        return ValueSpec(path, "column", column=col, **common)
    if kind == "const":
        return ValueSpec(path, "const", const=spec["const"], **common)
    if kind == "coalesce":
        cols = _names(spec["coalesce"], f"{path}.coalesce", ctx)
        return ValueSpec(path, "coalesce", columns=cols, **common)
    if kind == "concat":
        cols = _names(spec["concat"], f"{path}.concat", ctx)
        sep = spec.get("sep", "")
        if not isinstance(sep, str):
            ctx.err(f"{path}.sep", "must be a string")
            sep = ""
        return ValueSpec(path, "concat", columns=cols, sep=sep, **common)
    template = spec["template"]
    if not isinstance(template, str):
        ctx.err(f"{path}.template", "must be a string like 'https://shop/p/{id}'")
        return None
    try:
        list(string.Formatter().parse(template))
    except ValueError as exc:
        ctx.err(f"{path}.template", f"invalid template: {exc}")
        return None
    return ValueSpec(path, "template", template=template, **common)


def _child(
    resource: Resource, name: str, data: Any, source: SourceSpec, ctx: _Ctx
) -> ChildSpec | None:
    path = f"children.{name}"
    fdef = resource.field(name)
    if fdef is None:
        ctx.err(path, f"unknown API field {name!r} of {resource.name}")
        return None
    if fdef.type not in ("objects", *registry.LIST_TYPES):
        ctx.err(path, f"{name!r} is not a list field ({fdef.type}); map it under [fields]")
        return None
    if not isinstance(data, dict):
        ctx.err(path, "must be a table (table/query, parent_key, fields or value)")
        return None
    for k in data:
        if k not in _CHILD_KEYS:
            ctx.err(
                f"{path}.{k}", f"unknown key (expected one of: {', '.join(sorted(_CHILD_KEYS))})"
            )
    table, query = _table_or_query(data, path, ctx)
    pairs = _parent_key(data.get("parent_key"), path, source, ctx)
    order_by = _names(data.get("order_by"), f"{path}.order_by", ctx, required=False)
    cursor = data.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not _IDENT.match(cursor)):
        ctx.err(f"{path}.cursor", "must be a column name")
        cursor = None
    if fdef.type == "objects":
        if "value" in data:
            ctx.err(f"{path}.value", f"{name!r} is a list of objects: use [{path}.fields]")
        sub = data.get("fields")
        if not isinstance(sub, dict):
            ctx.err(f"{path}.fields", "missing: map the child fields")
            return None
        fields = _fields(fdef.fields, sub, f"{path}.fields", ctx, allow_objects=False)
        for f in fdef.fields:
            if f.required and f.name not in fields:
                ctx.err(f"{path}.fields", f"required API field {f.name!r} is not mapped")
        value = None
    else:
        if "fields" in data:
            ctx.err(f"{path}.fields", f"{name!r} is a list of ids: use value = 'column'")
        value = _value(data.get("value"), f"{path}.value", ctx) if "value" in data else None
        if value is None and "value" not in data:
            ctx.err(f"{path}.value", "missing: name the column whose values make the list")
        fields = {}
    if not pairs or (table is None and query is None):
        return None
    return ChildSpec(name, path, table, query, pairs, order_by, cursor, fields, value)


def _parent_key(pk: Any, path: str, source: SourceSpec, ctx: _Ctx) -> tuple[tuple[str, str], ...]:
    """``parent_key``: (child column, parent column) pairs."""
    if isinstance(pk, dict):
        if not pk or not all(isinstance(v, str) and _IDENT.match(v) for v in pk.values()):
            ctx.err(f"{path}.parent_key", "must map child column = parent column")
            return ()
        return tuple((str(c), str(p)) for c, p in pk.items())
    cols = _names(pk, f"{path}.parent_key", ctx)
    if cols and len(cols) != len(source.key):
        ctx.err(
            f"{path}.parent_key",
            f"has {len(cols)} column(s) but the parent key {list(source.key)} has "
            f"{len(source.key)}; use a table {{ child_col = 'parent_col' }} to pair them",
        )
    return tuple(zip(cols, source.key, strict=False))


def _changes(data: Any, source: SourceSpec, ctx: _Ctx) -> dict[str, ChildSpec]:
    """``[changes.NAME]``: another table whose changed rows (by its own cursor) re-send the
    parent rows they link to, like a child collection with a cursor that fills no field. So a
    source joining several tables can take one indexed column as its cursor instead of the
    later of their timestamps, which no index serves."""
    if not isinstance(data, dict):
        ctx.err("changes", "must be a table of [changes.NAME] tables")
        return {}
    out: dict[str, ChildSpec] = {}
    for name, item in data.items():
        path = f"changes.{name}"
        if not isinstance(item, dict):
            ctx.err(path, "must be a table (table/query, parent_key, cursor)")
            continue
        for k in item:
            if k not in _CHANGES_KEYS:
                keys = ", ".join(sorted(_CHANGES_KEYS))
                ctx.err(f"{path}.{k}", f"unknown key (expected one of: {keys})")
        table, query = _table_or_query(item, path, ctx)
        pairs = _parent_key(item.get("parent_key"), path, source, ctx)
        cursor = item.get("cursor")
        if not isinstance(cursor, str) or not _IDENT.match(cursor):
            ctx.err(f"{path}.cursor", "missing or not a column name: the column that changes")
            continue
        if pairs and (table is not None or query is not None):
            out[name] = ChildSpec(name, path, table, query, pairs, cursor=cursor)
    return out

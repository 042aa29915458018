"""Compile a validated mapping once into plain per-row functions.

A compiled mapping turns a row (a ``dict`` of column → value) and its child rows into an API item,
or into the list of reasons it cannot (bad data: the row is kept as a rejected item).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from connector import timeutil
from connector.mapping.convert import CONVERSIONS, NULL_AWARE, coercer, to_string
from connector.mapping.spec import NO_DEFAULT, ChildSpec, Mapping, ObjectSpec, ValueSpec
from connector.registry import Field

Row = dict[str, Any]
_MISSING: Any = object()


class MissingColumn(Exception):
    """A column named by the mapping is absent from the row: a mapping error, not bad data."""

    def __init__(self, path: str, column: str) -> None:
        super().__init__(f"{path}: column {column!r} is not in the source rows")
        self.path = path
        self.column = column

    def __reduce__(self) -> tuple[type[MissingColumn], tuple[str, str]]:
        return MissingColumn, (self.path, self.column)  # raised in a mapping worker, too


class FieldProblem(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def get_column(row: Row, column: str) -> Any:
    v = row.get(column, _MISSING)
    if v is _MISSING:
        v = row.get(column.lower(), _MISSING)
        if v is _MISSING:
            raise KeyError(column)
    return v


def _source_fn(spec: ValueSpec) -> Callable[[Row], Any]:
    if spec.kind == "const":
        const = spec.const
        return lambda row: const
    if spec.kind == "column":
        col = spec.column
        assert col is not None

        def column(row: Row) -> Any:
            return get_column(row, col)

        return column
    if spec.kind == "coalesce":
        first = spec.columns

        def coalesce(row: Row) -> Any:
            for c in first:
                v = get_column(row, c)
                if v is not None:
                    return v
            return None

        return coalesce
    if spec.kind == "concat":
        cols, sep = spec.columns, spec.sep

        def concat(row: Row) -> Any:
            parts = [get_column(row, c) for c in cols]
            kept = [to_string(p) for p in parts if p is not None and p != ""]
            return sep.join(kept) if kept else None

        return concat
    template = spec.template
    assert template is not None
    names = [n for _, n, _, _ in string.Formatter().parse(template) if n]

    def render(row: Row) -> Any:
        values: dict[str, str] = {}
        for n in dict.fromkeys(n.split(".")[0].split("[")[0] for n in names):
            v = get_column(row, n)
            values[n] = "" if v is None else to_string(v)
        return template.format(**values)

    return render


def _null_problem(spec: ValueSpec) -> str:
    cols = ", ".join(repr(c) for c in spec.referenced_columns)
    if spec.kind == "column":
        return f"required by the API but column {cols} is NULL"
    if cols:
        return f"required by the API but columns {cols} are NULL"
    return "required by the API but the value is NULL"


def _plain_column(spec: ValueSpec) -> bool:
    """One column converted to the field's type, nothing else declared: the common case."""
    return (
        spec.kind == "column"
        and not spec.converts
        and spec.value_map is None
        and spec.default is NO_DEFAULT
    )


def compile_value(spec: ValueSpec, fdef: Field, shop_tz: tzinfo) -> Callable[[Row], Any]:
    """row → API value, raising FieldProblem for bad data."""
    steps = [(name, CONVERSIONS[name]) for name in spec.converts]
    vmap, map_default, default = spec.value_map, spec.map_default, spec.default
    tz = timeutil.zone(spec.timezone) if spec.timezone else shop_tz
    convert = coercer(fdef, tz)
    path = spec.path
    required = fdef.required
    null_problem = _null_problem(spec)

    if _plain_column(spec):
        # the common case, one column converted to the field's type: no generic steps per row
        col = spec.column
        assert col is not None
        low = col.lower()

        def column_value(row: Row) -> Any:
            v = row.get(col, _MISSING)
            if v is _MISSING:
                v = row.get(low, _MISSING)
                if v is _MISSING:
                    raise MissingColumn(path, col)
            if v is None:
                if required:
                    raise FieldProblem(path, null_problem)
                return None
            try:
                return convert(v)
            except ValueError as exc:
                raise FieldProblem(path, str(exc)) from None

        return column_value

    source = _source_fn(spec)

    def value(row: Row) -> Any:
        try:
            v = source(row)
        except KeyError as exc:
            raise MissingColumn(path, str(exc.args[0])) from None
        try:
            for name, fn in steps:
                if v is not None or name in NULL_AWARE:
                    v = fn(v)
        except ValueError as exc:
            raise FieldProblem(path, str(exc)) from None
        if vmap is not None and v is not None:
            k = to_string(v)
            if k in vmap:
                v = vmap[k]
            elif map_default is not NO_DEFAULT:
                v = map_default
            else:
                raise FieldProblem(
                    path, f"value {k!r} is not in the value map (add it, or set a default)"
                )
        if v is None and default is not NO_DEFAULT:
            v = default
        if v is None:
            if required:
                raise FieldProblem(path, null_problem)
            return None
        try:
            return convert(v)
        except ValueError as exc:
            raise FieldProblem(path, str(exc)) from None

    return value


@dataclass(frozen=True)
class Built:
    item: dict[str, Any] | None
    problems: tuple[str, ...] = ()


ObjectFn = Callable[[Row, list[str]], dict[str, Any]]


def _compile_object(
    specs: dict[str, ValueSpec], defs: tuple[Field, ...], shop_tz: tzinfo
) -> ObjectFn:
    """One function building the object's dict from a row, problems appended to ``problems``.

    It is generated as Python source (as ``dataclasses`` does) so that the common field, one
    column converted to its type, costs no function call of its own: the generic loop over
    per-field closures was a third of the mapping time. The source refers to names only (every
    column name, path and converter is a value in the function's namespace, never text in the
    code), and behaves exactly as ``compile_value``'s functions called in turn."""
    by_name = {f.name: f for f in defs}
    ns: dict[str, Any] = {
        "_MISSING": _MISSING,
        "MissingColumn": MissingColumn,
        "FieldProblem": FieldProblem,
    }
    code = ["def build(row, problems):", "    out = {}", "    get = row.get"]
    for i, (name, spec) in enumerate(specs.items()):
        fdef = by_name[name]
        ns[f"n{i}"] = name
        if not _plain_column(spec):
            ns[f"f{i}"] = compile_value(spec, fdef, shop_tz)
            code += [
                "    try:",
                f"        out[n{i}] = f{i}(row)",
                "    except FieldProblem as exc:",
                "        problems.append(str(exc))",
            ]
            continue
        tz = timeutil.zone(spec.timezone) if spec.timezone else shop_tz
        assert spec.column is not None
        ns |= {f"c{i}": spec.column, f"l{i}": spec.column.lower(), f"p{i}": spec.path}
        ns[f"k{i}"] = coercer(fdef, tz)
        ns[f"e{i}"] = str(FieldProblem(spec.path, _null_problem(spec)))
        code += [
            f"    v = get(c{i}, _MISSING)",
            "    if v is _MISSING:",
            f"        v = get(l{i}, _MISSING)",
            "        if v is _MISSING:",
            f"            raise MissingColumn(p{i}, c{i})",
            "    if v is None:",
            f"        problems.append(e{i})" if fdef.required else f"        out[n{i}] = None",
            "    else:",
            "        try:",
            f"            out[n{i}] = k{i}(v)",
            "        except ValueError as exc:",
            f"            problems.append(str(FieldProblem(p{i}, str(exc))))",
        ]
    code.append("    return out")
    exec("\n".join(code), ns)  # generated from names only, see above
    build: ObjectFn = ns["build"]
    return build


def _compile_child(
    child: ChildSpec, fdef: Field, shop_tz: tzinfo
) -> Callable[[list[Row], list[str]], list[Any]]:
    if child.value is not None:
        item_def = Field(fdef.name, "id_string" if fdef.type == "id_strings" else "id_number", True)
        one = compile_value(child.value, item_def, shop_tz)

        def ids(rows: list[Row], problems: list[str]) -> list[Any]:
            out = []
            for r in rows:
                try:
                    out.append(one(r))
                except FieldProblem as exc:
                    problems.append(str(exc))
            return out

        return ids
    build = _compile_object(child.fields, fdef.fields, shop_tz)

    def objects(rows: list[Row], problems: list[str]) -> list[Any]:
        return [build(r, problems) for r in rows]

    return objects


def _placeholders(path: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(path) if name]


class CompiledMapping:
    """A mapping compiled into functions; ``build`` is called once per row."""

    def __init__(self, mapping: Mapping, shop_tz: tzinfo, id_data_source: int | None = None):
        self.mapping = mapping
        self.shop_tz = shop_tz
        self.id_data_source = id_data_source
        res = mapping.resource
        plain: dict[str, ValueSpec] = {}
        objects: list[tuple[str, ObjectFn, bool, tuple[str, ...]]] = []
        for name, spec in mapping.fields.items():
            fdef = res.field(name)
            assert fdef is not None
            if isinstance(spec, ObjectSpec):
                cols = tuple(c for v in spec.fields.values() for c in v.referenced_columns)
                fn = _compile_object(spec.fields, fdef.fields, shop_tz)
                objects.append((name, fn, fdef.required, cols))
            else:
                plain[name] = spec
        self._plain = _compile_object(plain, res.fields, shop_tz)
        self._objects = objects
        self._children = []
        for name, child in mapping.children.items():
            fdef = res.field(name)
            assert fdef is not None
            self._children.append((name, _compile_child(child, fdef, shop_tz)))
        self._extra: dict[str, Any] = {}
        if id_data_source is not None and res.accepts_data_source and "id_data_source" not in plain:
            self._extra["id_data_source"] = id_data_source
        self._field_order = [f.name for f in res.fields]
        made = {*plain, *(name for name, *_ in objects), *(name for name, _ in self._children)}
        self._order = [k for k in self._field_order if k in made or k in self._extra]
        self._delete_fns: list[tuple[str, Callable[[Row], Any]]] = []
        if res.delete_path and res.delete_id_field:
            needed = [res.delete_id_field, *_placeholders(res.delete_path)]
            for fname in dict.fromkeys(needed):
                vspec = plain.get(fname)
                fdef = res.field(fname)
                if vspec is not None and fdef is not None:
                    self._delete_fns.append((fname, compile_value(vspec, fdef, shop_tz)))

    @property
    def can_delete(self) -> bool:
        res = self.mapping.resource
        return bool(res.delete_path) and len(self._delete_fns) == 1 + len(
            _placeholders(res.delete_path or "")
        )

    def delete_ref(self, row: Row) -> tuple[str, Any]:
        """(bulk-delete path with placeholders filled, id to delete) for a deleted row."""
        res = self.mapping.resource
        assert res.delete_path and res.delete_id_field
        values = {}
        for fname, fn in self._delete_fns:
            try:
                values[fname] = fn(row)
            except FieldProblem as exc:
                raise ValueError(str(exc)) from None
        path = res.delete_path.format(
            **{k: v for k, v in values.items() if k != res.delete_id_field}
        )
        return path, values[res.delete_id_field]

    def build(self, row: Row, children: dict[str, list[Row]] | None = None) -> Built:
        problems: list[str] = []
        item = self._plain(row, problems)
        for name, fn, required, cols in self._objects:
            if not required and cols and all(row.get(c) is None for c in cols):
                continue  # an optional object with nothing in it (e.g. an anonymous cart)
            item[name] = fn(row, problems)
        for name, cfn in self._children:
            item[name] = cfn((children or {}).get(name, []), problems)
        if problems:
            return Built(None, tuple(problems))
        item.update(self._extra)
        return Built({k: item[k] for k in self._order if k in item})

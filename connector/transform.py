"""Pure transformation of a page of rows: row → API item + content hash, or delete, or reject."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from connector.mapping.compile import CompiledMapping, MissingColumn
from connector.mapping.compile import get_column as _get
from connector.mapping.convert import to_bool
from connector.mapping.spec import ChildSpec, DeletedSpec, Mapping
from connector.source.query import CURSOR_LABEL
from connector.state.model import key_json

Row = dict[str, Any]
_MISSING: Any = object()


def get_column(row: Row, column: str, path: str = "source") -> Any:
    try:
        return _get(row, column)
    except KeyError:
        raise MissingColumn(path, column) from None


# what json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False) does, built once;
# items are trees built afresh for each row, so the check for reference cycles is skipped
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
)


def payload_hash(item: Any) -> str:
    """A stable hash of an item's JSON: the same content always gives the same hash."""
    return hashed_json(item)[0]


def hashed_json(item: Any) -> tuple[str, bytes]:
    """The payload hash and the canonical JSON it hashes (UTF-8), which is also a valid request
    body for the item: the send threads reuse it instead of encoding the item a second time."""
    data = _CANONICAL.encode(item).encode("utf-8")
    return hashlib.sha256(data).hexdigest(), data


DELETE_HASH = "deleted"


@dataclass(frozen=True)
class Unit:
    """What to do with one source row."""

    kind: Literal["send", "delete", "reject"]
    key: tuple[Any, ...]
    key_text: str
    position: tuple[Any, tuple[Any, ...]] | None  # (cursor value, key); None for NULL cursors
    item: dict[str, Any] | None = None
    hash: str = ""
    problems: tuple[str, ...] = ()
    body: bytes = b""  # the item's canonical JSON (what ``hash`` hashes), for the request


def row_key(row: Row, mapping: Mapping) -> tuple[Any, ...]:
    return tuple(get_column(row, k, "source.key") for k in mapping.source.key)


def is_deleted(row: Row, spec: DeletedSpec | None) -> bool:
    if spec is None:
        return False
    v = get_column(row, spec.column, "source.deleted")
    if spec.when == "not_null":
        return v is not None
    if spec.when == "true":
        try:
            return v is not None and to_bool(v)
        except ValueError:
            return False
    return v is not None and str(v) == str(spec.value)


def group_children(child: ChildSpec, rows: Sequence[Row]) -> dict[tuple[Any, ...], list[Row]]:
    out: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    cols = child.child_columns
    where = f"{child.path}.parent_key"
    if len(cols) == 1:  # the usual one-column link, without a generator per row
        (col,) = cols
        for r in rows:
            v = r.get(col, _MISSING)
            out[(get_column(r, col, where) if v is _MISSING else v,)].append(r)
        return out
    for r in rows:
        out[tuple([get_column(r, c, where) for c in cols])].append(r)
    return out


def parent_link(row: Row, child: ChildSpec) -> tuple[Any, ...]:
    return tuple(get_column(row, c, f"{child.path}.parent_key") for c in child.parent_columns)


def transform_page(
    compiled: CompiledMapping,
    rows: Sequence[Row],
    children: dict[str, dict[tuple[Any, ...], list[Row]]],
) -> list[Unit]:
    """Turn a page of rows (with their children grouped by parent link) into units, in order."""
    mapping = compiled.mapping
    keys = mapping.source.key
    deleted = mapping.source.deleted
    links = [
        (name, child.parent_columns, children.get(name, {}), f"{child.path}.parent_key")
        for name, child in mapping.children.items()
    ]
    build = compiled.build
    units: list[Unit] = []
    append = units.append
    for row in rows:
        key = tuple([get_column(row, k, "source.key") for k in keys])
        # key_json of the usual one-integer key, without the JSON encoder (the same text)
        ktext = f"[{key[0]}]" if len(key) == 1 and type(key[0]) is int else key_json(key)
        cur = row.get(CURSOR_LABEL)
        pos = (cur, key) if cur is not None else None
        if deleted is not None and is_deleted(row, deleted):
            append(Unit("delete", key, ktext, pos, hash=DELETE_HASH))
            continue
        kids = {
            name: grouped.get(tuple([get_column(row, c, where) for c in cols]), [])
            for name, cols, grouped, where in links
        }
        built = build(row, kids)
        if built.item is None:
            append(Unit("reject", key, ktext, pos, problems=built.problems))
        else:
            digest, body = hashed_json(built.item)
            append(Unit("send", key, ktext, pos, built.item, digest, body=body))
    return units

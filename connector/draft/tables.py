"""What ``draft`` reads from one table of the shop's schema: its language column, its single
primary key, the tables it refers to, its translations, whether it is a link table, its change
cursor and its soft-delete column."""

from __future__ import annotations

import re

from connector.draft import words
from connector.draft.match import looks_lang
from connector.draft.schema import Column, Table
from connector.registry import Resource

_USABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def usable(name: str) -> bool:
    """A column name the mapping language takes as it is (ASCII letters, digits, _)."""
    return bool(_USABLE.match(name))


def names_match(name: str, syns: tuple[str, ...]) -> float:
    n = words.norm(name)
    if n in syns:
        return 1.0
    toks = words.tokens(name)
    return 0.5 if any(s in toks for s in syns) else 0.0


def lang_column(t: Table) -> str | None:
    if "lang" not in t.memo:
        t.memo["lang"] = _lang_column(t)
    found: str | None = t.memo["lang"]
    return found


def _lang_column(t: Table) -> str | None:
    for c in t.columns.values():
        if not usable(c.name):
            continue
        if words.norm(c.name) in words.FIELDS["lang"] and c.kind == "str":
            return c.name
    for c in t.columns.values():
        if usable(c.name) and c.kind == "str" and c.values and looks_lang(c):
            return c.name
    return None


def single_pk(t: Table) -> str | None:
    pk = [c for c in t.pk if c != lang_column(t)]
    return pk[0] if len(pk) == 1 and usable(pk[0]) else None


def refs_to(child: Table, parent: Table) -> str | None:
    """The column of ``child`` referring to ``parent``'s (single) primary key."""
    for fk in child.fks:
        if fk.table == parent.name and len(fk.columns) == 1 and usable(fk.columns[0]):
            return fk.columns[0]
    return None


def translations_of(t: Table, tables: dict[str, Table]) -> tuple[Table, str, str] | None:
    """(translations table, its column referring to ``t``, its language column)."""
    for u in tables.values():
        if u.name == t.name:
            continue
        ref = refs_to(u, t)
        lang = lang_column(u) if ref else None
        if ref and lang and {ref, lang} <= set(u.pk) | {c for uq in u.unique for c in uq}:
            return u, ref, lang
    return None


def is_translations(t: Table, tables: dict[str, Table]) -> bool:
    return any(
        (tr := translations_of(p, tables)) is not None and tr[0].name == t.name
        for p in tables.values()
    )


def is_link(t: Table) -> bool:
    fk_cols = {fk.columns[0] for fk in t.fks if len(fk.columns) == 1}
    return len(fk_cols) >= 2 and set(t.pk) <= fk_cols and len(t.columns) <= 4


def cursor_of(t: Table) -> tuple[str | None, str | None, str, list[str]]:
    """(cursor, fallback, why, warnings) for table ``t``."""
    ts = [c for c in t.columns.values() if c.kind == "ts" and usable(c.name)]
    best: tuple[float, Column] | None = None
    for c in ts:
        s = names_match(c.name, words.FIELDS["updated_at"])
        if s == 0.0:
            continue
        s += 0.2 if c.name in t.indexed else 0.0
        s += 0.1 if len(set(c.values)) > 1 else 0.0
        if best is None or s > best[0]:
            best = (s, c)
    created = _created(t)
    warnings: list[str] = []
    if best is None:
        if created is None:
            return None, None, "", [f"{t.name} has no change-timestamp column"]
        why = (
            f"{created.name}: no update timestamp found, so only NEW rows are seen; "
            "changes to existing rows are not"
        )
        warnings.append(why)
        cursor, fallback = created, None
    else:
        cursor = best[1]
        moving = len(set(cursor.values))
        why = (
            f"{cursor.name}: a change timestamp by its name and type "
            f"({moving} distinct value(s) in {len(cursor.samples)} sampled rows)"
        )
        fallback = None
        if cursor.has_nulls and created is not None and created.name != cursor.name:
            fallback = created
            nulls = sum(v is None for v in cursor.samples)
            why += (
                f"; {nulls} sampled row(s) have it NULL, so {created.name} stands in there "
                "(cursor_fallback)"
            )
    if cursor.name not in t.indexed:
        warnings.append(
            f"no index on {t.name}.{cursor.name}: every pass scans the table; "
            f"CREATE INDEX ix_{t.name}_{cursor.name} ON {t.name} ({cursor.name})"
        )
    return cursor.name, fallback.name if fallback else None, why, warnings


def _created(t: Table) -> Column | None:
    for c in t.columns.values():
        if (
            c.kind == "ts"
            and usable(c.name)
            and names_match(c.name, words.FIELDS["created_at"]) == 1.0
        ):
            return c
    for c in t.columns.values():
        if c.kind == "ts" and usable(c.name) and names_match(c.name, words.FIELDS["created_at"]):
            return c
    return None


def deleted_of(t: Table, resource: Resource) -> tuple[str, str, str] | None:
    """(column, when, why) of a soft-delete column; none when the resource sends a deleted flag
    of its own (``is_deleted``)."""
    if resource.field("is_deleted") is not None:
        return None
    for c in t.columns.values():
        if usable(c.name) and words.norm(c.name) in words.DELETED:
            if c.kind in ("ts", "date"):
                return c.name, "not_null", f"{c.name} is set on soft-deleted rows"
            if c.flag_like():
                return c.name, "true", f"{c.name} is 1/true on soft-deleted rows"
    return None


def fk_table(t: Table, column: str) -> str | None:
    fk = t.fk_of(column)
    return fk.table if fk else None

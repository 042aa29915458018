"""A draft mapping for one resource and one table: the source (table, or a query joining its
translations and looking columns up through foreign keys), key, cursor, soft delete, fields,
child collections and watched tables. Rendered as TOML by :mod:`connector.draft.render`."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from connector.draft import words
from connector.draft.match import BASE_URL, Avail, Choice, Matched, Todo, looks_lang, match_fields
from connector.draft.schema import Column, Table
from connector.registry import Field, Resource

SKIP_FIELDS = {"shop_id", "id_data_source"}
OWN_ID = {
    "customers_groups": "group_id",
    "orders_statuses": "status_id",
    "orders_carriers": "carrier_id",
    "products_categories": "category_id",
    "products_manufacturers": "manufacturer_id",
    "customers": "customer_id",
    "customers_addresses": "address_id",
    "products": "product_id",
    "products_variations": "variation_id",
    "products_images": "image_id",
    "vouchers": "voucher_id",
    "orders": "order_id",
    "carts": "cart_id",
}
# the resource a nested resource belongs to (its id field is part of the API's key)
PARENT_ID = {
    "customers_addresses": "customer_id",
    "products_variations": "product_id",
    "products_images": "product_id",
}


@dataclass
class Child:
    """A ``[children.NAME]`` or ``[changes.NAME]`` table."""

    name: str
    note: str
    parent_key: dict[str, str]
    table: str | None = None
    query: str | None = None
    order_by: list[str] = field(default_factory=list)
    cursor: str | None = None
    value: str | None = None
    fields: Matched | None = None
    source_table: str | None = None  # the child rows' table (also when read by a query)


@dataclass
class Plan:
    resource: Resource
    table: str
    header: list[str]
    key: list[str]
    key_note: str
    cursor: str
    cursor_note: str
    fallback: str | None = None
    query: str | None = None
    deleted: tuple[str, str] | None = None
    deleted_note: str = ""
    warnings: list[str] = field(default_factory=list)
    fields: Matched = field(default_factory=Matched)
    objects: dict[str, Matched] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    changes: list[Child] = field(default_factory=list)

    @property
    def todos(self) -> list[Todo]:
        out = list(self.fields.todos)
        for name, m in self.objects.items():
            out += [Todo(f"{name}.{t.field}", t.required, t.note) for t in m.todos]
        for c in self.children:
            if c.fields is not None:
                out += [Todo(f"{c.name}.{t.field}", t.required, t.note) for t in c.fields.todos]
        return out

    @property
    def choices(self) -> list[Choice]:
        out = list(self.fields.choices)
        for name, m in self.objects.items():
            out += [_renamed(c, f"{name}.{c.field}") for c in m.choices]
        for c in self.children:
            if c.fields is not None:
                out += [_renamed(x, f"{c.name}.{x.field}") for x in c.fields.choices]
        return out


_USABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def usable(name: str) -> bool:
    """A column name the mapping language takes as it is (ASCII letters, digits, _)."""
    return bool(_USABLE.match(name))


def _renamed(c: Choice, name: str) -> Choice:
    return Choice(name, c.spec, c.note, c.confidence, c.columns)


def _names_match(name: str, syns: tuple[str, ...]) -> float:
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
        s = _names_match(c.name, words.FIELDS["updated_at"])
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
            and _names_match(c.name, words.FIELDS["created_at"]) == 1.0
        ):
            return c
    for c in t.columns.values():
        if c.kind == "ts" and usable(c.name) and _names_match(c.name, words.FIELDS["created_at"]):
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


class _Source:
    """The columns a draft's source rows carry and the SQL that makes them."""

    def __init__(self, base: Table, tables: dict[str, Table]) -> None:
        self.base, self.tables = base, tables
        self.avail: list[Avail] = [
            Avail(c.name, c, base.name, fk_table=_fk_table(base, c.name))
            for c in base.columns.values()
            if usable(c.name)
        ]
        self.joins: list[str] = []
        self.extra: list[str] = []  # select-list entries beyond m.*
        self.where: list[str] = []
        self.notes: list[str] = []  # for the file's header

    @property
    def joined(self) -> bool:
        return bool(self.joins or self.extra or self.where)

    def names(self) -> set[str]:
        return {a.name for a in self.avail}

    def join(self, other: Table, alias: str, on: str) -> None:
        self.joins.append(f"JOIN {other.name} {alias} ON {on}")
        for c in other.columns.values():
            if not usable(c.name):
                continue
            name = c.name if c.name not in self.names() else f"{alias}_{c.name}"
            self.extra.append(f"{alias}.{c.name}" + (f" AS {name}" if name != c.name else ""))
            self.avail.append(
                Avail(
                    name, c, other.name, expr=f"{alias}.{c.name}", fk_table=_fk_table(other, c.name)
                )
            )

    def lookups(self, fk_col: str, prefix: str) -> list[Avail]:
        """Columns of the table ``fk_col`` refers to, as ``prefix_<column>`` (not yet added)."""
        target = self.tables.get(_fk_table(self.base, fk_col) or "")
        pk = single_pk(target) if target else None
        if target is None or pk is None:
            return []
        return [
            Avail(
                f"{prefix}_{c.name}",
                c,
                target.name,
                expr=f"(SELECT x.{c.name} FROM {target.name} x WHERE x.{pk} = m.{fk_col})",
                fk_table=_fk_table(target, c.name),
                lookup=True,
            )
            for c in target.columns.values()
            if c.name != pk and usable(c.name)
        ]

    def use(self, a: Avail) -> None:
        if a.expr is not None and a.name not in self.names():
            self.avail.append(a)
            self.extra.append(f"{a.expr} AS {a.name}")

    def sql(self) -> str | None:
        if not self.joined:
            return None
        lines = ["SELECT m.*"]
        for e in self.extra:
            lines[-1] += ","
            lines.append(f"       {e}")
        lines.append(f"FROM {self.base.name} m")
        lines += self.joins
        if self.where:
            lines.append("WHERE " + " AND ".join(self.where))
        return "\n".join(lines)


def _fk_table(t: Table, column: str) -> str | None:
    fk = t.fk_of(column)
    return fk.table if fk else None


def build_plan(resource: Resource, base: Table, tables: dict[str, Table]) -> Plan:
    src = _Source(base, tables)
    header: list[str] = []
    odd = [c for c in base.columns if not usable(c)]
    if odd:
        header.append(
            f"TODO: column(s) {', '.join(repr(c) for c in odd)} of {base.name} have names a "
            "mapping cannot use as they are, so no field was matched to them: to use one, read "
            'the table through a query that renames it (SELECT ..., "Prénom" AS prenom).'
        )
    pk = single_pk(base)
    cursor, fallback, cursor_why, warnings = cursor_of(base)
    plan = Plan(
        resource,
        base.name,
        header,
        [],
        "",
        cursor or "TODO",
        cursor_why,
        fallback,
        warnings=warnings,
    )
    if cursor is None:
        plan.cursor_note = "TODO: no timestamp column found; name the column that changes"
    skip = set(SKIP_FIELDS)
    key: list[str] = []
    key_notes: list[str] = []
    done: list[Choice] = []

    own = OWN_ID.get(resource.name)
    parent_field = PARENT_ID.get(resource.name)
    if parent_field:
        fdef = resource.field(parent_field)
        assert fdef is not None
        m = match_fields((fdef,), src.avail, tables, set())
        if m.choices:
            ch = m.choices[0]
            key.append(ch.columns[0])
            key_notes.append(
                f"{ch.columns[0]} ({parent_field}): the delete route needs the parent's id"
            )
            done.append(ch)
            skip.add(parent_field)
    if own and pk:
        key.append(pk)
        key_notes.append(f"{pk}: the primary key of {base.name}")
        done.append(Choice(own, pk, f"{base.name}.{pk}, its primary key", "high", (pk,)))
        skip.add(own)
    elif base.pk:  # no primary key of one column (besides a language): all of it
        key += [c for c in base.pk if c not in key]
        key_notes.append(f"{', '.join(base.pk)}: the primary key of {base.name}")
        thing = words.norm(own.removesuffix("_id")) if own else ""
        names = {"id", f"{thing}id", f"id{thing}"}
        named = next((c for c in base.pk if own and words.norm(c) in names), None)
        if own and named:
            note = f"{base.name}.{named}, part of its primary key ({', '.join(base.pk)})"
            done.append(Choice(own, named, note, "medium", (named,)))
            skip.add(own)

    # one item per language
    tr = translations_of(base, tables) if pk else None
    lang_col = lang_column(base)
    needs_lang = "lang" in resource.key
    if tr is not None:
        u, ref, ulang = tr
        src.join(u, "t", f"t.{ref} = m.{pk}")
        header.append(
            f"One item per {base.name} row and language: the query joins {u.name} "
            f"(keyed by {ref} + {ulang})."
        )
        lang_name = ulang if ulang not in {c.name for c in base.columns.values()} else f"t_{ulang}"
        key.append(lang_name)
        key_notes.append(f"{lang_name}: the translation's language")
        u_cursor, _, _, _ = cursor_of(u)
        if u_cursor and cursor:
            plan.changes.append(
                Child(
                    "translations",
                    f"a changed {u.name} row re-sends its {base.name} row in that language "
                    "(the cursor stays on the indexed main table)",
                    {ref: pk or ""},
                    table=u.name,
                    cursor=u_cursor,
                )
            )
            main = f"COALESCE(m.{cursor}, m.{fallback})" if fallback else f"m.{cursor}"
            sync = (
                f"CASE WHEN t.{u_cursor} > {main} THEN t.{u_cursor} ELSE {main} END "
                "AS sync_updated_at"
            )
            src.extra.append(sync)
            src.avail.append(Avail("sync_updated_at", base.columns[cursor], base.name, sync))
            if resource.field("updated_at") is not None:
                done.append(
                    Choice(
                        "updated_at",
                        "sync_updated_at",
                        f"the later of {base.name}.{cursor} and {u.name}.{u_cursor}",
                        "high",
                        ("sync_updated_at",),
                    )
                )
                skip.add("updated_at")
    elif needs_lang and lang_col is None:
        _parent_languages(plan, src, base, tables, key, key_notes, header)
    elif needs_lang and lang_col is not None and lang_col not in key:
        key.append(lang_col)
        key_notes.append(f"{lang_col}: the row's language")
    plan.key = key or ["TODO"]
    plan.key_note = "; ".join(key_notes) or "TODO: no primary key found; name the key columns"

    # soft delete
    d = deleted_of(base, resource)
    if d is not None:
        plan.deleted = (d[0], d[1])
        plan.deleted_note = d[2] + ": sent as deletes on ShopiMind"
    elif resource.delete_path and parent_field:
        _parent_deleted(plan, src, resource, parent_field, done)

    if fallback and resource.field("updated_at") is not None and "updated_at" not in skip:
        done.append(
            Choice(
                "updated_at",
                {"coalesce": [cursor, fallback]},
                f"{cursor}, or {fallback} where it is NULL (the API requires updated_at)",
                "high",
                (cursor or "", fallback),
            )
        )
        skip.add("updated_at")

    top = tuple(f for f in resource.fields if f.name not in SKIP_FIELDS)
    matched = match_fields(top, src.avail, tables, skip | {c.field for c in done})
    # second round: columns of the tables the foreign keys point at
    missing = [
        f
        for f in top
        if f.name not in skip
        and not matched.get(f.name)
        and f.type not in ("object", "objects", "id_strings", "id_numbers")
        and not any(c.field == f.name for c in done)
    ]
    if missing:
        # only where the field is named after the key and the column (cart_updated_at)
        wanted = {words.norm(f.name) for f in missing}
        more = [
            a
            for c in base.fks
            if len(c.columns) == 1
            for a in src.lookups(c.columns[0], _prefix(c.columns[0]))
            if words.norm(a.name) in wanted
        ]
        extra = match_fields(tuple(missing), more, tables, set())
        for ch in extra.choices:
            a = next(x for x in more if x.name == ch.columns[0])
            src.use(a)
            matched.choices.append(ch)
    plan.fields.choices = done + matched.choices

    for f in resource.fields:
        if f.type == "object":
            plan.objects[f.name] = _object(f, src, tables)
    for f in resource.fields:
        if f.type in ("id_strings", "id_numbers"):
            child = _id_list(f, base, pk, plan, tables)
            if child is not None:
                plan.children.append(child)
        elif f.type == "objects":
            child = _lines(f, base, pk, plan, tables)
            if child is not None:
                plan.children.append(child)
    _fill_missing(plan, src, tables)
    plan.query = src.sql()
    header += src.notes
    order = {f.name: i for i, f in enumerate(resource.fields)}
    plan.fields.choices.sort(key=lambda c: order.get(c.field, 99))
    mapped = (
        {c.field for c in plan.fields.choices} | set(plan.objects) | {c.name for c in plan.children}
    )
    for f in resource.fields:
        if f.name not in mapped and f.name not in SKIP_FIELDS:
            is_list = f.type in ("objects", "id_strings", "id_numbers")
            note = f"no column matched ({f.type})"
            plan.fields.todos.append(Todo(f.name, f.required, note, is_list))
    return plan


def _prefix(fk_col: str) -> str:
    for suffix in ("_id", "id"):
        if fk_col.lower().endswith(suffix) and len(fk_col) > len(suffix):
            return fk_col[: -len(suffix)].rstrip("_")
    return fk_col


def _parent_languages(
    plan: Plan,
    src: _Source,
    base: Table,
    tables: dict[str, Table],
    key: list[str],
    key_notes: list[str],
    header: list[str],
) -> None:
    """The API keys this resource by language but the table has none: pair each row with the
    languages its parent (a foreign key) is translated into."""
    for fk in base.fks:
        parent = tables.get(fk.table)
        if parent is None or len(fk.columns) != 1:
            continue
        tr = translations_of(parent, tables)
        if tr is None:
            continue
        u, ref, ulang = tr
        src.join(u, "t", f"t.{ref} = m.{fk.columns[0]}")
        name = ulang if ulang not in base.columns else f"t_{ulang}"
        key.append(name)
        key_notes.append(f"{name}: each row is sent once per language of its {parent.name} row")
        header.append(
            f"{base.name} has no language of its own: the query pairs each row with the "
            f"languages of its {parent.name} row ({u.name})."
        )
        return


def _parent_deleted(
    plan: Plan, src: _Source, resource: Resource, parent_field: str, done: list[Choice]
) -> None:
    """A nested resource without its own soft delete follows its parent's."""
    ch = next((c for c in done if c.field == parent_field), None)
    if ch is None:
        return
    fk_col = ch.columns[0]
    parent = src.tables.get(_fk_table(src.base, fk_col) or "")
    if parent is None:
        return
    d = deleted_of(parent, resource)
    if d is None:
        return
    a = next((x for x in src.lookups(fk_col, _prefix(fk_col)) if x.col.name == d[0]), None)
    if a is None:
        return
    src.use(a)
    plan.deleted = (a.name, d[1])
    plan.deleted_note = f"the rows of a soft-deleted {parent.name} row ({d[2]}) are deleted too"
    p_cursor, _, _, _ = cursor_of(parent)
    pk = single_pk(parent)
    if p_cursor and pk:
        plan.changes.append(
            Child(
                _prefix(fk_col),
                f"a changed {parent.name} row (its {d[0]}) re-reads its {src.base.name} rows",
                {pk: fk_col},
                table=parent.name,
                cursor=p_cursor,
            )
        )


def _object(f: Field, src: _Source, tables: dict[str, Table]) -> Matched:
    """A nested object (an order's ``customer``): its id from a foreign key, the rest looked up
    in the table that key points at."""
    out = Matched()
    id_def = next((s for s in f.fields if s.name.endswith("_id")), None)
    if id_def is None:
        return out
    m = match_fields((id_def,), src.avail, tables, set())
    if not m.choices:
        out.todos += [Todo(s.name, s.required, "no foreign key found") for s in f.fields]
        return out
    fk_col = m.choices[0].columns[0]
    out.choices.append(m.choices[0])
    own = src.base.columns.get(fk_col)
    if not f.required and own is not None and own.nullable:
        src.where.append(f"m.{fk_col} IS NOT NULL")
        src.notes.append(
            f"Rows without {fk_col} are left out (WHERE m.{fk_col} IS NOT NULL): ShopiMind "
            f"cannot tie them to a {f.name}. Such a row is sent once it gets one, if that sets "
            f"its cursor column; drop the WHERE to send them without {f.name}."
        )
    rest = tuple(s for s in f.fields if s is not id_def)
    more = src.lookups(fk_col, f.name)
    # scored by the looked-up table's own column names
    plain = [Avail(a.col.name, a.col, a.table, a.expr, a.fk_table) for a in more]
    got = match_fields(rest, plain, tables, set())
    for ch in got.choices:
        a = next(x for x in more if x.col.name == ch.columns[0])
        src.use(a)
        spec = a.name if isinstance(ch.spec, str) else {**ch.spec, "column": a.name}
        note = f"{ch.note} (looked up through {fk_col})"
        out.choices.append(Choice(ch.field, spec, note, ch.confidence, (a.name,)))
    for s in rest:
        if out.get(s.name) is None:
            out.todos.append(Todo(s.name, s.required, "no column matched"))
    return out


def _id_list(
    f: Field, base: Table, pk: str | None, plan: Plan, tables: dict[str, Table]
) -> Child | None:
    """``category_ids`` from a link table, or from one column of the base table."""
    if pk is None:
        return None
    thing = words.norm(f.name[: -len("_ids")])
    syns = {words.norm(s) for s in (thing, *words.THINGS.get(thing, ()))}
    for t in tables.values():
        if not is_link(t):
            continue
        ref = refs_to(t, base)
        other = next(
            (
                fk
                for fk in t.fks
                if len(fk.columns) == 1 and fk.columns[0] != ref and words.norm(fk.table) in syns
            ),
            None,
        )
        if ref and other:
            pos = [c for c in t.columns if words.norm(c) in words.POSITIONS]
            return Child(
                f.name,
                f"link table {t.name}: {ref} → {base.name}, {other.columns[0]} → {other.table}"
                + ("" if pos else "; no position column, so the ids come unordered"),
                {ref: pk},
                table=t.name,
                order_by=pos[:1],
                value=other.columns[0],
            )
    for fk in base.fks:
        if len(fk.columns) == 1 and words.norm(fk.table) in syns:
            col = fk.columns[0]
            parent = f"parent_{pk}" if pk != col else f"{pk}_parent"
            return Child(
                f.name,
                f"{base.name}.{col} holds one {fk.table} id per row: a list of one from the "
                "same table",
                {parent: pk},
                query=f"SELECT {pk} AS {parent}, {col} FROM {base.name} WHERE {col} IS NOT NULL",
                value=col,
            )
    return None


def _lines(
    f: Field, base: Table, pk: str | None, plan: Plan, tables: dict[str, Table]
) -> Child | None:
    """A list of objects (order lines) from the child table that matches them best."""
    if pk is None:
        return None
    best: tuple[int, Table, str, Matched, _Source] | None = None
    for t in tables.values():
        ref = refs_to(t, base)
        if ref is None or t.name == base.name or is_link(t) or is_translations(t, tables):
            continue
        csrc = _Source(t, tables)
        m = match_fields(f.fields, csrc.avail, tables, set())
        n = sum(1 for s in f.fields if s.required and m.get(s.name))
        if best is None or n > best[0]:
            best = (n, t, ref, m, csrc)
    required = sum(1 for s in f.fields if s.required)
    if best is None or best[0] < required / 2:
        return None
    _, t, ref, m, csrc = best
    missing = tuple(s for s in f.fields if m.get(s.name) is None)
    if missing:
        more = [
            a
            for fk in t.fks
            if len(fk.columns) == 1 and fk.table != base.name
            for a in csrc.lookups(fk.columns[0], _prefix(fk.columns[0]))
        ]
        # a looked-up column keeps the field's own name when it is that column's name
        for a in more:
            a.name = a.col.name if a.col.name not in csrc.names() else a.name
        extra = match_fields(missing, more, tables, set())
        for ch in extra.choices:
            a = next(x for x in more if x.name == ch.columns[0])
            csrc.use(a)
            m.choices.append(ch)
    for s in f.fields:
        if m.get(s.name) is None:
            m.todos.append(Todo(s.name, s.required, "no column matched"))
    order = {s.name: i for i, s in enumerate(f.fields)}
    m.choices.sort(key=lambda c: order[c.field])
    cur, _, _, _ = cursor_of(t)
    tpk = single_pk(t)
    return Child(
        f.name,
        f"{t.name} rows refer to {base.name} by {ref}"
        + (
            f"; its {cur} re-sends the parent when a line changes"
            if cur
            else "; it has no change timestamp: a changed line is sent only when the parent's "
            "cursor moves"
        ),
        {ref: pk},
        table=None if csrc.joined else t.name,
        query=csrc.sql(),
        order_by=[tpk] if tpk else [],
        cursor=cur,
        fields=m,
        source_table=t.name,
    )


def _fill_missing(plan: Plan, src: _Source, tables: dict[str, Table]) -> None:
    """Required fields no column holds, that the shop's data still answers: a currency used
    everywhere, an amount summed from the lines, a link built from a slug."""
    res = plan.resource
    have = {c.field for c in plan.fields.choices}
    cur = res.field("currency")
    if cur is not None and cur.required and "currency" not in have:
        seen: Counter[str] = Counter()
        for t in tables.values():
            for c in t.columns.values():
                if words.norm(c.name) in words.FIELDS["currency"]:
                    seen.update(str(v).strip().upper() for v in c.values)
        if len(seen) == 1:
            (code,) = seen
            plan.fields.choices.append(
                Choice(
                    "currency",
                    {"const": code},
                    f"no currency column; every currency sampled in the shop is {code}",
                    "medium",
                )
            )
    amount = res.field("amount")
    lines = next((c for c in plan.children if c.fields is not None), None)
    if amount is not None and "amount" not in have and lines is not None and lines.fields:
        qty, price = lines.fields.get("quantity"), lines.fields.get("price")
        ref = next(iter(lines.parent_key))
        if (
            qty
            and price
            and lines.source_table
            and isinstance(qty.spec, str)
            and isinstance(price.spec, str)
        ):
            expr = (
                f"COALESCE((SELECT SUM(l.{qty.spec} * l.{price.spec}) FROM {lines.source_table} l "
                f"WHERE l.{ref} = m.{lines.parent_key[ref]}), 0)"
            )
            src.extra.append(f"{expr} AS amount")
            table = lines.source_table
            src.avail.append(Avail("amount", Column("amount", "decimal", False), table, expr))
            plan.fields.choices.append(
                Choice(
                    "amount",
                    "amount",
                    f"no total column: the sum of quantity x price of {table}",
                    "low",
                    ("amount",),
                )
            )
    link = res.field("link")
    if link is not None and link.required and "link" not in have:
        names = {a.name for a in src.avail}
        slug = next((a.name for a in src.avail if words.norm(a.name) in words.SLUGS), None)
        key_id = plan.key[-2] if "lang" in res.key and len(plan.key) > 1 else plan.key[0]
        lang = next((k for k in plan.key if words.norm(k) in words.FIELDS["lang"]), None)
        parts = [BASE_URL]
        if lang and lang in names:
            parts.append("{" + lang + "}")
        parts.append("{" + key_id + "}" + ("-{" + slug + "}" if slug else ""))
        plan.fields.choices.append(
            Choice(
                "link",
                {"template": "/".join(parts)},
                f"TODO: a placeholder; replace {BASE_URL} and the path by your shop's URL scheme",
                "placeholder",
            )
        )

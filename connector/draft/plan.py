"""A draft mapping for one resource and one table: the source (table, or a query joining its
translations and looking columns up through foreign keys), key, cursor, soft delete, fields,
child collections and watched tables. Rendered as TOML by :mod:`connector.draft.render`."""

from __future__ import annotations

from connector.draft import words
from connector.draft.match import Avail, Choice, Todo, match_fields
from connector.draft.model import Child, Plan
from connector.draft.related import fill_missing, id_list, line_items, nested_object, prefix
from connector.draft.schema import Table
from connector.draft.source import Source
from connector.draft.tables import (
    cursor_of,
    deleted_of,
    fk_table,
    lang_column,
    single_pk,
    translations_of,
    usable,
)
from connector.registry import Resource

__all__ = ["Plan", "build_plan"]

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


def build_plan(resource: Resource, base: Table, tables: dict[str, Table]) -> Plan:
    src = Source(base, tables)
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
            for a in src.lookups(c.columns[0], prefix(c.columns[0]))
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
            plan.objects[f.name] = nested_object(f, src, tables)
    for f in resource.fields:
        if f.type in ("id_strings", "id_numbers"):
            child = id_list(f, base, pk, plan, tables)
            if child is not None:
                plan.children.append(child)
        elif f.type == "objects":
            child = line_items(f, base, pk, plan, tables)
            if child is not None:
                plan.children.append(child)
    fill_missing(plan, src, tables)
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


def _parent_languages(
    plan: Plan,
    src: Source,
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
    plan: Plan, src: Source, resource: Resource, parent_field: str, done: list[Choice]
) -> None:
    """A nested resource without its own soft delete follows its parent's."""
    ch = next((c for c in done if c.field == parent_field), None)
    if ch is None:
        return
    fk_col = ch.columns[0]
    parent = src.tables.get(fk_table(src.base, fk_col) or "")
    if parent is None:
        return
    d = deleted_of(parent, resource)
    if d is None:
        return
    a = next((x for x in src.lookups(fk_col, prefix(fk_col)) if x.col.name == d[0]), None)
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
                prefix(fk_col),
                f"a changed {parent.name} row (its {d[0]}) re-reads its {src.base.name} rows",
                {pk: fk_col},
                table=parent.name,
                cursor=p_cursor,
            )
        )

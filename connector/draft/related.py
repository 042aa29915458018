"""The parts of a draft that come from other tables: a nested object looked up through a
foreign key, id lists from a link table, lines from a child table, and required fields the
shop's data still answers (one currency, a sum of lines, a link placeholder)."""

from __future__ import annotations

from collections import Counter

from connector.draft import words
from connector.draft.match import BASE_URL, Avail, Choice, Matched, Todo, match_fields
from connector.draft.model import Child, Plan
from connector.draft.schema import Column, Table
from connector.draft.source import Source
from connector.draft.tables import cursor_of, is_link, is_translations, refs_to, single_pk
from connector.registry import Field


def prefix(fk_col: str) -> str:
    """``customer_id`` → ``customer``: the name looked-up columns are prefixed with."""
    for suffix in ("_id", "id"):
        if fk_col.lower().endswith(suffix) and len(fk_col) > len(suffix):
            return fk_col[: -len(suffix)].rstrip("_")
    return fk_col


def nested_object(f: Field, src: Source, tables: dict[str, Table]) -> Matched:
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


def id_list(
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


def line_items(
    f: Field, base: Table, pk: str | None, plan: Plan, tables: dict[str, Table]
) -> Child | None:
    """A list of objects (order lines) from the child table that matches them best."""
    if pk is None:
        return None
    best: tuple[int, Table, str, Matched, Source] | None = None
    for t in tables.values():
        ref = refs_to(t, base)
        if ref is None or t.name == base.name or is_link(t) or is_translations(t, tables):
            continue
        csrc = Source(t, tables)
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
            for a in csrc.lookups(fk.columns[0], prefix(fk.columns[0]))
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


def fill_missing(plan: Plan, src: Source, tables: dict[str, Table]) -> None:
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

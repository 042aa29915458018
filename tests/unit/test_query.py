"""Change-capture queries: pagination covers every row exactly once under heavy timestamp ties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.mapping.spec import ChildSpec, SourceSpec
from connector.source import query as q

PARIS = ZoneInfo("Europe/Paris")
SPEC = SourceSpec(table="items", query=None, key=("a", "b"), cursor="ts")


def _engine(rows: list[tuple[int, str, datetime | None]]) -> sa.Engine:
    engine = sa.create_engine("sqlite://")
    md = sa.MetaData()
    t = sa.Table(
        "items",
        md,
        sa.Column("a", sa.Integer, primary_key=True),
        sa.Column("b", sa.String(8), primary_key=True),
        sa.Column("ts", sa.DateTime),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        if rows:
            conn.execute(t.insert(), [{"a": a, "b": b, "ts": ts} for a, b, ts in rows])
    return engine


def _paginate(
    engine: sa.Engine, spec: SourceSpec, start: q.Position | None, page: int, upper: object = None
) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    with engine.connect() as conn:
        while True:
            rows = [
                dict(r) for r in conn.execute(q.page_query(spec, start, upper, page)).mappings()
            ]
            seen.extend((r["a"], r["b"]) for r in rows)
            if len(rows) < page:
                return seen
            last = rows[-1]
            start = q.Position(last[q.CURSOR_LABEL], (last["a"], last["b"]))


BASE = datetime(2026, 5, 1, 12, 0, 0)
rows_strategy = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["x", "y", "z"]), st.integers(0, 3)),
    max_size=80,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, page=st.integers(1, 7))
def test_pagination_covers_every_row_exactly_once_under_ties(
    rows: list[tuple[int, str, int]], page: int
) -> None:
    data = [(a, b, BASE + timedelta(seconds=s)) for a, b, s in rows]  # ≤4 distinct timestamps
    engine = _engine(data)
    seen = _paginate(engine, SPEC, None, page)
    expected = [(a, b) for a, b, ts in sorted(data, key=lambda r: (r[2], r[0], r[1]))]
    assert seen == expected
    engine.dispose()


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, page=st.integers(1, 5), cut=st.integers(0, 79))
def test_resuming_after_a_saved_cursor_reads_exactly_the_rest(
    rows: list[tuple[int, str, int]], page: int, cut: int
) -> None:
    data = sorted(
        ((a, b, BASE + timedelta(seconds=s)) for a, b, s in rows), key=lambda r: (r[2], r[0], r[1])
    )
    engine = _engine(data)
    if data:
        cut %= len(data)
        a, b, _ts = data[cut]
        # the cursor as the database gave it back (SQLite text, full precision)
        with engine.connect() as conn:
            raw = conn.exec_driver_sql("SELECT ts FROM items WHERE a=? AND b=?", (a, b)).scalar()
        seen = _paginate(engine, SPEC, q.Position(raw, (a, b)), page)
        assert seen == [(r[0], r[1]) for r in data[cut + 1 :]]
    engine.dispose()


def test_upper_bound_excludes_newer_rows_and_null_cursors_are_separate() -> None:
    data = [(1, "x", BASE), (2, "x", BASE + timedelta(seconds=10)), (3, "x", None)]
    engine = _engine(data)
    upper = q.upper_bound(
        (BASE + timedelta(seconds=5)).replace(tzinfo=PARIS).astimezone(UTC), 0.0, BASE, PARIS
    )
    assert upper == BASE + timedelta(seconds=5)
    assert _paginate(engine, SPEC, None, 10, upper) == [(1, "x")]
    with engine.connect() as conn:
        nulls = conn.execute(q.null_cursor_query(SPEC, None, 10)).mappings().all()
    assert [(r["a"], r["b"]) for r in nulls] == [(3, "x")]
    engine.dispose()


def test_cursor_fallback_orders_by_coalesce() -> None:
    spec = SourceSpec(table="items", query=None, key=("a",), cursor="ts", cursor_fallback="fb")
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (a INTEGER PRIMARY KEY, ts TEXT, fb TEXT)")
        conn.exec_driver_sql(
            "INSERT INTO items VALUES "
            "(1, '2026-01-03', NULL), (2, NULL, '2026-01-02'), (3, NULL, NULL)"
        )
    with engine.connect() as conn:
        got = [r["a"] for r in conn.execute(q.page_query(spec, None, None, 10)).mappings()]
        nulls = [r["a"] for r in conn.execute(q.null_cursor_query(spec, None, 10)).mappings()]
    assert got == [2, 1]
    assert nulls == [3]


def test_tuple_after_sql_shape_is_index_friendly() -> None:
    rel = q.source_relation(SPEC)
    expr = q.tuple_after([rel.c.ts, rel.c.a, rel.c.b], [1, 2, 3])
    sql = str(expr.compile(compile_kwargs={"literal_binds": True}))
    assert sql.startswith("items.ts >= 1 AND (items.ts > 1 OR items.ts = 1 AND (items.a > 2")


def test_children_query_one_statement_for_a_page() -> None:
    child = ChildSpec(
        "products", "children.products", "lines", None, (("order_id", "id"),), ("id",)
    )
    sql = str(
        q.children_query(child, [(1,), (2,), (1,)]).compile(compile_kwargs={"literal_binds": True})
    )
    assert "lines.order_id IN (1, 2)" in sql
    assert sql.endswith("ORDER BY lines.order_id, lines.id")


def test_children_query_for_every_page_is_one_sql_text() -> None:
    """Built once for a mapping: an expanding IN (a placeholder per parent, rendered per page),
    or on PostgreSQL one array parameter, the same SQL text for every page."""
    from sqlalchemy.dialects import postgresql

    child = ChildSpec("products", "children.products", "lines", None, (("order_id", "id"),), ())
    expanding = q.children_query(child, None)
    sql = str(expanding.compile(dialect=postgresql.dialect()))
    assert "lines.order_id IN (__[POSTCOMPILE_links])" in sql
    array = q.children_query(child, None, array=True)
    sql = str(array.compile(dialect=postgresql.dialect()))
    assert "lines.order_id = ANY (%(links)s)" in sql


def test_query_source_is_wrapped_as_subquery() -> None:
    spec = SourceSpec(table=None, query="SELECT id, u FROM t", key=("id",), cursor="u")
    sql = str(q.page_query(spec, q.Position(5, (1,)), None, 10).compile())
    assert "FROM (SELECT id, u FROM t) AS src" in sql
    assert "ORDER BY src.u, src.id" in sql


def test_shift_back_widens_over_the_repeated_dst_hour() -> None:
    # Europe/Paris: 2026-10-25 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.
    normal = datetime(2026, 6, 1, 12, 0)
    assert q.shift_back(normal, 300, PARIS) == normal - timedelta(minutes=5)
    in_fold = datetime(2026, 10, 25, 2, 55)
    assert q.shift_back(in_fold, 300, PARIS) == in_fold - timedelta(minutes=65)
    just_after = datetime(2026, 10, 25, 3, 2)
    assert q.shift_back(just_after, 300, PARIS) == just_after - timedelta(minutes=65)
    # SQLite text and integers
    assert q.shift_back("2026-06-01 12:00:00.000000", 60, PARIS) == "2026-06-01 11:59:00.000000"
    assert q.shift_back(1234, 60, PARIS) == 1234


def test_upper_bound_forms() -> None:
    now = datetime(2026, 7, 1, 10, 0, 0, tzinfo=UTC)
    assert q.upper_bound(now, 2, datetime(2026, 1, 1), PARIS) == datetime(2026, 7, 1, 11, 59, 58)
    assert q.upper_bound(now, 2, datetime(2026, 1, 1, tzinfo=UTC), PARIS) == now - timedelta(
        seconds=2
    )
    assert q.upper_bound(now, 0, "2026-01-01 00:00:00", PARIS) == "2026-07-01 12:00:00.000000"
    assert q.upper_bound(now, 0, 17, PARIS) is None

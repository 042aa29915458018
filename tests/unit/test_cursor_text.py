"""Text timestamps (SQLite keeps them as text): bounds and windows are written in the rows' own
form, since the database compares them as strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from connector.mapping.spec import SourceSpec
from connector.source import query as q

PARIS = ZoneInfo("Europe/Paris")
SPEC = SourceSpec(table="t", query=None, key=("id",), cursor="ts", lookback=300)


@pytest.mark.parametrize("sep", [" ", "T"])
def test_recent_text_rows_are_inside_the_bounds(sep: str) -> None:
    now = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
    local = now.astimezone(PARIS).replace(tzinfo=None)

    def text(dt: datetime) -> str:
        return dt.isoformat(sep=sep, timespec="seconds")

    rows = [(1, text(local - timedelta(minutes=10))), (2, text(local - timedelta(minutes=1)))]
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, ts TEXT)")
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?)", rows[0])
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?)", rows[1])
    upper = q.upper_bound(now, 2.0, rows[0][1], PARIS)
    start = q.Position(q.shift_back(rows[1][1], 300, PARIS), None)
    assert isinstance(upper, str) and upper[10] == sep
    with engine.connect() as conn:
        every = conn.execute(q.page_query(SPEC, None, upper, 10)).mappings().all()
        window = conn.execute(q.page_query(SPEC, start, upper, 10)).mappings().all()
    assert [r["id"] for r in every] == [1, 2]  # the row written a minute ago is not held back
    assert [r["id"] for r in window] == [2]
    engine.dispose()

"""Cursors and small settings: what a pass reads before it starts (see ``pass_state``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from connector.state import tables as t
from connector.state._base import StoreBase
from connector.state.model import Cursor


@dataclass(frozen=True)
class PassState:
    """What a pass of one mapping reads from the state database before it starts."""

    cursor: Cursor | None
    meta: dict[str, str | None]  # the settings asked for (None: not set)
    open_rejects: bool  # the mapping has open rejected items


class CursorsMixin(StoreBase):
    """The sync cursor of each mapping, and the ``meta`` settings (name -> text)."""

    # -- cursors ------------------------------------------------------------------------------

    def get_cursor(self, mapping: str) -> Cursor | None:
        with self._read() as conn:
            text = conn.scalar(
                sa.select(t.cursors.c.cursor_json).where(t.cursors.c.mapping == mapping)
            )
        return None if text is None else Cursor.from_json(text)

    def pass_state(self, mapping: str, meta: Sequence[str] = ()) -> PassState:
        """The cursor of ``mapping``, the settings named in ``meta`` and whether the mapping has
        open rejects, in one statement (a pass that finds nothing runs a few statements in all;
        this saves it one per value)."""
        names = list(dict.fromkeys(meta))
        params = {"mapping": mapping, **{f"meta{i}": n for i, n in enumerate(names)}}
        with self._read() as conn:
            text, rejects, *values = conn.execute(_pass_state_query(len(names)), params).one()
        return PassState(
            cursor=None if text is None else Cursor.from_json(text),
            meta={n: None if v is None else str(v) for n, v in zip(names, values, strict=True)},
            open_rejects=bool(rejects),
        )

    def set_cursor(self, mapping: str, cursor: Cursor | None) -> None:
        """Save the cursor of ``mapping``; ``None`` deletes it (the next pass starts over)."""
        text = None if cursor is None else cursor.to_json()
        with self._tx() as conn:
            if text is None:
                conn.execute(sa.delete(t.cursors).where(t.cursors.c.mapping == mapping))
            else:
                t.save_cursor(conn, mapping, text)

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, name: str) -> str | None:
        with self._read() as conn:
            value = conn.scalar(sa.select(t.meta.c.value).where(t.meta.c.name == name))
        return None if value is None else str(value)

    def set_meta(self, name: str, value: str) -> None:
        with self._tx() as conn:
            t.upsert(conn, t.meta, [{"name": name, "value": value}], ("name",), ("value",))


# The statement of every pass, built once: building a statement costs SQLAlchemy several times
# more than executing it once it is built (its compiled form is then cached too).


@functools.cache
def _pass_state_query(metas: int) -> sa.Select[Any]:
    cu, me, rj = t.cursors.c, t.meta.c, t.rejects.c
    mapping = sa.bindparam("mapping", type_=cu.mapping.type)
    columns: list[Any] = [
        sa.select(cu.cursor_json).where(cu.mapping == mapping).scalar_subquery(),
        sa.exists().where(rj.mapping == mapping, rj.open_key.is_not(None)),
        *(
            sa.select(me.value).where(me.name == sa.bindparam(f"meta{i}")).scalar_subquery()
            for i in range(metas)
        ),
    ]
    return sa.select(*(c.label(f"v{i}") for i, c in enumerate(columns)))

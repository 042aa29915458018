"""Where a pass starts reading: the lookback window behind the saved cursor, until it is settled.

A pass re-reads ``lookback`` behind its saved cursor to catch rows committed late: a write
transaction stamps a row with an ``updated_at`` older than rows that committed before it. The
README's sizing rule bounds how late: a row commits at most ``lookback`` after the moment its
timestamp names (write transaction, plus an application server's clock lagging the database's).

So once the cursor has stood still long enough, re-reading its window cannot find anything new.
Let ``R`` be when the row at the cursor was written. A late row ``L`` in the window has a
timestamp at or before the cursor's, so it was written no later than ``R`` (plus the clock lag
the sizing rule already counts) and committed by ``R + lookback``. ``R`` is before the end of
the pass that first saw the cursor where it is (that pass read the row, so it was committed).
A complete pass that *starts* ``lookback`` seconds after that end therefore sees every such
``L``: after it, passes start strictly after the cursor, until the cursor moves.

:class:`Window` keeps that per mapping, in memory (a restarted connector re-reads the window
again until it settles). It never settles:

* while a ``reset`` asks to re-send (its range is re-read every pass, as before);
* when the window touches the repeated hour of a daylight-saving change: rows written in the
  second pass through that hour sort *before* the cursor although they are new, so the window
  stays (``query.shift_back`` widens it by the hour).

On an idle shop this turns each pass's re-read of the window (rows, child rows, stored hashes)
into one empty page query; a shop that writes keeps its window, as before.
"""

from __future__ import annotations

import threading
from typing import Any

from connector.source import query as q
from connector.state.model import Cursor

_Pos = tuple[Any, tuple[Any, ...]]


class Window:
    """The lookback window of one mapping across its passes (thread-safe; one pass at a time
    per mapping is assumed, as the service runs them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: tuple[_Pos, float] | None = None  # cursor, and when a pass first ended on it
        self._settled: _Pos | None = None  # its window was re-read late enough
        self._settled_for = 0.0  # the lookback it was settled for

    def start(self, saved: Cursor, lookback: float, tz: Any, *, forced: bool = False) -> q.Position:
        """Where the pass starts: strictly after ``saved`` once its window is settled, else
        ``lookback`` behind it (``Position(value, None)``: every row at or after that value)."""
        with self._lock:  # a longer lookback (the mapping changed) waits again
            settled = (
                self._settled == (saved.value, saved.key)
                and lookback <= self._settled_for
                and not forced
            )
        if settled:  # a cursor set by ``reset --to`` has no key: every row from its value on
            return q.Position(saved.value, saved.key or None)
        return q.Position(q.shift_back(saved.value, lookback, tz), None)

    def scanned(
        self,
        saved: Cursor | None,
        end: _Pos | None,
        *,
        started: float,
        ended: float,
        lookback: float,
        tz: Any,
        forced: bool = False,
    ) -> None:
        """A pass's scan completed (every page up to its upper bound was read and written):
        ``saved`` is the cursor it started from, ``end`` where it left it, ``started`` and
        ``ended`` its monotonic start and end times."""
        before = None if saved is None else (saved.value, saved.key)
        with self._lock:
            if end is None:
                self._since = self._settled = None
            elif end != before or self._since is None or self._since[0] != end:
                self._since, self._settled = (end, ended), None  # a cursor seen for the first time
            elif (
                not forced
                and started >= self._since[1] + lookback
                and not _widened(end[0], lookback, tz)
            ):
                self._settled, self._settled_for = end, lookback

    @property
    def settled(self) -> bool:
        with self._lock:
            return self._settled is not None


def _widened(value: Any, lookback: float, tz: Any) -> bool:
    """Whether the window behind ``value`` touches a daylight-saving fold (it is then widened
    by an hour, for rows that are new although they sort before the cursor)."""
    return bool(q.shift_back(value, lookback, tz) != q.shift_back(value, lookback, None))

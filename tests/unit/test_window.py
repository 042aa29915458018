"""The lookback window across passes (``connector._window``): pure, no I/O.

A pass starts ``lookback`` behind the saved cursor until a complete pass that started at least
``lookback`` seconds after the cursor was first seen where it is has re-read the window; then
passes start strictly after the cursor, until it moves (or a ``reset`` forces a re-send).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connector._window import Window
from connector.source import query as q
from connector.state.model import Cursor

PARIS = ZoneInfo("Europe/Paris")
UTC = ZoneInfo("UTC")
T = datetime(2026, 6, 1, 12, 0, 0)
KEY = (42,)
LB = 300.0


def _scan(
    w: Window,
    saved: Cursor | None,
    end: tuple[object, tuple[object, ...]] | None,
    started: float,
    ended: float,
    tz: object = UTC,
    forced: bool = False,
) -> None:
    w.scanned(saved, end, started=started, ended=ended, lookback=LB, tz=tz, forced=forced)


def _settle(w: Window, saved: Cursor, at: float = 0.0, tz: object = UTC) -> None:
    """Two complete passes ending on ``saved``, the second one started ``LB`` after the
    first ended."""
    end = (saved.value, saved.key)
    _scan(w, saved, end, started=at, ended=at + 1.0, tz=tz)
    _scan(w, saved, end, started=at + 1.0 + LB, ended=at + 2.0 + LB, tz=tz)


def test_the_window_settles_only_after_a_pass_started_lookback_after_the_cursor_stood() -> None:
    w = Window()
    saved = Cursor(T, KEY)
    full = q.Position(T - timedelta(seconds=LB), None)
    assert w.start(saved, LB, UTC) == full
    _scan(w, saved, (T, KEY), started=1000.0, ended=1001.0)  # first seen at 1001
    assert w.start(saved, LB, UTC) == full and not w.settled
    _scan(w, saved, (T, KEY), started=1300.0, ended=1300.5)  # 1300 < 1001 + 300: too early
    assert w.start(saved, LB, UTC) == full and not w.settled
    _scan(w, saved, (T, KEY), started=1301.0, ended=1301.5)
    assert w.settled
    assert w.start(saved, LB, UTC) == q.Position(T, KEY)  # strictly after the cursor


def test_a_moved_cursor_restarts_the_wait() -> None:
    w = Window()
    first = Cursor(T, KEY)
    _settle(w, first)
    assert w.settled
    later = (T + timedelta(seconds=5), (43,))
    _scan(w, first, later, started=500.0, ended=502.0)  # the pass sent a row: cursor moved
    assert not w.settled
    moved = Cursor(*later)
    assert w.start(moved, LB, UTC) == q.Position(later[0] - timedelta(seconds=LB), None)
    _scan(w, moved, later, started=801.0, ended=802.0)  # 801 < 502 + 300
    assert not w.settled
    _scan(w, moved, later, started=802.0, ended=803.0)
    assert w.settled and w.start(moved, LB, UTC) == q.Position(*later)


def test_a_cursor_changed_beside_the_pass_is_not_trusted() -> None:
    """``reset`` (another process) moves the saved cursor: the pass reads the full window."""
    w = Window()
    saved = Cursor(T, KEY)
    _settle(w, saved)
    assert w.settled
    other = Cursor(T - timedelta(days=1), KEY)
    assert w.start(other, LB, UTC) == q.Position(other.value - timedelta(seconds=LB), None)
    # ``reset --to`` saves a cursor without key; settled on it, the pass reads from its value
    bare = Cursor(T, ())
    _settle(w, bare, at=1000.0)
    assert w.start(bare, LB, UTC) == q.Position(T, None)


def test_a_longer_lookback_is_not_trusted_to_a_window_settled_for_a_shorter_one() -> None:
    w = Window()
    saved = Cursor(T, KEY)
    _settle(w, saved)
    assert w.start(saved, LB / 2, UTC) == q.Position(T, KEY)
    assert w.start(saved, LB * 2, UTC) == q.Position(T - timedelta(seconds=LB * 2), None)


def test_a_forced_resend_never_settles_and_ignores_a_settled_window() -> None:
    w = Window()
    saved = Cursor(T, KEY)
    _scan(w, saved, (T, KEY), started=0.0, ended=1.0, forced=True)
    _scan(w, saved, (T, KEY), started=400.0, ended=401.0, forced=True)
    assert not w.settled
    _scan(w, saved, (T, KEY), started=800.0, ended=801.0)
    assert w.settled
    assert w.start(saved, LB, UTC, forced=True) == q.Position(T - timedelta(seconds=LB), None)


def test_no_cursor_left_nothing_to_settle() -> None:
    w = Window()
    _scan(w, None, None, started=0.0, ended=1.0)
    _scan(w, None, None, started=900.0, ended=901.0)
    assert not w.settled


@pytest.mark.parametrize("minutes", range(-90, 151, 5))
def test_never_settled_near_the_repeated_hour(minutes: int) -> None:
    """Around the autumn change (Paris, 2026-10-25 03:00 -> 02:00), a row written after the
    cursor was saved can sort before it: such a cursor's window is never skipped. Elsewhere
    (a day earlier) it settles."""
    change = datetime(2026, 10, 25, 1, 0)  # UTC instant of the change
    instant = change + timedelta(minutes=minutes)
    wall = instant.replace(tzinfo=UTC).astimezone(PARIS).replace(tzinfo=None, fold=0)
    for value, near in ((wall, True), (wall - timedelta(days=1), False)):
        w = Window()
        _settle(w, Cursor(value, KEY), tz=PARIS)
        later_rows = [
            (instant + timedelta(minutes=m)).replace(tzinfo=UTC).astimezone(PARIS)
            for m in range(1, 120)
        ]
        sorts_before = any(r.replace(tzinfo=None, fold=0) < value for r in later_rows)
        if sorts_before:
            assert not w.settled, value
        if not near:
            assert w.settled, value


def test_integer_cursors_settle_too() -> None:
    """No time in the cursor: the window is the rows at the cursor's value; the wait is real
    time all the same."""
    w = Window()
    saved = Cursor(1234, KEY)
    assert w.start(saved, LB, UTC) == q.Position(1234, None)
    _scan(w, saved, (1234, KEY), started=0.0, ended=1.0)
    _scan(w, saved, (1234, KEY), started=301.0, ended=302.0)
    assert w.start(saved, LB, UTC) == q.Position(1234, KEY)

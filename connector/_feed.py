"""The pages of a scan after a full first one, read (and mapped) ahead of the pass thread.

A backfill's next page can be read as soon as the previous one is read: keyset pagination
needs only the last row's position. :class:`PageFeed` does that on a thread of its own
(``read-<mapping>``; the reader's connections are per thread), and with a
:class:`~connector.mapworkers.MapPool` hands each full page to a worker process at once, so
several pages are being mapped while the pass thread writes the oldest one. At most ``depth``
pages wait for the pass thread (memory stays a few pages whatever the table's size); the pass
thread takes them strictly in order with :meth:`PageFeed.next`.

A read error (or a column the mapping names that the rows lack) is raised by ``next`` in the pass
thread, at the page where it happened: the pages before it are written normally.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from connector._pages import _Page
from connector.source import query as q
from connector.transform import Unit

Fed = tuple[list[dict[str, Any]], dict[str, Any], "Future[list[Unit]] | None"]
_END: Any = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class PageFeed:
    """Reads the pages after ``after`` on a thread, each one mapped in a worker when ``submit``
    is given and the page is full. Always :meth:`close` it (it stops and joins the thread)."""

    def __init__(
        self,
        name: str,
        read: Callable[[q.Position], _Page],
        position: Callable[[dict[str, Any]], q.Position],
        page_size: int,
        submit: Callable[[list[dict[str, Any]], dict[str, Any]], Future[list[Unit]] | None] | None,
        depth: int,
        after: q.Position,
    ) -> None:
        self._read = read
        self._position = position
        self._page_size = page_size
        self._submit = submit
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._halt = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(after,), name=f"read-{name}", daemon=True
        )

    def start(self) -> PageFeed:
        self._thread.start()
        return self

    def next(self) -> Fed | None:
        """The next page (rows, child rows, and its units' future when mapped in a worker), or
        None after the last page; raises what reading it raised."""
        got = self._queue.get()
        if got is _END:
            self._queue.put(_END)  # asked again: still the end
            return None
        if isinstance(got, _Failed):
            self._queue.put(got)
            raise got.exc
        return got  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop reading; pages read but not taken are dropped (their mapping is cancelled or
        its result ignored)."""
        self._halt.set()
        while self._thread.is_alive():
            self._drop_waiting()
            self._thread.join(0.05)
        self._drop_waiting()

    # --- the reading thread ---------------------------------------------------------------

    def _run(self, start: q.Position) -> None:
        try:
            while not self._halt.is_set():
                rows, children = self._read(start)
                full = len(rows) == self._page_size
                fut = self._submit(rows, children) if self._submit and full else None
                if not self._put((rows, children, fut)) or not full:
                    break
                start = self._position(rows[-1])
            self._put(_END)
        except BaseException as exc:  # raised in the pass thread, at this page
            self._put(_Failed(exc))

    def _put(self, item: Any) -> bool:
        while not self._halt.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        if isinstance(item, tuple) and item[2] is not None:
            item[2].cancel()
        return False

    def _drop_waiting(self) -> None:
        while True:
            try:
                got = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(got, tuple) and got[2] is not None:
                got[2].cancel()

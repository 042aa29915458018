"""A backfill reads the next page (with its child rows) on a read-ahead thread while the current
page is mapped and sent. Every row still arrives, each once; a stop in the middle saves a cursor
that covers only what the API accepted, and the next pass completes. Every configured backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.destination.client import ApiClient
from connector.source.reader import ShopReader
from tests.e2e.harness import Env, make_env


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        e.use_mappings(["customers"])
        e.write_config(sync={"mappings_dir": str(e.mappings), "page_size": 50})
        yield e


def live_customers(env: Env) -> set[str]:
    return {str(r["id"]) for r in env.sql("SELECT id FROM customers WHERE deleted_at IS NULL")}


def test_pages_after_the_first_are_read_ahead_and_every_row_arrives_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[str, str]] = []
    real = ShopReader.fetch

    def spy(
        self: ShopReader, stmt: object, what: str = "query", params: object = None
    ) -> list[dict[str, object]]:
        reads.append((threading.current_thread().name, what))
        return real(self, stmt, what, params)  # type: ignore[arg-type]

    monkeypatch.setattr(ShopReader, "fetch", spy)
    assert env.cli("sync").code == 0
    pages = [name for name, what in reads if "reading a page" in what]
    kids = [name for name, what in reads if "reading child rows" in what]
    assert len(pages) >= 2  # the demo shop's customers: two pages of 50
    assert not pages[0].startswith("read-")  # the first page: on the pass thread
    assert all(n.startswith("read-customers") for n in pages[1:])  # the rest: read ahead
    assert all(n.startswith("read-customers") for n in kids[1:])  # with their child rows
    stored = env.sandbox.records("customers")
    assert set(stored) == live_customers(env)
    posted = sum(
        r.item_count
        for r in env.sandbox.requests
        if r.path.endswith("/customers") and r.status < 300
    )
    assert posted == len(stored)  # each row once: no page read twice, none skipped


def test_a_stop_while_a_page_is_read_ahead_keeps_the_cursor_on_accepted_rows(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API fails from the second request on, after the second page was read ahead: the
    pass ends with the error, the cursor saved covers the accepted rows only, the next pass
    sends exactly the rest."""
    real = ApiClient.send_items
    sent = {"n": 0}

    def failing_from_the_second(self: ApiClient, path: str, items: list[object], **kw: object):  # type: ignore[no-untyped-def]
        sent["n"] += 1
        if sent["n"] == 2:
            env.sandbox.inject(status=502, count=1000)
        return real(self, path, items, **kw)  # type: ignore[arg-type]

    env.write_config(sync={"mappings_dir": str(env.mappings), "page_size": 50, "max_in_flight": 1})
    monkeypatch.setattr(ApiClient, "send_items", failing_from_the_second)
    assert env.cli("sync").code == 1
    first = set(env.sandbox.records("customers"))
    assert len(first) == 50  # the first batch of 50 accepted, the second failed
    env.sandbox.clear_faults()
    monkeypatch.setattr(ApiClient, "send_items", real)
    env.sandbox.reset()
    assert env.cli("sync").code == 0
    assert set(env.sandbox.records("customers")) == live_customers(env) - first

"""Rows read again unchanged are not mapped again (``transform.Recent``), and idle passes do not
fill the journal (``runtime.log_pass``)."""

from __future__ import annotations

import logging
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.mapping import CompiledMapping, load_mapping_file
from connector.runtime import log_pass
from connector.source.query import CURSOR_LABEL
from connector.state.model import RunCounts
from connector.sync import PassResult
from connector.transform import Recent, group_children, transform_page

PRODUCTS = """
resource = "products"
[source]
cursor = "updated_at"
key = ["id", "lang"]
table = "products"
[fields]
name = "name"
product_id = "id"
lang = "lang"
description = { const = "-" }
quantity_remaining = { const = 1 }
link = { template = "https://shop.example/{lang}/p/{id}" }
currency = { const = "EUR" }
price = "price"
is_active = { const = true }
created_at = "updated_at"
updated_at = "updated_at"
[children.category_ids]
table = "product_categories"
parent_key = { product_id = "id" }
value = "category_id"
"""


@pytest.fixture
def compiled(tmp_path: Path) -> CompiledMapping:
    path = tmp_path / "products.toml"
    path.write_text(textwrap.dedent(PRODUCTS), encoding="utf-8")
    return CompiledMapping(load_mapping_file(path), ZoneInfo("Europe/Paris"))


def _row(pid: int, name: str = "Kettle", price: float = 19.5) -> dict[str, Any]:
    at = datetime(2026, 11, 27, 10, 0)
    return {
        "id": pid,
        "lang": "fr",
        "name": name,
        "price": price,
        "updated_at": at,
        CURSOR_LABEL: at,
    }


def _page(
    compiled: CompiledMapping,
    rows: list[dict[str, Any]],
    cats: list[dict[str, Any]],
    recent: Recent,
) -> list[Any]:
    kids = {"category_ids": group_children(compiled.mapping.children["category_ids"], cats)}
    return transform_page(compiled, rows, kids, recent)


def test_an_unchanged_row_reuses_the_unit_of_the_previous_pass(compiled: CompiledMapping) -> None:
    recent = Recent()
    cats = [{"product_id": 1, "category_id": 4}]
    recent.begin(compiled)
    first = _page(compiled, [_row(1), _row(2)], cats, recent)
    recent.begin(compiled)
    # the same values read again (new dicts, as a new page read gives): the very same units
    again = _page(compiled, [_row(1), _row(2)], [dict(c) for c in cats], recent)
    assert again[0] is first[0] and again[1] is first[1]
    # and they are what mapping the row again gives
    fresh = _page(compiled, [_row(1), _row(2)], cats, Recent())
    assert [(u.hash, u.body) for u in again] == [(u.hash, u.body) for u in fresh]


def test_a_changed_column_or_child_row_is_mapped_again(compiled: CompiledMapping) -> None:
    recent = Recent()
    cats = [{"product_id": 1, "category_id": 4}, {"product_id": 2, "category_id": 4}]
    recent.begin(compiled)
    first = _page(compiled, [_row(1), _row(2)], cats, recent)
    recent.begin(compiled)
    # row 1: same cursor value, another price; row 2: one more category
    changed = _page(
        compiled,
        [_row(1, price=21.0), _row(2)],
        [*cats, {"product_id": 2, "category_id": 9}],
        recent,
    )
    assert changed[0] is not first[0] and changed[0].item["price"] == 21.0  # type: ignore[index]
    assert changed[1] is not first[1] and changed[1].item["category_ids"] == [4, 9]  # type: ignore[index]
    assert changed[0].hash != first[0].hash and changed[1].hash != first[1].hash


def test_entries_live_one_pass_and_a_reloaded_mapping_starts_afresh(
    compiled: CompiledMapping, tmp_path: Path
) -> None:
    recent = Recent()
    recent.begin(compiled)
    first = _page(compiled, [_row(1)], [], recent)
    recent.begin(compiled)
    _page(compiled, [_row(2)], [], recent)  # this pass did not read row 1
    recent.begin(compiled)
    assert _page(compiled, [_row(1)], [], recent)[0] is not first[0]

    recent.begin(compiled)
    kept = _page(compiled, [_row(1)], [], recent)[0]
    path = tmp_path / "reloaded" / "products.toml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(PRODUCTS).replace('name = "name"', 'name = "lang"'))
    reloaded = CompiledMapping(load_mapping_file(path), ZoneInfo("Europe/Paris"))
    recent.begin(reloaded)
    unit = _page(reloaded, [_row(1)], [], recent)[0]
    assert unit is not kept and unit.item["name"] == "fr"  # type: ignore[index]


def test_at_most_limit_rows_are_remembered(compiled: CompiledMapping) -> None:
    recent = Recent()
    recent.LIMIT = 3
    rows = [_row(i) for i in range(1, 6)]
    recent.begin(compiled)
    first = _page(compiled, rows, [], recent)
    recent.begin(compiled)
    again = _page(compiled, rows, [], recent)
    assert [a is f for a, f in zip(again, first, strict=True)] == [True] * 3 + [False] * 2


def _result(sent: int) -> PassResult:
    return PassResult(
        "customers", "ok", RunCounts(rows_read=5, unchanged=5 - sent, items_sent=sent)
    )


def test_only_the_first_of_consecutive_idle_passes_is_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="connector")
    busy, idle = _result(2), _result(0)
    assert idle.idle and not busy.idle
    log_pass(busy, None)
    log_pass(idle, busy)
    log_pass(idle, idle)
    log_pass(idle, idle)
    log_pass(busy, idle)
    log_pass(idle, None)  # the first pass of the service
    levels = [r.levelname for r in caplog.records]
    assert levels == ["INFO", "INFO", "DEBUG", "DEBUG", "INFO", "INFO"]
    assert all("customers: ok read=5" in r.getMessage() for r in caplog.records)
    failed = PassResult("customers", "failed", RunCounts(), "shop database down")
    assert not failed.idle

"""Mapping files: loading reports every problem at once; compiled mappings build exact items."""

from __future__ import annotations

import textwrap
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connector.errors import MappingError
from connector.mapping import CompiledMapping, load_mapping_file, load_mappings
from connector.mapping.compile import MissingColumn

PARIS = ZoneInfo("Europe/Paris")

ORDERS = """
resource = "orders"
[source]
query = '''SELECT o.*, c.email AS c_email, c.created_at AS c_created
           FROM orders o JOIN customers c ON c.id = o.customer_id'''
key = ["id"]
cursor = "updated_at"
[fields]
order_id = "id"
lang = { column = "lang", default = "fr" }
reference = "number"
status_id = { column = "status", map = { 1 = "pending", 2 = "paid" }, default = "unknown" }
cart_id = "cart_id"
cart_updated_at = "cart_updated_at"
amount = "total"
amount_without_tax = "total_excl"
shipping_costs = { const = 4.9 }
shipping_costs_without_tax = { const = 4.08 }
currency = { const = "eur" }
voucher_value = "voucher_value"
is_confirmed = { column = "paid_at", convert = "is_not_null" }
created_at = "created_at"
updated_at = { coalesce = ["updated_at", "created_at"] }
[fields.customer]
customer_id = "customer_id"
email = { column = "c_email", convert = ["trim", "lower"] }
created_at = "c_created"
[children.products]
table = "order_lines"
parent_key = ["order_id"]
order_by = ["id"]
[children.products.fields]
product_id = "product_id"
product_variation_id = "variation_id"
quantity = "qty"
price = "price"
price_without_tax = "price_excl"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(MappingError) as info:
        load_mappings(tmp_path)
    return [str(p) for p in info.value.problems]


def test_valid_orders_mapping_loads(tmp_path: Path) -> None:
    m = load_mapping_file(write(tmp_path, "orders", ORDERS))
    assert m.resource.name == "orders"
    assert m.source.key == ("id",)
    assert m.source.lookback == 300.0
    assert set(m.children) == {"products"}
    assert m.children["products"].parent_key == (("order_id", "id"),)


def test_every_problem_reported_at_once_with_file_and_path(tmp_path: Path) -> None:
    write(
        tmp_path,
        "customers",
        """
        resource = "customers"
        colour = "blue"
        [source]
        table = "customers"
        key = "id"
        cursor = "updated_at"
        [fields]
        customer_id = "id"
        mail = "email"
        first_name = { column = "first_name", convert = "capitalize" }
        """,
    )
    write(tmp_path, "broken", 'resource = "orders"\n[source\nkey = 1\n')
    write(tmp_path, "nothing", 'resource = "basket"\n[source]\ntable="x"\nkey="id"\ncursor="u"\n')
    found = problems(tmp_path)
    text = "\n".join(found)
    assert "customers.toml: colour: unknown key" in text
    assert "customers.toml: fields.mail: unknown API field 'mail'" in text
    assert "customers.toml: fields.first_name.convert: unknown conversion 'capitalize'" in text
    assert "required API field 'email' of customers is not mapped" in text
    assert "required API field 'last_name'" in text
    assert any(p.startswith("broken.toml:2: TOML syntax error") for p in found)
    assert "nothing.toml: resource: unknown resource 'basket'" in text


def test_source_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "carriers",
        """
        resource = "orders_carriers"
        [source]
        table = "carriers"
        query = "SELECT 1"
        key = []
        cursor = 3
        lookback = "soon"
        [fields]
        carrier_id = "id"
        """,
    )
    text = "\n".join(problems(tmp_path))
    assert "source: set exactly one of 'table' or 'query'" in text
    assert "source.key: must be a column name or a list" in text
    assert "source.cursor: must name the watermark column" in text
    assert "source.lookback: 'soon' is not a duration" in text


def test_nested_and_children_errors(tmp_path: Path) -> None:
    text = ORDERS.replace('email = { column = "c_email", convert = ["trim", "lower"] }\n', "")
    text = text.replace('quantity = "qty"\n', 'qty = "qty"\n')
    text = text.replace('parent_key = ["order_id"]', 'parent_key = ["order_id", "x"]')
    write(tmp_path, "orders", text)
    found = "\n".join(problems(tmp_path))
    assert "orders.toml: fields.customer: required API field 'email' is not mapped" in found
    assert "children.products.fields.qty: unknown API field 'qty'" in found
    assert "children.products.fields: required API field 'quantity' is not mapped" in found
    assert "children.products.parent_key: has 2 column(s) but the parent key ['id'] has 1" in found


def test_list_field_must_be_a_child(tmp_path: Path) -> None:
    text = ORDERS.replace("[children.products]", "[children.nope]")
    write(tmp_path, "orders", text + '\n[fields.products]\nproduct_id = "x"\n')
    found = "\n".join(problems(tmp_path))
    assert "children.nope: unknown API field 'nope'" in found
    assert "fields.products: 'products' is a list: map it under [children.products]" in found


def _order_row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": 42,
        "lang": None,
        "number": "A-42",
        "status": 2,
        "cart_id": 7,
        "cart_updated_at": datetime(2026, 3, 29, 1, 30),  # before the DST jump in Paris
        "total": Decimal("12.345"),
        "total_excl": "10.2875",
        "voucher_value": Decimal("5"),
        "paid_at": datetime(2026, 1, 1),
        "created_at": datetime(2026, 7, 1, 12, 0, 0, 123456),
        "updated_at": None,
        "customer_id": 9,
        "c_email": "  Jane@Example.ORG ",
        "c_created": "2025-01-02 03:04:05",
    }
    row.update(over)
    return row


def test_compiled_item_exact(tmp_path: Path) -> None:
    m = load_mapping_file(write(tmp_path, "orders", ORDERS))
    cm = CompiledMapping(m, PARIS, id_data_source=5)
    lines = [
        {
            "order_id": 42,
            "id": 1,
            "product_id": 3,
            "variation_id": None,
            "qty": Decimal("2"),
            "price": 9.999,
            "price_excl": "8.3325",
        },
    ]
    built = cm.build(_order_row(), {"products": lines})
    assert built.problems == ()
    assert built.item == {
        "order_id": "42",
        "lang": "fr",
        "reference": "A-42",
        "status_id": "paid",
        "customer": {
            "customer_id": "9",
            "email": "jane@example.org",
            "created_at": "2025-01-02T02:04:05.000Z",
        },
        "products": [
            {
                "product_id": 3,
                "product_variation_id": None,
                "price": 10.0,
                "price_without_tax": 8.33,
                "quantity": 2,
            },
        ],
        "cart_id": "7",
        "cart_updated_at": "2026-03-29T00:30:00.000Z",
        "amount": 12.35,
        "amount_without_tax": 10.29,
        "shipping_costs": 4.9,
        "shipping_costs_without_tax": 4.08,
        "currency": "EUR",
        "voucher_value": "5.00",
        "is_confirmed": True,
        "created_at": "2026-07-01T10:00:00.123Z",
        "updated_at": "2026-07-01T10:00:00.123Z",
        "id_data_source": 5,
    }


def test_value_map_default_and_missing(tmp_path: Path) -> None:
    m = load_mapping_file(write(tmp_path, "orders", ORDERS))
    cm = CompiledMapping(m, PARIS)
    assert cm.build(_order_row(status=9), {}).item["status_id"] == "unknown"  # type: ignore[index]
    strict = ORDERS.replace(', default = "unknown"', "")
    cm2 = CompiledMapping(load_mapping_file(write(tmp_path, "orders", strict)), PARIS)
    built = cm2.build(_order_row(status=9), {})
    assert built.item is None
    assert built.problems == (
        "fields.status_id: value '9' is not in the value map (add it, or set a default)",
    )


def test_null_in_required_field_is_reported_not_sent(tmp_path: Path) -> None:
    cm = CompiledMapping(load_mapping_file(write(tmp_path, "orders", ORDERS)), PARIS)
    built = cm.build(_order_row(c_email=None, total="abc"), {})
    assert built.item is None
    assert (
        "fields.customer.email: required by the API but column 'c_email' is NULL" in built.problems
    )
    assert "fields.amount: expected a number, got 'abc'" in built.problems


def test_missing_column_is_a_problem(tmp_path: Path) -> None:
    cm = CompiledMapping(load_mapping_file(write(tmp_path, "orders", ORDERS)), PARIS)
    row = _order_row()
    del row["number"]
    with pytest.raises(MissingColumn) as info:
        cm.build(row, {})
    assert str(info.value) == "fields.reference: column 'number' is not in the source rows"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, True),
        (0, False),
        ("Y", True),
        ("n", False),
        ("true", True),
        ("FALSE", False),
        (True, True),
    ],
)
def test_booleans(tmp_path: Path, raw: object, expected: bool) -> None:
    cm = CompiledMapping(load_mapping_file(write(tmp_path, "orders", ORDERS)), PARIS)
    text = ORDERS.replace(
        'is_confirmed = { column = "paid_at", convert = "is_not_null" }', 'is_confirmed = "paid"'
    )
    cm = CompiledMapping(load_mapping_file(write(tmp_path, "orders", text)), PARIS)
    item = cm.build(_order_row(paid=raw), {}).item
    assert item is not None and item["is_confirmed"] is expected


def test_bad_boolean_rejected(tmp_path: Path) -> None:
    text = ORDERS.replace(
        'is_confirmed = { column = "paid_at", convert = "is_not_null" }', 'is_confirmed = "paid"'
    )
    cm = CompiledMapping(load_mapping_file(write(tmp_path, "orders", text)), PARIS)
    built = cm.build(_order_row(paid="maybe"), {})
    assert built.problems and "cannot read 'maybe' as a boolean" in built.problems[0]


def test_dates_ids_templates_and_id_lists(tmp_path: Path) -> None:
    text = """
    resource = "products"
    [source]
    table = "products"
    key = ["id", "lang"]
    cursor = "updated_at"
    [fields]
    product_id = "id"
    lang = "lang"
    name = { concat = ["brand", "name"], sep = " " }
    description = { column = "description", convert = "nullif_empty", default = "-" }
    link = { template = "https://shop.example/{lang}/p/{id}-{slug}" }
    currency = { const = "EUR" }
    price = "price"
    quantity_remaining = "stock"
    is_active = { column = "hidden", convert = "not" }
    created_at = { column = "created_at", timezone = "UTC" }
    updated_at = "updated_at"
    [children.category_ids]
    table = "product_categories"
    parent_key = { product_id = "id" }
    value = "category_id"
    """
    m = load_mapping_file(write(tmp_path, "products", text))
    assert m.children["category_ids"].parent_key == (("product_id", "id"),)
    cm = CompiledMapping(m, PARIS)
    row = {
        "id": "SKU-1",
        "lang": "FR_fr",
        "brand": "Acme",
        "name": None,
        "description": "  ",
        "slug": "kettle",
        "price": 19,
        "stock": 3.0,
        "hidden": "0",
        "created_at": datetime(2026, 1, 1, 0, 0),
        "updated_at": date(2026, 2, 1),
    }
    cats = [{"product_id": "SKU-1", "category_id": 4}, {"product_id": "SKU-1", "category_id": "12"}]
    item = cm.build(row, {"category_ids": cats}).item
    assert item is not None
    assert item["product_id"] == "SKU-1"  # a non-numeric id stays a string
    assert item["lang"] == "fr"
    assert item["name"] == "Acme"
    assert item["description"] == "-"
    assert item["link"] == "https://shop.example/FR_fr/p/SKU-1-kettle"
    assert item["price"] == 19.0
    assert item["quantity_remaining"] == 3
    assert item["is_active"] is True
    assert item["created_at"] == "2026-01-01T00:00:00.000Z"
    assert item["updated_at"] == "2026-01-31T23:00:00.000Z"
    assert item["category_ids"] == [4, 12]


def test_changes_tables(tmp_path: Path) -> None:
    text = ORDERS + textwrap.dedent(
        """
        [changes.customer]
        table = "customers"
        parent_key = { id = "customer_id" }
        cursor = "updated_at"
        """
    )
    m = load_mapping_file(write(tmp_path, "orders", text))
    (watched,) = m.changes.values()
    assert (watched.name, watched.path, watched.table, watched.cursor) == (
        "customer",
        "changes.customer",
        "customers",
        "updated_at",
    )
    assert watched.parent_key == (("id", "customer_id"),) and not watched.fields
    assert ("changes.customer.parent_key", "customer_id") in m.column_uses()
    assert "customer" not in m.children  # it fills no field

    bad = ORDERS + textwrap.dedent(
        """
        [changes.customer]
        table = "customers"
        parent_key = { id = "customer_id" }
        value = "x"
        [changes.other]
        parent_key = ["order_id"]
        cursor = "updated_at"
        """
    )
    write(tmp_path, "orders", bad)
    found = problems(tmp_path)
    assert any("changes.customer.value: unknown key" in p for p in found), found
    assert any("changes.customer.cursor: missing" in p for p in found), found
    assert any("changes.other" in p and "table" in p for p in found), found

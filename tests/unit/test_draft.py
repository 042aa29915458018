"""``draft``'s matching and planning on schemas described in memory (the schema reading itself
is exercised on SQLite, PostgreSQL and MariaDB by tests/e2e/test_draft.py)."""

from __future__ import annotations

import tomllib
from datetime import datetime
from typing import Any

import pytest

from connector import registry
from connector.draft.plan import build_plan
from connector.draft.render import render
from connector.draft.schema import Column, ForeignKey, Table


def col(name: str, kind: str, values: list[Any], nullable: bool = True) -> Column:
    return Column(name, kind, nullable, None, list(values))


def table(
    name: str,
    cols: list[Column],
    pk: tuple[str, ...] = ("id",),
    fks: list[ForeignKey] | None = None,
    indexed: set[str] | None = None,
) -> Table:
    t = Table(name, {c.name: c for c in cols}, pk, fks or [], set(indexed or set()) | {pk[0]}, [pk])
    t.row_count_sampled = len(cols[0].samples) if cols else 0
    return t


T1, T2 = datetime(2026, 1, 1, 10), datetime(2026, 1, 2, 11)


def fields_of(plan_text: str) -> dict[str, Any]:
    return dict(tomllib.loads(plan_text)["fields"])


@pytest.mark.parametrize(
    ("names", "lang"),
    [
        (("courriel", "prenom", "nom", "date_maj", "date_creation", "actif", "langue"), "fr"),
        (
            ("e_mail", "vorname", "nachname", "geaendert_am", "erstellt_am", "aktiv", "sprache"),
            "de",
        ),
        (("correo", "nombre", "apellido", "actualizado_en", "creado_en", "activo", "idioma"), "es"),
        (("email", "nome", "cognome", "aggiornato_il", "creato_il", "attivo", "lingua"), "it"),
        (
            (
                "emailadres",
                "voornaam",
                "achternaam",
                "gewijzigd_op",
                "aangemaakt",
                "actief",
                "taal",
            ),
            "nl",
        ),
    ],
)
def test_customer_columns_are_matched_by_name_in_six_languages(
    names: tuple[str, ...], lang: str
) -> None:
    email, first, last, upd, cre, active, lng = names
    t = table(
        "clients",
        [
            col("id", "int", [1, 2], nullable=False),
            col(email, "str", ["a@x.fr", "B@x.fr"]),
            col(first, "str", ["Ann", "Bo"], nullable=False),
            col(last, "str", ["Li", "Ma"], nullable=False),
            col(upd, "ts", [T1, T2]),
            col(cre, "ts", [T1, T1]),
            col(active, "int", [1, 0]),
            col(lng, "str", [lang, lang], nullable=False),
        ],
        indexed={upd},
    )
    plan = build_plan(registry.RESOURCES["customers"], t, {"clients": t})
    text = render(plan)
    f = fields_of(text)
    assert f["email"] == {"column": email, "convert": ["trim", "lower"]}
    assert (f["first_name"], f["last_name"]) == (first, last)
    assert (f["created_at"], f["updated_at"], f["is_active"], f["lang"]) == (cre, upd, active, lng)
    assert tomllib.loads(text)["source"]["cursor"] == upd
    # no opt-in / newsletter column: required, so TODO; check names them
    todo = {t.field for t in plan.todos if t.required}
    assert todo == {"is_opt_in", "is_newsletter_subscribed"}
    assert "# TODO is_opt_in (REQUIRED)" in text


def test_values_decide_when_names_do_not() -> None:
    t = table(
        "contacts",
        [
            col("id", "int", [1, 2], nullable=False),
            col("x1", "str", [" Ann@Shop.example", "bo@shop.example"], nullable=False),
            col("x2", "str", ["fr", "en"], nullable=False),
            col("stamp_updated", "ts", [T1, T2]),
        ],
    )
    plan = build_plan(registry.RESOURCES["customers"], t, {"contacts": t})
    email = next(c for c in plan.choices if c.field == "email")
    lang = next(c for c in plan.choices if c.field == "lang")
    assert email.spec == {"column": "x1", "convert": ["trim", "lower"]}
    assert "e-mail addresses" in email.note and "1 of 2 sampled values" in email.note
    assert email.confidence == "medium"
    assert lang.spec == "x2" and "ISO 639-1" in lang.note


def test_cursor_fallback_index_warning_and_soft_delete_flag() -> None:
    t = table(
        "kunden",
        [
            col("id", "int", [1, 2, 3], nullable=False),
            col("email", "str", ["a@b.de"] * 3),
            col("geaendert_am", "ts", [T1, None, T2]),
            col("erstellt_am", "ts", [T1, T1, T1], nullable=False),
            col("geloescht", "int", [0, 1, 0], nullable=False),
        ],
    )
    text = render(build_plan(registry.RESOURCES["customers"], t, {"kunden": t}))
    src = tomllib.loads(text)["source"]
    assert (src["cursor"], src["cursor_fallback"]) == ("geaendert_am", "erstellt_am")
    assert src["deleted"] == {"column": "geloescht", "when": "true"}
    assert "WARNING: no index on kunden.geaendert_am" in text
    flat = " ".join(line.lstrip("# ") for line in text.splitlines())
    assert "CREATE INDEX ix_kunden_geaendert_am ON kunden (geaendert_am)" in flat
    assert fields_of(text)["updated_at"] == {"coalesce": ["geaendert_am", "erstellt_am"]}


def test_a_table_with_only_a_creation_time_is_read_for_new_rows_and_says_so() -> None:
    t = table(
        "carriers",
        [
            col("id", "int", [1], nullable=False),
            col("name", "str", ["Post"], nullable=False),
            col("created_at", "ts", [T1], nullable=False),
        ],
        indexed={"created_at"},
    )
    text = render(build_plan(registry.RESOURCES["orders_carriers"], t, {"carriers": t}))
    assert tomllib.loads(text)["source"]["cursor"] == "created_at"
    assert "only NEW rows are seen" in text


def test_relative_urls_get_a_base_url_placeholder_and_zero_ids_a_note() -> None:
    products = table("products", [col("id", "int", [1], nullable=False)])
    variations = table("variations", [col("id", "int", [5, 6], nullable=False)])
    images = table(
        "images",
        [
            col("id", "int", [1, 2], nullable=False),
            col("product_id", "int", [1, 1], nullable=False),
            col("variation_id", "int", [0, 5], nullable=False),
            col("path", "str", ["/img/1.jpg", "/img/2.jpg"], nullable=False),
            col("is_cover", "int", [1, 0], nullable=False),
            col("lang", "str", ["fr", "fr"], nullable=False),
            col("updated_at", "ts", [T1, T2], nullable=False),
        ],
        fks=[
            ForeignKey(("product_id",), "products", ("id",)),
            ForeignKey(("variation_id",), "variations", ("id",)),
        ],
        indexed={"updated_at"},
    )
    tables = {"products": products, "variations": variations, "images": images}
    plan = build_plan(registry.RESOURCES["products_images"], images, tables)
    text = render(plan)
    f = fields_of(text)
    assert f["url"] == {"template": "https://YOUR-SHOP.example{path}"}
    assert "# TODO (placeholders to replace): url" in text
    assert "0 seems to mean none" in text
    assert tomllib.loads(text)["source"]["key"] == ["product_id", "id", "lang"]


def test_two_equally_good_columns_are_left_to_the_person() -> None:
    products = table(
        "products",
        [col("id", "int", [1], nullable=False), col("updated_at", "ts", [T1], nullable=False)],
    )
    tr = table(
        "product_texts",
        [
            col("product_id", "int", [1], nullable=False),
            col("lang", "str", ["fr"], nullable=False),
            col("name", "str", ["Thé"], nullable=False),
            col("updated_at", "ts", [T1], nullable=False),
        ],
        pk=("product_id", "lang"),
        fks=[ForeignKey(("product_id",), "products", ("id",))],
    )
    variations = table(
        "variations",
        [
            col("id", "int", [3], nullable=False),
            col("product_id", "int", [1], nullable=False),
            col("label", "str", ["250 g"], nullable=False),
            col("updated_at", "ts", [T1], nullable=False),
        ],
        fks=[ForeignKey(("product_id",), "products", ("id",))],
    )
    tables = {t.name: t for t in (products, tr, variations)}
    plan = build_plan(registry.RESOURCES["products_variations"], variations, tables)
    name = next(c for c in plan.choices if c.field == "name")
    assert name.confidence == "ambiguous"
    assert "fits as well, choose" in name.note
    assert "JOIN product_texts t ON t.product_id = m.product_id" in (plan.query or "")
    assert "# TODO (two columns fit as well, choose): name" in render(plan)


def test_a_composite_primary_key_is_the_key_and_its_id_part_the_id() -> None:
    t = table(
        "shop_customers",
        [
            col("shop", "int", [1, 1], nullable=False),
            col("id", "int", [7, 8], nullable=False),
            col("email", "str", ["a@b.fr", "c@d.fr"], nullable=False),
            col("updated_at", "ts", [T1, T2], nullable=False),
        ],
        pk=("shop", "id"),
    )
    plan = build_plan(registry.RESOURCES["customers"], t, {t.name: t})
    text = render(plan)
    assert tomllib.loads(text)["source"]["key"] == ["shop", "id"]
    assert fields_of(text)["customer_id"] == "id"

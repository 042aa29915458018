"""A second test shop, unlike the demo shop: German table and column names (one Spanish table),
``<table>_id`` primary keys, ``geaendert_am`` update times that are NULL for imported rows and
not indexed on one table, ``geloescht_am`` soft deletes, translations tables keyed by
(id, sprache), a link table ordered by ``reihenfolge``, a currency column on the products.

:func:`build` creates and fills it; :func:`expected` says what ShopiMind should receive from it,
written by hand from the same data (shop time Europe/Paris)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
PRICE = sa.Numeric(10, 2)
TZ = ZoneInfo("Europe/Paris")


def _active_and_stamps() -> tuple[sa.Column[Any], ...]:
    return (
        sa.Column("aktiv", sa.SmallInteger, nullable=False),
        sa.Column("erstellt_am", TS, nullable=False),
        sa.Column("geaendert_am", TS, nullable=False, index=True),
    )


def _md() -> sa.MetaData:
    md = sa.MetaData()
    C, Int = sa.Column, sa.Integer
    sa.Table(
        "hersteller",
        md,
        C("hersteller_id", Int, primary_key=True),
        C("bezeichnung", sa.String(80), nullable=False),
        *_active_and_stamps(),
    )
    sa.Table(
        "kunden",
        md,
        C("kunde_id", Int, primary_key=True),
        C("e_mail", sa.String(120), nullable=False),
        C("vorname", sa.String(60), nullable=False),
        C("nachname", sa.String(60), nullable=False),
        C("telefon", sa.String(30)),
        C("geburtsdatum", sa.Date),
        C("newsletter", sa.SmallInteger, nullable=False),
        C("einwilligung", sa.CHAR(1), nullable=False),
        C("sprache", sa.CHAR(2), nullable=False),
        C("aktiv", sa.SmallInteger, nullable=False),
        C("erstellt_am", TS, nullable=False),
        C("geaendert_am", TS),  # NULL for imported rows; no index (the draft warns)
        C("geloescht_am", TS),
    )
    sa.Table(
        "kategorien",
        md,
        C("kategorie_id", Int, primary_key=True),
        C("eltern_id", Int, sa.ForeignKey("kategorien.kategorie_id")),
        *_active_and_stamps(),
    )
    sa.Table(
        "kategorie_uebersetzungen",
        md,
        C("kategorie_id", Int, sa.ForeignKey("kategorien.kategorie_id"), primary_key=True),
        C("sprache", sa.CHAR(2), primary_key=True),
        C("bezeichnung", sa.String(80), nullable=False),
        C("beschreibung", sa.Text),
        C("slug", sa.String(80), nullable=False),
        C("geaendert_am", TS, nullable=False, index=True),
    )
    sa.Table(
        "artikel",
        md,
        C("artikel_id", Int, primary_key=True),
        C("artikelnummer", sa.String(20), nullable=False),
        C("ean", sa.String(13)),
        C("preis_brutto", PRICE, nullable=False),
        C("sonderpreis", PRICE),
        C("waehrung", sa.CHAR(3), nullable=False),
        C("lagerbestand", Int, nullable=False),
        C("hersteller_id", Int, sa.ForeignKey("hersteller.hersteller_id")),
        *_active_and_stamps(),
        C("geloescht_am", TS),
    )
    sa.Table(
        "artikel_uebersetzungen",
        md,
        C("artikel_id", Int, sa.ForeignKey("artikel.artikel_id"), primary_key=True),
        C("sprache", sa.CHAR(2), primary_key=True),
        C("bezeichnung", sa.String(120), nullable=False),
        C("beschreibung", sa.Text, nullable=False),
        C("kurzbeschreibung", sa.String(255)),
        C("slug", sa.String(120), nullable=False),
        C("geaendert_am", TS, nullable=False, index=True),
    )
    sa.Table(
        "artikel_kategorien",
        md,
        C("artikel_id", Int, sa.ForeignKey("artikel.artikel_id"), primary_key=True),
        C("kategorie_id", Int, sa.ForeignKey("kategorien.kategorie_id"), primary_key=True),
        C("reihenfolge", Int, nullable=False),
    )
    sa.Table(
        "suscriptores_boletin",  # kept by the shop's Spanish newsletter tool
        md,
        C("id", Int, primary_key=True),
        C("correo", sa.String(120), nullable=False),
        C("suscrito", sa.SmallInteger, nullable=False),
        C("nombre", sa.String(60)),
        C("apellidos", sa.String(60)),
        C("codigo_postal", sa.String(10)),
        C("idioma", sa.CHAR(2)),
        C("actualizado_en", TS, nullable=False, index=True),
    )
    return md


def _t(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 3, day, hour, 15, 30, 250000)


HERSTELLER = [
    {"hersteller_id": 1, "bezeichnung": "Kräuterhof", "aktiv": 1},
    {"hersteller_id": 2, "bezeichnung": "Bergmühle", "aktiv": 0},
]
KUNDEN = [
    # kunde_id, e_mail, vorname, nachname, telefon, geburtsdatum, newsletter, einwilligung,
    # sprache, geaendert_am (None: imported), geloescht_am
    (
        1,
        "Anna.Schmidt@Example.de ",
        "Anna",
        "Schmidt",
        "+49 30 1234",
        date(1980, 5, 1),
        1,
        "Y",
        "de",
        _t(5),
        None,
    ),
    (2, "jonas@example.de", "Jonas", "Weber", "", None, 0, "N", "de", None, None),
    (3, "marie@example.fr", "Marie", "Dupont", None, date(1991, 12, 24), 1, "N", "fr", _t(6), None),
    (4, "weg@example.de", "Paul", "Weg", None, None, 0, "N", "de", _t(7), _t(7)),
]
KATEGORIEN = [(1, None, 1), (2, 1, 1), (3, 1, 0)]
KAT_TEXTE = {
    (1, "de"): ("Tee", "Alle Tees", "tee"),
    (1, "en"): ("Tea", None, "tea"),
    (2, "de"): ("Grüner Tee", None, "gruener-tee"),
    (2, "en"): ("Green tea", "Green teas", "green-tea"),
    (3, "de"): ("Zubehör", "Kannen und Siebe", "zubehoer"),
    (3, "en"): ("Accessories", None, "accessories"),
}
ARTIKEL = [
    # artikel_id, artikelnummer, ean, preis_brutto, sonderpreis, lagerbestand, hersteller_id,
    # aktiv, geloescht_am
    (1, "TEE-001", "4006381333931", Decimal("12.90"), None, 40, 1, 1, None),
    (2, "TEE-002", None, Decimal("8.50"), Decimal("7.00"), 0, 1, 1, None),
    (3, "ZUB-001", "4006381333948", Decimal("24.00"), None, 5, 2, 0, None),
    (4, "ALT-001", None, Decimal("3.00"), None, 0, None, 0, _t(8)),
]
ART_TEXTE = {
    (a, lang): (
        f"{name} {lang}",
        f"Beschreibung {a} {lang}",
        None if a == 2 else f"kurz {a}",
        f"artikel-{a}-{lang}",
    )
    for a, name in ((1, "Sencha"), (2, "Rooibos"), (3, "Kanne"), (4, "Alt"))
    for lang in ("de", "en")
}
ART_KAT = [(1, 2, 1), (1, 1, 2), (2, 1, 1), (3, 3, 1)]
BOLETIN = [
    (1, " Lucia@Example.es", 1, "Lucía", "García López", "28001", "es"),
    (2, "pedro@example.es", 0, None, None, None, None),
    (3, "ana@example.es", 1, "Ana", "Ruiz", "08002", "es"),
]


def build(engine: sa.Engine) -> None:
    md = _md()
    md.create_all(engine)
    tb = md.tables
    with engine.begin() as c:
        c.execute(
            tb["hersteller"].insert(),
            [{**h, "erstellt_am": _t(1), "geaendert_am": _t(2)} for h in HERSTELLER],
        )
        c.execute(
            tb["kunden"].insert(),
            [
                dict(
                    zip(
                        (
                            "kunde_id",
                            "e_mail",
                            "vorname",
                            "nachname",
                            "telefon",
                            "geburtsdatum",
                            "newsletter",
                            "einwilligung",
                            "sprache",
                            "geaendert_am",
                            "geloescht_am",
                        ),
                        k,
                        strict=True,
                    ),
                    aktiv=1,
                    erstellt_am=_t(1, 8),
                )
                for k in KUNDEN
            ],
        )
        c.execute(
            tb["kategorien"].insert(),
            [
                {
                    "kategorie_id": k,
                    "eltern_id": p,
                    "aktiv": a,
                    "erstellt_am": _t(1),
                    "geaendert_am": _t(3),
                }
                for k, p, a in KATEGORIEN
            ],
        )
        c.execute(
            tb["kategorie_uebersetzungen"].insert(),
            [
                {
                    "kategorie_id": k,
                    "sprache": lang,
                    "bezeichnung": n,
                    "beschreibung": d,
                    "slug": s,
                    "geaendert_am": _t(4) if (k, lang) == (2, "de") else _t(2),
                }
                for (k, lang), (n, d, s) in KAT_TEXTE.items()
            ],
        )
        c.execute(
            tb["artikel"].insert(),
            [
                {
                    "artikel_id": a,
                    "artikelnummer": nr,
                    "ean": ean,
                    "preis_brutto": p,
                    "sonderpreis": sp,
                    "waehrung": "EUR",
                    "lagerbestand": st,
                    "hersteller_id": h,
                    "aktiv": ak,
                    "erstellt_am": _t(1),
                    "geaendert_am": _t(3),
                    "geloescht_am": gel,
                }
                for a, nr, ean, p, sp, st, h, ak, gel in ARTIKEL
            ],
        )
        c.execute(
            tb["artikel_uebersetzungen"].insert(),
            [
                {
                    "artikel_id": a,
                    "sprache": lang,
                    "bezeichnung": n,
                    "beschreibung": d,
                    "kurzbeschreibung": k,
                    "slug": s,
                    "geaendert_am": _t(9) if (a, lang) == (1, "en") else _t(2),
                }
                for (a, lang), (n, d, k, s) in ART_TEXTE.items()
            ],
        )
        c.execute(
            tb["artikel_kategorien"].insert(),
            [{"artikel_id": a, "kategorie_id": k, "reihenfolge": r} for a, k, r in ART_KAT],
        )
        c.execute(
            tb["suscriptores_boletin"].insert(),
            [
                dict(
                    zip(
                        (
                            "id",
                            "correo",
                            "suscrito",
                            "nombre",
                            "apellidos",
                            "codigo_postal",
                            "idioma",
                        ),
                        b,
                        strict=True,
                    ),
                    actualizado_en=_t(11),
                )
                for b in BOLETIN
            ],
        )


def _iso(ts: datetime) -> str:
    utc = ts.replace(tzinfo=TZ).astimezone(ZoneInfo("UTC"))
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _money(v: Decimal | None) -> float | None:
    return None if v is None else float(v)


def expected() -> dict[str, dict[str, dict[str, Any]]]:
    """Resource → key text → the item ShopiMind should get (live rows only)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    out["products_manufacturers"] = {
        str(h["hersteller_id"]): {
            "manufacturer_id": str(h["hersteller_id"]),
            "name": h["bezeichnung"],
            "is_active": bool(h["aktiv"]),
            "created_at": _iso(_t(1)),
            "updated_at": _iso(_t(2)),
        }
        for h in HERSTELLER
    }
    out["customers"] = {
        str(k[0]): {
            "customer_id": str(k[0]),
            "email": k[1].strip().lower(),
            "phone_number": k[4] or None,
            "first_name": k[2],
            "last_name": k[3],
            "birth_date": k[5].isoformat() if k[5] else None,
            "is_opt_in": k[7] == "Y",
            "is_newsletter_subscribed": bool(k[6]),
            "lang": k[8],
            "is_active": True,
            "created_at": _iso(_t(1, 8)),
            "updated_at": _iso(k[9] or _t(1, 8)),
        }
        for k in KUNDEN
        if k[10] is None
    }
    out["products_categories"] = {
        f"{k}|{lang}": {
            "category_id": k,
            "lang": lang,
            "name": n,
            "description": d or "",
            "parent_category_id": dict((x, p) for x, p, _ in KATEGORIEN)[k],
            "link": f"https://tee.example/{lang}/k/{s}",
            "is_active": bool(dict((x, a) for x, _, a in KATEGORIEN)[k]),
            "created_at": _iso(_t(1)),
            "updated_at": _iso(_t(4) if (k, lang) == (2, "de") else _t(3)),
        }
        for (k, lang), (n, d, s) in KAT_TEXTE.items()
    }
    out["products"] = {
        f"{a[0]}|{lang}": {
            "product_id": a[0],
            "lang": lang,
            "name": ART_TEXTE[a[0], lang][0],
            "reference": a[1],
            "ean13": a[2],
            "description": ART_TEXTE[a[0], lang][1],
            "description_short": ART_TEXTE[a[0], lang][2],
            "link": f"https://tee.example/{lang}/a/{ART_TEXTE[a[0], lang][3]}",
            "category_ids": [k for x, k, _ in sorted(ART_KAT, key=lambda r: r[2]) if x == a[0]],
            "manufacturer_id": None if a[6] is None else str(a[6]),
            "currency": "EUR",
            "price": _money(a[3]),
            "price_discount": _money(a[4]),
            "quantity_remaining": a[5],
            "is_active": bool(a[7]),
            "created_at": _iso(_t(1)),
            "updated_at": _iso(_t(9) if (a[0], lang) == (1, "en") else _t(3)),
        }
        for a in ARTIKEL
        if a[8] is None
        for lang in ("de", "en")
    }
    out["newsletter_subscribers"] = {
        b[1].strip().lower(): {
            "email": b[1].strip().lower(),
            "is_subscribed": bool(b[2]),
            "first_name": b[3] or "",
            "last_name": b[4] or "",
            "postal_code": b[5] or "",
            "lang": b[6] or "es",
            "updated_at": _iso(_t(11)),
        }
        for b in BOLETIN
    }
    return out

"""Benchmark data for the demo-shop schema (``connector.demo.shop``): generated once, cached.

``size`` is the number of customers and of orders; products are ``size // 10`` (two languages
each), order lines average 3.0 per order, addresses ``size // 10``, newsletter subscriptions
``size // 20``; vouchers and cart lines stay empty. The rows are generated seeded, as
tab-separated files (PostgreSQL COPY text format: ``\\N`` is NULL) under
``.bench/data-v{VERSION}-{size}/``; ``shopdb`` bulk-loads them into each database.

Timestamps are naive shop-local wall-clock times with microseconds (the demo shop's form), over
the two years before generation minus one hour; ids grow with ``created_at``; one customer in 10
has a NULL ``updated_at`` (the mapping falls back to ``created_at``), about 1% are soft-deleted.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

VERSION = 1
SEED = 20260601
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".bench"
NULL = "\\N"

FIRST = ("Camille", "Léa", "Manon", "Lucas", "Hugo", "Louis", "Olivia", "Amelia", "Oliver", "Jack")
LAST = ("Martin", "Bernard", "Dubois", "Petit", "Durand", "Smith", "Jones", "Taylor", "Brown")
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.fr")
NOUNS = (
    ("Lampe", "Lamp"),
    ("Tasse", "Mug"),
    ("Coussin", "Cushion"),
    ("Carnet", "Notebook"),
    ("Sac", "Bag"),
    ("Bougie", "Candle"),
    ("Plaid", "Throw"),
    ("Vase", "Vase"),
)
COLLECTIONS = ("Lumière", "Atelier", "Nord", "Rivage", "Jardin", "Céleste")


@dataclass(frozen=True)
class Sizes:
    customers: int
    orders: int
    products: int

    @classmethod
    def of(cls, size: int) -> Sizes:
        return cls(size, size, max(size // 10, 100))

    @property
    def addresses(self) -> int:
        return max(self.customers // 10, 10)

    @property
    def newsletter(self) -> int:
        return max(self.customers // 20, 10)


# --- generation ----------------------------------------------------------------------------------


class _Clock:
    """Naive shop-local timestamps (text, microseconds) in the two years before ``end``."""

    def __init__(self, end: datetime) -> None:
        self.end = end
        self.start = end - timedelta(days=730)
        self.span_us = int((self.end - self.start) / timedelta(microseconds=1))

    def at(self, frac: float) -> datetime:
        return self.start + timedelta(microseconds=int(self.span_us * min(max(frac, 0.0), 1.0)))

    def after(self, moment: datetime, rng: random.Random, max_days: float) -> datetime:
        limit = min(self.end, moment + timedelta(days=max_days))
        span = int((limit - moment) / timedelta(microseconds=1))
        return moment + timedelta(microseconds=int(span * rng.random())) if span > 0 else moment


# the columns written per table, in the order of the generated lines (other tables stay empty)
# fmt: off
COLUMNS: dict[str, tuple[str, ...]] = {
    "customer_groups": ("id", "created_at", "updated_at"),
    "customer_group_translations": ("group_id", "lang", "name", "updated_at"),
    "customers": (
        "id", "email", "first_name", "last_name", "phone", "birth_date", "newsletter", "optin",
        "lang", "active", "group_id", "created_at", "updated_at", "deleted_at",
    ),
    "addresses": (
        "id", "customer_id", "first_name", "last_name", "company", "line1", "line2", "postcode",
        "city", "country_iso", "phone", "mobile", "active", "created_at", "updated_at",
        "deleted_at",
    ),
    "categories": ("id", "parent_id", "active", "created_at", "updated_at"),
    "category_translations": ("category_id", "lang", "name", "description", "slug", "updated_at"),
    "manufacturers": ("id", "name", "active", "created_at", "updated_at"),
    "products": (
        "id", "sku", "ean13", "price_excl", "tax_rate", "price_incl", "discount_price", "stock",
        "manufacturer_id", "active", "created_at", "updated_at", "deleted_at",
    ),
    "product_translations": (
        "product_id", "lang", "name", "description", "short_description", "slug", "updated_at",
    ),
    "product_categories": ("product_id", "category_id", "position"),
    "product_variations": (
        "id", "product_id", "sku", "ean13", "price_incl", "discount", "stock", "is_default",
        "label", "updated_at",
    ),
    "product_images": (
        "id", "product_id", "variation_id", "url", "position", "is_cover", "updated_at",
    ),
    "order_statuses": ("id", "code", "deleted", "created_at", "updated_at"),
    "order_status_translations": ("status_id", "lang", "name", "updated_at"),
    "carriers": ("id", "name", "active", "created_at", "updated_at"),
    "carts": ("id", "customer_id", "currency", "lang", "created_at", "updated_at", "order_id"),
    "orders": (
        "id", "reference", "customer_id", "cart_id", "status_id", "carrier_id",
        "delivery_address_id", "invoice_address_id", "currency", "lang", "total_incl", "total_excl",
        "shipping_incl", "shipping_excl", "tracking_number", "voucher_code", "voucher_value",
        "paid_at", "created_at", "updated_at",
    ),
    "order_lines": (
        "id", "order_id", "product_id", "variation_id", "qty", "unit_price_incl", "unit_price_excl",
        "updated_at",
    ),
    "newsletter_subscriptions": (
        "id", "email", "subscribed", "first_name", "last_name", "postcode", "lang", "created_at",
        "updated_at",
    ),
}
# fmt: on


def ts(value: datetime | None) -> str:
    return NULL if value is None else value.isoformat(" ", "microseconds")


def _v(value: Any) -> str:
    return NULL if value is None else str(value)


Line = Callable[[], Iterator[str]]


def _tables(sizes: Sizes, clock: _Clock) -> dict[str, tuple[tuple[str, ...], Line]]:
    """Per table: (columns, generator of text lines), in foreign-key order."""
    n_c, n_o, n_p = sizes.customers, sizes.orders, sizes.products
    early = clock.start + timedelta(days=1)

    def groups() -> Iterator[str]:
        for gid in range(1, 5):
            yield f"{gid}\t{ts(early)}\t{ts(early)}\n"

    def group_tr() -> Iterator[str]:
        for gid in range(1, 5):
            for lang, name in (("fr", f"Groupe {gid}"), ("en", f"Group {gid}")):
                yield f"{gid}\t{lang}\t{name}\t{ts(early)}\n"

    def customers() -> Iterator[str]:
        rng = random.Random(SEED + 1)
        for cid in range(1, n_c + 1):
            c_at = clock.at((cid - rng.random()) / n_c * 0.98)
            lang = "fr" if rng.random() < 0.7 else "en"
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first.lower()}.{last.lower()}{cid}@{rng.choice(DOMAINS)}"
            if cid % 31 == 0:
                email = f" {email.capitalize()} "
            r = rng.random()
            phone = f"+33 6 {cid % 100:02d} {cid // 100 % 100:02d} 11 22" if r < 0.75 else None
            if 0.75 <= r < 0.8:
                phone = ""
            upd: datetime | None = None
            deleted: datetime | None = None
            if cid % 10 != 3:  # one customer in 10 imported without updated_at
                upd = c_at if rng.random() < 0.4 else clock.after(c_at, rng, 400)
                if cid % 97 == 5:
                    deleted = upd
            birth = f"19{50 + cid % 50}-{1 + cid % 12:02d}-{1 + cid % 28:02d}" if r < 0.6 else None
            yield (
                f"{cid}\t{email}\t{first}\t{last}\t{_v(phone)}\t{_v(birth)}\t{cid % 3 == 0:d}\t"
                f"{'Y' if cid % 4 == 0 else 'N'}\t{lang}\t{0 if deleted else 1}\t"
                f"{1 + (cid % 10 == 0) + (cid % 50 == 0)}\t{ts(c_at)}\t{ts(upd)}\t{ts(deleted)}\n"
            )

    def addresses() -> Iterator[str]:
        rng = random.Random(SEED + 2)
        n_a = sizes.addresses
        for aid in range(1, n_a + 1):
            cid = max(1, aid * n_c // n_a)
            c_at = clock.at(aid / n_a * 0.98)
            upd = clock.after(c_at, rng, 300)
            yield (
                f"{aid}\t{cid}\tPrénom\tNom{aid}\t{NULL}\t{aid} rue des Lilas\t{NULL}\t75011\t"
                f"Paris\tFR\t+33 1 23 45 67 89\t{NULL}\t1\t{ts(c_at)}\t{ts(upd)}\t{NULL}\n"
            )

    def categories() -> Iterator[str]:
        for cat in range(1, 51):
            parent = NULL if cat <= 10 else str(1 + cat % 10)
            yield f"{cat}\t{parent}\t1\t{ts(early)}\t{ts(early)}\n"

    def category_tr() -> Iterator[str]:
        for cat in range(1, 51):
            for lang in ("fr", "en"):
                yield f"{cat}\t{lang}\tCat {cat} {lang}\t{NULL}\tcat-{cat}-{lang}\t{ts(early)}\n"

    def manufacturers() -> Iterator[str]:
        for mid in range(1, 201):
            yield f"{mid}\tMaker {mid}\t1\t{ts(early)}\t{ts(early)}\n"

    def products() -> Iterator[str]:
        rng = random.Random(SEED + 3)
        for pid in range(1, n_p + 1):
            c_at = clock.at(pid / n_p * 0.6)
            euros = 4 + pid % 146
            incl = f"{euros}.{('00', '50', '90', '99')[pid % 4]}"
            excl = f"{float(incl) / 1.2:.4f}"
            disc = f"{float(incl) * 0.8:.2f}" if pid % 7 == 0 else NULL
            deleted = clock.after(c_at, rng, 500) if pid % 53 == 0 else None
            upd = deleted or clock.after(c_at, rng, 700)
            yield (
                f"{pid}\tBS-{pid:07d}\t{NULL if pid % 10 == 0 else f'{3000000000000 + pid:013d}'}"
                f"\t{excl}\t20.00\t{incl}\t{disc}\t{pid % 200}\t{1 + pid % 200}\t"
                f"{0 if deleted else 1}\t{ts(c_at)}\t{ts(upd)}\t{ts(deleted)}\n"
            )

    def product_tr() -> Iterator[str]:
        rng = random.Random(SEED + 4)
        for pid in range(1, n_p + 1):
            c_at = clock.at(pid / n_p * 0.6)
            (fr, en), col = NOUNS[pid % len(NOUNS)], COLLECTIONS[pid % len(COLLECTIONS)]
            for lang, name in (("fr", f"{fr} {col} {pid}"), ("en", f"{col} {en} {pid}")):
                desc = f"{name}: part of the {col} collection, designed by our craftspeople."
                short = name if pid % 3 else NULL
                slug = name.lower().replace(" ", "-")
                upd = clock.after(c_at, rng, 700)
                yield f"{pid}\t{lang}\t{name}\t{desc}\t{short}\t{slug}\t{ts(upd)}\n"

    def product_categories() -> Iterator[str]:
        for pid in range(1, n_p + 1):
            leaf = 11 + pid % 40
            yield f"{pid}\t{leaf}\t1\n"
            yield f"{pid}\t{1 + leaf % 10}\t2\n"

    n_v = n_p // 5

    def variations() -> Iterator[str]:
        rng = random.Random(SEED + 5)
        for vid in range(1, n_v + 1):
            pid = vid * 5
            upd = clock.after(clock.at(pid / n_p * 0.6), rng, 700)
            yield (
                f"{vid}\t{pid}\tBS-{pid:07d}-{vid}\t{NULL}\t{10 + vid % 90}.00\t{NULL}\t"
                f"{vid % 80}\t{int(vid % 2 == 0)}\tTaille {vid % 5}\t{ts(upd)}\n"
            )

    def images() -> Iterator[str]:
        rng = random.Random(SEED + 6)
        for pid in range(1, n_p + 1):
            upd = clock.after(clock.at(pid / n_p * 0.6), rng, 700)
            url = f"https://cdn.bench-shop.example/img/p/{pid}/{pid}.jpg"
            yield f"{pid}\t{pid}\t{NULL}\t{url}\t1\t1\t{ts(upd)}\n"

    def statuses() -> Iterator[str]:
        for sid in range(1, 9):
            yield f"{sid}\tstatus_{sid}\t0\t{ts(early)}\t{ts(early)}\n"

    def status_tr() -> Iterator[str]:
        for sid in range(1, 9):
            for lang in ("fr", "en"):
                yield f"{sid}\t{lang}\tStatus {sid} {lang}\t{ts(early)}\n"

    def carriers() -> Iterator[str]:
        for cid in range(1, 6):
            yield f"{cid}\tCarrier {cid}\t1\t{ts(early)}\t{ts(early)}\n"

    def order_times(rng: random.Random, oid: int) -> tuple[datetime, datetime, int]:
        o_at = clock.at(0.02 + (oid - rng.random()) / n_o * 0.97)
        cid = 1 + int(rng.random() * max(1, min(n_c, oid * n_c // n_o)))
        return o_at, clock.after(o_at, rng, 10), cid

    def carts() -> Iterator[str]:
        rng = random.Random(SEED + 7)
        for oid in range(1, n_o + 1):
            o_at, _upd, cid = order_times(rng, oid)
            made = o_at - timedelta(minutes=20)
            lang = "fr" if oid % 3 else "en"
            yield f"{oid}\t{cid}\tEUR\t{lang}\t{ts(made)}\t{ts(o_at)}\t{oid}\n"

    def orders() -> Iterator[str]:
        rng = random.Random(SEED + 7)
        lines = random.Random(SEED + 8)
        n_a = sizes.addresses
        for oid in range(1, n_o + 1):
            o_at, upd, cid = order_times(rng, oid)
            aid = 1 + oid % n_a
            total = 20 + oid % 200
            paid = ts(o_at) if lines.random() < 0.9 else NULL
            voucher = (f"V{oid % 1000:04d}", "5.0000") if oid % 11 == 0 else (NULL, NULL)
            yield (
                f"{oid}\tBS-{oid:08d}\t{cid}\t{oid}\t{1 + oid % 8}\t{1 + oid % 5}\t{aid}\t{aid}\t"
                f"EUR\t{'fr' if oid % 3 else 'en'}\t{total}.9000\t{total * 5 / 6:.4f}\t4.9000\t"
                f"4.0833\t{f'6A{oid:010d}FR' if oid % 2 else NULL}\t{voucher[0]}\t{voucher[1]}\t"
                f"{paid}\t{ts(o_at)}\t{ts(upd)}\n"
            )

    def order_lines() -> Iterator[str]:
        rng = random.Random(SEED + 9)
        clock_rng = random.Random(SEED + 7)
        lid = 0
        weights = (1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5)  # mean 3.0
        for oid in range(1, n_o + 1):
            o_at, _upd, _cid = order_times(clock_rng, oid)
            for _ in range(weights[int(rng.random() * 20)]):
                lid += 1
                pid = 1 + int(rng.random() * n_p)
                incl = 4 + pid % 146
                yield (
                    f"{lid}\t{oid}\t{pid}\t{NULL}\t{1 + lid % 3}\t{incl}.0000\t"
                    f"{incl / 1.2:.4f}\t{ts(o_at)}\n"
                )

    def newsletter() -> Iterator[str]:
        rng = random.Random(SEED + 10)
        n_n = sizes.newsletter
        for nid in range(1, n_n + 1):
            c_at = clock.at(nid / n_n * 0.98)
            upd = clock.after(c_at, rng, 200)
            yield (
                f"{nid}\treader{nid}@example.org\t{int(nid % 5 != 0)}\t{NULL}\t{NULL}\t"
                f"{NULL}\tfr\t{ts(c_at)}\t{ts(upd)}\n"
            )

    gens: dict[str, Line] = {
        "customer_groups": groups,
        "customer_group_translations": group_tr,
        "customers": customers,
        "addresses": addresses,
        "categories": categories,
        "category_translations": category_tr,
        "manufacturers": manufacturers,
        "products": products,
        "product_translations": product_tr,
        "product_categories": product_categories,
        "product_variations": variations,
        "product_images": images,
        "order_statuses": statuses,
        "order_status_translations": status_tr,
        "carriers": carriers,
        "carts": carts,
        "orders": orders,
        "order_lines": order_lines,
        "newsletter_subscriptions": newsletter,
    }
    return {name: (COLUMNS[name], gens[name]) for name in COLUMNS}


def data_dir(size: int) -> Path:
    """Generate the tab-separated files of ``size`` once; return their folder."""
    folder = CACHE / f"data-v{VERSION}-{size}"
    if (folder / "DONE").is_file():
        return folder
    tmp = CACHE / f".data-v{VERSION}-{size}.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    # timestamps end an hour before generation, in the shop's wall-clock time (Europe/Paris-ish)
    clock = _Clock(datetime.now().replace(microsecond=0) - timedelta(hours=1))
    started = time.monotonic()
    counts = {}
    for name, (_cols, lines) in _tables(Sizes.of(size), clock).items():
        n = 0
        with open(tmp / f"{name}.tsv", "w", encoding="utf-8", newline="\n") as f:
            buf: list[str] = []
            for line in lines():
                buf.append(line)
                if len(buf) >= 50_000:
                    f.write("".join(buf))
                    n += len(buf)
                    buf.clear()
            f.write("".join(buf))
            n += len(buf)
        counts[name] = n
    (tmp / "counts.txt").write_text(
        "".join(f"{k}\t{v}\n" for k, v in counts.items()), encoding="utf-8"
    )
    (tmp / "DONE").write_text(f"generated in {time.monotonic() - started:.1f}s\n")
    if folder.exists():  # another run finished first
        _rmtree(tmp)
    else:
        tmp.rename(folder)
    return folder


def _rmtree(path: Path) -> None:
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


def counts(folder: Path) -> dict[str, int]:
    out = {}
    for line in (folder / "counts.txt").read_text(encoding="utf-8").splitlines():
        name, n = line.split("\t")
        out[name] = int(n)
    return out

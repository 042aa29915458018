"""Row generation for the demo shop: vocabulary and a seeded generator, no database code.

``generate(seed, scale, now)`` returns ``{table: [row, ...]}`` in insertion (foreign-key) order.
Every random choice goes through one ``random.Random(seed)``, so a seed always gives the same rows.
Ids grow with ``created_at`` as they do in a real shop; timestamps are naive shop-local wall-clock
times with microseconds, spread over the two years before ``now`` and never later than ``now - 1h``.
"""

from __future__ import annotations

import bisect
import math
import random
import re
import unicodedata
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

Row = dict[str, Any]

LANGS = ("fr", "en")
CENT = Decimal("0.01")
Q4 = Decimal("0.0001")

TABLE_ORDER = (
    "customer_groups",
    "customer_group_translations",
    "customers",
    "addresses",
    "categories",
    "category_translations",
    "manufacturers",
    "products",
    "product_translations",
    "product_categories",
    "product_variations",
    "product_images",
    "order_statuses",
    "order_status_translations",
    "carriers",
    "vouchers",
    "voucher_translations",
    "carts",
    "cart_lines",
    "orders",
    "order_lines",
    "newsletter_subscriptions",
    "loyalty_accounts",
    "store_purchases",
)
STORES = ("Lyon Presqu'île", "Paris Marais", "Bordeaux Chartrons", "Lille Vieux-Lille")
TIERS = ((0, "Bronze"), (500, "Silver"), (1500, "Gold"))

# fmt: off
FIRST = {
    "fr": [
        "Camille", "Léa", "Manon", "Chloé", "Inès", "Julie", "Sarah", "Emma", "Louise",
        "Alice", "Zoé", "Lucie", "Anaïs", "Margaux", "Élodie", "Hélène", "Nathalie",
        "Sophie", "Lucas", "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Nathan", "Théo",
        "Léo", "Paul", "Antoine", "Julien", "Nicolas", "Thomas", "Mathieu", "François",
        "Émile", "Baptiste", "Rémi", "Loïc",
    ],
    "en": [
        "Olivia", "Amelia", "Isla", "Ava", "Emily", "Grace", "Sophie", "Lily", "Charlotte",
        "Ella", "Mia", "Ruby", "Harriet", "Alice", "Oliver", "George", "Harry", "Jack",
        "Jacob", "Noah", "Charlie", "Thomas", "Oscar", "William", "James", "Henry", "Leo",
        "Alfie", "Joshua", "Freddie", "Archie", "Ethan", "Daniel", "Samuel",
    ],
}
LAST = {
    "fr": [
        "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
        "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
        "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier",
        "Dupont", "Lambert", "Bonnet", "François", "Martinez", "Legrand", "Garnier",
        "Faure", "Rousseau", "Blanc", "Guérin", "Muller", "Henry", "Roussel", "Nicolas",
        "Perrin",
    ],
    "en": [
        "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
        "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green",
        "Hall", "Wood", "Jackson", "Clarke", "Patel", "Khan", "Lewis", "James", "Phillips",
        "Mason", "Mitchell", "Rose", "Davis", "Rodriguez", "Cox", "Alexander", "Murphy",
        "Kelly", "O'Brien", "Byrne",
    ],
}
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.fr", "post.example.co.uk")
CITIES = {
    "FR": [
        ("Paris", "75011"), ("Paris", "75015"), ("Lyon", "69003"), ("Marseille", "13006"),
        ("Toulouse", "31000"), ("Nantes", "44000"), ("Bordeaux", "33000"), ("Lille", "59000"),
        ("Rennes", "35000"), ("Strasbourg", "67000"), ("Montpellier", "34000"),
        ("Grenoble", "38000"), ("Dijon", "21000"), ("Angers", "49000"), ("Nancy", "54000"),
        ("Tours", "37000"), ("Annecy", "74000"), ("La Rochelle", "17000"), ("Brest", "29200"),
    ],
    "BE": [("Bruxelles", "1000"), ("Liège", "4000"), ("Namur", "5000"), ("Gand", "9000")],
    "CH": [("Genève", "1201"), ("Lausanne", "1003"), ("Neuchâtel", "2000")],
    "GB": [
        ("London", "SW1A 1AA"), ("London", "E1 6AN"), ("Manchester", "M1 1AE"),
        ("Bristol", "BS1 4DJ"), ("Leeds", "LS1 4AP"), ("Edinburgh", "EH1 1YZ"),
        ("Brighton", "BN1 1AE"), ("York", "YO1 7HH"),
    ],
    "IE": [("Dublin", "D02 X285"), ("Cork", "T12 RX8V"), ("Galway", "H91 E2K9")],
}
STREETS = {
    "fr": [
        "de la République", "Victor Hugo", "des Lilas", "du Moulin", "Pasteur",
        "de la Gare", "Jean Jaurès", "du Château", "des Écoles", "Saint-Michel", "de Verdun",
    ],
    "en": [
        "High", "Station", "Church", "Mill", "Park", "Victoria", "Green", "Manor", "King's",
        "Queen's", "Chapel",
    ],
}
COMPANIES = ("Atelier Lumière SARL", "Bâtisseurs & Co", "Northwind Ltd", "Café des Arts",
             "Studio Pixel", "Brightside Consulting", "Les Jardins d'Anna", "Harbour & Sons")

GROUPS = [("Clients", "Customers"), ("Professionnels", "Professionals"), ("VIP", "VIP"),
          ("Revendeurs", "Resellers")]

# (fr, en, children: (fr, en, product nouns (fr, en), option set or "", tax rate))
CATEGORIES: list[tuple[str, str, list[tuple[str, str, list[tuple[str, str]], str, str]]]] = [
    ("Maison", "Home", [
        ("Cuisine", "Kitchen", [("Tasse", "mug"), ("Théière", "teapot"), ("Saladier", "bowl"),
                                ("Planche à découper", "chopping board")], "", "20.00"),
        ("Décoration", "Decoration", [("Vase", "vase"), ("Bougie", "candle"),
                                      ("Miroir", "mirror"), ("Cadre", "frame")], "", "20.00"),
        ("Linge de maison", "Home linen", [("Nappe", "tablecloth"), ("Plaid", "throw"),
                                           ("Housse de coussin", "cushion cover")],
         "dims", "20.00"),
    ]),
    ("Mode", "Fashion", [
        ("T-shirts", "T-shirts", [("T-shirt", "T-shirt"), ("Débardeur", "tank top")],
         "sizes", "20.00"),
        ("Pulls", "Sweaters", [("Pull", "sweater"), ("Gilet", "cardigan"),
                               ("Sweat", "sweatshirt")], "sizes", "20.00"),
        ("Accessoires", "Accessories", [("Écharpe", "scarf"), ("Bonnet", "beanie"),
                                        ("Sac", "bag")], "", "20.00"),
    ]),
    ("Beauté", "Beauty", [
        ("Soins du visage", "Face care", [("Crème", "cream"), ("Sérum", "serum")],
         "volumes", "20.00"),
        ("Parfums", "Fragrances", [("Eau de toilette", "eau de toilette"),
                                   ("Brume", "mist")], "volumes", "20.00"),
        ("Bain", "Bath", [("Savon", "soap"), ("Sels de bain", "bath salts")], "", "20.00"),
    ]),
    ("Épicerie fine", "Delicatessen", [
        ("Thés", "Teas", [("Thé vert", "green tea"), ("Thé noir", "black tea"),
                          ("Infusion", "herbal tea")], "weights", "5.50"),
        ("Cafés", "Coffees", [("Café en grains", "coffee beans"),
                              ("Café moulu", "ground coffee")], "weights", "5.50"),
        ("Chocolats", "Chocolates", [("Tablette", "chocolate bar"),
                                     ("Pralinés", "pralines")], "", "5.50"),
    ]),
    ("Loisirs", "Leisure", [
        ("Livres", "Books", [("Carnet de recettes", "recipe book"),
                             ("Guide de voyage", "travel guide")], "", "5.50"),
        ("Jeux", "Games", [("Puzzle", "jigsaw puzzle"), ("Jeu de cartes", "card game")],
         "", "20.00"),
        ("Papeterie", "Stationery", [("Carnet", "notebook"), ("Stylo", "pen"),
                                     ("Agenda", "planner")], "", "20.00"),
    ]),
]
COLLECTIONS = [("Provence", "Provence"), ("Océan", "Ocean"), ("Nordique", "Nordic"),
               ("Atelier", "Atelier"), ("Héritage", "Heritage"), ("Riviera", "Riviera"),
               ("Montagne", "Mountain"), ("Lumière", "Lumière"), ("Bohème", "Boho")]
OPTIONS = {
    "sizes": ["XS", "S", "M", "L", "XL"],
    "volumes": ["30 ml", "50 ml", "100 ml"],
    "weights": ["100 g", "250 g", "500 g", "1 kg"],
    "dims": ["40 x 40 cm", "60 x 60 cm", "150 x 200 cm"],
}
MANUFACTURERS = ["Maison Verdier", "Atelier Colbert", "Nordhem", "Les Tisserands du Lin",
                 "Savonnerie de Provence", "Brûlerie Saint-Jean", "Chocolaterie Amaury",
                 "Éditions du Phare", "Kraft & Co", "Oak & Ember", "Luma Design", "Terre d'Ocre",
                 "Papeterie Moulin", "Wildcraft", "Hollow Pine Games"]
# (fr, en, deleted)
STATUSES = [("En attente de paiement", "Awaiting payment", 0),
            ("Paiement accepté", "Payment accepted", 0),
            ("En cours de préparation", "Processing", 0),
            ("Expédiée", "Shipped", 0),
            ("Livrée", "Delivered", 0),
            ("Annulée", "Cancelled", 0),
            ("Remboursée", "Refunded", 0),
            ("En attente de virement (ancien)", "Awaiting bank transfer (legacy)", 1)]
# (name, shipping price incl. tax, free above 60 EUR, active, tracking prefix)
CARRIERS = [("Colissimo", "4.90", True, 1, "6A"), ("Chronopost", "9.90", False, 1, "XY"),
            ("Mondial Relay", "3.90", True, 1, "MR"), ("DHL Express", "12.90", False, 0, "JD")]
# fmt: on
VOUCHER_WORDS = ["BIENVENUE", "SOLDES", "NOEL", "ETE", "FIDELITE", "PRINTEMPS", "VIP", "MERCI"]


def slugify(text: str, sep: str = "-") -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", sep, plain.lower()).strip(sep)


def ean13(rng: random.Random) -> str:
    digits = "376" + "".join(str(rng.randrange(10)) for _ in range(9))
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits))
    return digits + str((10 - total % 10) % 10)


def excl(incl: Decimal, rate: Decimal) -> Decimal:
    return (incl / (1 + rate / 100)).quantize(Q4, rounding=ROUND_HALF_UP)


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class Generator:
    def __init__(self, seed: int, scale: float, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.scale = scale
        self.end = now - timedelta(hours=1)
        self.start = now - timedelta(days=730)
        self.rows: dict[str, list[Row]] = {t: [] for t in TABLE_ORDER}

    # -- helpers -------------------------------------------------------------------------------
    def n(self, base: int, minimum: int = 1) -> int:
        return max(minimum, round(base * self.scale))

    def ts(self, low: datetime, high: datetime) -> datetime:
        if high <= low:
            return low
        span = (high - low) // timedelta(microseconds=1)
        return low + timedelta(microseconds=int(span * self.rng.random()))

    def after(self, moment: datetime, max_delta: timedelta) -> datetime:
        return self.ts(moment, min(self.end, moment + max_delta))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def add(self, table: str, row: Row) -> Row:
        self.rows[table].append(row)
        return row

    # -- reference data ------------------------------------------------------------------------
    def reference(self) -> None:
        early = self.start + timedelta(days=1)
        for gid, (fr, en) in enumerate(GROUPS, start=1):
            c_at = self.ts(self.start, early)
            self.add(
                "customer_groups",
                {"id": gid, "created_at": c_at, "updated_at": self.ts(c_at, self.end)},
            )
            for lang, name in zip(LANGS, (fr, en), strict=True):
                self.add(
                    "customer_group_translations",
                    {
                        "group_id": gid,
                        "lang": lang,
                        "name": name,
                        "updated_at": self.ts(c_at, self.end),
                    },
                )
        for sid, (fr, en, deleted) in enumerate(STATUSES, start=1):
            c_at = self.ts(self.start, early)
            self.add(
                "order_statuses",
                {
                    "id": sid,
                    "code": slugify(en, "_"),
                    "deleted": deleted,
                    "created_at": c_at,
                    "updated_at": self.ts(c_at, self.end),
                },
            )
            for lang, name in zip(LANGS, (fr, en), strict=True):
                self.add(
                    "order_status_translations",
                    {
                        "status_id": sid,
                        "lang": lang,
                        "name": name,
                        "updated_at": self.ts(c_at, self.end),
                    },
                )
        for cid, (name, _price, _free, active, _prefix) in enumerate(CARRIERS, start=1):
            c_at = self.ts(self.start, early)
            self.add(
                "carriers",
                {
                    "id": cid,
                    "name": name,
                    "active": active,
                    "created_at": c_at,
                    "updated_at": self.ts(c_at, self.end),
                },
            )
        for mid, name in enumerate(MANUFACTURERS, start=1):
            c_at = self.ts(self.start, early)
            self.add(
                "manufacturers",
                {
                    "id": mid,
                    "name": name,
                    "active": int(mid != 13),
                    "created_at": c_at,
                    "updated_at": self.ts(c_at, self.end),
                },
            )
        self.leaves: list[tuple[int, list[tuple[str, str]], str, Decimal]] = []
        next_id = len(CATEGORIES) + 1
        for rid, (fr, en, children) in enumerate(CATEGORIES, start=1):
            self.category(rid, None, fr, en)
            for cfr, cen, nouns, options, rate in children:
                self.category(next_id, rid, cfr, cen)
                self.leaves.append((next_id, nouns, options, Decimal(rate)))
                next_id += 1

    def category(self, cid: int, parent: int | None, fr: str, en: str) -> None:
        c_at = self.ts(self.start, self.start + timedelta(days=3))
        self.add(
            "categories",
            {
                "id": cid,
                "parent_id": parent,
                "active": 1,
                "created_at": c_at,
                "updated_at": self.ts(c_at, self.end),
            },
        )
        for lang, name in zip(LANGS, (fr, en), strict=True):
            text = (
                f"Découvrez notre sélection « {name} »."
                if lang == "fr"
                else f"Discover our {name.lower()} selection."
            )
            self.add(
                "category_translations",
                {
                    "category_id": cid,
                    "lang": lang,
                    "name": name,
                    "description": text if self.chance(0.85) else None,
                    "slug": slugify(name),
                    "updated_at": self.ts(c_at, self.end),
                },
            )

    # -- customers -----------------------------------------------------------------------------
    def customers(self) -> None:
        rng = self.rng
        created = sorted(
            self.ts(self.start, self.end - timedelta(days=1)) for _ in range(self.n(600))
        )
        self.customer_times = created
        for cid, c_at in enumerate(created, start=1):
            lang = "fr" if self.chance(0.7) else "en"
            first, last = rng.choice(FIRST[lang]), rng.choice(LAST[lang])
            email = f"{slugify(first, '.')}.{slugify(last, '')}{cid}@{rng.choice(DOMAINS)}"
            quirk = rng.random()
            if quirk < 0.03:
                email = email.capitalize()
            elif quirk < 0.05:
                email = f" {email} "
            phone = None
            if self.chance(0.75):
                phone = ("+33 6 " if lang == "fr" else "+44 7700 ") + " ".join(
                    f"{rng.randrange(100):02d}" for _ in range(4 if lang == "fr" else 3)
                )
            elif self.chance(0.2):
                phone = ""
            updated: datetime | None = None
            deleted: datetime | None = None
            if cid % 25 != 3:  # one customer in 25 was imported without updated_at
                updated = c_at if self.chance(0.4) else self.ts(c_at, self.end)
                if self.chance(0.015):
                    deleted = updated = self.ts(c_at, self.end)
            birth = None
            if self.chance(0.6):
                birth = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 55))
            row = self.add(
                "customers",
                {
                    "id": cid,
                    "email": email,
                    "first_name": first,
                    "last_name": last,
                    "phone": phone,
                    "birth_date": birth,
                    "newsletter": int(self.chance(0.4)),
                    "optin": "Y" if self.chance(0.3) else "N",
                    "lang": lang,
                    "active": 0 if deleted or self.chance(0.04) else 1,
                    "group_id": rng.choices((1, 2, 3, 4), (80, 10, 7, 3))[0],
                    "created_at": c_at,
                    "updated_at": updated,
                    "deleted_at": deleted,
                },
            )
            row["_addresses"] = []
        self.addresses()

    def addresses(self) -> None:
        rng = self.rng
        pending: list[Row] = []
        for cust in self.rows["customers"]:
            count = rng.choices((0, 1, 2, 3), (10, 70, 15, 5))[0]
            moment = cust["created_at"]
            for k in range(count):
                moment = self.after(moment, timedelta(days=3 if k == 0 else 200))
                lang = cust["lang"]
                country = (
                    rng.choices(("FR", "BE", "CH"), (85, 10, 5))[0]
                    if lang == "fr"
                    else rng.choices(("GB", "IE", "FR"), (75, 20, 5))[0]
                )
                city, postcode = rng.choice(CITIES[country])
                street = rng.choice(STREETS["fr" if country in ("FR", "BE", "CH") else "en"])
                line1 = (
                    f"{rng.randrange(1, 180)} rue {street}"
                    if country in ("FR", "BE", "CH")
                    else f"{rng.randrange(1, 180)} {street} Street"
                )
                other = self.chance(0.1)
                deleted = self.after(moment, timedelta(days=300)) if self.chance(0.03) else None
                pending.append(
                    {
                        "customer_id": cust["id"],
                        "first_name": rng.choice(FIRST[lang]) if other else cust["first_name"],
                        "last_name": cust["last_name"],
                        "company": rng.choice(COMPANIES) if self.chance(0.15) else None,
                        "line1": line1,
                        "line2": (
                            f"Bât. {rng.choice('ABCD')}, apt {rng.randrange(1, 60)}"
                            if self.chance(0.2)
                            else None
                        ),
                        "postcode": postcode,
                        "city": city,
                        "country_iso": country,
                        "phone": cust["phone"] or None,
                        "mobile": cust["phone"] if cust["phone"] and self.chance(0.5) else None,
                        "active": 0 if deleted else 1,
                        "created_at": moment,
                        "updated_at": deleted or self.ts(moment, self.end),
                        "deleted_at": deleted,
                    }
                )
        pending.sort(key=lambda r: r["created_at"])
        by_id = {c["id"]: c for c in self.rows["customers"]}
        for aid, row in enumerate(pending, start=1):
            row["id"] = aid
            self.add("addresses", row)
            if row["active"]:
                by_id[row["customer_id"]]["_addresses"].append(row)

    # -- catalogue -----------------------------------------------------------------------------
    def products(self) -> None:
        rng = self.rng
        count = self.n(300)
        first_week = max(1, count // 15)
        created = sorted(
            [self.ts(self.start, self.start + timedelta(days=7)) for _ in range(first_week)]
            + [
                self.ts(self.start, self.start + timedelta(days=400))
                for _ in range(count - first_week)
            ]
        )
        self.product_times = created
        image_id = 0
        variation_id = 0
        for pid, c_at in enumerate(created, start=1):
            leaf, nouns, options, rate = rng.choice(self.leaves)
            (noun_fr, noun_en), (col_fr, col_en) = rng.choice(nouns), rng.choice(COLLECTIONS)
            names = {"fr": f"{noun_fr} {col_fr}", "en": f"{col_en} {noun_en}"}
            euros = int(math.exp(rng.uniform(math.log(4), math.log(150))))  # many cheap items
            price = Decimal(f"{euros}.{rng.choice(('00', '50', '90', '99'))}")
            deleted = self.after(c_at, timedelta(days=600)) if self.chance(0.02) else None
            updated = deleted or self.ts(c_at, self.end)
            product = self.add(
                "products",
                {
                    "id": pid,
                    "sku": f"DS-{pid:05d}",
                    "ean13": ean13(rng) if self.chance(0.9) else None,
                    "price_excl": excl(price, rate),
                    "tax_rate": rate,
                    "price_incl": price,
                    "discount_price": money(price * Decimal("0.8")) if self.chance(0.15) else None,
                    "stock": 0 if self.chance(0.1) else rng.randrange(1, 200),
                    "manufacturer_id": rng.randrange(1, 16) if self.chance(0.9) else None,
                    "active": 0 if deleted or self.chance(0.06) else 1,
                    "created_at": c_at,
                    "updated_at": updated,
                    "deleted_at": deleted,
                },
            )
            product["_variations"] = []
            for lang in LANGS:
                name = names[lang]
                self.add(
                    "product_translations",
                    {
                        "product_id": pid,
                        "lang": lang,
                        "name": name,
                        "description": (
                            f"{name} : une pièce de la collection {col_fr}, "
                            "conçue et contrôlée par nos artisans."
                            if lang == "fr"
                            else f"{name}: part of our {col_en} collection, designed and "
                            "checked by our craftspeople."
                        ),
                        "short_description": name if self.chance(0.7) else None,
                        "slug": slugify(name),
                        "updated_at": self.ts(c_at, self.end),
                    },
                )
            parent = next(r["parent_id"] for r in self.rows["categories"] if r["id"] == leaf)
            links = [leaf, parent]
            if self.chance(0.2):
                extra = rng.choice(self.leaves)[0]
                if extra not in links:
                    links.append(extra)
            for pos, cat in enumerate(links, start=1):
                self.add(
                    "product_categories", {"product_id": pid, "category_id": cat, "position": pos}
                )
            if options and self.chance(0.7):
                labels = OPTIONS[options]
                start = rng.randrange(0, max(1, len(labels) - 2))
                for k, label in enumerate(labels[start : start + rng.randrange(2, 5)]):
                    variation_id += 1
                    v_price = money(price + Decimal(k * rng.choice((0, 2, 5))))
                    product["_variations"].append(
                        self.add(
                            "product_variations",
                            {
                                "id": variation_id,
                                "product_id": pid,
                                "sku": f"DS-{pid:05d}-{k + 1}",
                                "ean13": ean13(rng) if self.chance(0.8) else None,
                                "price_incl": v_price,
                                "discount": Decimal("2.00") if self.chance(0.1) else None,
                                "stock": rng.randrange(0, 80),
                                "is_default": int(k == 0),
                                "label": label,
                                "updated_at": self.ts(c_at, self.end),
                            },
                        )
                    )
            for pos in range(1, rng.randrange(1, 4) + 1):
                image_id += 1
                self.add(
                    "product_images",
                    {
                        "id": image_id,
                        "product_id": pid,
                        "variation_id": None,
                        "url": f"https://cdn.demo-shop.example/img/p/{pid}/{image_id}.jpg",
                        "position": pos,
                        "is_cover": int(pos == 1),
                        "updated_at": self.ts(c_at, self.end),
                    },
                )
            for var in product["_variations"]:
                if self.chance(0.5):
                    image_id += 1
                    self.add(
                        "product_images",
                        {
                            "id": image_id,
                            "product_id": pid,
                            "variation_id": var["id"],
                            "url": f"https://cdn.demo-shop.example/img/p/{pid}/{image_id}.webp",
                            "position": 10 + var["id"] % 50,
                            "is_cover": 0,
                            "updated_at": self.ts(c_at, self.end),
                        },
                    )

    def vouchers(self) -> None:
        rng = self.rng
        pending: list[Row] = []
        for _ in range(self.n(40, 4)):
            kind = rng.choices("FAP", (20, 40, 40))[0]
            starts = self.ts(self.start + timedelta(days=5), self.end - timedelta(days=1))
            c_at = self.ts(max(self.start, starts - timedelta(days=5)), starts)
            known = bisect.bisect_left(self.customer_times, c_at)
            pending.append(
                {
                    "type": kind,
                    "value": None if kind == "F" else Decimal(rng.choice((5, 10, 15, 20))),
                    "min_amount": Decimal(rng.choice((0, 0, 30, 50))),
                    "customer_id": rng.randrange(1, known + 1)
                    if known and self.chance(0.25)
                    else None,
                    "starts_at": starts,
                    "ends_at": starts + timedelta(days=rng.randrange(15, 90))
                    if self.chance(0.7)
                    else None,
                    "used": int(self.chance(0.15)),
                    "active": int(self.chance(0.9)),
                    "tax_included": int(self.chance(0.8)),
                    "created_at": c_at,
                    "updated_at": self.ts(c_at, self.end),
                }
            )
        pending.sort(key=lambda r: r["created_at"])
        for vid, row in enumerate(pending, start=1):
            row["id"] = vid
            row["code"] = f"{rng.choice(VOUCHER_WORDS)}{vid:03d}"
            self.add("vouchers", row)
            value = row["value"]
            texts = {
                "F": ("Livraison offerte", "Free shipping"),
                "A": (f"{value} € de remise", f"€{value} off"),
                "P": (f"{value} % de remise", f"{value}% off"),
            }[row["type"]]
            for lang, text in zip(LANGS, texts, strict=True):
                self.add(
                    "voucher_translations",
                    {
                        "voucher_id": vid,
                        "lang": lang,
                        "description": text,
                        "updated_at": self.ts(row["created_at"], self.end),
                    },
                )

    # -- carts and orders ----------------------------------------------------------------------
    def lines(self, moment: datetime, count: int) -> list[Row]:
        rng = self.rng
        known = max(1, bisect.bisect_left(self.product_times, moment))
        picked: list[Row] = []
        for _ in range(count):
            product = self.rows["products"][rng.randrange(known)]
            if any(line["product_id"] == product["id"] for line in picked):
                continue
            variation = rng.choice(product["_variations"]) if product["_variations"] else None
            incl = (
                variation["price_incl"]
                if variation
                else product["discount_price"] or product["price_incl"]
            )
            picked.append(
                {
                    "product_id": product["id"],
                    "variation_id": variation["id"] if variation else None,
                    "qty": rng.choices((1, 2, 3), (75, 20, 5))[0],
                    "unit_price_incl": incl,
                    "unit_price_excl": excl(incl, product["tax_rate"]),
                }
            )
        return picked

    def customer_at(self, moment: datetime, need_address: bool) -> Row | None:
        known = bisect.bisect_left(self.customer_times, moment)
        for _ in range(30 if known else 0):
            cust = self.rows["customers"][self.rng.randrange(known)]
            if not need_address or any(a["created_at"] < moment for a in cust["_addresses"]):
                return cust
        return None

    def orders(self) -> None:
        rng = self.rng
        carts: list[Row] = []
        orders: list[Row] = []
        begin = self.start + timedelta(days=14)
        for moment in sorted(self.ts(begin, self.end) for _ in range(self.n(800))):
            cust = self.customer_at(moment, need_address=True)
            if cust is None:
                continue
            lines = self.lines(moment, rng.randrange(1, 6))
            cart = {
                "customer_id": cust["id"],
                "currency": "EUR",
                "lang": cust["lang"],
                "created_at": self.ts(max(cust["created_at"], moment - timedelta(days=2)), moment),
                "updated_at": moment,
                "_lines": lines,
            }
            carts.append(cart)
            orders.append(self.order(moment, cust, cart, lines))
        for moment in (self.ts(begin, self.end) for _ in range(self.n(300))):
            cust = self.customer_at(moment, need_address=False) if self.chance(0.65) else None
            carts.append(
                {
                    "customer_id": cust["id"] if cust else None,
                    "currency": "EUR",
                    "lang": cust["lang"] if cust else rng.choice(LANGS),
                    "created_at": moment,
                    "updated_at": self.after(moment, timedelta(hours=6)),
                    "_lines": self.lines(moment, rng.randrange(1, 5)),
                    "order_id": None,
                }
            )
        carts.sort(key=lambda c: c["created_at"])
        line_id = 0
        for cid, cart in enumerate(carts, start=1):
            cart["id"] = cid
            for line in cart.pop("_lines"):
                line_id += 1
                self.add(
                    "cart_lines",
                    {
                        **line,
                        "id": line_id,
                        "cart_id": cid,
                        "updated_at": self.ts(cart["created_at"], cart["updated_at"]),
                    },
                )
        for oid, order in enumerate(orders, start=1):
            order["id"] = oid
            order["reference"] = f"DS-{oid:06d}"
            cart = order.pop("_cart")
            cart["order_id"] = oid
            order["cart_id"] = cart["id"]
        line_id = 0
        for cart in carts:
            self.add("carts", cart)
        for order in orders:
            for line in order.pop("_lines"):
                line_id += 1
                self.add(
                    "order_lines",
                    {
                        **line,
                        "id": line_id,
                        "order_id": order["id"],
                        "updated_at": order["created_at"],
                    },
                )
            self.add("orders", order)

    def order(self, moment: datetime, cust: Row, cart: Row, lines: list[Row]) -> Row:
        rng = self.rng
        items_incl = money(sum((ln["qty"] * ln["unit_price_incl"] for ln in lines), Decimal(0)))
        items_excl = money(sum((ln["qty"] * ln["unit_price_excl"] for ln in lines), Decimal(0)))
        carrier = rng.choices((1, 2, 3, 4), (55, 15, 25, 5))[0]
        _name, price, free_above, _active, prefix = CARRIERS[carrier - 1]
        ship = Decimal(0) if free_above and items_incl >= 60 else Decimal(price)
        code = value = None
        discount = Decimal(0)
        usable = [v for v in self.rows["vouchers"] if v["starts_at"] < moment]
        if usable and self.chance(0.08):
            voucher = rng.choice(usable)
            code, value = voucher["code"], voucher["value"]
            if voucher["type"] == "F":
                ship = Decimal(0)
            elif voucher["type"] == "A":
                discount = min(items_incl, value)
            else:
                discount = money(items_incl * value / 100)
        age = self.end - moment
        if age > timedelta(days=14):
            legacy = moment < self.start + timedelta(days=365)
            status = rng.choices((5, 6, 7, 4, 8), (80, 8, 5, 3, 4 if legacy else 0))[0]
        else:
            status = rng.choices((1, 2, 3, 4, 5), (10, 25, 25, 30, 10))[0]
        paid = self.after(moment, timedelta(minutes=30)) if status in (2, 3, 4, 5, 7) else None
        delay = {1: 0, 2: 0, 3: 0.3, 4: 1.5, 5: 4, 6: 0.2, 7: 15, 8: 3}[status]
        updated = self.after(paid or moment, timedelta(days=delay)) if delay else paid or moment
        addresses = [a for a in cust["_addresses"] if a["created_at"] < moment]
        delivery = rng.choice(addresses)
        invoice = delivery if self.chance(0.85) else rng.choice(addresses)
        return {
            "customer_id": cust["id"],
            "status_id": status,
            "carrier_id": carrier,
            "delivery_address_id": delivery["id"],
            "invoice_address_id": invoice["id"],
            "currency": "EUR",
            "lang": cust["lang"],
            "total_incl": max(Decimal(0), items_incl + ship - discount),
            "total_excl": max(Decimal(0), items_excl + excl(ship - discount, Decimal(20))),
            "shipping_incl": ship,
            "shipping_excl": excl(ship, Decimal(20)),
            "tracking_number": (
                f"{prefix}{rng.randrange(10**9, 10**10)}FR" if status in (4, 5, 7) else None
            ),
            "voucher_code": code,
            "voucher_value": value,
            "paid_at": paid,
            "created_at": moment,
            "updated_at": updated,
            "_cart": cart,
            "_lines": lines,
        }

    def newsletter(self) -> None:
        rng = self.rng
        pending: list[Row] = []
        for cust in self.rows["customers"]:
            if cust["newsletter"] or self.chance(0.05):
                c_at = self.after(cust["created_at"], timedelta(days=30))
                pending.append(
                    {
                        "email": cust["email"].strip().lower(),
                        "subscribed": cust["newsletter"],
                        "first_name": cust["first_name"],
                        "last_name": cust["last_name"],
                        "postcode": None,
                        "lang": cust["lang"],
                        "created_at": c_at,
                    }
                )
        for k in range(self.n(150)):
            lang = "fr" if self.chance(0.7) else "en"
            first = rng.choice(FIRST[lang])
            named = self.chance(0.5)
            pending.append(
                {
                    "email": f"{slugify(first, '')}{1000 + k}@{rng.choice(DOMAINS)}",
                    "subscribed": int(self.chance(0.85)),
                    "first_name": first if named else None,
                    "last_name": rng.choice(LAST[lang]) if named else None,
                    "postcode": rng.choice(CITIES["FR" if lang == "fr" else "GB"])[1]
                    if self.chance(0.4)
                    else None,
                    "lang": lang if self.chance(0.9) else None,
                    "created_at": self.ts(self.start, self.end),
                }
            )
        pending.sort(key=lambda r: r["created_at"])
        for nid, row in enumerate(pending, start=1):
            row["id"] = nid
            row["updated_at"] = self.ts(row["created_at"], self.end)
            self.add("newsletter_subscriptions", row)

    def loyalty(self) -> None:
        """A loyalty account for about half the customers; the tier follows the points."""
        for cust in self.rows["customers"]:
            if self.chance(0.5):
                points = self.rng.randrange(0, 2500, 5)
                self.add(
                    "loyalty_accounts",
                    {
                        "customer_id": cust["id"],
                        "points": points,
                        "tier": tier_of(points),
                        "updated_at": self.after(cust["created_at"], timedelta(days=400)),
                    },
                )

    def store_purchases(self) -> None:
        """Purchases in the shop's stores: mostly known customers, some walk-ins by email."""
        customers = self.rows["customers"]
        pending: list[Row] = []
        for k in range(self.n(120)):
            known = self.chance(0.8)
            cust = self.rng.choice(customers) if known else None
            at = self.ts(cust["created_at"] if cust else self.start, self.end)
            pending.append(
                {
                    "customer_id": cust["id"] if cust else None,
                    "email": cust["email"] if cust else f"walkin{k}@{self.rng.choice(DOMAINS)}",
                    "store": self.rng.choice(STORES),
                    "amount": money(Decimal(self.rng.randrange(500, 25000)) / 100),
                    "purchased_at": at,
                    "created_at": self.after(at, timedelta(minutes=2)),
                }
            )
        pending.sort(key=lambda r: r["created_at"])
        for pid, row in enumerate(pending, start=1):
            row["id"] = pid
            row["updated_at"] = row["created_at"]
            self.add("store_purchases", row)


def tier_of(points: int) -> str:
    return [name for floor, name in TIERS if points >= floor][-1]


def generate(seed: int, scale: float, now: datetime) -> dict[str, list[Row]]:
    """All demo rows, ``{table: rows}`` in :data:`TABLE_ORDER`; helper keys (``_x``) removed."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    gen = Generator(seed, scale, now)
    gen.reference()
    gen.customers()
    gen.products()
    gen.vouchers()
    gen.orders()
    gen.newsletter()
    gen.loyalty()
    gen.store_purchases()
    return {
        table: [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        for table, rows in gen.rows.items()
    }

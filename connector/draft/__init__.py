"""``draft``: a first mapping file per resource, proposed from the shop's own schema.

It reads the schema through SQLAlchemy inspection and a small sample of rows
(:mod:`~connector.draft.schema`), matches each ShopiMind field of the registry to a column
(:mod:`~connector.draft.match`, names in :mod:`~connector.draft.words`), plans the source, key,
cursor, soft delete, translations and child collections (:mod:`~connector.draft.plan`, with
:mod:`~connector.draft.tables` for one table's traits, :mod:`~connector.draft.source` for the
query, :mod:`~connector.draft.related` for other tables' parts, :mod:`~connector.draft.model`
for the result) and writes TOML with a comment on every choice (:mod:`~connector.draft.render`).
A required field it cannot match is left out with a ``TODO`` comment, so ``check`` names it.
It only reads the shop database and never overwrites a file without ``force``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from connector import registry
from connector.config import Config
from connector.draft import words
from connector.draft.match import Todo
from connector.draft.plan import Plan, build_plan
from connector.draft.render import render
from connector.draft.schema import Table, read_schema
from connector.draft.tables import is_link, is_translations
from connector.errors import ConfigError, MappingError

__all__ = [
    "Draft",
    "draft_all",
    "draft_resources",
    "pick_table",
    "run_draft",
    "write_drafts",
]


@dataclass
class Draft:
    resource: str
    table: str
    text: str
    plan: Plan

    @property
    def todos(self) -> list[Todo]:
        return self.plan.todos

    def summary(self) -> str:
        counts = {"high": 0, "medium": 0, "low": 0, "ambiguous": 0, "placeholder": 0}
        for c in self.plan.choices:
            counts[c.confidence] += 1
        todo = [t.field + ("" if t.required else " (optional)") for t in self.todos]
        placeholders = [
            c.field for c in self.plan.choices if c.confidence in ("placeholder", "ambiguous")
        ]
        conf = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        out = f"{self.resource} ← {self.table}: {len(self.plan.choices)} field(s) matched ({conf})"
        if placeholders:
            out += f"; to confirm: {', '.join(placeholders)}"
        if todo:
            out += f"; TODO: {', '.join(todo)}"
        return out


def pick_table(resource: str, tables: dict[str, Table]) -> str | None:
    """The table that most likely holds ``resource``'s rows (by its name), or None."""
    syns = words.TABLES.get(resource, ())
    best: tuple[float, str] | None = None
    for t in tables.values():
        if is_link(t) or is_translations(t, tables):
            continue
        n = words.norm(t.name)
        s = 1.0 if n in syns else 0.0
        if not s:
            toks = words.tokens(t.name)
            s = 0.6 if toks and toks[-1] in syns else 0.5 if set(toks) & set(syns) else 0.0
        if s and (best is None or s > best[0]):
            best = (s, t.name)
    return best[1] if best else None


def draft_resources(
    url: str | sa.URL, resources: dict[str, str | None], *, sample_rows: int = 500
) -> list[Draft]:
    """One draft per resource name → table (None: the table is picked by name)."""
    for name in resources:
        res = registry.get(name)
        if res is None or res.kind != "entity":
            raise ConfigError(
                f"draft: unknown resource {name!r}; known: {', '.join(registry.names())}"
            )
    engine = sa.create_engine(url)
    try:
        tables = read_schema(engine, sample_rows)
    finally:
        engine.dispose()
    out = []
    for name, table in resources.items():
        chosen = table or pick_table(name, tables)
        if chosen is None:
            raise ConfigError(f"draft {name}: no table looks like it; name it with --table")
        if chosen not in tables:
            known = ", ".join(sorted(tables))
            raise ConfigError(f"draft {name}: no table {chosen!r} in the shop database ({known})")
        plan = build_plan(registry.RESOURCES[name], tables[chosen], tables)
        text = render(plan)
        _validate(name, text, plan)
        out.append(Draft(name, chosen, text, plan))
    return out


def draft_all(url: str | sa.URL, *, sample_rows: int = 500) -> tuple[list[Draft], list[str]]:
    """A draft for every resource whose table is found; and the resources with none."""
    engine = sa.create_engine(url)
    try:
        tables = read_schema(engine, sample_rows)
    finally:
        engine.dispose()
    found: dict[str, str | None] = {}
    missing = []
    for name in registry.names():
        if registry.RESOURCES[name].kind != "entity":
            continue
        t = pick_table(name, tables)
        if t is None:
            missing.append(name)
        else:
            found[name] = t
    return (draft_resources(url, found, sample_rows=sample_rows) if found else []), missing


def _validate(name: str, text: str, plan: Plan) -> None:
    """The real loader reads the draft; the only problems allowed are the TODO fields."""
    from connector.mapping.load import _Ctx, parse_mapping

    ctx = _Ctx(f"{name}.toml")
    parse_mapping(tomllib.loads(text), name=name, ctx=ctx)
    todo = {t.field.rpartition(".")[2] for t in plan.todos if t.required}
    unexpected = [
        p
        for p in ctx.problems
        if not any(f"'{f}'" in p.message and "not mapped" in p.message for f in todo)
    ]
    if unexpected:  # a bug of the draft, not of the shop
        raise MappingError(unexpected)


def write_drafts(
    drafts: list[Draft], target: Path, *, force: bool, single_file: bool
) -> list[Path]:
    """Write each draft to ``target`` (a file for one draft, else a folder). Nothing is written
    when a file exists and ``force`` is not set."""
    paths = [target] if single_file else [target / f"{d.resource}.toml" for d in drafts]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"draft: not overwriting {', '.join(existing)}; use --force or another --out"
        )
    for d, p in zip(drafts, paths, strict=True):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(d.text, encoding="utf-8")
    return paths


def run_draft(
    cfg: Config, resource: str | None, table: str | None, every: bool, out: str | None, force: bool
) -> int:
    """The ``draft`` command: write the drafts, print what was matched and what is left."""
    if every == (resource is not None):
        raise ConfigError("draft: name one RESOURCE, or use --all")
    if every and table:
        raise ConfigError("draft: --table goes with one RESOURCE, not with --all")
    url = cfg.source_url()
    if every:
        drafts, missing = draft_all(url)
        target = Path(out) if out else cfg.mappings_path
        paths = write_drafts(drafts, target, force=force, single_file=False)
    else:
        assert resource is not None
        drafts, missing = draft_resources(url, {resource: table}), []
        target = Path(out) if out else cfg.mappings_path / f"{resource}.toml"
        paths = write_drafts(drafts, target, force=force, single_file=True)
    for d, p in zip(drafts, paths, strict=True):
        print(f"wrote {p}: {d.summary()}")
    for name in missing:
        print(f"no table found for {name} (draft it with: draft {name} --table TABLE)")
    todo = sum(1 for d in drafts for t in d.todos if t.required)
    print(
        f"{len(drafts)} draft(s); {todo} required field(s) left as TODO. Next: read the files, "
        "then `shopimind-connector check` and `shopimind-connector preview MAPPING`"
    )
    return 0

"""The example mapping files in mappings/ against the registry and the demo shop (no loader needed).

Checks: each file parses, names a registry resource, maps every required API field (nested ones
too) and only registry fields, uses only known spec keys and conversions, and refers only to
columns its source has: table sources against the demo schema, query sources by running the
query on a populated demo shop (SQLite here; every configured backend in the last test). On the
demo data the source key is unique and required fields read from plain columns are never NULL.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector import registry
from connector.demo import shop
from connector.timeutil import parse_duration

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
# custom data and event mappings (kind = ...) have tests of their own (test_customdata, test_events)
FILES = sorted(
    p for p in MAPPINGS.glob("*.toml") if "kind" not in tomllib.loads(p.read_text("utf-8"))
)
IDS = [p.stem for p in FILES]

SOURCE_KEYS = {
    "table",
    "query",
    "key",
    "cursor",
    "cursor_fallback",
    "lookback",
    "page_size",
    "deleted",
}
CHILD_KEYS = {"table", "query", "parent_key", "order_by", "cursor", "value", "fields"}
SPEC_KEYS = {
    "column",
    "const",
    "coalesce",
    "default",
    "map",
    "convert",
    "concat",
    "sep",
    "template",
    "timezone",
}
VALUE_KEYS = {"column", "const", "coalesce", "concat", "template"}
CONVERSIONS = {
    "trim",
    "lower",
    "upper",
    "is_null",
    "is_not_null",
    "not",
    "nullif_empty",
    "string",
    "integer",
}
CHILD_TYPES = {"objects", "id_numbers", "id_strings"}

Spec = str | dict[str, Any]


def load(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def resource_of(doc: dict[str, Any]) -> registry.Resource:
    res = registry.get(doc["resource"])
    assert res is not None, f"unknown resource {doc['resource']!r}"
    return res


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def spec_columns(spec: Spec) -> list[str]:
    """Columns a field spec reads."""
    if isinstance(spec, str):
        return [spec]
    if "column" in spec:
        return [spec["column"]]
    if "concat" in spec:
        return list(spec["concat"])
    if "coalesce" in spec:
        return list(spec["coalesce"])
    if "template" in spec:
        return [f for _, f, _, _ in string.Formatter().parse(spec["template"]) if f]
    return []


def plain_column(spec: Spec) -> str | None:
    """The column of a spec that sends the column's value as it is (NULL stays NULL)."""
    if isinstance(spec, str):
        return spec
    if set(spec) == {"column"}:
        return str(spec["column"])
    return None


def check_spec(where: str, spec: Spec, field: registry.Field) -> list[str]:
    errors: list[str] = []
    if isinstance(spec, str):
        return [] if spec else [f"{where}: empty column name"]
    if not isinstance(spec, dict):
        return [f"{where}: a column name or an inline table, got {spec!r}"]
    if unknown := set(spec) - SPEC_KEYS:
        errors.append(f"{where}: unknown keys {sorted(unknown)}")
    if len(set(spec) & VALUE_KEYS) != 1:
        errors.append(f"{where}: exactly one of {sorted(VALUE_KEYS)}")
    for conv in as_list(spec.get("convert", [])):
        if conv not in CONVERSIONS:
            errors.append(f"{where}: unknown conversion {conv!r}")
    if "sep" in spec and "concat" not in spec:
        errors.append(f"{where}: sep without concat")
    if "map" in spec:
        values = list(spec["map"].values()) + ([spec["default"]] if "default" in spec else [])
        if field.type == "enum" and not set(values) <= set(field.choices):
            errors.append(f"{where}: map values {values} not all in {field.choices}")
    if field.type == "currency" and "const" in spec:
        const = spec["const"]
        if not (isinstance(const, str) and len(const) == 3 and const.isupper()):
            errors.append(f"{where}: {const!r} is not an ISO 4217 code")
    return errors


def check_fields(
    where: str, table: dict[str, Any], fields: tuple[registry.Field, ...]
) -> list[str]:
    """Field names are registry fields; specs are valid; nested objects are complete."""
    known = {f.name: f for f in fields}
    errors: list[str] = []
    for name, spec in table.items():
        field = known.get(name)
        if field is None:
            errors.append(f"{where}.{name}: not a field of the registry")
        elif field.type == "object":
            if not isinstance(spec, dict) or set(spec) & SPEC_KEYS:
                errors.append(f"{where}.{name}: an object field needs a [{where}.{name}] table")
                continue
            errors += check_fields(f"{where}.{name}", spec, field.fields)
            missing = {f.name for f in field.fields if f.required} - set(spec)
            if missing:
                errors.append(f"{where}.{name}: required fields not mapped: {sorted(missing)}")
        elif field.type in CHILD_TYPES:
            errors.append(f"{where}.{name}: a {field.type} field is mapped under [children]")
        else:
            errors += check_spec(f"{where}.{name}", spec, field)
    return errors


# -- the demo shop the queries run on -----------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    path = tmp_path_factory.mktemp("demo") / "shop.sqlite"
    engine = sa.create_engine(shop.shop_url_sqlite(path))
    shop.create_schema(engine)
    shop.populate(engine, scale=0.2)
    yield engine
    engine.dispose()


def source_rows(engine: sa.Engine, src: dict[str, Any]) -> tuple[set[str], list[dict[str, Any]]]:
    """Columns and rows of a table or query source, the query wrapped as the loader wraps it."""
    if "table" in src:
        table = shop.metadata().tables[src["table"]]
        stmt: sa.Executable = sa.select(table)
    else:
        stmt = sa.text(f"SELECT * FROM ({src['query']}) src")
    with engine.connect() as conn:
        result = conn.execute(stmt)
        rows = [dict(r._mapping) for r in result]
        return set(result.keys()), rows


def table_columns(src: dict[str, Any]) -> set[str] | None:
    if "table" not in src:
        return None
    table = shop.metadata().tables.get(src["table"])
    assert table is not None, f"no table {src['table']!r} in the demo shop"
    return set(table.c.keys())


def referenced(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Columns each source of a mapping must have: 'source', 'children.<name>' and
    'changes.<name>'."""
    src = doc["source"]
    parent = set(as_list(src["key"])) | {src["cursor"]}
    if "cursor_fallback" in src:
        parent.add(src["cursor_fallback"])
    if "deleted" in src:
        parent.add(src["deleted"]["column"])

    def walk(table: dict[str, Any], into: set[str]) -> None:
        for spec in table.values():
            if isinstance(spec, dict) and not set(spec) & SPEC_KEYS:
                walk(spec, into)  # nested object
            else:
                into.update(spec_columns(spec))

    walk(doc.get("fields", {}), parent)
    out = {"source": parent}
    for name, child in doc.get("children", {}).items():
        cols: set[str] = set(as_list(child.get("order_by", [])))
        pk = child["parent_key"]
        cols |= set(pk) if isinstance(pk, dict) else set(as_list(pk))
        parent |= set(pk.values()) if isinstance(pk, dict) else set(as_list(src["key"]))
        for key in ("cursor", "value"):
            if key in child:
                cols.add(child[key])
        walk(child.get("fields", {}), cols)
        out[f"children.{name}"] = cols
    for name, watched in doc.get("changes", {}).items():
        pk = watched["parent_key"]
        cols = {watched["cursor"], *(pk if isinstance(pk, dict) else as_list(pk))}
        parent |= set(pk.values()) if isinstance(pk, dict) else set(as_list(src["key"]))
        out[f"changes.{name}"] = cols
    return out


def sources_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every source of a mapping by the name ``referenced`` gives it."""
    return (
        {"source": doc["source"]}
        | {f"children.{n}": c for n, c in doc.get("children", {}).items()}
        | {f"changes.{n}": c for n, c in doc.get("changes", {}).items()}
    )


# -- the tests ----------------------------------------------------------------------------------


def test_one_file_per_registry_resource() -> None:
    assert set(IDS) == set(registry.RESOURCES)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_file_names_its_resource_and_has_a_header(path: Path) -> None:
    doc = load(path)
    assert doc["resource"] == path.stem
    resource_of(doc)
    assert path.read_text(encoding="utf-8").startswith("# "), "explain the mapping in a header"
    top = {"resource", "source", "fields", "children", "changes", "enabled", "description"}
    assert set(doc) <= top


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_source_section(path: Path) -> None:
    src = load(path)["source"]
    assert set(src) <= SOURCE_KEYS
    assert ("table" in src) != ("query" in src), "exactly one of table / query"
    assert as_list(src["key"]) and isinstance(src["cursor"], str)
    parse_duration(src.get("lookback", "5m"))
    if "deleted" in src:
        when = src["deleted"]["when"]
        assert when in ("not_null", "true") or set(when) == {"equals"}
    if resource_of(load(path)).localized:
        assert "lang" in as_list(src["key"]), "one item per language: lang belongs to the key"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_fields_are_registry_fields_and_required_ones_are_mapped(path: Path) -> None:
    doc = load(path)
    res = resource_of(doc)
    errors = check_fields("fields", doc.get("fields", {}), res.fields)
    for name, child in doc.get("children", {}).items():
        where = f"children.{name}"
        field = res.field(name)
        if field is None or field.type not in CHILD_TYPES:
            errors.append(f"{where}: not a registry field of type {sorted(CHILD_TYPES)}")
            continue
        if name in doc.get("fields", {}):
            errors.append(f"{where}: also mapped under [fields]")
        if set(child) - CHILD_KEYS or ("table" in child) == ("query" in child):
            errors.append(f"{where}: keys {sorted(child)}; need table or query, parent_key")
        if field.type == "objects":
            if "value" in child or "fields" not in child:
                errors.append(f"{where}: an array of objects needs [{where}.fields], no value")
                continue
            errors += check_fields(f"{where}.fields", child["fields"], field.fields)
            missing = {f.name for f in field.fields if f.required} - set(child["fields"])
            if missing:
                errors.append(f"{where}: required fields not mapped: {sorted(missing)}")
        elif "value" not in child or "fields" in child:
            errors.append(f"{where}: an array of ids needs value = <column>, no fields")
    mapped = set(doc.get("fields", {})) | set(doc.get("children", {}))
    missing = set(res.required_fields) - mapped
    if missing:
        errors.append(f"required fields not mapped: {sorted(missing)}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_columns_exist_in_the_demo_shop(path: Path, demo: sa.Engine) -> None:
    doc = load(path)
    sources = sources_of(doc)
    for where, cols in referenced(doc).items():
        have = table_columns(sources[where])
        if have is None:  # a query: run it
            have, _ = source_rows(demo, sources[where])
        assert cols <= have, f"{path.name}: {where}: unknown columns {sorted(cols - have)}"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_demo_data_fits_the_mapping(path: Path, demo: sa.Engine) -> None:
    """Source keys are unique; required fields read from plain columns are never NULL."""
    doc = load(path)
    res = resource_of(doc)
    src = doc["source"]
    _, rows = source_rows(demo, src)
    assert rows, f"{path.name}: the source returns no rows"
    key = as_list(src["key"])
    assert len({tuple(r[k] for k in key) for r in rows}) == len(rows), "source key not unique"
    deleted = src.get("deleted", {}).get("column")
    live = [r for r in rows if deleted is None or r[deleted] is None]

    def check(table: dict[str, Any], fields: tuple[registry.Field, ...], data: list[Any]) -> None:
        for f in fields:
            spec = table.get(f.name)
            if spec is None:
                continue
            if f.type == "object":
                cols = [c for s in spec.values() for c in spec_columns(s)]
                # an optional object may be absent as a whole (all its columns NULL)
                present = [r for r in data if f.required or any(r[c] is not None for c in cols)]
                check(spec, f.fields, present)
            elif f.required and (col := plain_column(spec)) is not None:
                nulls = sum(r[col] is None for r in data)
                assert nulls == 0, f"{path.name}: {f.name} ← {col}: {nulls} NULL rows"

    check(doc.get("fields", {}), res.fields, live)
    for name, child in doc.get("children", {}).items():
        field = res.field(name)
        assert field is not None
        _, child_rows = source_rows(demo, child)
        assert child_rows, f"{path.name}: children.{name} returns no rows"
        if field.type == "objects":
            check(child["fields"], field.fields, child_rows)
        else:
            assert all(r[child["value"]] is not None for r in child_rows)


def test_queries_run_on_every_backend(db_url: str) -> None:
    """The queries are portable: each runs on every configured database, with its columns."""
    engine = sa.create_engine(db_url)
    try:
        shop.create_schema(engine)
        shop.populate(engine, scale=0.05)
        for path in FILES:
            doc = load(path)
            sources = sources_of(doc)
            for where, cols in referenced(doc).items():
                if "query" in sources[where]:
                    have, rows = source_rows(engine, sources[where])
                    assert rows, f"{path.name}: {where}: no rows"
                    assert cols <= have, f"{path.name}: {where}: missing {sorted(cols - have)}"
    finally:
        engine.dispose()

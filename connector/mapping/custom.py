"""``kind = "custom_data"``: a custom data definition and the rows that become its records.

The records' ``Resource`` is built from the declaration (batch limit 20, key = ``unique_keys``);
its path names the definition id, which only provisioning knows (``{id_definition}``). A field
related to contacts through a resolver (``by``) is sent as ``{"by": ..., "value": ...}``, so it
becomes an object field here and the rest of the pipeline (compile, preview, hashing) needs no
special case.
"""

from __future__ import annotations

from typing import Any

from connector.mapping.kinds import _entries, _no_deletes, _table, _text, _top, _unknown
from connector.mapping.load import _IDENT, _Ctx, _fields, _source
from connector.mapping.spec import (
    CONTACT_RESOLVERS,
    CUSTOM_TYPES,
    RELATION_TARGETS,
    CustomField,
    DefinitionSpec,
    Mapping,
    ObjectSpec,
    Relationship,
    ValueSpec,
)
from connector.registry import Field, FieldType, Resource

RECORDS_PATH = "/v1/custom-data-records/{id_definition}"
CUSTOM_RANK = 900  # after every entity: records attach to contacts, which come from customers
RECORDS_LIMIT = 20

_CUSTOM_TOP = {"kind", "description", "enabled", "definition", "source", "fields"}
_DEFINITION_KEYS = {"name", "description", "fields", "unique_keys", "relationships"}
_FIELD_KEYS = {"name", "type", "required", "label", "description", "options"}
_RELATION_KEYS = {"field", "to", "by"}
TYPE_OF: dict[str, FieldType] = {
    "bool": "boolean",
    "text": "string",
    "longtext": "string",
    "number": "number",
    "decimal": "number",
    "list": "enum",
    "date": "date",
    "datetime": "timestamp",
    "json": "json",
    "geolocation": "json",
}
_RESOLVED_TYPE: dict[str, FieldType] = {
    "email": "string",
    "id_customer": "id_string",
    "id_contact": "id_number",
}


def field_type(f: CustomField, rel: Relationship | None = None) -> FieldType:
    """The connector type a custom field's values are converted to (a resolver's value type)."""
    if rel is not None and rel.by is not None:
        return _RESOLVED_TYPE[rel.by]
    return TYPE_OF[f.type]


def custom_resource(definition: DefinitionSpec, path: str = RECORDS_PATH) -> Resource:
    """The records of a definition as a resource: validation, batching and hashing as usual."""
    rels = {r.field: r for r in definition.relationships}
    fields: list[Field] = []
    for f in definition.fields:
        rel = rels.get(f.name)
        if rel is not None and rel.by is not None:
            resolver = (Field("by", "string", True), Field("value", field_type(f, rel), True))
            fields.append(Field(f.name, "object", f.required, fields=resolver))
        else:
            choices = tuple(str(o) for o in f.options)
            fields.append(Field(f.name, field_type(f), f.required, choices=choices))
    return Resource(
        name=f"custom-data:{definition.name}",
        path=path,
        batch_limit=RECORDS_LIMIT,
        key=definition.unique_keys,
        fields=tuple(fields),
        rank=CUSTOM_RANK,
        kind="custom_data",
        accepts_data_source=False,
    )


def parse_custom(data: dict[str, Any], name: str, ctx: _Ctx) -> Mapping | None:
    enabled = _top(data, _CUSTOM_TOP, ctx)
    definition = _definition(data.get("definition"), ctx)
    source = _source(data.get("source"), ctx)
    _no_deletes(
        source,
        "custom data has no soft delete (ShopiMind deletes records by its own record ids, "
        "which the reconciliation learns for rows gone from the source)",
        ctx,
    )
    fields_data = _table(data, "fields", ctx)
    if definition is None:
        return None
    rels = {r.field: r for r in definition.relationships}
    plain = tuple(
        Field(
            f.name, field_type(f, rels.get(f.name)), f.required, choices=tuple(map(str, f.options))
        )
        for f in definition.fields
    )
    values: dict[str, ValueSpec] = _fields(plain, fields_data, "fields", ctx, allow_objects=False)
    for f in definition.fields:
        if f.required and f.name not in values:
            ctx.err("fields", f"required field {f.name!r} of the definition is not mapped")
    mapped: dict[str, ValueSpec | ObjectSpec] = {}
    for fname, spec in values.items():
        rel = rels.get(fname)
        if rel is not None and rel.by is not None:
            by = ValueSpec(spec.path, "const", const=rel.by)
            mapped[fname] = ObjectSpec(spec.path, {"by": by, "value": spec})
        else:
            mapped[fname] = spec
    if ctx.problems or source is None:
        return None
    return Mapping(
        name=name,
        file=ctx.file,
        resource=custom_resource(definition),
        source=source,
        fields=mapped,
        children={},
        enabled=enabled,
        kind="custom_data",
        definition=definition,
    )


def _custom_field(where: str, entry: dict[str, Any], ctx: _Ctx) -> CustomField | None:
    _unknown(entry, _FIELD_KEYS, where, ctx)
    fname = entry.get("name")
    if not isinstance(fname, str) or not _IDENT.match(fname) or "." in fname:
        ctx.err(f"{where}.name", f"{fname!r} is not a field name (letters, digits, _)")
        fname = None
    ftype = entry.get("type")
    if ftype not in CUSTOM_TYPES:
        ctx.err(f"{where}.type", f"{ftype!r} is not a type; types: {', '.join(CUSTOM_TYPES)}")
        ftype = None
    required = entry.get("required", False)
    if not isinstance(required, bool):
        ctx.err(f"{where}.required", "must be true or false")
        required = False
    label = _text(entry.get("label"), f"{where}.label", ctx, required=False)
    description = _text(entry.get("description"), f"{where}.description", ctx, required=False)
    options: tuple[str | int | float, ...] = ()
    raw = entry.get("options")
    if ftype == "list":
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in raw)
        ):
            ctx.err(f"{where}.options", "a list field needs options = [ 'a', 'b', ... ]")
        else:
            options = tuple(raw)
    elif raw is not None:
        ctx.err(f"{where}.options", "only a field of type 'list' has options")
    if fname is None or ftype is None:
        return None
    return CustomField(fname, ftype, required, label, description, options)


def _definition(data: Any, ctx: _Ctx) -> DefinitionSpec | None:
    path = "definition"
    if not isinstance(data, dict):
        ctx.err(path, "missing [definition] table (name, fields, unique_keys, relationships)")
        return None
    _unknown(data, _DEFINITION_KEYS, path, ctx)
    name = _text(data.get("name"), f"{path}.name", ctx, required=True)
    description = _text(data.get("description"), f"{path}.description", ctx, required=False)
    fields: list[CustomField] = []
    entries = _entries(data.get("fields"), f"{path}.fields", ctx)
    if not entries and "fields" in data and isinstance(data.get("fields"), list):
        ctx.err(f"{path}.fields", "declare at least one field")
    if "fields" not in data:
        ctx.err(f"{path}.fields", "missing: declare the definition's fields")
    for where, entry in entries:
        f = _custom_field(where, entry, ctx)
        if f is None:
            continue
        if any(x.name == f.name for x in fields):
            ctx.err(f"{where}.name", f"field {f.name!r} is declared twice")
            continue
        fields.append(f)
    by_name = {f.name: f for f in fields}
    keys = data.get("unique_keys")
    keys = [keys] if isinstance(keys, str) else keys
    unique: list[str] = []
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        ctx.err(
            f"{path}.unique_keys",
            "must name the field(s) that identify a record, e.g. ['customer_id']: without them "
            "ShopiMind would add a new record each time a row changes",
        )
    else:
        for k in keys:
            f = by_name.get(k)
            if f is None and "fields" in data:
                ctx.err(f"{path}.unique_keys", f"{k!r} is not a declared field")
            elif f is not None and not f.required:
                ctx.err(f"{path}.unique_keys", f"field {k!r} is a unique key: mark it required")
            unique.append(k)
    relations: list[Relationship] = []
    for where, entry in _entries(data.get("relationships"), f"{path}.relationships", ctx):
        rel = _relationship(where, entry, by_name, ctx)
        if rel is None:
            continue
        if any(r.field == rel.field for r in relations):
            ctx.err(f"{where}.field", f"field {rel.field!r} already has a relationship")
            continue
        relations.append(rel)
    if name is None or not fields or len(unique) != len(keys or ()):
        return None
    return DefinitionSpec(name, description, tuple(fields), tuple(unique), tuple(relations))


def _relationship(
    where: str, entry: dict[str, Any], fields: dict[str, CustomField], ctx: _Ctx
) -> Relationship | None:
    _unknown(entry, _RELATION_KEYS, where, ctx)
    fname, to, by = entry.get("field"), entry.get("to"), entry.get("by")
    ok = True
    if not isinstance(fname, str) or fname not in fields:
        ctx.err(f"{where}.field", f"{fname!r} is not a declared field")
        ok = False
    if to not in RELATION_TARGETS:
        ctx.err(f"{where}.to", f"{to!r} is not a target; targets: {', '.join(RELATION_TARGETS)}")
        return None
    if to == "contacts":
        if by not in CONTACT_RESOLVERS:
            ctx.err(
                f"{where}.by",
                f"{by!r}: say how the value finds the contact: by = "
                + " | ".join(repr(r) for r in CONTACT_RESOLVERS)
                + " ('id_customer' is the shop's customer id)",
            )
            ok = False
    elif by is not None:
        ctx.err(f"{where}.by", f"only a relationship to contacts takes 'by' (this one is to {to})")
        ok = False
    if not ok:
        return None
    assert isinstance(fname, str) and isinstance(to, str)
    return Relationship(fname, to, by if isinstance(by, str) else None)

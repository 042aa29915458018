"""``kind = "event"``: an event type and the rows whose arrival fires it.

``[contact]``, ``[metaData]`` and ``[customData]`` map columns into the trigger body; the
declared property schema gives their types and required flags.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from connector.mapping.custom import TYPE_OF
from connector.mapping.kinds import _entries, _no_deletes, _table, _text, _top, _unknown
from connector.mapping.load import _IDENT, _Ctx, _fields, _source
from connector.mapping.spec import (
    EVENT_TYPES,
    Delivery,
    EventProperty,
    EventSpec,
    Mapping,
    ObjectSpec,
    ValueSpec,
)
from connector.registry import Field, FieldType, Resource

TRIGGER_PATH = "/v1/events/trigger/{code_name}"
EVENT_RANK = 900  # = CUSTOM_RANK: a failing custom-data mapping must not hold events back
EVENT_SLOTS = ("metaData", "customData")
DELIVERIES: tuple[Delivery, ...] = ("at-least-once", "at-most-once")
CONTACT_FIELDS = (Field("id", "id_number"), Field("email", "string"), Field("phone", "string"))

_EVENT_TOP = {
    "kind",
    "description",
    "enabled",
    "delivery",
    "event",
    "source",
    "contact",
    "metaData",
    "customData",
}
_EVENT_KEYS = {"code_name", "name", "properties"}
_PROPERTY_KEYS = {"name", "type", "required", "description"}
_CODE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# the event schema has no datetime: an event "date" is sent as an ISO 8601 UTC timestamp
_EVENT_TYPE_OF: dict[str, FieldType] = {**TYPE_OF, "date": "timestamp"}


def event_resource(event: EventSpec) -> Resource:
    """The trigger route of an event type, with the body's shape as fields."""
    fields = [Field("contact", "object", True, fields=CONTACT_FIELDS)]
    for slot in EVENT_SLOTS:
        props = event.properties.get(slot, ())
        sub = tuple(Field(p.name, _EVENT_TYPE_OF[p.type], p.required) for p in props)
        fields.append(Field(slot, "object", any(p.required for p in props), fields=sub))
    return Resource(
        name=f"event:{event.code_name}",
        path=TRIGGER_PATH.format(code_name=quote(event.code_name, safe="")),
        batch_limit=1,
        key=(),
        fields=tuple(fields),
        rank=EVENT_RANK,
        kind="event",
        accepts_data_source=False,
    )


def parse_event(data: dict[str, Any], name: str, ctx: _Ctx) -> Mapping | None:
    enabled = _top(data, _EVENT_TOP, ctx)
    delivery = data.get("delivery", "at-least-once")
    if delivery not in DELIVERIES:
        ctx.err(
            "delivery",
            f"{delivery!r}: choose 'at-least-once' (retry when the outcome is unknown, with an "
            "Idempotency-Key) or 'at-most-once' (never fire twice; an unknown outcome is reported)",
        )
        delivery = "at-least-once"
    event = _event(data.get("event"), delivery, ctx)
    source = _source(data.get("source"), ctx)
    _no_deletes(source, "an event fires once for a new row and cannot be deleted", ctx)
    contact = data.get("contact")
    if not isinstance(contact, dict) or not contact:
        ctx.err(
            "contact",
            "missing [contact] table: map at least one of email, id (ShopiMind contact id) or "
            "phone, so ShopiMind knows whose event it is",
        )
        contact = {}
    slots = {slot: _table(data, slot, ctx) for slot in EVENT_SLOTS}
    if event is None:
        return None
    resource = event_resource(event)
    fields: dict[str, ValueSpec | ObjectSpec] = {}
    contact_specs = _fields(CONTACT_FIELDS, contact, "contact", ctx, allow_objects=False)
    fields["contact"] = ObjectSpec("contact", contact_specs)
    for slot, slot_data in slots.items():
        fdef = resource.field(slot)
        assert fdef is not None
        if slot_data and not fdef.fields:
            ctx.err(slot, f"the event declares no {slot} properties (see [event.properties])")
            continue
        specs = _fields(fdef.fields, slot_data, slot, ctx, allow_objects=False)
        for p in fdef.fields:
            if p.required and p.name not in specs:
                ctx.err(slot, f"required property {p.name!r} of the event is not mapped")
        if specs:
            fields[slot] = ObjectSpec(slot, specs)
    if ctx.problems or source is None:
        return None
    return Mapping(
        name=name,
        file=ctx.file,
        resource=resource,
        source=source,
        fields=fields,
        children={},
        enabled=enabled,
        kind="event",
        event=event,
    )


def _event(data: Any, delivery: Delivery, ctx: _Ctx) -> EventSpec | None:
    path = "event"
    if not isinstance(data, dict):
        ctx.err(path, "missing [event] table (code_name, name, properties)")
        return None
    _unknown(data, _EVENT_KEYS, path, ctx)
    code = data.get("code_name")
    if not isinstance(code, str) or not _CODE_NAME.match(code):
        ctx.err(f"{path}.code_name", f"{code!r} is not a code name (letters, digits, _ . -)")
        code = None
    label = data.get("name")
    if isinstance(label, dict):
        if not label or not all(isinstance(v, str) and v for v in label.values()):
            ctx.err(f"{path}.name", "an i18n name maps languages to names: { en = ..., fr = ... }")
            label = None
    elif not isinstance(label, str) or not label.strip():
        ctx.err(f"{path}.name", "missing: the event's name as merchants see it in ShopiMind")
        label = None
    props_data = data.get("properties", {})
    properties: dict[str, tuple[EventProperty, ...]] = {}
    if not isinstance(props_data, dict):
        ctx.err(f"{path}.properties", "must be a table { metaData = [...], customData = [...] }")
        props_data = {}
    for slot, value in props_data.items():
        where = f"{path}.properties.{slot}"
        if slot not in EVENT_SLOTS:
            ctx.err(where, f"unknown slot (expected one of: {', '.join(EVENT_SLOTS)})")
            continue
        props: list[EventProperty] = []
        for pwhere, entry in _entries(value, where, ctx):
            prop = _property(pwhere, entry, ctx)
            if prop is not None and any(p.name == prop.name for p in props):
                ctx.err(f"{pwhere}.name", f"property {prop.name!r} is declared twice")
            elif prop is not None:
                props.append(prop)
        properties[slot] = tuple(props)
    if code is None or label is None:
        return None
    return EventSpec(code, label, properties, delivery)


def _property(where: str, entry: dict[str, Any], ctx: _Ctx) -> EventProperty | None:
    _unknown(entry, _PROPERTY_KEYS, where, ctx)
    pname, ptype = entry.get("name"), entry.get("type")
    ok = True
    if not isinstance(pname, str) or not _IDENT.match(pname) or "." in pname:
        ctx.err(f"{where}.name", f"{pname!r} is not a property name (letters, digits, _)")
        ok = False
    if ptype not in EVENT_TYPES:
        ctx.err(f"{where}.type", f"{ptype!r} is not a type; types: {', '.join(EVENT_TYPES)}")
        ok = False
    required = entry.get("required", False)
    if not isinstance(required, bool):
        ctx.err(f"{where}.required", "must be true or false")
        ok = False
    description = _text(entry.get("description"), f"{where}.description", ctx, required=False)
    if not ok:
        return None
    assert isinstance(pname, str) and isinstance(ptype, str)
    return EventProperty(pname, ptype, bool(required), description)

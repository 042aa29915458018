"""The sandbox's event types (``/v1/events``) and triggers (``/v1/events/trigger/{code_name}``).

State lives in :class:`connector.sandbox.custom.CustomState`; rules in that module's docstring.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from connector.sandbox.custom import (
    DATETIME,
    EVENT_TYPES,
    CustomState,
    JSONObject,
    Result,
    Trigger,
    fail,
    listing,
    value_errors,
)


def event_create(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    if not isinstance(body, dict):
        return fail(400, "body must be an object")
    code, name, props = body.get("code_name"), body.get("name"), body.get("properties", {})
    if not isinstance(code, str) or not code:
        return fail(400, "code_name is required")
    if not (isinstance(name, str) and name) and not (isinstance(name, dict) and name):
        return fail(400, "name is required (a string or an i18n object)")
    if not isinstance(props, dict):
        return fail(400, "properties must be an object")
    for slot, specs in props.items():
        if not isinstance(specs, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) and p.get("type") in EVENT_TYPES
            for p in specs
        ):
            return fail(400, f"properties.{slot}: each is {{name, type, required}}")
    with st.lock:
        if code in st.events:
            return fail(409, f"event type {code!r} already exists")
        event = {
            "id_event": st._next("event"),
            "code_name": code,
            "name": name,
            "properties": copy.deepcopy(props),
        }
        st.events[code] = event
        return 201, {"statusCode": 201, "data": copy.deepcopy(event)}


def event_list(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    with st.lock:
        return listing(list(st.events.values()), query)


def _slot_errors(slot: str, specs: list[JSONObject], data: Any) -> list[str]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return [f"{slot}: must be an object"]
    known = {p["name"]: p for p in specs}
    errors = [f"{slot}.{k}: not in the event's schema" for k in data if k not in known]
    for name, p in known.items():
        v = data.get(name)
        if v is None:
            if p.get("required"):
                errors.append(f"{slot}.{name}: is required")
            continue
        problem = value_errors({"type": p.get("type")}, v, None)
        if p.get("type") == "date" and isinstance(v, str) and DATETIME.fullmatch(v):
            problem = None  # a date property takes a timestamp too
        if problem:
            errors.append(f"{slot}.{name}: {problem}")
    return errors


def trigger(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    code = params["code_name"]
    with st.lock:
        event = copy.deepcopy(st.events.get(code))
    if event is None:
        return fail(404, f"event type {code!r} not found")
    if not isinstance(body, dict):
        return fail(400, "body must be an object")
    contact, visitor = body.get("contact"), body.get("visitor")
    errors = [
        f"{k}: unknown field"
        for k in body
        if k not in ("contact", "visitor", "metaData", "customData")
    ]
    if contact is None and visitor is None:
        errors.append("contact or visitor is required")
    if contact is not None and (
        not isinstance(contact, dict) or not any(contact.get(k) for k in ("id", "email", "phone"))
    ):
        errors.append("contact: needs id, email or phone")
    if visitor is not None and (not isinstance(visitor, dict) or visitor.get("id") is None):
        errors.append("visitor: needs id")
    for slot in ("metaData", "customData"):
        errors += _slot_errors(slot, event["properties"].get(slot, []), body.get(slot))
    if errors:
        return fail(400, "; ".join(errors))
    hit = Trigger(code, copy.deepcopy(body), time.time())
    with st.lock:
        st.triggers.append(hit)
        hook = st.on_trigger
    if hook is not None:
        hook(hit)
    return 200, {"statusCode": 200}

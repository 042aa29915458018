"""The sandbox's custom data definitions and records, event types and event triggers.

Rules imitated (``/work/shared/shopimind-api.md`` §2, §3.15 to 3.17):

* definitions: created ``active``; names unique among live definitions, compared case- and
  accent-insensitively ("custom data definition name is already used."); the list takes
  ``limit``/``offset`` (default 10, above 100 silently 10) and keeps soft-deleted rows (status
  ``deleted``); ``GET`` of a deleted one answers 400; ``extend`` only appends fields and
  relationships; ``activate`` answers 409 when already active; delete is logical.
* records: a raw array of 1 to 20 objects; upserted on the definition's ``unique_keys`` (inserted
  when it has none); each value checked against its field's type; a relation to contacts takes
  the canonical id or a resolver ``{"by": "id_contact"|"email"|"id_customer", "value": ...}``;
  every record sent to a definition that is not ``active`` is rejected.
* event types: ``POST /v1/events`` answers 409 for an existing ``code_name``; triggers need a
  ``contact`` (id, email or phone) or a ``visitor``, and the ``metaData``/``customData`` the type's
  properties require; each trigger is kept (``triggers``) and ``on_trigger`` is called with it
  after it is stored and before the answer leaves (a test hook: e.g. kill the client there).

Handlers take ``(state, params, query, body)`` and return ``(status, body)``; ``routes`` adapts
them to the route table.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JSONObject = dict[str, Any]
Result = tuple[int, Any]
CustomHandler = Callable[["CustomState", dict[str, str], dict[str, list[str]], Any], Result]

EVENT_TYPES = ("bool", "text", "longtext", "number", "decimal", "date", "json")
TYPES = (*EVENT_TYPES, "list", "datetime", "geolocation")
RESOLVERS = ("id_contact", "email", "id_customer")
RECORDS_MAX = 20
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_REASONS = {400: "Bad Request", 404: "Not Found", 409: "Conflict"}


def fail(status: int, message: str) -> Result:
    return status, {"statusCode": status, "message": message, "error": _REASONS.get(status, "")}


def _fold(name: str) -> str:
    text = unicodedata.normalize("NFKD", name.strip())
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def listing(rows: list[JSONObject], query: dict[str, list[str]]) -> Result:
    def number(name: str, default: int) -> int:
        try:
            return max(0, int(query.get(name, [str(default)])[0]))
        except ValueError:
            return default

    limit, offset = number("limit", 10), number("offset", 0)
    if limit == 0 or limit > 100:
        limit = 10  # as observed: above 100 the API silently falls back to its default
    page = rows[offset : offset + limit]
    total = len(rows)
    pages = max(1, -(-total // limit))
    current = offset // limit + 1
    more = offset + len(page) < total
    return 200, {
        "statusCode": 200,
        "data": copy.deepcopy(page),
        "meta": {
            "pagination": {
                "total_items": total,
                "items_per_page": limit,
                "total_pages": pages,
                "current_page": current,
                "offset": offset,
                "has_previous_page": offset > 0,
                "has_next_page": more,
                "next_page": current + 1 if more else None,
                "previous_page": current - 1 if offset > 0 else None,
            },
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        },
    }


@dataclass(frozen=True)
class Trigger:
    code_name: str
    body: JSONObject
    time: float


class CustomState:
    """Definitions, records, event types and triggers; one lock guards them all."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.on_trigger: Callable[[Trigger], None] | None = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.definitions: dict[int, JSONObject] = {}
            self.records: dict[int, dict[str, JSONObject]] = {}
            self.events: dict[str, JSONObject] = {}
            self.triggers: list[Trigger] = []
            self._ids = {"definition": 0, "record": 0, "event": 0}

    def _next(self, what: str) -> int:
        self._ids[what] += 1
        return self._ids[what]

    def definition_named(self, name: str) -> JSONObject | None:
        with self.lock:
            for d in self.definitions.values():
                if d["status"] != "deleted" and _fold(d["name"]) == _fold(name):
                    return copy.deepcopy(d)
            return None

    def records_of(self, ident: int | str) -> list[JSONObject]:
        with self.lock:
            return copy.deepcopy(list(self.records.get(int(ident), {}).values()))

    def triggers_of(self, code_name: str) -> list[Trigger]:
        with self.lock:
            return [t for t in self.triggers if t.code_name == code_name]


# --- definitions ---------------------------------------------------------------------------------


def _check_fields(fields: Any, existing: set[str]) -> list[str]:
    if not isinstance(fields, list):
        return ["fields must be an array"]
    errors: list[str] = []
    seen = set(existing)
    for i, f in enumerate(fields):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            errors.append(f"fields[{i}]: needs a name")
            continue
        if f["name"] in seen:
            errors.append(f"fields[{i}]: field {f['name']!r} already exists")
        seen.add(f["name"])
        if f.get("type") not in TYPES:
            errors.append(f"fields[{i}].type: must be one of {', '.join(TYPES)}")
        if not isinstance(f.get("label"), str) or not f["label"]:
            errors.append(f"fields[{i}].label: is required")
        if not isinstance(f.get("required"), bool):
            errors.append(f"fields[{i}].required: must be a boolean")
        if f.get("type") == "list" and not (isinstance(f.get("options"), list) and f["options"]):
            errors.append(f"fields[{i}].options: a list field needs options")
    return errors


def _check_relationships(rels: Any, fields: set[str], taken: set[str]) -> list[str]:
    if not isinstance(rels, list):
        return ["relationships must be an array"]
    errors: list[str] = []
    for i, r in enumerate(rels):
        if not isinstance(r, dict):
            errors.append(f"relationships[{i}]: must be an object")
            continue
        source = r.get("sourceField")
        if source not in fields:
            errors.append(f"relationships[{i}].sourceField: {source!r} is not a field")
        elif source in taken:
            errors.append(f"relationships[{i}]: {source!r} already has a relationship")
        if r.get("targetSchemaType") not in ("system", "custom"):
            errors.append(f"relationships[{i}].targetSchemaType: must be system or custom")
        if not isinstance(r.get("targetSchema"), str):
            errors.append(f"relationships[{i}].targetSchema: is required")
    return errors


def definition_create(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    if not isinstance(body, dict):
        return fail(400, "body must be an object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        return fail(400, "name is required")
    errors = _check_fields(body.get("fields"), set())
    names = {f["name"] for f in body.get("fields") or [] if isinstance(f, dict) and "name" in f}
    keys = body.get("unique_keys", [])
    if not isinstance(keys, list) or not set(keys) <= names:
        errors.append("unique_keys must be a subset of the field names")
    errors += _check_relationships(body.get("relationships", []), names, set())
    if errors:
        return fail(400, "; ".join(errors))
    with st.lock:
        if st.definition_named(name) is not None:
            return fail(400, "custom data definition name is already used.")
        ident = st._next("definition")
        d = {
            "id_definition": ident,
            "name": name,
            "description": body.get("description"),
            "status": "active",
            "unique_keys": list(keys),
            "fields": copy.deepcopy(body["fields"]),
            "relationships": copy.deepcopy(body.get("relationships", [])),
        }
        st.definitions[ident] = d
        return 201, {"statusCode": 201, "data": copy.deepcopy(d)}


def _live(st: CustomState, params: dict[str, str]) -> JSONObject | Result:
    try:
        d = st.definitions.get(int(params["id_definition"]))
    except ValueError:
        d = None
    if d is None or d["status"] == "deleted":
        return fail(400, "Custom data definition not found")
    return d


def definition_list(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    with st.lock:
        return listing(list(st.definitions.values()), query)


def definition_get(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    with st.lock:
        d = _live(st, params)
        return d if isinstance(d, tuple) else (200, {"statusCode": 200, "data": copy.deepcopy(d)})


def definition_extend(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    if not isinstance(body, dict) or set(body) - {"name", "description", "fields", "relationships"}:
        return fail(400, "body must be an object {name?, description?, fields?, relationships?}")
    with st.lock:
        d = _live(st, params)
        if isinstance(d, tuple):
            return d
        have = {f["name"] for f in d["fields"]}
        errors = _check_fields(body.get("fields", []), have)
        added = body["fields"] if isinstance(body.get("fields"), list) else []
        names = have | {str(f.get("name")) for f in added if isinstance(f, dict)}
        taken = {r["sourceField"] for r in d["relationships"]}
        errors += _check_relationships(body.get("relationships", []), names, taken)
        name = body.get("name")
        if name is not None:
            other = st.definition_named(str(name))
            if other is not None and other["id_definition"] != d["id_definition"]:
                errors.append("custom data definition name is already used.")
        if errors:
            return fail(400, "; ".join(errors))
        d["fields"] += copy.deepcopy(body.get("fields", []))
        d["relationships"] += copy.deepcopy(body.get("relationships", []))
        for k in ("name", "description"):
            if k in body:
                d[k] = body[k]
        return 200, {"statusCode": 200, "data": copy.deepcopy(d)}


def _set_status(st: CustomState, params: Any, status: str) -> Result:
    with st.lock:
        d = _live(st, params)
        if isinstance(d, tuple):
            return d
        if d["status"] == status:
            return fail(409, f"custom data definition is already {status}")
        d["status"] = status
        return 200, {"statusCode": 200, "data": copy.deepcopy(d)}


def definition_activate(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    return _set_status(st, params, "active")


def definition_deactivate(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    return _set_status(st, params, "inactive")


def definition_delete(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    return _set_status(st, params, "deleted")


# --- records -------------------------------------------------------------------------------------


def value_errors(f: JSONObject, v: Any, rel: JSONObject | None) -> str | None:
    if rel is not None and rel.get("targetSchema") == "contacts" and isinstance(v, dict):
        if v.get("by") not in RESOLVERS or v.get("value") in (None, ""):
            return f"a contact resolver is {{by: {' | '.join(RESOLVERS)}, value}}, got {v!r}"
        return None
    if rel is not None:
        ok = (isinstance(v, str) and v != "") or (isinstance(v, int) and not isinstance(v, bool))
        return None if ok else f"must be an id, got {v!r}"
    t = f.get("type")
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    checks: dict[str, bool] = {
        "bool": isinstance(v, bool),
        "text": isinstance(v, str),
        "longtext": isinstance(v, str),
        "number": number,
        "decimal": number,
        "list": str(v) in {str(o) for o in f.get("options") or []},
        "date": isinstance(v, str) and bool(_DATE.fullmatch(v)),
        "datetime": isinstance(v, str) and bool(DATETIME.fullmatch(v)),
    }
    return None if checks.get(str(t), True) else f"is not a valid {t} value: {v!r}"


def _record_errors(d: JSONObject, item: Any) -> list[str]:
    if not isinstance(item, dict):
        return ["a record must be an object"]
    if d["status"] != "active":
        return [f"custom data definition {d['name']!r} is {d['status']}, not active"]
    fields = {f["name"]: f for f in d["fields"]}
    rels = {r["sourceField"]: r for r in d["relationships"]}
    errors = [f"{k}: unknown field" for k in item if k not in fields]
    for name, f in fields.items():
        v = item.get(name)
        if v is None:
            if f.get("required"):
                errors.append(f"{name}: is required")
            continue
        problem = value_errors(f, v, rels.get(name))
        if problem:
            errors.append(f"{name}: {problem}")
    return errors


def _unique(d: JSONObject, item: JSONObject) -> str | None:
    if not d["unique_keys"]:
        return None
    return json.dumps([item.get(k) for k in d["unique_keys"]], sort_keys=True, default=str)


def records_upsert(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    if not isinstance(body, list) or not body:
        return fail(400, "body must be a non-empty array of records")
    if len(body) > RECORDS_MAX:
        return fail(400, f"body holds {len(body)} records; at most {RECORDS_MAX} per call")
    with st.lock:
        d = _live(st, params)
        if isinstance(d, tuple):
            return d
        table = st.records.setdefault(d["id_definition"], {})
        rejected = []
        sent = 0
        for i, item in enumerate(body):
            errors = _record_errors(d, item)
            if errors:
                rejected.append({"index": i, "item": item, "errors": errors})
                continue
            key = _unique(d, item)
            old = table.get(key) if key is not None else None
            ident = old["id"] if old is not None else st._next("record")
            table[key if key is not None else f"#{ident}"] = {**copy.deepcopy(item), "id": ident}
            sent += 1
    status = 400 if sent == 0 else 200
    return status, {
        "statusCode": status,
        "sent_count": sent,
        "rejected_count": len(rejected),
        "rejected_items": rejected,
    }


def records_list(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    with st.lock:
        d = _live(st, params)
        if isinstance(d, tuple):
            return d
        return listing(list(st.records.get(d["id_definition"], {}).values()), query)


def records_delete(st: CustomState, params: Any, query: Any, body: Any) -> Result:
    """``POST …/bulk-delete``: a raw array of 1 to 20 record ids; unknown ids are skipped."""
    if not isinstance(body, list) or not body:
        return fail(400, "body must be a non-empty array of record ids")
    if len(body) > RECORDS_MAX:
        return fail(400, f"body holds {len(body)} ids; at most {RECORDS_MAX} per call")
    if any(isinstance(i, bool) or not isinstance(i, (int, str)) for i in body):
        return fail(400, "record ids are numbers")
    wanted = {str(i) for i in body}
    with st.lock:
        d = _live(st, params)
        if isinstance(d, tuple):
            return d
        table = st.records.get(d["id_definition"], {})
        gone = [k for k, rec in table.items() if str(rec["id"]) in wanted]
        for k in gone:
            del table[k]
    return 200, {
        "statusCode": 200,
        "sent_count": len(body),
        "rejected_count": 0,
        "rejected_items": [],
    }

"""Custom data: provision a mapping's definition on ShopiMind, then push its rows as records.

Provisioning is idempotent and runs before a mapping's first pass in a process:

1. the definition id kept in the state database (meta ``custom_data_definition:<mapping>``) is
   checked with ``GET /v1/custom-data-definitions/{id}``; if it is gone (or the mapping now names
   another definition), the definition is looked up by name in the list (pages of 100; names
   compare case- and accent-insensitively, deleted ones ignored);
2. absent: ``POST /v1/custom-data-definitions``; present: compared with the mapping. New
   fields or relationships are appended (``PATCH …/{id}/extend``; a refusal of a retried
   extension — "already exists" after an answer lost — is success when the definition now is
   what the mapping declares). The definition is part of the mapping's fingerprint, so the next
   pass re-reads every row and re-sends the records that gain a value (:mod:`connector._remap`),
   however the extension's pass ended. Anything else that
   differs (a type, required flag or list options of a field, a relationship, the unique keys, a
   field ShopiMind requires that the mapping dropped) is refused with
   :class:`DefinitionConflictError` before any write: ShopiMind definitions can only grow;
3. when the id differs from the one kept, the mapping's cursor and records are forgotten so every
   row is pushed into the (new) definition.

The records then flow like any resource: :class:`CustomDataSync` is a ``MappingSync`` whose
resource path names the definition id (batches of at most 20, upserted on ``unique_keys``).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx

from connector.destination.client import ApiClient
from connector.errors import AuthError, ConnectorError, DeliveryError, RetriableError
from connector.mapping.compile import CompiledMapping
from connector.mapping.custom import RECORDS_PATH
from connector.mapping.spec import CustomField, DefinitionSpec, Mapping, Relationship
from connector.state.model import RunCounts
from connector.state.store import StateStore
from connector.sync import MappingSync, PassResult

log = logging.getLogger("connector.customdata")

DEFINITIONS = "/v1/custom-data-definitions"
DEFINITION_META = "custom_data_definition:{}"
LIST_LIMIT = 100  # above 100 the API silently falls back to 10
MAX_PAGES = 1000
_DEFAULT_TARGET = {"contacts": "id_contact", "products": "product_id"}


class DefinitionConflictError(RetriableError):
    """The definition on ShopiMind cannot become what the mapping declares (or cannot be made):
    this mapping's pass fails with the reason and what to do; nothing was written."""


def same_name(a: str, b: str) -> bool:
    """Names compare as the API does: case- and accent-insensitively."""
    return _fold(a) == _fold(b)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# --- comparing a declared definition with ShopiMind's ------------------------------------------


@dataclass
class Diff:
    new_fields: list[CustomField] = field(default_factory=list)
    new_relationships: list[Relationship] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # incompatible: nothing can be done
    notes: list[str] = field(default_factory=list)  # harmless differences (labels, extra fields)

    @property
    def extends(self) -> bool:
        return bool(self.new_fields or self.new_relationships)


def _relation_key(schema_type: Any, schema: Any, target: Any) -> tuple[str, str, str]:
    schema_text = str(schema)
    default = _DEFAULT_TARGET.get(schema_text, "id")
    return (str(schema_type), schema_text, str(target) if target else default)


def compare(declared: DefinitionSpec, remote: dict[str, Any]) -> Diff:
    """What separates ShopiMind's definition from the declared one."""
    diff = Diff()
    theirs = {
        f["name"]: f
        for f in remote.get("fields") or []
        if isinstance(f, dict) and isinstance(f.get("name"), str)
    }
    for f in declared.fields:
        r = theirs.get(f.name)
        if r is None:
            diff.new_fields.append(f)
            continue
        if r.get("type") != f.type:
            diff.problems.append(
                f"field {f.name!r} is of type {r.get('type')!r} on ShopiMind but {f.type!r} in "
                "the mapping"
            )
        if bool(r.get("required", False)) != f.required:
            diff.problems.append(
                f"field {f.name!r} is {'required' if r.get('required') else 'optional'} on "
                f"ShopiMind but {'required' if f.required else 'optional'} in the mapping"
            )
        if f.type == "list" and r.get("type") == "list":
            have = sorted(str(o) for o in r.get("options") or [])
            want = sorted(str(o) for o in f.options)
            if have != want:
                diff.problems.append(
                    f"list field {f.name!r} has options {have} on ShopiMind but {want} in the "
                    "mapping"
                )
        if (r.get("label") or f.name) != (f.label or f.name):
            diff.notes.append(f"field {f.name!r}: label {r.get('label')!r} on ShopiMind")
    for name, r in theirs.items():
        if declared.field(name) is None:
            if r.get("required"):
                diff.problems.append(
                    f"ShopiMind requires field {name!r}, which the mapping no longer declares"
                )
            else:
                diff.notes.append(f"field {name!r} exists on ShopiMind only; it stays empty")
    their_rels: dict[str, tuple[str, str, str]] = {}
    for r in remote.get("relationships") or []:
        if isinstance(r, dict) and isinstance(r.get("sourceField"), str):
            their_rels[r["sourceField"]] = _relation_key(
                r.get("targetSchemaType"), r.get("targetSchema"), r.get("targetField")
            )
    for rel in declared.relationships:
        api = rel.api()
        mine = _relation_key(api["targetSchemaType"], api["targetSchema"], None)
        had = their_rels.pop(rel.field, None)
        if had is None:
            diff.new_relationships.append(rel)
        elif had != mine:
            diff.problems.append(
                f"field {rel.field!r} relates to {had[1]}.{had[2]} on ShopiMind but to "
                f"{mine[1]}.{mine[2]} in the mapping (relationships cannot change)"
            )
    for source, had in their_rels.items():
        diff.problems.append(
            f"field {source!r} relates to {had[1]}.{had[2]} on ShopiMind; the mapping dropped "
            "that relationship (relationships cannot be removed)"
        )
    theirs_keys = sorted(str(k) for k in remote.get("unique_keys") or [])
    if theirs_keys != sorted(declared.unique_keys):
        diff.problems.append(
            f"unique_keys are {theirs_keys} on ShopiMind but {sorted(declared.unique_keys)} in the "
            "mapping"
        )
    return diff


def remote_id(row: dict[str, Any]) -> str | None:
    for k in ("id_definition", "id", "id_custom_data_definition"):
        v = row.get(k)
        if isinstance(v, (int, str)) and not isinstance(v, bool) and str(v):
            return str(v)
    return None


def remote_name(row: dict[str, Any]) -> str:
    return str(row.get("name") or row.get("schema_name") or "")


# --- provisioning --------------------------------------------------------------------------------


class Provisioner:
    """Finds, creates or extends the definition of one custom-data mapping."""

    def __init__(self, client: ApiClient, store: StateStore, mapping: Mapping) -> None:
        assert mapping.definition is not None
        self.client = client
        self.store = store
        self.mapping = mapping
        self.declared: DefinitionSpec = mapping.definition
        self.meta = DEFINITION_META.format(mapping.name)
        self.where = f"{mapping.file}: definition {self.declared.name!r}"

    def ensure(self) -> str:
        """The id of a definition on ShopiMind that matches the mapping (writes only if needed)."""
        raw = self.store.get_meta(self.meta)
        kept: dict[str, Any] = json.loads(raw) if raw else {}
        remote: dict[str, Any] | None = None
        if kept.get("id") is not None:
            remote = self._get(str(kept["id"]))
            if remote is not None and not same_name(remote_name(remote), self.declared.name):
                remote = None  # the mapping now names another definition
        if remote is None:
            remote = self._find()
        ident = self._create() if remote is None else self._reconcile(remote)
        if str(kept.get("id")) != ident:
            if kept:
                log.warning(
                    "%s: ShopiMind definition id changed (%s → %s); every row is pushed again",
                    self.where,
                    kept.get("id"),
                    ident,
                )
            self.store.forget(self.mapping.name)
            self.store.set_meta(self.meta, json.dumps({"id": ident, "name": self.declared.name}))
        return ident

    def _reconcile(self, remote: dict[str, Any]) -> str:
        ident = remote_id(remote)
        if ident is None:
            raise DeliveryError(f"{self.where}: ShopiMind's definition has no id: {remote}")
        status = remote.get("status")
        if status not in (None, "active"):
            raise DefinitionConflictError(
                f"{self.where} is {status!r} on ShopiMind (id {ident}); records only go into an "
                "active definition: activate it in ShopiMind, then the next pass pushes the rows"
            )
        diff = compare(self.declared, remote)
        if diff.problems:
            raise DefinitionConflictError(
                f"{self.where} on ShopiMind (id {ident}) differs from the mapping: "
                + "; ".join(diff.problems)
                + ". ShopiMind definitions can only be extended with new fields, so nothing was "
                "changed. Either put the mapping back as the definition is, or give the "
                "definition a new name (definition.name) to create a new one — every row is then "
                "pushed into it — and delete the old one in ShopiMind if it is no longer used."
            )
        for note in diff.notes:
            log.info("%s: %s", self.where, note)
        if diff.extends:
            # existing records lack the new fields: the definition is part of the mapping's
            # fingerprint, so the first pass with it re-reads every row (connector._remap), even
            # if this process dies right after the extension
            self._extend(ident, diff)
        return ident

    def _json(self, resp: httpx.Response, what: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise DeliveryError(f"{self.where}: {what}: the answer is not JSON") from None

    def _fail(self, resp: httpx.Response, what: str) -> DeliveryError:
        return DeliveryError(f"{self.where}: {what}: HTTP {resp.status_code}: {resp.text[:300]}")

    def _get(self, ident: str) -> dict[str, Any] | None:
        what = f"GET {DEFINITIONS}/{ident}"
        resp = self.client.request("GET", f"{DEFINITIONS}/{quote(ident, safe='')}", what=what)
        if resp.status_code in (400, 404):  # deleted (the API answers 400) or unknown
            return None
        if resp.status_code >= 400:
            raise self._fail(resp, what)
        body = self._json(resp, what)
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]
        if not isinstance(data, dict) or data.get("status") == "deleted":
            return None
        return data

    def _find(self) -> dict[str, Any] | None:
        """The live definition with the declared name, read from the list page by page."""
        offset = 0
        for _ in range(MAX_PAGES):
            what = f"GET {DEFINITIONS} (offset {offset})"
            resp = self.client.request(
                "GET", DEFINITIONS, params={"limit": LIST_LIMIT, "offset": offset}, what=what
            )
            if resp.status_code >= 400:
                raise self._fail(resp, what)
            body = self._json(resp, what)
            rows = body.get("data") if isinstance(body, dict) else None
            if not isinstance(rows, list) or not rows:
                return None
            for row in rows:
                if (
                    isinstance(row, dict)
                    and row.get("status") != "deleted"
                    and same_name(remote_name(row), self.declared.name)
                ):
                    ident = remote_id(row)
                    full = self._get(ident) if ident is not None else None
                    return full if full is not None else row
            pages = (body.get("meta") or {}).get("pagination") or {}
            if pages.get("has_next_page") is False:
                return None
            offset += len(rows)
        return None

    def _create(self, again: bool = True) -> str:
        what = f"POST {DEFINITIONS}"
        resp = self.client.request("POST", DEFINITIONS, self.declared.api(), what=what)
        if 400 <= resp.status_code < 500 and again:
            # a create whose answer was lost, or a concurrent one: the name is taken now
            found = self._find()
            if found is not None:
                return self._reconcile(found)
        if resp.status_code >= 400:
            raise DefinitionConflictError(
                f"{self.where}: ShopiMind refused to create the definition (HTTP "
                f"{resp.status_code}: {resp.text[:300]}); fix [definition] in the mapping"
            )
        body = self._json(resp, what)
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]
        ident = remote_id(data) if isinstance(data, dict) else None
        if ident is None:
            raise DeliveryError(f"{self.where}: {what}: no definition id in the answer {body}")
        log.info("%s: created on ShopiMind (id %s)", self.where, ident)
        return ident

    def _extend(self, ident: str, diff: Diff) -> None:
        body: dict[str, Any] = {}
        if diff.new_fields:
            body["fields"] = [f.api() for f in diff.new_fields]
        if diff.new_relationships:
            body["relationships"] = [r.api() for r in diff.new_relationships]
        path = f"{DEFINITIONS}/{quote(ident, safe='')}/extend"
        resp = self.client.request("PATCH", path, body, what=f"PATCH {path}")
        if 400 <= resp.status_code < 500:
            # an extension whose answer was lost (applied, then a 5xx) is refused when retried
            # ("already exists"): what counts is whether the definition is now what we wanted
            now = self._get(ident)
            if now is not None:
                again = compare(self.declared, now)
                if not again.problems and not again.extends:
                    log.info(
                        "%s: the extension was already applied on ShopiMind (an earlier answer "
                        "was lost; ShopiMind answered HTTP %d: %s)",
                        self.where,
                        resp.status_code,
                        resp.text[:200],
                    )
                    return
        if resp.status_code >= 400:
            raise self._fail(resp, f"PATCH {path}")
        log.info(
            "%s: extended on ShopiMind with %s",
            self.where,
            ", ".join(
                [f.name for f in diff.new_fields] + [r.field for r in diff.new_relationships]
            ),
        )


# --- the pass ------------------------------------------------------------------------------------


def records_path(ident: str) -> str:
    return RECORDS_PATH.format(id_definition=quote(ident, safe=""))


class CustomDataSync(MappingSync):
    """A ``MappingSync`` whose definition is provisioned first (once per process)."""

    def __init__(self, compiled: CompiledMapping, *, provisioned: dict[str, str], **kw: Any):
        super().__init__(compiled, **kw)
        self.provisioned = provisioned

    def _ready(self) -> None:
        name = self.mapping.name
        ident = self.provisioned.get(name)
        if ident is None:
            ident = Provisioner(self.client, self.store, self.mapping).ensure()
            self.provisioned[name] = ident
        path = records_path(ident)
        if self.mapping.resource.path != path:
            mapping = replace(self.mapping, resource=replace(self.mapping.resource, path=path))
            self.compiled = CompiledMapping(mapping, self.tz, None)
            self.mapping = mapping

    def run_pass(self) -> PassResult:
        try:
            self._ready()
        except ConnectorError as exc:
            run_id = self.store.start_run(self.mapping.name)
            self.store.finish_run(run_id, RunCounts(), "failed", str(exc))
            if isinstance(exc, AuthError):
                raise
            cursor = self.store.get_cursor(self.mapping.name)
            return PassResult(self.mapping.name, "failed", RunCounts(), str(exc), cursor)
        return super().run_pass()

    def retry_rejected(self, keys: Any) -> RunCounts:
        self._ready()
        return super().retry_rejected(keys)


# --- contacts ------------------------------------------------------------------------------------


def get_contact(client: ApiClient, *, email: str | None, customer_id: str | None) -> Any:
    """ShopiMind's unified contact (``GET /v1/contacts``), or None when there is none."""
    params = (
        {"contact_data_email": email} if email is not None else {"id_customer_shop": customer_id}
    )
    resp = client.request("GET", "/v1/contacts", params=params, what="GET /v1/contacts")
    if resp.status_code == 404:
        return None
    if resp.status_code >= 400:
        raise DeliveryError(f"GET /v1/contacts: HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        body = resp.json()
    except ValueError:
        raise DeliveryError("GET /v1/contacts: the answer is not JSON") from None
    return body.get("data") if isinstance(body, dict) and "data" in body else body

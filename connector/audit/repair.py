"""Repairing what an audit found.

* **Missing and stale** records: their shop rows are read again and sent through the normal
  delivery path (:meth:`MappingSync.retry_rejected` with ``force``: the same batching, budget,
  retries, rejected items and state updates as a pass; sent even though the state says ShopiMind
  accepted that content, since ShopiMind lost or changed it).
* **Ghosts** are deleted through the resource's bulk-delete route with the reconciliation's
  guards: nothing is deleted when more than ``max_delete_share`` of the records read would go;
  a ghost whose row exists in the shop (looked up again) is kept; so is one whose delete id
  lives on through another record the shop implies (ShopiMind deletes every language of an id).
"""

from __future__ import annotations

import logging
import string
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from connector._reconcile_compare import refusal
from connector.audit.compare import id_text
from connector.audit.report import MappingAudit, Repair
from connector.errors import ConnectorError, FatalError
from connector.runtime import Runtime
from connector.state.model import key_from_json

if TYPE_CHECKING:
    from connector.audit.shopside import ShopSide

log = logging.getLogger("connector.audit")


def repair(rt: Runtime, shop: ShopSide, res: MappingAudit, max_delete_share: float) -> Repair:
    rep = Repair()
    try:
        keys = [res.sources[k] for k in (*res.missing, *sorted(res.stale)) if k in res.sources]
        if keys:
            counts = shop.syncer.resend([key_from_json(k) for k in keys])
            rep.resent, rep.accepted, rep.rejected = len(keys), counts.accepted, counts.rejected
        if res.ghost:
            _delete_ghosts(rt, shop, res, rep, max_delete_share)
    except FatalError:
        raise
    except ConnectorError as exc:
        rep.outcome, rep.message = "failed", str(exc)
    return rep


def _delete_ghosts(
    rt: Runtime, shop: ShopSide, res: MappingAudit, rep: Repair, max_share: float
) -> None:
    resource = shop.mapping.resource
    if not resource.delete_path or not resource.delete_id_field or not resource.delete_body_key:
        rep.message = f"{resource.name} has no bulk delete in the API: ghosts left"
        rep.kept += len(res.ghost)
        return
    why = refusal(res.api_records, res.api_records - len(res.ghost), len(res.ghost), max_share)
    if why is not None:
        rep.outcome = "refused"
        rep.message = (
            f"{why.replace('gone from the shop', 'not implied by the shop')}; no ghost was "
            f"deleted. If they really must go, run `shopimind-connector audit --mapping "
            f"{res.mapping} --repair --max-delete-share 1`"
        )
        rep.kept += len(res.ghost)
        return
    records = [res.ghost_records[k] for k in res.ghost]
    live = shop.lookup(records)
    alive = set(res.implied_keys) | set(live or {})
    id_at = (
        resource.key.index(resource.delete_id_field)
        if resource.delete_id_field in resource.key
        else None
    )
    alive_ids = {k.split("|")[id_at] for k in alive} if id_at is not None else set()
    localized = len(resource.key) > 1 + len(_placeholders(resource.delete_path))
    routes: dict[str, list[Any]] = {}
    for k, rec in zip(res.ghost, records, strict=True):
        ident = rec.get(resource.delete_id_field)
        shared = id_text(ident) in alive_ids
        unsure = localized and res.mode == "sample" and live is None
        if k in alive or ident is None or shared or unsure:
            rep.kept += 1
            continue
        values = {
            p: quote(id_text(rec.get(p)), safe="") for p in _placeholders(resource.delete_path)
        }
        routes.setdefault(resource.delete_path.format(**values), []).append(ident)
    client = rt.client
    assert client is not None
    for path, ids in routes.items():
        for i in range(0, len(ids), resource.delete_limit):
            chunk = ids[i : i + resource.delete_limit]
            client.delete_ids(
                path, resource.delete_body_key, chunk, what=f"{res.mapping}: POST {path}"
            )
            rep.deleted += len(chunk)
    if rep.kept:
        log.warning(
            "%s: %d ghost(s) kept: their row exists in the shop, or their id lives on through "
            "another record (ShopiMind deletes all languages of an id at once)",
            res.mapping,
            rep.kept,
        )


def _placeholders(path: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(path) if name]

"""A run of the audit over several mappings, resumable: each finished mapping's result is saved
in the state database (``meta`` ``audit:run``, with the run's options); a run interrupted before
the end and started again with the same options skips the mappings already done, showing their
saved results. A run that ends clears it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from connector.audit import report
from connector.audit.report import MappingAudit, Repair
from connector.audit.run import AuditOptions, ProgressLike, audit_mapping
from connector.audit.share import AuditShare
from connector.errors import ConnectorError
from connector.runtime import Runtime

log = logging.getLogger("connector.audit")

RUN_META = "audit:run"


def audit_all(
    rt: Runtime,
    names: Sequence[str] | None,
    opts: AuditOptions,
    *,
    share: AuditShare | None = None,
    progress: ProgressLike | None = None,
    sleep: Callable[[float], bool] | None = None,
) -> list[MappingAudit]:
    """Audit the runtime's mappings (or ``names``) in the API's order, each result saved; a run
    interrupted before resumes where it stopped when started again with the same options."""
    assert rt.client is not None, "the audit needs a runtime opened with the API client"
    share = share or AuditShare(rt.client.budget, opts.share)
    chosen = [m.name for m in rt.mappings if not names or m.name in names]
    signature = opts.signature(chosen)
    done = _resume(rt, signature)
    out: list[MappingAudit] = []
    for name in chosen:
        if name in done:
            res = _from_json(done[name])
            res.message = ((res.message + "; ") if res.message else "") + "from the interrupted run"
            out.append(res)
            continue
        if rt.stop.is_set():
            break
        res = audit_mapping(rt, name, opts, share, progress=progress, sleep=sleep)
        report.log_result(res)
        out.append(res)
        if res.outcome == "interrupted":
            break
        done[name] = res.as_json()
        with _saving():
            if res.outcome not in ("skipped", "unsupported"):
                report.save(rt.store, res)
            rt.store.set_meta(RUN_META, json.dumps({"signature": signature, "done": done}))
    if not rt.stop.is_set() and len(out) == len(chosen):
        with _saving():
            rt.store.set_meta(RUN_META, "")
    return out


@contextlib.contextmanager
def _saving() -> Iterator[None]:
    try:
        yield
    except ConnectorError as exc:
        log.warning("cannot record the audit's progress: %s", exc)


def _resume(rt: Runtime, signature: str) -> dict[str, dict[str, Any]]:
    raw = rt.store.get_meta(RUN_META)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict) or data.get("signature") != signature:
        return {}
    done = data.get("done")
    return done if isinstance(done, dict) else {}


def _from_json(data: dict[str, Any]) -> MappingAudit:
    res = MappingAudit(str(data["mapping"]), str(data["resource"]))
    res.outcome, res.mode = data["outcome"], data["mode"]
    res.shop_rows, res.api_records = data["shop_rows"], data["api_records"]
    res.missing = list(data["missing"]["keys"])
    res.stale = dict(data["stale"]["fields"])
    res.ghost = list(data["ghost"]["keys"])
    res.ignored_fields = list(data["ignored_fields"])
    res.settled, res.requests, res.message = data["settled"], data["requests"], data["message"]
    if isinstance(data.get("repair"), dict):
        res.repair = Repair(**data["repair"])
    return res

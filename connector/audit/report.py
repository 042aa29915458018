"""What an audit found, per mapping: the result type, its JSON and text forms, the summary kept
in the state database (``meta`` key ``audit:<mapping>``, read by ``status`` and the metrics)
and the warning logged when something differs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector import timeutil
from connector.state.store import StateStore

log = logging.getLogger("connector.audit")

META = "audit:{}"
SHOWN = 5  # keys named in a warning or a status line


@dataclass
class Repair:
    resent: int = 0  # rows re-sent (missing and stale)
    accepted: int = 0
    rejected: int = 0
    deleted: int = 0  # ghosts deleted on ShopiMind
    kept: int = 0  # ghosts left: their row exists in the shop, or their id lives on
    outcome: str = "ok"  # ok | refused | failed
    message: str | None = None


@dataclass
class MappingAudit:
    mapping: str
    resource: str
    outcome: str = "ok"  # ok | unsupported | skipped | failed | interrupted
    mode: str = "full"  # full | sample
    shop_rows: int = 0  # rows of the shop compared (implied items)
    api_records: int = 0  # ShopiMind records compared
    missing: list[str] = field(default_factory=list)
    stale: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    ghost: list[str] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)
    settled: int = 0  # differences gone at the second look (written moments before)
    requests: int = 0
    message: str | None = None
    repair: Repair | None = None
    # not reported: what the repair needs
    sources: dict[str, str] = field(default_factory=dict, repr=False)  # API key -> source key
    ghost_records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    implied_keys: set[str] = field(default_factory=set, repr=False)  # full mode: every one

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "unsupported", "skipped")

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.stale) + len(self.ghost)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mapping": self.mapping,
            "resource": self.resource,
            "outcome": self.outcome,
            "mode": self.mode,
            "shop_rows": self.shop_rows,
            "api_records": self.api_records,
            "missing": {"count": len(self.missing), "keys": sorted(self.missing)},
            "stale": {
                "count": len(self.stale),
                "keys": sorted(self.stale),
                "fields": {k: self.stale[k] for k in sorted(self.stale)},
            },
            "ghost": {"count": len(self.ghost), "keys": sorted(self.ghost)},
            "ignored_fields": self.ignored_fields,
            "settled": self.settled,
            "requests": self.requests,
            "message": self.message,
        }
        if self.repair is not None:
            out["repair"] = self.repair.__dict__.copy()
        return out


def format_text(results: list[MappingAudit]) -> str:
    lines = [
        f"{'mapping':<24} {'outcome':<12} {'mode':<7} {'shop':>7} {'shopimind':>9} "
        f"{'missing':>7} {'stale':>6} {'ghost':>6}"
    ]
    for r in results:
        lines.append(
            f"{r.mapping:<24} {r.outcome:<12} {r.mode:<7} {r.shop_rows:>7} {r.api_records:>9} "
            f"{len(r.missing):>7} {len(r.stale):>6} {len(r.ghost):>6}"
        )
        if r.message:
            lines.append(f"    {r.message}")
        if r.missing:
            lines.append("    missing: " + ", ".join(sorted(r.missing)))
        for key in sorted(r.stale):
            shown = "; ".join(
                f"{f}: expected {_short(d['expected'])}, actual {_short(d['actual'])}"
                for f, d in r.stale[key].items()
            )
            lines.append(f"    stale {key}: {shown}")
        if r.ghost:
            lines.append("    ghost: " + ", ".join(sorted(r.ghost)))
        if r.ignored_fields:
            lines.append("    not compared (ShopiMind's own): " + ", ".join(r.ignored_fields))
        if r.repair is not None:
            p = r.repair
            lines.append(
                f"    repair {p.outcome}: re-sent {p.resent} (accepted {p.accepted}, rejected "
                f"{p.rejected}), ghosts deleted {p.deleted}, kept {p.kept}"
                + (f"; {p.message}" if p.message else "")
            )
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def summary(r: MappingAudit) -> dict[str, Any]:
    """What ``status`` and the metrics show of the last audit of a mapping."""
    return {
        "at": timeutil.iso_utc(timeutil.utc_now()),
        "outcome": r.outcome,
        "mode": r.mode,
        "missing": len(r.missing),
        "stale": len(r.stale),
        "ghost": len(r.ghost),
        "examples": _examples(r),
        "message": r.message,
        "repaired": None if r.repair is None else r.repair.outcome,
    }


def _examples(r: MappingAudit) -> list[str]:
    keys = [f"missing {k}" for k in sorted(r.missing)[:SHOWN]]
    keys += [f"stale {k}" for k in sorted(r.stale)[:SHOWN]]
    keys += [f"ghost {k}" for k in sorted(r.ghost)[:SHOWN]]
    return keys[:SHOWN]


def save(store: StateStore, r: MappingAudit) -> None:
    store.set_meta(META.format(r.mapping), json.dumps(summary(r)))


def load(store: StateStore, name: str) -> tuple[datetime, dict[str, Any]] | None:
    raw = store.get_meta(META.format(name))
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return timeutil.parse_timestamp(str(data["at"])), data
    except (ValueError, KeyError, TypeError):
        return None


def log_result(r: MappingAudit) -> None:
    line = (
        f"{r.mapping}: audit ({r.mode}) {r.outcome} shop={r.shop_rows} shopimind={r.api_records} "
        f"missing={len(r.missing)} stale={len(r.stale)} ghost={len(r.ghost)} "
        f"requests={r.requests}"
    )
    if r.message:
        line += f"; {r.message}"
    if r.differences:
        log.warning("%s; e.g. %s", line, ", ".join(_examples(r)))
    elif r.outcome == "failed":
        log.error(line)
    else:
        log.info(line)

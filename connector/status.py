"""``status`` and ``reset``: what each mapping has done, and moving a cursor back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector import timeutil
from connector._remap import REMAP_META, Remap, progress_text
from connector.audit import report as audit_report
from connector.config import Config
from connector.errors import ConnectorError
from connector.mapping import Mapping, load_mappings
from connector.mapping.load import mapping_named
from connector.reconcile import META, parse_meta
from connector.runtime import load_state
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.state.model import Cursor
from connector.sync import FORCE_META


def cursor_display(value: Any, cfg: Config) -> str | None:
    """A cursor value as UTC ISO text (naive values are shop-local wall-clock times)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = timeutil.parse_timestamp(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return timeutil.iso_utc(timeutil.to_utc(value, cfg.shop_tz))
    return str(value)


def collect_status(cfg: Config) -> list[dict[str, Any]]:
    mappings = load_mappings(cfg.mappings_path)
    out: list[dict[str, Any]] = []
    with load_state(cfg) as store:
        statuses = {s.mapping: s for s in store.status([m.name for m in mappings])}
        reconciled = {m.name: parse_meta(store.get_meta(META.format(m.name))) for m in mappings}
        audited = {m.name: audit_report.load(store, m.name) for m in mappings}
        remaps = {
            m.name: Remap.from_json(store.get_meta(REMAP_META.format(m.name))) for m in mappings
        }
    behind: dict[str, int | str] = {}
    try:
        with ShopReader(cfg.source_url(), connect_timeout=cfg.source.connect_timeout) as reader:
            now = reader.db_now_utc()
            for m in mappings:
                st = statuses.get(m.name)
                behind[m.name] = rows_behind(reader, m, st.cursor if st else None, now, cfg)
    except ConnectorError as exc:
        for m in mappings:
            behind.setdefault(m.name, f"unknown ({exc})")
    for m in mappings:
        st = statuses.get(m.name)
        last = st.last_run if st else None
        out.append(
            {
                "mapping": m.name,
                "resource": m.resource.name,
                "enabled": m.enabled,
                "cursor": cursor_display(st.cursor.value, cfg) if st and st.cursor else None,
                "cursor_saved_at": st.cursor_saved_at if st else None,
                "last_run": None
                if last is None
                else {
                    "started_at": last.started_at,
                    "ended_at": last.ended_at,
                    "outcome": last.outcome,
                    "message": last.message,
                    **last.counts.as_dict(),
                },
                "last_ok_at": st.last_ok_at if st else None,
                "rows_behind": behind.get(m.name),
                "rejected": st.rejected if st else 0,
                "known_sent": st.known_sent if st else 0,
                "known_deleted": st.known_deleted if st else 0,
                "known_pending": st.known_pending if st else 0,
                "last_reconcile": _reconcile_summary(reconciled.get(m.name)),
                **_audit_summary(audited.get(m.name)),
                "remap": None
                if (rm := remaps.get(m.name)) is None
                else {"rows_done": rm.read, "rows_about": rm.total},
            }
        )
    return out


def rows_behind(
    reader: ShopReader, m: Mapping, cursor: Cursor | None, now: datetime, cfg: Config
) -> int:
    sample = reader.sample_cursor(m)
    if sample is None:
        return 0
    upper = q.upper_bound(now, cfg.source.safety_lag, sample, cfg.shop_tz)
    start = None if cursor is None else q.Position(cursor.value, cursor.key or None)
    return int(
        reader.scalar(q.pending_count_query(m.source, start, upper), "counting rows behind") or 0
    )


def _age(value: datetime | None) -> str:
    if value is None:
        return "never"
    secs = (datetime.now(UTC) - value).total_seconds()
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    if secs < 172800:
        return f"{secs / 3600:.0f}h ago"
    return f"{secs / 86400:.0f}d ago"


def _reconcile_summary(meta: tuple[datetime, dict[str, Any]] | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    at, data = meta
    return {"at": at, **{k: data.get(k) for k in ("outcome", "deleted", "pending", "message")}}


def _audit_summary(meta: tuple[datetime, dict[str, Any]] | None) -> dict[str, Any]:
    """``audit_missing`` / ``audit_stale`` / ``audit_ghost`` of the last audit (None: never),
    and ``last_audit``: when, how, and a few of the keys."""
    if meta is None:
        return {"audit_missing": None, "audit_stale": None, "audit_ghost": None, "last_audit": None}
    at, data = meta
    out = {f"audit_{k}": data.get(k) for k in ("missing", "stale", "ghost")}
    keep = ("outcome", "mode", "examples", "message", "repaired")
    return {**out, "last_audit": {"at": at, **{k: data.get(k) for k in keep}}}


def format_status(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'mapping':<24} {'cursor (UTC)':<25} {'last run':<22} {'behind':>8} "
        f"{'rejected':>8} {'sent':>8} {'deleted':>8} {'pending':>8}"
    )
    lines = [head]
    for r in rows:
        last = r["last_run"]
        run = (
            "never"
            if last is None
            else f"{last['outcome'] or 'running'} {_age(last['started_at'])}"
        )
        lines.append(
            f"{r['mapping']:<24} {r['cursor'] or '-':<25} {run:<22} {r['rows_behind']!s:>8} "
            f"{r['rejected']:>8} {r['known_sent']:>8} {r['known_deleted']:>8} "
            f"{r.get('known_pending', 0):>8}"
        )
        if last and last["outcome"] == "failed" and last["message"]:
            lines.append(f"    last error: {last['message']}")
        audit = r.get("last_audit")
        if audit is not None:
            text = (
                f"    last audit ({audit['mode']}, {_age(audit['at'])}): {audit['outcome']} "
                f"missing={r['audit_missing']} stale={r['audit_stale']} ghost={r['audit_ghost']}"
            )
            if audit.get("examples"):
                text += " e.g. " + ", ".join(audit["examples"])
            lines.append(text)
        remap = r.get("remap")
        if remap:
            state = Remap("", read=remap["rows_done"], total=remap.get("rows_about"))
            lines.append(f"    {progress_text(state)}")
        rec = r.get("last_reconcile")
        if rec and rec["outcome"] not in ("ok", "skipped") and rec.get("message"):
            lines.append(f"    last reconcile ({rec['outcome']}): {rec['message']}")
    return "\n".join(lines)


def reset(cfg: Config, name: str, to: str | None) -> str:
    """Move the cursor back to ``to`` (shop-local time) or to the start, and force a re-send of
    every row from there up to now, even rows whose content did not change."""
    m = mapping_named(cfg.mappings_path, name)
    with ShopReader(cfg.source_url(), connect_timeout=cfg.source.connect_timeout) as reader:
        sample = reader.sample_cursor(m)
        now = reader.db_now_utc()
    cursor: Cursor | None = None
    if to is not None:
        try:
            local = timeutil.parse_timestamp(to)
        except ValueError:
            raise ConnectorError(
                f"--to {to!r}: not a timestamp; write e.g. '2026-05-01 00:00:00'"
            ) from None
        when = timeutil.to_utc(local, cfg.shop_tz)
        cursor = Cursor(
            q.upper_bound(when, 0.0, sample, cfg.shop_tz) if sample is not None else local, ()
        )
    until = q.upper_bound(now, 0.0, sample, cfg.shop_tz) if sample is not None else None
    with load_state(cfg) as store:
        store.set_cursor(name, cursor)
        store.set_meta(FORCE_META.format(name), Cursor(until, ()).to_json())
    where = f"to {to} ({cfg.source.timezone})" if to else "to the start"
    return f"{name}: cursor reset {where}; the next pass re-sends every row from there"

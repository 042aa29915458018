"""``health``: did every enabled mapping complete a successful pass recently? (exit 0 / 1)

Reads only the state database's run history, so it is cheap enough for a monitoring probe every
minute and works while the service runs. The limit is ``--max-age`` or ``--intervals`` times
``sync.poll_interval`` (default 3 intervals).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.config import Config
from connector.mapping import load_mappings
from connector.progress import fmt_duration
from connector.runtime import load_state


def check_health(cfg: Config, max_age: float) -> list[dict[str, Any]]:
    """One entry per enabled mapping: ``healthy`` and a reason a person can act on."""
    only = list(cfg.sync.only) or None
    mappings = [m for m in load_mappings(cfg.mappings_path, only) if m.enabled]
    now = datetime.now(UTC)
    with load_state(cfg) as store:
        statuses = {s.mapping: s for s in store.status([m.name for m in mappings])}
    out = []
    for m in mappings:
        st = statuses.get(m.name)
        last_ok = st.last_ok_at if st else None
        last = st.last_run if st else None
        age = None if last_ok is None else (now - _utc(last_ok)).total_seconds()
        healthy = age is not None and age <= max_age
        if last_ok is None:
            reason = "never completed a successful pass"
        else:
            reason = f"last successful pass ended {fmt_duration(age)} ago"
            if not healthy:
                reason += f" (limit {fmt_duration(max_age)})"
        if last is not None and last.outcome == "failed" and last.message:
            reason += f"; last pass failed: {last.message}"
        elif last is not None and last.ended_at is None:
            reason += f"; a pass is running since {_utc(last.started_at):%Y-%m-%d %H:%M:%SZ}"
        out.append(
            {
                "mapping": m.name,
                "healthy": healthy,
                "last_ok_at": last_ok,
                "age_seconds": age,
                "reason": reason,
            }
        )
    return out


def format_health(rows: list[dict[str, Any]], max_age: float) -> str:
    bad = [r for r in rows if not r["healthy"]]
    head = (
        f"healthy: all {len(rows)} mapping(s) passed within {fmt_duration(max_age)}"
        if not bad
        else f"UNHEALTHY: {len(bad)} of {len(rows)} mapping(s) without a successful pass "
        f"within {fmt_duration(max_age)}"
    )
    lines = [head]
    for r in rows:
        lines.append(f"  {'ok ' if r['healthy'] else 'BAD'} {r['mapping']}: {r['reason']}")
    return "\n".join(lines)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

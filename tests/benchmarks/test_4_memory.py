"""Figure 4: memory stays flat with the table size (pages are streamed, tables never loaded).

Each job runs in a process of its own (``worker``) against the instant sink: a full backfill of
``customers`` on the size-``size`` and on the size-``small`` database, then a hard-delete
reconciliation of each (every key the backfill recorded, plus 100 recorded keys the shop does not
hold, which it deletes). Peak RSS is the process's VmHWM.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from connector.state.model import Accepted, key_json
from connector.state.store import StateStore
from tests.benchmarks.common import REPO, config_dict, make_config
from tests.benchmarks.conftest import Recorder, Settings, Shops
from tests.benchmarks.report import Figure, Row

MAPPING = "customers"
GONE = 100  # recorded keys that are not in the shop


def _job(folder: Path, data: dict[str, Any], job: str) -> dict[str, Any]:
    path = folder / "config.json"
    path.write_text(json.dumps(data))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.worker", job, str(path), MAPPING],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _split(job: dict[str, Any]) -> str:
    """Where the peak is: the connector's process, and its mapping workers if any ran."""
    if not job.get("workers"):
        return f"connector process {job['peak_mb']:.0f} MB, no mapping worker"
    return (
        f"connector process {job['peak_mb']:.0f} MB + {job['workers']} mapping worker(s) "
        f"{job['workers_mb']:.0f} MB"
    )


def test_memory(settings: Settings, shops: Shops, record: Recorder, tmp_path: Path) -> None:
    backend = settings.main
    has_reconcile = importlib.util.find_spec("connector.reconcile") is not None
    fig = Figure(
        "4-memory",
        "Memory: peak RSS of a backfill and of a reconciliation, 10x the rows",
        f"Each job in its own process (`python -m tests.benchmarks.worker`), API = instant sink, "
        f"{backend}, state database SQLite: a full backfill of `{MAPPING}` on "
        f"{settings.size:,} and on {settings.small:,} rows, then `reconcile` (hard deletes) "
        f"over every recorded key plus {GONE} recorded keys the shop does not hold. Peak RSS = "
        "VmHWM of the process plus that of its mapping worker processes, if any ran (Python, "
        "SQLAlchemy, drivers and the runtime open take the 'before the job' part). Reference: "
        "the same job on 10x fewer rows.",
    )
    got: dict[tuple[str, int], dict[str, Any]] = {}
    for size in (settings.small, settings.size):
        folder = tmp_path / f"size-{size}"
        url = shops.url(backend, size)
        kw: dict[str, Any] = {"shopimind": {"requests_per_minute": 100_000}}
        data = config_dict(folder, url, "http://sink.invalid", [MAPPING], **kw)
        cfg = make_config(folder, url, "http://sink.invalid", [MAPPING], **kw)
        bf = got["backfill", size] = _job(folder, data, "backfill")
        assert bf["outcome"] == "ok", bf
        if has_reconcile:
            with StateStore(cfg.state_url()) as store:
                fake = [Accepted(key_json((size * 10 + i,)), "0" * 64) for i in range(GONE)]
                store.commit_batch(MAPPING, accepted=fake, rejects=[], cursor=None)
            rc = got["reconcile", size] = _job(folder, data, "reconcile")
            assert rc["outcome"] == "ok" and rc["deleted"] == GONE, rc
    jobs = ["backfill", "reconcile"] if has_reconcile else ["backfill"]
    for job in jobs:
        big, small = got[job, settings.size], got[job, settings.small]
        total_big = big["peak_mb"] + big.get("workers_mb", 0.0)
        total_small = small["peak_mb"] + small.get("workers_mb", 0.0)
        fig.add(
            Row(
                f"{job}, {settings.size:,} rows: peak RSS",
                total_big,
                "MB",
                total_small,
                f"{settings.small:,} rows",
                target="<= 200 MB and ratio <= 1.10",
                met=total_big <= 200 and total_big / total_small <= 1.10,
                goal=1.10,
                on_ratio=True,
                lower=True,
                note=f"{_split(big)}; {big['base_mb']:.0f} MB before the job; {big['rows']:,} "
                f"rows in {big['seconds']:.0f} s ({big['rows'] / big['seconds']:,.0f}/s)",
            )
        )
        fig.add(
            Row(
                f"{job}, {settings.small:,} rows: peak RSS",
                total_small,
                "MB",
                note=f"{_split(small)}; {small['base_mb']:.0f} MB before the job; "
                f"{small['rows']:,} rows in {small['seconds']:.0f} s",
            )
        )
    if not has_reconcile:
        fig.notes.append(
            "The reconciliation (connector/reconcile.py, `shopimind-connector reconcile`) is "
            "missing from this tree: its memory was not measured."
        )
    else:
        rc = got["reconcile", settings.size]
        fig.notes.append(
            f"reconcile on {settings.size:,} rows: {rc['found']:,} keys found in the shop, "
            f"{rc['missing']} missing, {rc['deleted']} deleted ({rc['outcome']})."
        )
    record(fig)

"""One measured job in a process of its own, so its peak RSS (VmHWM) is its own:

    python -m tests.benchmarks.worker backfill CONFIG.json MAPPING
    python -m tests.benchmarks.worker reconcile CONFIG.json MAPPING

CONFIG.json is a config as a dict (``common.config_dict``); the API is the instant sink. Prints one
JSON line: rows, seconds, the peak RSS before the job (imports, runtime open) and after it (MB),
and the sum of the peak RSS of the mapping worker processes (``sync.map_workers``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from connector.config import config_from_dict
from connector.runtime import Runtime
from tests.benchmarks.common import peak_rss_mb, sink_transport


def main(argv: list[str]) -> int:
    job, path, mapping = argv
    data = json.loads(Path(path).read_text())
    cfg = config_from_dict(data, base_dir=Path(path).parent)
    with Runtime.open(cfg, transport=sink_transport()) as rt:
        base = peak_rss_mb()
        started = time.monotonic()
        if job == "backfill":
            res = rt.syncer(mapping).run_pass()
            out = {
                "rows": res.counts.rows_read,
                "sent": res.counts.items_sent,
                "outcome": res.outcome,
                "message": res.message,
            }
        else:
            from connector.reconcile import reconcile_mapping

            rec = reconcile_mapping(rt, mapping)
            out = {
                "rows": rec.known,
                "found": rec.found,
                "missing": rec.missing,
                "deleted": rec.deleted,
                "outcome": rec.outcome,
                "message": rec.message,
            }
        pool = rt.map_pool  # the mapping worker processes: their peaks, read before they stop
        workers = [peak_rss_mb(pid) for pid in (pool.worker_pids() if pool else [])]
        out |= {
            "seconds": time.monotonic() - started,
            "base_mb": base,
            "peak_mb": peak_rss_mb(),
            "workers_mb": sum(workers),
            "workers": len(workers),
        }
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

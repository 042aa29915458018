"""Auditing one mapping, and a run over several (resumable).

1. **Gather.** *Full*: every shop row is mapped (:mod:`~connector.audit.shopside`) and every
   ShopiMind record of the resource is listed (:mod:`~connector.audit.readback`); both sides are
   held as key -> fingerprint of the compared fields. *Sample N*: N random shop rows, each read
   back with a single read, plus about N records from random list pages looked up in the shop
   (ghosts). A sample is only taken where it is cheaper: when the resource has no single read,
   or listing everything costs fewer requests than N single reads, the audit is full.
2. **Candidates**: keys only the shop implies (missing), only ShopiMind holds (ghost), or whose
   fingerprints differ (stale).
3. **Second look.** ShopiMind's writes are queued (a record written moments ago may not be
   readable yet), so after ``recheck_delay`` the candidates are read again on both sides; only
   what still differs is reported, with the differing fields, expected and actual.
4. **Repair** (optional, :mod:`~connector.audit.repair`).

A run over several mappings, resumable, is in :mod:`connector.audit.resume`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from connector.audit.compare import (
    Item,
    api_key,
    compared_fields,
    differences,
    digest,
    ignored_fields,
)
from connector.audit.readback import ReadBack
from connector.audit.repair import repair
from connector.audit.report import MappingAudit
from connector.audit.share import DEFAULT_SHARE, AuditShare
from connector.audit.shopside import ShopSide
from connector.errors import ConnectorError, FatalError
from connector.mapping.spec import Mapping
from connector.registry import LIST_LIMIT, READ_ROUTES
from connector.runtime import Runtime

log = logging.getLogger("connector.audit")

DEFAULT_RECHECK_DELAY = 30.0


class ProgressLike(Protocol):
    """What the audit tells a progress display (:class:`connector.progress.Progress`)."""

    def start(self, mapping: str, total: int | None, budget_rate: float | None = None) -> None: ...

    def update(self, mapping: str, rows: int) -> None: ...

    def finish(self, mapping: str) -> None: ...


class _NoProgress:
    def start(self, mapping: str, total: int | None, budget_rate: float | None = None) -> None:
        pass

    def update(self, mapping: str, rows: int) -> None:
        pass

    def finish(self, mapping: str) -> None:
        pass


@dataclass
class AuditOptions:
    sample: int | None = None  # None: full
    repair: bool = False
    recheck_delay: float = DEFAULT_RECHECK_DELAY
    max_delete_share: float = 0.5
    share: float = DEFAULT_SHARE
    list_limit: int = LIST_LIMIT  # records per list request

    def signature(self, names: Sequence[str]) -> str:
        return json.dumps({"sample": self.sample, "repair": self.repair, "mappings": list(names)})


Guard = Callable[[str], AbstractContextManager[Any]]


def _no_guard(name: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def auditable(m: Mapping) -> str | None:
    """Why ``m`` cannot be audited, or None when it can."""
    if m.kind != "resource":
        return f"{m.kind} mappings are not audited (no read-back of their records here)"
    if m.resource.name not in READ_ROUTES:
        return f"the API documents no list route for {m.resource.name}: nothing to read back"
    return None


class _Audit:
    def __init__(
        self,
        rt: Runtime,
        name: str,
        opts: AuditOptions,
        share: AuditShare,
        progress: ProgressLike,
        sleep: Callable[[float], bool],
    ) -> None:
        assert rt.client is not None, "the audit needs a runtime opened with the API client"
        self.rt, self.name, self.opts, self.progress, self.sleep = rt, name, opts, progress, sleep
        self.mapping = rt.compiled[name].mapping
        self.resource = self.mapping.resource
        self.shop = ShopSide(rt, name)
        self.api = ReadBack(rt.client, share, self.resource, rt.stop, opts.list_limit)
        self.names = compared_fields(self.mapping, rt.config.shopimind.id_data_source)
        self.res = MappingAudit(name, self.resource.name)
        self.ignored: set[str] = set()

    def _digest(self, item: Item) -> str:
        return digest(self.resource, item, self.names)

    def _seen(self, records: Sequence[Item]) -> None:
        self.ignored |= ignored_fields(records, self.names)

    # --- 1 and 2: gather, candidates -----------------------------------------------------------

    def _full(self, first: tuple[list[Item], int, bool]) -> tuple[set[str], set[str], set[str]]:
        res = self.res
        expected: dict[str, str] = {}
        for page in self.shop.pages():
            for k, (src, item) in page.items():
                expected[k] = self._digest(item)
                res.sources[k] = src
        actual: dict[str, str] = {}
        for records in self.api.pages(first):
            self._seen(records)
            for r in records:
                k = api_key(self.resource, r)
                actual[k] = self._digest(r)
                if k not in expected:
                    res.ghost_records[k] = dict(r)
            self.progress.update(self.name, len(records))
            if self.rt.stop.is_set():
                break
        res.shop_rows, res.api_records, res.implied_keys = len(expected), len(actual), set(expected)
        missing = set(expected) - set(actual)
        ghost = set(actual) - set(expected)
        stale = {k for k in set(expected) & set(actual) if expected[k] != actual[k]}
        return missing, stale, ghost

    def _sampled(self, n: int, total: int) -> tuple[set[str], set[str], set[str]]:
        res = self.res
        res.mode = "sample"
        implied = self.shop.sample(n)
        missing: set[str] = set()
        stale: set[str] = set()
        ghost: set[str] = set()
        for k, (src, item) in implied.items():
            res.sources[k] = src
            got = None if self.rt.stop.is_set() else self.api.get(item)
            self.progress.update(self.name, 1)
            if got is None:
                missing.add(k)
                continue
            self._seen([got])
            if self._digest(got) != self._digest(item):
                stale.add(k)
        checked = set(implied)
        pages = list(range(0, total, self.api.limit))
        for offset in random.sample(pages, min(len(pages), max(1, n // self.api.limit))):
            if self.rt.stop.is_set():
                break
            records = self.api.page(offset)[0]
            self._seen(records)
            self.progress.update(self.name, len(records))
            fresh = [r for r in records if api_key(self.resource, r) not in checked]
            found = self.shop.lookup(fresh)
            if found is None:
                res.message = (
                    "ghosts not sampled: the mapping's key fields are not plain columns, so a "
                    "ShopiMind record cannot be looked up in the shop (run a full audit)"
                )
                break
            for r in fresh:
                k = api_key(self.resource, r)
                checked.add(k)
                if k in found:
                    res.sources[k] = found[k][0]
                    if self._digest(found[k][1]) != self._digest(r):
                        stale.add(k)
                else:
                    ghost.add(k)
                    res.ghost_records[k] = dict(r)
            implied.update(found)
        res.shop_rows, res.implied_keys = len(implied), set(implied)
        res.api_records = len(checked) - len(missing)
        return missing, stale, ghost

    # --- 3: the second look --------------------------------------------------------------------

    def _recheck(self, candidates: set[str], found_at: float) -> None:
        res = self.res
        wait = found_at + self.opts.recheck_delay - time.monotonic()
        if wait > 0 and self.sleep(wait):
            return  # stopping
        srcs = [res.sources[k] for k in sorted(candidates) if k in res.sources]
        expected = self.shop.by_source_keys(srcs)
        ghosts = [res.ghost_records[k] for k in sorted(candidates) if k in res.ghost_records]
        expected.update(
            {k: v for k, v in (self.shop.lookup(ghosts) or {}).items() if k in candidates}
        )
        actual = self._read_again(candidates, expected)
        res.missing, res.stale, res.ghost = [], {}, []
        for k in sorted(candidates):
            want, got = expected.get(k), actual.get(k)
            if want is not None and got is not None:
                diff = differences(self.resource, want[1], got, self.names)
                if diff:
                    res.stale[k] = diff
                else:
                    res.settled += 1
            elif want is not None:
                res.missing.append(k)
            elif got is not None:
                res.ghost.append(k)
                res.ghost_records[k] = dict(got)
            else:
                res.settled += 1
        for k, (src, _item) in expected.items():
            res.sources[k] = src
            res.implied_keys.add(k)

    def _read_again(
        self, candidates: set[str], expected: dict[str, tuple[str, Item]]
    ) -> dict[str, Item]:
        out: dict[str, Item] = {}
        if self.api.can_get:
            for k in sorted(candidates):
                if self.rt.stop.is_set():
                    break
                probe = expected[k][1] if k in expected else self.res.ghost_records.get(k)
                if probe is None:
                    probe = dict(zip(self.resource.key, k.split("|"), strict=False))
                got = self.api.get(probe)
                if got is not None:
                    out[k] = got
            return out
        for records in self.api.pages():
            for r in records:
                k = api_key(self.resource, r)
                if k in candidates:
                    out[k] = r
            if self.rt.stop.is_set():
                break
        return out

    # --- all of it -----------------------------------------------------------------------------

    def run(self, guard: Guard) -> MappingAudit:
        res = self.res
        started = time.monotonic()
        first = self.api.page(0)
        total = first[1]
        pages = math.ceil(total / self.api.limit)
        n = self.opts.sample
        rate = self.api.share.budget.rate * self.api.share.share * self.api.limit
        if n is not None and self.api.can_get and n < pages:
            self.progress.start(self.name, n + max(1, n // self.api.limit) * self.api.limit, rate)
            missing, stale, ghost = self._sampled(n, total)
        else:
            self.progress.start(self.name, total, rate)
            missing, stale, ghost = self._full(first)
            if n is not None:
                res.message = f"listing all {total} record(s) costs fewer requests than {n} reads"
        self.progress.finish(self.name)
        res.ignored_fields = sorted(self.ignored)
        candidates = missing | stale | ghost
        if candidates and not self.rt.stop.is_set():
            self._recheck(candidates, started if n is None else time.monotonic())
        if self.rt.stop.is_set():
            res.outcome = "interrupted"
            res.message = "stopped before the end; run the audit again to resume"
        elif self.opts.repair and res.differences:
            with guard(self.name):
                res.repair = repair(self.rt, self.shop, res, self.opts.max_delete_share)
        res.requests = self.api.requests
        return res


def audit_mapping(
    rt: Runtime,
    name: str,
    opts: AuditOptions,
    share: AuditShare,
    *,
    progress: ProgressLike | None = None,
    guard: Guard = _no_guard,
    sleep: Callable[[float], bool] | None = None,
) -> MappingAudit:
    """Audit one mapping (see the module doc). Raises only FatalError; other failures are in
    the result's outcome and message."""
    m = rt.compiled[name].mapping
    why = auditable(m)
    if not m.enabled or why is not None:
        res = MappingAudit(
            name, m.resource.name, outcome="skipped" if why is None else "unsupported"
        )
        res.message = why or "mapping disabled"
        return res
    audit = _Audit(rt, name, opts, share, progress or _NoProgress(), sleep or rt.stop.wait)
    try:
        return audit.run(guard)
    except FatalError:
        raise
    except ConnectorError as exc:
        res = audit.res
        res.outcome = "interrupted" if rt.stop.is_set() else "failed"
        res.message = f"{exc}; nothing was repaired" if res.repair is None else str(exc)
        res.requests = audit.api.requests
        return res

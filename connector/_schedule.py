"""The service's jobs: one pass job per mapping, spread over the poll interval
(:class:`GridTrigger`), one reconciliation job per mapping that can delete, on its own interval,
the sampled audit (``sync.audit_interval``, off by default), and the order of the first
catch-up (a mapping waits for those earlier in the API's order).

:class:`SchedulingMixin` is part of :class:`~connector.service.Service`.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.executors.pool import ThreadPoolExecutor as JobPool
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from connector.errors import FatalError
from connector.metrics import Metrics
from connector.runtime import Runtime
from connector.sync import PassResult

log = logging.getLogger("connector.service")


class SchedulingMixin:
    """The jobs of :class:`~connector.service.Service`, which sets these attributes and defines
    ``run_pass`` (the body of a mapping's job)."""

    rt: Runtime
    interval: float
    caught_up: set[str]
    fatal: FatalError | None
    _lock: threading.Lock
    _busy: dict[str, threading.Lock]
    _sched: BackgroundScheduler | None
    metrics: Metrics | None

    if TYPE_CHECKING:  # defined by Service

        def run_pass(self, name: str) -> PassResult | None: ...

    @property
    def mappings(self) -> list[str]:
        return [m.name for m in self.rt.mappings if m.enabled]

    def waiting_on(self, name: str) -> list[str]:
        """Mappings earlier in the API order that have not completed a pass yet."""
        rank = self.rt.compiled[name].mapping.resource.rank
        with self._lock:
            return [
                m.name
                for m in self.rt.mappings
                if m.enabled and m.resource.rank < rank and m.name not in self.caught_up
            ]

    def _job(self, name: str) -> None:
        try:
            with self._busy[name]:
                self.run_pass(name)
        except Exception:  # a bug must not kill the job silently
            log.exception("%s: unexpected error in a pass; the next pass retries", name)

    def _reconcile_job(self, name: str) -> None:
        """Hard-delete reconciliation of one mapping, on its own schedule (reconcile_interval)."""
        from connector.reconcile import log_result, reconcile_mapping

        if self.rt.stop.is_set() or name not in self.caught_up:
            return  # not before the mapping's first complete pass
        try:
            with self._busy[name]:
                log_result(reconcile_mapping(self.rt, name))
        except FatalError as exc:
            self.fatal = exc
            log.error("%s; the service stops (exit code %d).", exc, exc.exit_code)
            self.rt.stop.set()
        except Exception:
            log.exception("%s: unexpected error in a reconciliation; the next one retries", name)

    def _audit_job(self) -> None:
        """The sampled audit of every auditable mapping (sync.audit_interval); a mapping's pass
        and a repair of it never run at the same time."""
        from connector.audit import AuditOptions, AuditShare, audit_mapping, auditable, log_result
        from connector.audit.report import save

        s, client = self.rt.config.sync, self.rt.client
        if client is None:
            return
        opts = AuditOptions(
            sample=s.audit_sample,
            repair=s.audit_repair,
            recheck_delay=s.audit_recheck_delay,
            max_delete_share=s.audit_max_delete_share,
            share=s.audit_share,
        )
        share = AuditShare(client.budget, s.audit_share)
        for m in self.rt.mappings:
            if self.rt.stop.is_set():
                return
            if not m.enabled or auditable(m) is not None or m.name not in self.caught_up:
                continue  # not before the mapping's first complete pass
            try:
                res = audit_mapping(self.rt, m.name, opts, share, guard=self._busy.__getitem__)
                log_result(res)
                if res.outcome != "interrupted":
                    save(self.rt.store, res)
                if self.metrics is not None:
                    self.metrics.on_audit(res)
            except FatalError as exc:
                self.fatal = exc
                log.error("%s; the service stops (exit code %d).", exc, exc.exit_code)
                self.rt.stop.set()
            except Exception:
                log.exception("%s: unexpected error in an audit; the next one retries", m.name)

    def _reconcile_names(self) -> list[str]:
        return [
            m.name
            for m in self.rt.mappings
            if m.enabled
            and ((m.kind == "resource" and m.resource.can_delete) or m.kind == "custom_data")
        ]

    def _wake_waiting(self) -> None:
        sched = self._sched
        if sched is None:
            return
        now = datetime.now(UTC)
        for name in self.mappings:
            if name not in self.caught_up and not self.waiting_on(name):
                job = sched.get_job(name)
                if job is not None:
                    job.modify(next_run_time=now)

    def start(self) -> BackgroundScheduler:
        sched = BackgroundScheduler(
            timezone=UTC,
            executors={
                "default": JobPool(max_workers=max(1, len(self.mappings))),
                "reconcile": JobPool(max_workers=1),
                "audit": JobPool(max_workers=1),
            },
        )
        audit_every = self.rt.config.sync.audit_interval
        if audit_every > 0:
            sched.add_job(
                self._audit_job,
                "interval",
                seconds=audit_every,
                next_run_time=datetime.now(UTC) + timedelta(seconds=min(60.0, audit_every)),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                id="audit",
                name="audit",
                executor="audit",
            )
        now = datetime.now(UTC)
        every = self.rt.config.sync.reconcile_interval
        if every > 0:
            from connector.reconcile import last_reconcile

            for name in self._reconcile_names():
                last = last_reconcile(self.rt, name)
                first = now + timedelta(seconds=min(60.0, every))
                if last is not None:
                    first = max(first, last[0] + timedelta(seconds=every))
                sched.add_job(
                    self._reconcile_job,
                    "interval",
                    args=[name],
                    seconds=every,
                    next_run_time=first,
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=None,
                    id=f"reconcile:{name}",
                    name=f"reconcile {name}",
                    executor="reconcile",
                )
        names = self.mappings
        for i, name in enumerate(names):
            # every mapping's first pass starts now; later ones are spread over the interval,
            # so idle passes run one after the other instead of all at once: no burst of
            # threads contending for the interpreter and for more database connections than
            # the pools keep (a new connection costs more than the pass)
            offset = timedelta(seconds=self.interval * i / len(names))
            sched.add_job(
                self._job,
                GridTrigger(seconds=self.interval, start_date=now + offset, timezone=UTC),
                args=[name],
                next_run_time=now,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                id=name,
                name=name,
            )
        self._sched = sched
        sched.start()
        return sched


class GridTrigger(IntervalTrigger):  # type: ignore[misc]
    """Fires at ``start_date + k * interval``, also after a run at another time.

    APScheduler's interval trigger counts from the previous fire time, so a job whose first
    run is at start-up (``next_run_time=now``) keeps firing on that instant, whatever its
    ``start_date``: the mappings' passes, meant to be spread over the poll interval, all ran at
    once. This one always takes the next point of its own grid after the previous run."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None and now <= previous_fire_time:
            now = previous_fire_time + timedelta(microseconds=1)
        fire: datetime | None = super().get_next_fire_time(None, now)
        return fire

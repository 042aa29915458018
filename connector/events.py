"""External events: new rows of a shop table fire a ShopiMind event, each exactly once.

An event mapping's pass (:class:`EventSync`):

* provisions the event type once per process (``POST /v1/events``; 409 = it exists = fine);
* on the very first start, records "now" as a floor: rows that exist then (cursor up to the
  database clock, or up to the newest row) are history and never fire. To fire older rows the
  operator moves the cursor back (``shopimind-connector reset MAPPING --to …``), which also lifts
  the floor; rows that already fired never fire again, even then;
* reads rows after the saved cursor (minus the lookback window) and fires each row that has not
  fired yet: one ``POST /v1/events/trigger/{code_name}`` with ``contact``, ``metaData`` and
  ``customData`` built by the mapping. The outcome of each row is committed with the cursor, in
  one state transaction: fired rows are records with status 'sent'.

An ambiguous outcome (a timeout, a reset connection, a 408 or any 5xx after the request went out)
is handled as the mapping's ``delivery`` says:

* ``at-least-once`` (default): retried with the same ``Idempotency-Key`` header, derived from
  the mapping, the code name and the row key, so it is the same across retries and restarts. When
  retries run out the pass fails with the cursor before the row and the next pass fires it again.
  A process killed after sending and before recording fires the row again on restart (same key).
* ``at-most-once``: never re-sent. The row is recorded as fired with an open reject of source
  ``uncertain`` (``shopimind-connector rejected list``) and the pass stops. Before each call the
  row is marked in flight (meta ``event_inflight:<mapping>``); a restart that finds the mark
  without a recorded outcome records the row as uncertain the same way.

Only a connection that was never made ("not sent") and 429 (refused before processing) are
certainly not processed: they are retried in both modes. A 503 is not: a gateway may answer it
after ShopiMind applied the trigger. Other 4xx answers are rejects (kept; a pass does not fire
the row again while its content is the same, ``rejected retry`` does); 404 re-provisions the event
type once. Calls share the API key's request budget with every other mapping
(:mod:`connector.destination.firing`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from connector.batching import Position, position_after
from connector.customdata import CustomDataSync, DefinitionConflictError
from connector.destination.firing import Firer, Outcome, idempotency_key, strip_nulls
from connector.errors import DeliveryError, SchemaMismatchError
from connector.mapping.compile import CompiledMapping, MissingColumn
from connector.source import query as q
from connector.state.model import Accepted, Cursor, Reject, RunCounts, key_json
from connector.sync import FORCE_META, MappingSync
from connector.transform import payload_hash, row_key

if TYPE_CHECKING:
    from connector.runtime import Runtime

log = logging.getLogger("connector.events")

EVENTS = "/v1/events"
FLOOR_META = "event_floor:{}"
INFLIGHT_META = "event_inflight:{}"
UNCERTAIN = "uncertain"  # the record hash of a row whose event may or may not have fired


# --- the pass ------------------------------------------------------------------------------------


def _after(value: Any, floor: Any) -> bool:
    try:
        return bool(value > floor)
    except TypeError:
        return True


def _later(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return b if a is None else a
    try:
        return a if a >= b else b
    except TypeError:
        return a


class EventSync(MappingSync):
    """Passes of one event mapping (see the module docstring)."""

    def __init__(self, compiled: CompiledMapping, *, provisioned: dict[str, str], **kw: Any):
        super().__init__(compiled, **kw)
        assert compiled.mapping.event is not None
        self.event = compiled.mapping.event
        self.provisioned = provisioned
        self.firer = Firer(self.client)
        self.at_most_once = self.event.delivery == "at-most-once"
        name = self.mapping.name
        self._floor_meta = FLOOR_META.format(name)
        self._inflight_meta = INFLIGHT_META.format(name)
        self._saved: Position | None = None
        self._refused: dict[str, Any] = {}  # key → payload of its open reject, this pass

    interrupted = "stopped; every fired row is recorded"

    def _work(self, counts: RunCounts) -> None:
        self._provision()
        self._refused = self._open_rejects()
        self._settle_inflight(counts)
        self._scan_events(counts)

    # --- provisioning and recovery ---------------------------------------------------------------

    def _provision(self, again: bool = False) -> None:
        mark = f"event:{self.mapping.name}"
        if mark in self.provisioned and not again:
            return
        what = f"{self.mapping.file}: POST {EVENTS} ({self.event.code_name})"
        resp = self.client.request("POST", EVENTS, self.event.api(), what=what)
        if resp.status_code >= 400 and resp.status_code != 409:
            raise DefinitionConflictError(
                f"{what}: ShopiMind refused the event type (HTTP {resp.status_code}: "
                f"{resp.text[:300]}); fix [event] in the mapping"
            )
        self.provisioned[mark] = "ok"

    def _open_rejects(self) -> dict[str, Any]:
        """Rows whose event was refused (by ShopiMind or the mapping): not fired again by a
        pass while their content is the same (``rejected retry`` fires them again)."""
        name = self.mapping.name
        if not self.store.count_rejects(name):
            return {}
        rejects = self.store.list_rejects(name, limit=1_000_000)
        return {r.key: r.payload for r in rejects if r.source in ("api", "local")}

    def _settle_inflight(self, counts: RunCounts) -> None:
        """A row marked in flight without a recorded outcome: the process died mid-call."""
        raw = self.store.get_meta(self._inflight_meta)
        if not raw:
            return
        data = json.loads(raw)
        ktext = str(data["key"])
        recorded = ktext in self._refused or ktext in self.store.get_hashes(
            self.mapping.name, [ktext]
        )
        if not recorded and self.at_most_once:
            self._record_uncertain(
                ktext, data.get("body"), "the connector stopped after firing, before the answer"
            )
            counts.rejected += 1
        self.store.set_meta(self._inflight_meta, "")

    def _record_uncertain(
        self, ktext: str, body: Any, cause: str, cursor: Cursor | None = None
    ) -> None:
        errors = {
            "uncertain": cause,
            "delivery": "at-most-once",
            "advice": "ShopiMind may or may not have received this event; it is not fired again."
            " Check the contact's events in ShopiMind.",
        }
        self.store.commit_batch(
            self.mapping.name,
            accepted=[Accepted(ktext, UNCERTAIN)],
            rejects=[Reject(self.mapping.name, ktext, body, errors, UNCERTAIN)],
            cursor=cursor,
        )
        log.error(
            "%s: row %s: the outcome of its event is unknown (%s); at-most-once: recorded as "
            "uncertain (see `shopimind-connector rejected list`), never fired again",
            self.mapping.file,
            ktext,
            cause,
        )

    # --- scanning ------------------------------------------------------------------------------

    def _scan_events(self, counts: RunCounts) -> None:
        name, spec = self.mapping.name, self.mapping.source
        forced = bool(self.store.get_meta(FORCE_META.format(name)))
        floor_raw = self.store.get_meta(self._floor_meta)
        saved = self.store.get_cursor(name)
        sample = self.reader.sample_cursor(self.mapping)
        upper = None
        if sample is not None:
            upper = q.upper_bound(self.reader.db_now_utc(), self.lag, sample, self.tz)
        if saved is None and floor_raw is None and not forced:
            self._start_from_now(sample, upper)
            return
        floor = None
        if forced:
            self.store.set_meta(self._floor_meta, "")  # the operator moved the cursor: no floor
        elif floor_raw:
            floor = Cursor.from_json(floor_raw).value
        self._warn_null_cursors()
        start: q.Position | None = None
        if saved is not None:
            value = saved.value if forced else q.shift_back(saved.value, spec.lookback, self.tz)
            start = q.Position(value, None)
        self._saved = (saved.value, saved.key) if saved is not None else None
        while sample is not None and not self.stop.is_set():
            rows = self.reader.fetch(
                q.page_query(spec, start, upper, self.page_size), f"{self.mapping.file}: page"
            )
            if not rows:
                break
            counts.rows_read += len(rows)
            try:
                keys = [row_key(r, self.mapping) for r in rows]
            except MissingColumn as exc:
                raise self._mismatch(exc) from None
            texts = [key_json(k) for k in keys]
            fired = self.store.get_hashes(name, texts)
            handled: Position | None = None
            for row, key, ktext in zip(rows, keys, texts, strict=True):
                if self.stop.is_set():
                    break
                pos: Position = (row[q.CURSOR_LABEL], key)
                if ktext in fired or (floor is not None and not _after(pos[0], floor)):
                    counts.unchanged += 1
                else:
                    self._fire_row(row, ktext, counts, self._cursor(pos))
                handled = pos
            if handled is not None:
                cursor = self._cursor(handled)
                if cursor is not None:
                    self.store.set_cursor(name, cursor)
                start = q.Position(handled[0], handled[1])
            if self.progress:
                self.progress(name, len(rows))
            if len(rows) < self.page_size:
                break
        if forced and not self.stop.is_set():
            self.store.set_meta(FORCE_META.format(name), "")

    def _cursor(self, pos: Position) -> Cursor | None:
        """The cursor to save with a row's outcome (None when it would not move forward)."""
        if self._saved is not None and not position_after(pos, self._saved):
            return None
        self._saved = pos
        return Cursor(pos[0], pos[1])

    def _start_from_now(self, sample: Any, upper: Any) -> None:
        name, spec = self.mapping.name, self.mapping.source
        if sample is None:
            self.store.set_meta(self._floor_meta, "")  # no history: every row to come fires
            log.info("%s: first start on an empty source: every new row fires", name)
            return
        rel = q.source_relation(spec)
        newest = self.reader.scalar(
            sa.select(sa.func.max(q.cursor_expr(spec, rel))).select_from(rel),
            f"{self.mapping.file}: reading the newest cursor value",
        )
        floor = Cursor(_later(newest, upper), ())
        self.store.set_meta(self._floor_meta, floor.to_json())
        self.store.set_cursor(name, floor)
        log.info(
            "%s: first start: rows up to %s are history and never fire; new rows fire "
            "(to fire older rows: shopimind-connector reset %s --to ...)",
            name,
            floor.value,
            name,
        )

    def _warn_null_cursors(self) -> None:
        mark = f"null-cursor-warned:{self.mapping.name}"
        if mark in self.provisioned:
            return
        rows = self.reader.fetch(
            q.null_cursor_query(self.mapping.source, None, 1), f"{self.mapping.file}: NULL cursors"
        )
        if rows:
            log.warning(
                "%s: rows with a NULL %s never fire (an event needs a time); set "
                "source.cursor_fallback or fill the column",
                self.mapping.file,
                self.mapping.source.cursor,
            )
        self.provisioned[mark] = "ok"

    def _mismatch(self, exc: MissingColumn) -> SchemaMismatchError:
        return SchemaMismatchError(
            f"{self.mapping.file}: {exc.path}: column {exc.column!r} is not in the rows read from "
            f"{self.mapping.source.label}; no event of this page fired and the cursor stays. Fix "
            "the mapping (`shopimind-connector check` lists such problems)."
        )

    # --- one row -------------------------------------------------------------------------------

    def _fire_row(
        self, row: dict[str, Any], ktext: str, counts: RunCounts, cursor: Cursor | None
    ) -> None:
        name = self.mapping.name
        try:
            built = self.compiled.build(row)
        except MissingColumn as exc:
            raise self._mismatch(exc) from None
        problems = list(built.problems)
        body = strip_nulls(built.item) if built.item is not None else {}
        if built.item is not None and not any(v != "" for v in body.get("contact", {}).values()):
            problems.append("contact: email, id and phone are all empty; ShopiMind needs one")
        if not problems and ktext in self._refused and self._refused[ktext] == body:
            counts.unchanged += 1  # refused before with this very content: not fired again
            if cursor is not None:
                self.store.set_cursor(name, cursor)
            return
        if problems:
            reject = Reject(name, ktext, None, problems, "local")
            self.store.commit_batch(name, accepted=[], rejects=[reject], cursor=cursor)
            counts.rejected += 1
            log.warning(
                "%s: row %s not fired (kept in rejected items): %s",
                self.mapping.file,
                ktext,
                "; ".join(problems),
            )
            return
        if self.at_most_once:
            self.store.set_meta(self._inflight_meta, json.dumps({"key": ktext, "body": body}))
        try:
            outcome = self._fire(body, ktext)
        except DeliveryError:
            if self.at_most_once:  # every attempt was refused unprocessed: it did not fire
                self.store.set_meta(self._inflight_meta, "")
            raise
        counts.requests += outcome.requests
        counts.items_sent += 1
        if outcome.kind == "sent":
            accepted = [Accepted(ktext, payload_hash(body))]
            self.store.commit_batch(name, accepted=accepted, rejects=[], cursor=cursor)
            counts.accepted += 1
        elif outcome.kind == "rejected":
            reject = Reject(name, ktext, body, outcome.detail, "api")
            self.store.commit_batch(name, accepted=[], rejects=[reject], cursor=cursor)
            counts.rejected += 1
            log.warning(
                "%s: ShopiMind rejected the event of row %s (kept in rejected items): %s",
                self.mapping.file,
                ktext,
                outcome.detail,
            )
        else:
            self._record_uncertain(ktext, body, str(outcome.detail), cursor)
            counts.rejected += 1
        if self.at_most_once:
            self.store.set_meta(self._inflight_meta, "")
        if outcome.kind == "uncertain":
            raise DeliveryError(
                f"{self.mapping.file}: the answer to the event of row {ktext} was lost "
                f"({outcome.detail}); it is recorded as uncertain and not fired again "
                "(at-most-once); the next pass goes on with the following rows"
            )

    def _fire(self, body: dict[str, Any], ktext: str) -> Outcome:
        path = self.mapping.resource.path
        key = idempotency_key(self.mapping.name, self.event.code_name, ktext)
        what = f"{self.mapping.name}: POST {path}"
        replay = not self.at_most_once
        outcome = self.firer.fire(path, body, key, replay_ambiguous=replay, what=what)
        if outcome.kind == "rejected" and outcome.status == 404:  # the event type is gone
            self._provision(again=True)
            first = outcome.requests
            outcome = self.firer.fire(path, body, key, replay_ambiguous=replay, what=what)
            outcome.requests += first
        return outcome

    def retry_rejected(self, keys: Sequence[tuple[Any, ...]]) -> RunCounts:
        """Fire again the rows ShopiMind or the mapping rejected; uncertain rows never re-fire."""
        counts = RunCounts()
        self._provision()
        spec, name = self.mapping.source, self.mapping.name
        for i in range(0, len(keys), self.page_size):
            chunk = list(keys[i : i + self.page_size])
            rows = self.reader.fetch(
                q.rows_by_key_query(spec, spec.key, chunk), f"{self.mapping.file}: rejected rows"
            )
            counts.rows_read += len(rows)
            texts = [key_json(row_key(r, self.mapping)) for r in rows]
            fired = self.store.get_hashes(name, texts)
            for row, ktext in zip(rows, texts, strict=True):
                if fired.get(ktext) == UNCERTAIN:
                    log.warning("%s: row %s: uncertain event, not fired again", name, ktext)
                    counts.unchanged += 1
                elif ktext in fired:
                    counts.unchanged += 1
                else:
                    self._fire_row(row, ktext, counts, None)
            gone = [key_json(k) for k in chunk if key_json(k) not in set(texts)]
            if gone:
                self.store.commit_deleted(name, gone, None)
        return counts


def pass_class(rt: Runtime, name: str) -> tuple[type[MappingSync], dict[str, Any]]:
    """The pass class of a custom-data or event mapping and its extra arguments
    (``Runtime.syncer`` builds it with the usual ones)."""
    kind = rt.compiled[name].mapping.kind
    cls: type[MappingSync] = CustomDataSync if kind == "custom_data" else EventSync
    return cls, {"provisioned": rt.provisioned}

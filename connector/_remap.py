"""Every mapping change reaches every record: the re-read after a change of what a mapping sends.

The state database keeps, per mapping, the fingerprint (:mod:`connector.mapping.fingerprint`) of
the mapping that made the records ShopiMind holds (meta ``mapping_fingerprint:<mapping>``). A pass
whose compiled mapping has another fingerprint — after a restart or a reload with an edited file,
a custom-data definition that gained a field, an upgrade that changed a type — starts a *re-read*:
every row of the source, in key order, is read again, mapped, and sent when its payload differs
from what ShopiMind last accepted (content hashes, as usual). Where it stands is kept in meta
``remap:<mapping>`` (the fingerprint it works for, the last key done, rows read so far), written
after each page is committed, so a restart — even after ``SIGKILL`` — goes on from there. When the
last page is done the fingerprint is recorded and the re-read is over.

The re-read is the last phase of a pass and reads at most ``REMAP_PAGES`` pages per pass, and
no new page once the pass has run ``REMAP_SECONDS``: each service pass captures live changes
first, so they wait for at most one slice (``sync`` finishes the re-read in one go). A mapping
changed again during a re-read starts over, for the new fingerprint. A mapping that never ran (no
cursor and no fingerprint) records its fingerprint and reads every row through its first scan.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

log = logging.getLogger("connector.sync")

FINGERPRINT_META = "mapping_fingerprint:{}"
REMAP_META = "remap:{}"
REMAP_PAGES = 20  # pages of re-read per service pass, at most
REMAP_SECONDS = 20.0  # no new re-read page once the pass has run this long


@dataclass
class Remap:
    """A re-read in progress: for which fingerprint, after which key (its JSON), how far."""

    fingerprint: str
    after: str | None = None
    read: int = 0
    was: str | None = None  # the fingerprint the records had (None: unknown)
    total: int | None = None  # rows in the source when it started (for progress)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Remap | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                str(data["fingerprint"]),
                data.get("after"),
                int(data.get("read") or 0),
                data.get("was"),
                None if data.get("total") is None else int(data["total"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: start over (harmless: hashes decide what is sent)


def decide(
    name: str, current: str, kept: str | None, raw: str | None, has_cursor: bool
) -> tuple[Remap | None, dict[str, str]]:
    """The re-read to run for a mapping whose fingerprint is ``current``, given the kept
    fingerprint and re-read state, and the meta values to write before it starts."""
    state = Remap.from_json(raw)
    if state is not None and state.fingerprint == current:
        return state, {}
    if state is None and kept == current:
        return None, {}
    if state is None and not kept and not has_cursor:  # never ran: the first scan reads all
        return None, {FINGERPRINT_META.format(name): current}
    new = Remap(current, None, 0, kept or None)
    if state is not None:
        log.info(
            "%s: the mapping changed again during its re-read (%d rows done); starting over",
            name,
            state.read,
        )
    elif kept:
        log.info(
            "%s: the mapping's output changed (fingerprint %s → %s): every row is read again in "
            "the background and the records whose item changed are sent",
            name,
            kept[:12],
            current[:12],
        )
    else:
        log.info(
            "%s: no fingerprint of the mapping that made its records is known (first run of "
            "this version): every row is read again in the background, only changed items are "
            "sent",
            name,
        )
    return new, {REMAP_META.format(name): new.to_json()}


def progress_text(state: Remap) -> str:
    done = f"{state.read:,} rows done"
    if state.total:
        share = min(100, state.read * 100 // state.total)
        done = f"{state.read:,} of about {state.total:,} rows done ({share}%)"
    return f"re-reading every row after a mapping change: {done}"

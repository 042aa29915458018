"""The fingerprint of a compiled mapping: a hash of everything that shapes what it sends.

Two compilations with the same fingerprint turn every row into the same item; when it differs
(a field, a conversion, a child collection, the key, a custom-data definition, the shop's time
zone, ``id_data_source``, or the registry's types after an upgrade) the records ShopiMind holds
may no longer be what the mapping makes of the shop's rows, so the mapping re-reads every row
(:mod:`connector._remap`).

Left out because they do not change an item: the mapping's name and file, the key paths used in
messages, where and how rows are found (cursor, fallback, lookback, page size, ``[changes]``),
the resource's path (a custom-data path names the definition id, learnt at run time) and an
event's delivery mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from connector.mapping.compile import CompiledMapping

VERSION = "1"  # bump when the text below changes for mappings that did not
_IGNORED = {
    "name",  # Mapping.name (a field's name is kept: see _canonical)
    "file",
    "enabled",
    "path",
    "changes",
    "cursor",
    "cursor_fallback",
    "lookback",
    "page_size",
    "delivery",
    "batch_limit",
    "rank",
    "delete_limit",
}


def _canonical(value: Any, top: bool = False) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"@": type(value).__name__}
        for f in dataclasses.fields(value):
            if f.name in _IGNORED and (f.name != "name" or top):
                continue
            out[f.name] = _canonical(getattr(value, f.name))
        return out
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):  # no order of its own: sorted, the same in every run
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, default=repr))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def fingerprint(compiled: CompiledMapping) -> str:
    """The hex SHA-256 of the mapping's output-shaping parts, as canonical JSON."""
    m = compiled.mapping
    data = {
        "v": VERSION,
        "mapping": _canonical(m, top=True),
        "timezone": str(compiled.shop_tz),
        "id_data_source": compiled.id_data_source if m.resource.accepts_data_source else None,
    }
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

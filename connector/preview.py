"""``preview``: the exact items a mapping would send next — no API call, no cursor move."""

from __future__ import annotations

import json
import sys

from connector.config import Config
from connector.mapping import CompiledMapping
from connector.mapping.load import mapping_named
from connector.runtime import load_state
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.transform import group_children, parent_link, transform_page


def preview(cfg: Config, name: str, limit: int) -> int:
    mapping = mapping_named(cfg.mappings_path, name)
    compiled = CompiledMapping(mapping, cfg.shop_tz, cfg.shopimind.id_data_source)
    with load_state(cfg) as store, ShopReader(cfg.source_url()) as reader:
        saved = store.get_cursor(name)
        start = None
        if saved is not None:
            start = q.Position(saved.value, saved.key or None)
        rows = reader.fetch(q.page_query(mapping.source, start, None, max(limit, 1)), "preview")
        children = {}
        for cname, child in mapping.children.items():
            links = list(dict.fromkeys(parent_link(r, child) for r in rows))
            kids = reader.fetch(q.children_query(child, links), "preview children") if links else []
            children[cname] = group_children(child, kids)
    units = transform_page(compiled, rows, children)
    items = []
    for u in units:
        if u.kind == "send":
            items.append(u.item)
        elif u.kind == "delete":
            print(
                f"# row {u.key_text}: soft-deleted, would be deleted on ShopiMind", file=sys.stderr
            )
        else:
            print(
                f"# row {u.key_text}: would be rejected: {'; '.join(u.problems)}", file=sys.stderr
            )
    print(json.dumps(items, indent=2, ensure_ascii=False))
    where = "after the saved cursor" if saved else "from the start (no cursor yet)"
    print(f"# {len(items)} item(s) for POST {mapping.resource.path}, {where}", file=sys.stderr)
    return 0

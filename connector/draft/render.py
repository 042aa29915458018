"""A :class:`~connector.draft.plan.Plan` as mapping-file TOML text, with a comment on every
choice (written as text: a TOML library would drop the comments)."""

from __future__ import annotations

import json
import re
from typing import Any

from connector.draft.match import Choice, Matched
from connector.draft.model import Child, Plan

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)


def _key(k: Any) -> str:
    k = str(k)
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _comment(text: str, indent: str = "") -> list[str]:
    out: list[str] = []
    line = indent + "#"
    for word in text.split():
        if len(line) + len(word) + 1 > 98 and line.strip() != "#":
            out.append(line)
            line = indent + "#"
        line += " " + word
    out.append(line)
    return out


def _query(q: str) -> str:
    assert '"""' not in q and "\\" not in q
    return '"""\n' + q + '\n"""'


def _fields(m: Matched, lines: list[str]) -> None:
    for c in m.choices:
        lines += _comment(f"{_conf(c)}: {c.note}")
        lines.append(f"{c.field} = {toml_value(c.spec)}")
    for t in m.todos:
        what = "REQUIRED" if t.required else "optional"
        how = f"[children.{t.field}]" if t.is_list else f'{t.field} = "column"'
        lines += _comment(f"TODO {t.field} ({what}): {t.note}; map it as {how}")


def _conf(c: Choice) -> str:
    if c.confidence in ("placeholder", "ambiguous"):
        return c.confidence
    return f"{c.confidence} confidence"


def render(plan: Plan) -> str:
    r = plan.resource
    lines = _comment(
        f"{r.name} ← {plan.table} (POST {r.path}, key {' + '.join(r.key)}). Drafted by "
        "`shopimind-connector draft` from the shop's schema and a sample of its rows: read "
        "every choice below, fix the TODOs, then run `check` and `preview`."
    )
    for h in plan.header:
        lines += _comment(h)
    todos = plan.todos
    required = [t.field for t in todos if t.required]
    if required:
        lines += _comment(
            f"TODO (required, `check` reports them until mapped): {', '.join(required)}"
        )
    placeholders = [c.field for c in plan.choices if c.confidence == "placeholder"]
    if placeholders:
        lines += _comment(f"TODO (placeholders to replace): {', '.join(placeholders)}")
    ambiguous = [c.field for c in plan.choices if c.confidence == "ambiguous"]
    if ambiguous:
        lines += _comment(f"TODO (two columns fit as well, choose): {', '.join(ambiguous)}")
    lines.append(f"resource = {toml_value(r.name)}")
    lines += ["", "[source]"]
    if plan.query:
        lines.append(f"query = {_query(plan.query)}")
    else:
        lines.append(f"table = {toml_value(plan.table)}")
    lines += _comment(plan.key_note)
    lines.append(f"key = {toml_value(plan.key)}")
    lines += _comment(plan.cursor_note)
    for w in plan.warnings:
        lines += _comment(f"WARNING: {w}")
    lines.append(f"cursor = {toml_value(plan.cursor)}")
    if plan.fallback:
        lines.append(f"cursor_fallback = {toml_value(plan.fallback)}")
    if plan.deleted:
        col, when = plan.deleted
        lines += _comment(plan.deleted_note)
        lines.append(f"deleted = {toml_value({'column': col, 'when': when})}")
    for ch in plan.changes:
        lines += ["", f"[changes.{ch.name}]"]
        _child_head(ch, lines)
    lines += ["", "[fields]"]
    _fields(plan.fields, lines)
    for name, m in plan.objects.items():
        lines += ["", f"[fields.{name}]"]
        _fields(m, lines)
    for ch in plan.children:
        lines += ["", f"[children.{ch.name}]"]
        _child_head(ch, lines)
        if ch.value is not None:
            lines.append(f"value = {toml_value(ch.value)}")
        if ch.fields is not None:
            lines += ["", f"[children.{ch.name}.fields]"]
            _fields(ch.fields, lines)
    return "\n".join(lines) + "\n"


def _child_head(ch: Child, lines: list[str]) -> None:
    lines += _comment(ch.note)
    if ch.query:
        lines.append(f"query = {_query(ch.query)}")
    else:
        lines.append(f"table = {toml_value(ch.table)}")
    lines.append(f"parent_key = {toml_value(ch.parent_key)}")
    if ch.order_by:
        lines.append(f"order_by = {toml_value(ch.order_by)}")
    if ch.cursor:
        lines.append(f"cursor = {toml_value(ch.cursor)}")

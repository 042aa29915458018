"""README.md's configuration table and the pydantic model agree on every key and its default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from connector import timeutil
from connector.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_table() -> dict[str, str]:
    """``section.key`` -> the default cell's text, from the table under ## Configuration."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        keys = [k.strip().strip("`") for k in re.split(r" / |, ", cells[0])]
        defaults = (
            [d.strip() for d in re.split(r" / |, ", cells[1])] if len(keys) > 1 else [cells[1]]
        )
        assert len(keys) == len(defaults), f"README row {line!r}: keys and defaults differ"
        prefix = keys[0].split(".")[0]
        for key, default in zip(keys, defaults, strict=True):
            out[key if "." in key else f"{prefix}.{key}"] = default
    return out


def model_defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue  # base_dir and file: set by the loader, not keys of the file
        for key, sub in model.model_fields.items():
            default = [] if sub.default_factory is list else sub.default
            out[f"{name}.{key}"] = default
    return out


def matches(cell: str, default: Any) -> bool:
    if cell == "—":
        return default is None or default is PydanticUndefined
    if cell == "unset":
        return default is None
    if not cell.startswith("`"):  # a default computed when the program runs, described in words
        return default is None
    literal = cell.strip("`")
    if isinstance(default, bool):
        return literal == str(default).lower()
    if default is None or default is PydanticUndefined:
        return False
    if isinstance(default, float):
        if re.fullmatch(r"\d+\.\d+", literal):  # a share, not a duration
            return float(literal) == default
        return timeutil.parse_duration(literal) == default
    if isinstance(default, int):
        return int(literal) == default
    if isinstance(default, list):
        return literal == repr(default)
    return bool(literal == default)


def test_every_key_is_in_the_readme_table() -> None:
    table, model = readme_table(), model_defaults()
    assert sorted(set(model) - set(table)) == []
    assert sorted(set(table) - set(model)) == []


def test_every_readme_default_is_the_code_default() -> None:
    table, model = readme_table(), model_defaults()
    wrong = {
        k: (table[k], model[k]) for k in table if k in model and not matches(table[k], model[k])
    }
    assert wrong == {}


def test_the_documented_password_variable_is_read(tmp_path: Path, monkeypatch: Any) -> None:
    """The README promises SHOP_DB_PASSWORD without any password key in the file."""
    from connector.config import config_from_dict

    monkeypatch.setenv("SHOP_DB_PASSWORD", "s3cret-pw")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = config_from_dict({"source": {"url": "mysql+pymysql://shop@db/shop"}}, base_dir=tmp_path)
    assert cfg.source_url().password == "s3cret-pw"

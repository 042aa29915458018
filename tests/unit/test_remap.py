"""The mapping fingerprint (what changes it, what does not) and when a re-read starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connector._remap import FINGERPRINT_META, REMAP_META, Remap, decide
from connector.mapping import CompiledMapping, load_mapping_file
from connector.mapping.fingerprint import fingerprint

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
PARIS = ZoneInfo("Europe/Paris")


def fp(tmp_path: Path, name: str, old: str = "", new: str = "", **kw: object) -> str:
    path = tmp_path / f"{name}.toml"
    shutil.copy(MAPPINGS / f"{name}.toml", path)
    if old:
        text = path.read_text(encoding="utf-8")
        assert old in text, old
        path.write_text(text.replace(old, new), encoding="utf-8")
    tz = kw.get("tz", PARIS)
    assert isinstance(tz, ZoneInfo)
    ids = kw.get("id_data_source")
    assert ids is None or isinstance(ids, int)
    return fingerprint(CompiledMapping(load_mapping_file(path), tz, ids))


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        (
            "customers",
            'last_name = "last_name"',
            'last_name = { column = "last_name", convert = "upper" }',
        ),
        (
            "customers",
            'lang = { column = "lang", default = "fr" }',
            'lang = { column = "lang", default = "en" }',
        ),
        ("customers", 'value = "group_id"', 'value = "id"'),  # a child collection
        ("orders", 'quantity = "qty"', 'quantity = "id"'),  # a field of a child's objects
        ("customers", 'deleted = { column = "deleted_at", when = "not_null" }', ""),
        ("loyalty_points", 'description = "', 'description = "New: '),  # the definition
    ],
)
def test_output_changes_change_the_fingerprint(
    tmp_path: Path, name: str, old: str, new: str
) -> None:
    assert fp(tmp_path, name) != fp(tmp_path, name, old, new)


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("customers", 'lookback = "5m"', 'lookback = "30m"'),
        ("customers", 'cursor_fallback = "created_at"', ""),
        ("products", "[changes.translations]", "[changes.translated]"),
        ("customers", "# Customers imported", "# Clients imported"),  # a comment
    ],
)
def test_how_rows_are_found_leaves_it(tmp_path: Path, name: str, old: str, new: str) -> None:
    assert fp(tmp_path, name) == fp(tmp_path, name, old, new)


def test_zone_and_data_source_count(tmp_path: Path) -> None:
    base = fp(tmp_path, "customers")
    assert fp(tmp_path, "customers", tz=ZoneInfo("UTC")) != base
    assert fp(tmp_path, "customers", id_data_source=3) != base
    assert fp(tmp_path, "customers") == base  # stable


def test_when_a_re_read_starts_goes_on_or_ends() -> None:
    fm, rm = FINGERPRINT_META.format("m"), REMAP_META.format("m")
    # never ran: its first scan reads every row; the fingerprint is simply recorded
    assert decide("m", "A", None, None, has_cursor=False) == (None, {fm: "A"})
    # unchanged: nothing to do
    assert decide("m", "A", "A", None, has_cursor=True) == (None, {})
    # changed: a re-read from the first key
    state, writes = decide("m", "B", "A", None, has_cursor=True)
    assert state == Remap("B", None, 0, "A") and writes == {rm: state.to_json()}
    # ran before fingerprints were kept (an upgrade): re-read, only changed items are sent
    state, _ = decide("m", "A", None, None, has_cursor=True)
    assert state is not None and state.fingerprint == "A"
    # in progress for this mapping: goes on where it stood (no write)
    going = Remap("B", '["41"]', 500, "A", 2000)
    assert decide("m", "B", "A", going.to_json(), has_cursor=True) == (going, {})
    # changed again (even back to the recorded one) while in progress: starts over
    state, writes = decide("m", "A", "A", going.to_json(), has_cursor=True)
    assert state == Remap("A", None, 0, "A") and writes == {rm: state.to_json()}
    # an unreadable state starts over
    state, _ = decide("m", "B", "A", "{not json", has_cursor=True)
    assert state == Remap("B", None, 0, "A")


def test_the_same_in_every_process(tmp_path: Path) -> None:
    """String hashing differs between processes (PYTHONHASHSEED): the fingerprint must not."""
    code = (
        "import sys; from zoneinfo import ZoneInfo; from pathlib import Path;"
        "from connector.mapping import CompiledMapping, load_mapping_file;"
        "from connector.mapping.fingerprint import fingerprint;"
        "m = load_mapping_file(Path(sys.argv[1]));"
        "print(fingerprint(CompiledMapping(m, ZoneInfo('Europe/Paris'))))"
    )
    seen = set()
    for seed in ("1", "2", "3"):
        for name in ("orders", "loyalty_points"):
            out = subprocess.run(
                [sys.executable, "-c", code, str(MAPPINGS / f"{name}.toml")],
                capture_output=True,
                text=True,
                check=True,
                env={"PYTHONHASHSEED": seed, "PATH": ""},
            ).stdout.strip()
            seen.add((name, out))
    assert len(seen) == 2
    assert ("orders", fp(tmp_path, "orders")) in seen

"""Request bodies and payload hashes come from ``transform.canonical_json``: orjson where it writes
the very bytes of the standard encoder, the standard encoder otherwise. A byte of difference
would change every stored hash after an upgrade (and re-send every record), so this is checked
over generated items and over floats of every magnitude."""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.mapping.convert import to_json
from connector.transform import canonical_json


def standard(item: Any) -> bytes:
    text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits too
    | finite
    | st.text()
)
items = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(items)
def test_generated_items_encode_byte_for_byte_as_the_standard_encoder(item: Any) -> None:
    assert canonical_json(item) == standard(item)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=())))  # lone surrogates included
def test_text_that_utf_8_cannot_hold_fails_as_before(text: str) -> None:
    try:
        expected = standard({"name": text})
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            canonical_json({"name": text})
        return
    assert canonical_json({"name": text}) == expected


def test_floats_of_every_magnitude_encode_as_the_standard_encoder() -> None:
    rnd = random.Random(20261127)
    values = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e16, 1e-5]
    for exponent in range(-325, 309):
        for _ in range(60):
            v = float(f"{rnd.uniform(1, 10)!r}e{exponent}")
            if math.isfinite(v) and v != 0:
                values += [
                    v,
                    -v,
                    round(v, rnd.randint(0, 9)),
                    float(f"{rnd.randint(1, 9)}e{exponent}"),
                ]
    for _ in range(20_000):  # any bit pattern
        v = struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(v):
            values.append(v)
    values = [v for v in values if math.isfinite(v)]  # rounding can overflow
    different = [v for v in values if canonical_json({"v": v}) != standard({"v": v})]
    assert different == []
    assert len(values) > 100_000


def test_types_the_standard_encoder_refuses_are_refused() -> None:
    from datetime import datetime

    with pytest.raises(TypeError):
        canonical_json({"at": datetime(2026, 11, 27)})


def test_json_fields_refuse_nan_and_infinity() -> None:
    # JSON has neither; orjson would write null where the standard encoder writes NaN
    for bad in (math.nan, math.inf, [1.0, -math.inf], {"a": {"b": math.nan}}):
        with pytest.raises(ValueError, match="finite"):
            to_json(bad)
    assert to_json({"a": [1.5, None, "x"]}) == {"a": [1.5, None, "x"]}

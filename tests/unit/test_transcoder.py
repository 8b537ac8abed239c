"""The msgspec transcoder decodes exactly what the library's JSON transcoder decodes."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from infrastructure.transcoder import FastJSONTranscoder


def _both() -> tuple[JSONTranscoder, FastJSONTranscoder]:
    pair = (JSONTranscoder(), FastJSONTranscoder())
    for t in pair:
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            t.register(transcoding)
    return pair


SLOW, FAST = _both()

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(),
    st.uuids(), st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(UTC)),
)  # fmt: skip
documents = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=400, deadline=None)
@given(documents)
def test_decodes_what_the_library_decodes(doc: Any) -> None:
    data = SLOW.encode(doc)
    assert FAST.encode(doc) == data  # encoding is the library's
    assert _same(FAST.decode(data), SLOW.decode(data))


def test_an_event_state_with_nested_typed_values() -> None:
    state = {"originator_id": UUID(int=7), "timestamp": datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
             "turn": {"steps": [{"at": datetime(2026, 1, 1, tzinfo=UTC), "n": Decimal("1.5")}]},
             "text": 'a "_type_" inside a string'}  # fmt: skip
    data = SLOW.encode(state)
    assert FAST.decode(data) == SLOW.decode(data) == state


def test_an_object_that_looks_typed_but_names_no_transcoding_fails_as_in_the_library() -> None:
    data = b'{"x": {"_type_": "nope", "_data_": "1"}}'
    with pytest.raises(TranscodingNotRegisteredError):
        SLOW.decode(data)
    with pytest.raises(TranscodingNotRegisteredError):
        FAST.decode(data)


def test_nan_and_infinity_are_read_by_the_library_decoder() -> None:
    data = SLOW.encode({"a": float("nan"), "b": float("inf")})
    out = FAST.decode(data)
    assert math.isnan(out["a"]) and out["b"] == float("inf")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.uuids().map(lambda u: u.hex), st.text(alphabet="0123456789abcdefABCDEF-_+ {}xg", max_size=36)))
def test_a_uuid_is_read_as_uuid_reads_it(data: str) -> None:
    from infrastructure.transcoder import uuid_from_hex

    try:
        expected: Any = UUID(hex=data)
    except ValueError:
        with pytest.raises(ValueError):
            uuid_from_hex(data)
        return
    got = uuid_from_hex(data)
    assert (got, hash(got), str(got), got.is_safe, type(got)) == (expected, hash(expected), str(expected), expected.is_safe, UUID)

"""Canonical MessagePack: one encoding per value, and nothing else decodes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import codec

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@given(values)
def test_round_trip(value):
    encoded = codec.encode(value)
    assert codec.decode(encoded) == value
    assert codec.encode(codec.decode(encoded)) == encoded


@given(st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1), min_size=2, max_size=8))
def test_key_order_does_not_change_bytes(mapping):
    reversed_mapping = dict(reversed(list(mapping.items())))
    assert codec.encode(mapping) == codec.encode(reversed_mapping)


NON_CANONICAL = {
    "unsorted keys": b"\x82\xa1b\x01\xa1a\x02",
    "duplicate keys": b"\x82\xa1a\x01\xa1a\x02",
    "int as uint16": b"\xcd\x00\x05",
    "int as uint8 when fixint fits": b"\xcc\x05",
    "float": msgpack.packb(1.5),
    "str8 for short text": b"\xd9\x01a",
    "trailing byte": b"\x01\x01",
    "truncated": b"\x92\x01",
    "ext type": msgpack.packb(msgpack.ExtType(1, b"x")),
    "non-text key": b"\x81\x01\x02",
    "empty input": b"",
    "nested float": msgpack.packb({"a": [1.0]}),
}


@pytest.mark.parametrize("data", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
def test_non_canonical_input_is_refused(data):
    with pytest.raises(codec.CodecError):
        codec.decode(data)


@pytest.mark.parametrize("value", [1.5, {1: 2}, object(), 2**64, -(2**63) - 1], ids=repr)
def test_unencodable_values_are_refused(value):
    with pytest.raises(codec.CodecError):
        codec.encode(value)


@given(st.binary(max_size=64))
def test_random_bytes_only_raise_codec_error(data):
    try:
        value = codec.decode(data)
    except codec.CodecError:
        return
    assert codec.encode(value) == data


@pytest.mark.parametrize("refused", [{"a": [1, object()]}, [b"x", 2**70]], ids=["an object", "a huge int"])
def test_a_value_refused_half_packed_leaves_nothing_behind(refused):
    # encode_canonical trusts its caller and packs as it goes; the bytes
    # packed before the refusal must not lead the next encoding.
    with pytest.raises((TypeError, OverflowError, ValueError)):
        codec.encode_canonical(refused)
    assert codec.encode({"b": 1}) == msgpack.packb({"b": 1})


def test_threads_packing_at_once_each_get_their_own_bytes():
    from concurrent.futures import ThreadPoolExecutor

    def pack(i: int) -> bool:
        value = {"i": i, "blob": bytes([i % 256]) * (i % 97)}
        return all(codec.decode(codec.encode(value)) == value for _ in range(200))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(pack, range(64)))

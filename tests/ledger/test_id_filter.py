"""`IdFilter`: never a false negative, few false positives, a fixed size."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.id_filter import IdFilter

ids = st.binary(min_size=32, max_size=32)


@given(added=st.lists(ids, max_size=200), size=st.sampled_from([8, 64, 4096]))
def test_every_id_added_may_be_contained(added, size):
    id_filter = IdFilter(size)
    id_filter.add_all(added)
    assert all(id_filter.may_contain(item) for item in added)


def test_an_empty_filter_contains_nothing_and_a_sized_one_few_false_positives():
    def cid(n: int) -> bytes:
        return hashlib.sha256(b"id %d" % n).digest()

    id_filter = IdFilter(1 << 16)  # 524,288 bits
    assert not any(id_filter.may_contain(cid(n)) for n in range(1000))
    id_filter.add_all(cid(n) for n in range(50_000))
    # Three probes at 50,000 / 524,288 bits set per probe: (1 - e^-0.286)^3 = 1.6%.
    false_positives = sum(id_filter.may_contain(cid(n)) for n in range(50_000, 60_000))
    assert false_positives < 300


@pytest.mark.parametrize("size", [0, 4, 12, 1000])
def test_the_size_is_a_power_of_two_of_at_least_8_bytes(size):
    with pytest.raises(ValueError):
        IdFilter(size)


def test_the_size_is_an_int():
    with pytest.raises(TypeError):
        IdFilter(8.0)

"""The compact range gives the same roots as the reference for every size."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle
from ledger.compact_range import CompactRange, subtree_ids

LEAVES = [merkle.leaf_hash(hashlib.sha256(b"%d" % i).digest()) for i in range(130)]


def test_every_prefix_matches_the_reference_root():
    compact = CompactRange.empty()
    assert compact.root() == merkle.root([])
    for size in range(1, len(LEAVES) + 1):
        compact = compact.extend([LEAVES[size - 1]])
        assert compact.size == size
        assert compact.root() == merkle.root(LEAVES[:size])
        assert len(compact.hashes) == len(subtree_ids(size))


@given(st.lists(st.integers(0, 20), max_size=8))
def test_extending_in_any_chunks_is_the_same(chunks):
    compact, size = CompactRange.empty(), 0
    for chunk in chunks:
        compact = compact.extend(LEAVES[size : size + chunk])
        size += chunk
    assert compact.root() == merkle.root(LEAVES[:size])


def test_subtree_ids_cover_the_range_in_order():
    assert subtree_ids(0) == []
    assert subtree_ids(6) == [(2, 0), (1, 2)]
    assert subtree_ids(13) == [(3, 0), (2, 2), (0, 12)]


def test_a_chunk_extends_to_the_frontier_that_leaf_by_leaf_gives():
    # The frontier itself, not only its root: the next extension builds on it.
    for start in range(0, 70):
        one_by_one = CompactRange.empty().extend(LEAVES[:start])
        for count in (0, 1, 2, 3, 5, 8, 13, 60):
            expected = one_by_one
            for leaf in LEAVES[start:start + count]:
                expected = expected.extend([leaf])
            assert CompactRange.empty().extend(LEAVES[:start]).extend(LEAVES[start:start + count]) == expected

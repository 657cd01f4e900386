"""The persistent Merkle log (ledger.merkle_log) against the RFC 9162 oracle.

Whatever the sequence of appends, flushes and reopenings, every root and
proof the log builds from stored nodes is byte-identical to what
`ledger.merkle` computes from the full leaf list, at every past size; and a
proof reads O(log n) nodes, never the leaves.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.leveldb_store import LevelDBStore
from ledger.merkle_log import (
    MerkleLog,
    MerkleLogError,
    MissingNodeError,
    plan_consistency,
    plan_inclusion,
)
from ledger.store import MemoryStore, WriteBatch

LEAVES = [merkle.leaf_hash(b"record %d" % i) for i in range(400)]


@pytest.fixture(params=["memory", "leveldb"])
def make_store(request, tmp_path_factory):
    """A factory of empty stores of one kind."""
    opened = []

    def make():
        if request.param == "memory":
            store = MemoryStore()
        else:
            store = LevelDBStore(tmp_path_factory.mktemp("merkle"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def assert_agrees(log: MerkleLog, leaves: list[bytes], index_step: int = 1) -> None:
    """Every root and, sampled by `index_step`, every proof at every past size."""
    assert log.size == len(leaves)
    for size in range(len(leaves) + 1):
        prefix = leaves[:size]
        assert log.root(size) == merkle.root(prefix), f"root({size})"
        for index in range(0, size, index_step):
            assert log.inclusion_proof(index, size) == merkle.inclusion_proof(index, prefix), (index, size)
        for old_size in range(1, size + 1, index_step):
            assert log.consistency_proof(old_size, size) == merkle.consistency_proof(old_size, prefix), (old_size, size)
    for index in range(0, len(leaves), index_step):
        assert log.leaf_hash_at(index) == leaves[index]


# Small cache levels put the in-memory upper-level cache on the paths that
# small trees exercise.
steps = st.lists(
    st.tuples(st.integers(0, 24), st.sampled_from(["write", "write", "unwritten", "reopen"])),
    min_size=1, max_size=6,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, cache_level=st.sampled_from([1, 2, 3, 8]))
def test_any_append_history_agrees_with_the_reference(make_store, steps, cache_level):
    """Batches are written and flushed, left pending (reads must come from the
    overlay), or written and then the log is reopened from the store alone."""
    store = make_store()
    log = MerkleLog(store, 0, cache_level=cache_level)
    leaves: list[bytes] = []
    pending: list[WriteBatch] = []
    for count, action in steps:
        new = LEAVES[len(leaves):len(leaves) + count]
        batch = WriteBatch()
        root = log.append(new, batch)
        leaves += new
        assert root == merkle.root(leaves)
        pending.append(batch)
        if action != "unwritten":
            for written in pending:
                store.write(written)
            pending.clear()
            log.flushed()
        if action == "reopen":
            log = MerkleLog(store, len(leaves), cache_level=cache_level)
        assert_agrees(log, leaves, index_step=5)
    for written in pending:
        store.write(written)
    log.flushed()
    assert_agrees(MerkleLog(store, len(leaves), cache_level=cache_level), leaves, index_step=2)


@pytest.mark.parametrize("cache_level", [1, 4, 8])
def test_reopened_log_resumes_and_keeps_agreeing(make_store, cache_level):
    store = make_store()
    log = MerkleLog(store, 0, cache_level=cache_level)
    for start in range(0, 148, 37):
        batch = WriteBatch()
        log.append(LEAVES[start:start + 37], batch)
        store.write(batch)
        log.flushed()
        log = MerkleLog(store, log.size, cache_level=cache_level)
    assert_agrees(log, LEAVES[:148], index_step=5)
    log.warm_cache()
    batch = WriteBatch()
    assert log.append(LEAVES[148:185], batch) == merkle.root(LEAVES[:185])
    store.write(batch)
    log.flushed()
    assert_agrees(MerkleLog(store, 185, cache_level=cache_level), LEAVES[:185], index_step=9)


def test_a_batch_never_written_is_forgotten_on_reopen(make_store):
    """The caller's committed size is the truth: staged nodes that never
    reached the store are not needed, and appending different leaves after
    reopening overwrites whatever a lost batch might have left."""
    store = make_store()
    log = MerkleLog(store, 0, cache_level=2)
    committed = WriteBatch()
    log.append(LEAVES[:13], committed)
    store.write(committed)
    log.flushed()
    log.append(LEAVES[13:40], WriteBatch())  # the block never commits
    assert log.root() == merkle.root(LEAVES[:40])

    log = MerkleLog(store, 13, cache_level=2)
    assert_agrees(log, LEAVES[:13])
    other = [merkle.leaf_hash(b"other %d" % i) for i in range(30)]
    batch = WriteBatch()
    log.append(other, batch)
    store.write(batch)
    log.flushed()
    assert_agrees(MerkleLog(store, 43, cache_level=2), LEAVES[:13] + other, index_step=5)


def test_a_written_batch_beyond_the_committed_size_is_ignored(make_store):
    store = make_store()
    log = MerkleLog(store, 0)
    batch = WriteBatch()
    log.append(LEAVES[:50], batch)
    store.write(batch)
    assert_agrees(MerkleLog(store, 21), LEAVES[:21], index_step=2)


def test_append_puts_every_leaf_and_every_completed_subtree():
    store = MemoryStore()
    log = MerkleLog(store, 0, prefix=b"m")
    batch = WriteBatch()
    log.append(LEAVES[:6], batch)
    keys = {key for key, _ in batch.ops}
    expected = {(0, i) for i in range(6)} | {(1, 0), (1, 1), (1, 2), (2, 0)}
    assert keys == {b"m" + bytes([level]) + index.to_bytes(8, "big") for level, index in expected}
    store.write(batch)
    assert store.get(b"m\x02" + (0).to_bytes(8, "big")) == merkle.root(LEAVES[:4])


class CountingStore:
    """A MemoryStore wrapper that counts point reads and iterated entries."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.reads = 0

    def get(self, key):
        self.reads += 1
        return self.inner.get(key)

    def write(self, batch, sync=True):
        self.inner.write(batch, sync)

    def iterate(self, prefix, start=None, reverse=False):
        for item in self.inner.iterate(prefix, start, reverse):
            self.reads += 1
            yield item

    def close(self):
        self.inner.close()


def test_proofs_and_roots_read_logarithmically_many_nodes():
    size = (1 << 12) + 5
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(size)]
    store = CountingStore()
    log = MerkleLog(store, 0)
    batch = WriteBatch()
    log.append(leaves, batch)
    store.write(batch)
    log.flushed()

    store.reads = 0
    log = MerkleLog(store, size)  # resuming reads only the right border
    assert store.reads <= bin(size).count("1")
    bound = 2 * math.ceil(math.log2(size))
    for tree_size in (size, size - 1, 3000, 1 << 12):
        for index in (0, 1, 1234, tree_size - 1):
            store.reads = 0
            assert log.inclusion_proof(index, tree_size) == merkle.inclusion_proof(index, leaves[:tree_size])
            assert store.reads <= bound, (index, tree_size, store.reads)
        store.reads = 0
        assert log.consistency_proof(777, tree_size) == merkle.consistency_proof(777, leaves[:tree_size])
        assert store.reads <= bound
        store.reads = 0
        assert log.root(tree_size) == merkle.root(leaves[:tree_size])
        assert store.reads <= bound
    # With the upper levels cached, a proof reads at most one node per level
    # below cache_level (8), plus the low parts of the ephemeral node.
    log.warm_cache()
    for index in (0, 2049, size - 1):
        store.reads = 0
        log.inclusion_proof(index, size)
        assert store.reads <= 8 + bin(size).count("1")


def test_plans_name_perfect_nodes_and_ephemeral_border_nodes():
    # Leaf 2 of 7: sibling leaf 3, node [0,2), then the ephemeral [4,7).
    assert plan_inclusion(2, 7) == [((0, 3),), ((1, 0),), ((1, 2), (0, 6))]
    # 6 -> 8: the subtree [4,6) itself, then its audit path in the tree of 8.
    assert plan_consistency(6, 8) == [((1, 2),), ((1, 3),), ((2, 0),)]
    assert plan_consistency(4, 4) == []


@pytest.mark.parametrize(("call", "args"), [
    ("root", (5,)), ("root", (-1,)),
    ("inclusion_proof", (4, 4)), ("inclusion_proof", (0, 5)), ("inclusion_proof", (-1, 3)),
    ("consistency_proof", (0, 3)), ("consistency_proof", (4, 3)), ("consistency_proof", (2, 5)),
    ("leaf_hash_at", (4,)), ("inclusion_proof", (True, 3)),
])
def test_bad_sizes_and_indexes_raise_merkle_log_error(call, args):
    log = MerkleLog(MemoryStore(), 0)
    log.append(LEAVES[:4], WriteBatch())
    with pytest.raises(MerkleLogError):
        getattr(log, call)(*args)


def test_bad_leaves_are_refused_without_changing_the_log():
    log = MerkleLog(MemoryStore(), 0)
    log.append(LEAVES[:3], WriteBatch())
    batch = WriteBatch()
    with pytest.raises(MerkleLogError):
        log.append([LEAVES[3], b"short"], batch)
    assert log.size == 3 and len(batch) == 0
    assert log.root() == merkle.root(LEAVES[:3])


def test_a_missing_node_is_reported_as_corruption():
    store = MemoryStore()
    log = MerkleLog(store, 0)
    batch = WriteBatch()
    log.append(LEAVES[:3], batch)
    store.write(batch)
    damage = WriteBatch()
    damage.delete(b"t\x01" + (0).to_bytes(8, "big"))
    store.write(damage)
    with pytest.raises(MissingNodeError):
        MerkleLog(store, 3)


def test_the_empty_log():
    log = MerkleLog(MemoryStore(), 0)
    assert log.root() == log.root(0) == merkle.EMPTY_ROOT
    assert log.append([], WriteBatch()) == merkle.EMPTY_ROOT

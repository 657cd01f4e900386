"""The persistent Merkle log (ledger.merkle_log) against the RFC 9162 oracle.

Whatever the sequence of appends, flushes and reopenings, every root and
proof the log builds from stored tiles is byte-identical to what
`ledger.merkle` computes from the full leaf list, at every past size; and a
proof reads one tile per tile level at most, never the leaves. Small tile
heights put many tile levels and tile edges within reach of small trees.
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
from ledger.merkle_tiles import row_offsets_by_length, tile_key, tile_size
from ledger.store import MemoryStore, WriteBatch

LEAVES = [merkle.leaf_hash(b"record %d" % i) for i in range(400)]


def subtree(leaves: list[bytes], level: int, index: int) -> bytes:
    """The reference hash of node (level, index)."""
    return merkle.root(leaves[index << level:(index + 1) << level])


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
@given(steps=steps, cache_level=st.sampled_from([1, 2, 3, 8]), tile_height=st.sampled_from([1, 2, 3, 8]))
def test_any_append_history_agrees_with_the_reference(make_store, steps, cache_level, tile_height):
    """Batches are written and flushed, left pending (reads must come from the
    staged tiles), or written and then the log is reopened from the store alone."""
    store = make_store()
    options = {"cache_level": cache_level, "tile_height": tile_height}
    log = MerkleLog(store, 0, **options)
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
            log = MerkleLog(store, len(leaves), **options)
        assert_agrees(log, leaves, index_step=5)
    log.warm_cache()  # batches may still be pending: their tiles come from memory
    assert_agrees(log, leaves, index_step=7)
    for written in pending:
        store.write(written)
    log.flushed()
    assert_agrees(MerkleLog(store, len(leaves), **options), leaves, index_step=2)


@pytest.mark.parametrize(("cache_level", "tile_height"), [(1, 8), (4, 8), (8, 8), (2, 2), (4, 3), (5, 1)])
def test_reopened_log_resumes_and_keeps_agreeing(make_store, cache_level, tile_height):
    store = make_store()
    options = {"cache_level": cache_level, "tile_height": tile_height}
    log = MerkleLog(store, 0, **options)
    for start in range(0, 148, 37):
        batch = WriteBatch()
        log.append(LEAVES[start:start + 37], batch)
        store.write(batch)
        log.flushed()
        log = MerkleLog(store, log.size, **options)
    assert_agrees(log, LEAVES[:148], index_step=5)
    log.warm_cache()
    batch = WriteBatch()
    assert log.append(LEAVES[148:185], batch) == merkle.root(LEAVES[:185])
    store.write(batch)
    log.flushed()
    assert_agrees(MerkleLog(store, 185, **options), LEAVES[:185], index_step=9)


@pytest.mark.parametrize("tile_height", [2, 3, 8])
def test_a_batch_never_written_is_forgotten_on_reopen(make_store, tile_height):
    """The caller's committed size is the truth: tile versions that never
    reached the store are not needed, and appending different leaves after
    reopening overwrites whatever a lost batch might have left."""
    store = make_store()
    options = {"cache_level": 2, "tile_height": tile_height}
    log = MerkleLog(store, 0, **options)
    committed = WriteBatch()
    log.append(LEAVES[:13], committed)
    store.write(committed)
    log.flushed()
    log.append(LEAVES[13:40], WriteBatch())  # the block never commits
    assert log.root() == merkle.root(LEAVES[:40])

    log = MerkleLog(store, 13, **options)
    assert_agrees(log, LEAVES[:13])
    other = [merkle.leaf_hash(b"other %d" % i) for i in range(30)]
    batch = WriteBatch()
    log.append(other, batch)
    store.write(batch)
    log.flushed()
    assert_agrees(MerkleLog(store, 43, **options), LEAVES[:13] + other, index_step=5)


@pytest.mark.parametrize("tile_height", [2, 3, 8])
def test_a_written_batch_beyond_the_committed_size_is_ignored(make_store, tile_height):
    """Stored tiles wider than the committed size (a batch written whose
    commit the caller does not count) serve the nodes they share with it, and
    appending different leaves replaces them."""
    store = make_store()
    log = MerkleLog(store, 0, tile_height=tile_height)
    batch = WriteBatch()
    log.append(LEAVES[:50], batch)
    store.write(batch)
    log = MerkleLog(store, 21, tile_height=tile_height)
    assert_agrees(log, LEAVES[:21], index_step=2)
    log.warm_cache()
    assert_agrees(log, LEAVES[:21], index_step=3)
    other = [merkle.leaf_hash(b"other %d" % i) for i in range(40)]
    batch = WriteBatch()
    assert log.append(other, batch) == merkle.root(LEAVES[:21] + other)
    store.write(batch)
    log.flushed()
    assert_agrees(MerkleLog(store, 61, tile_height=tile_height), LEAVES[:21] + other, index_step=4)


def test_append_puts_one_value_per_touched_tile_holding_its_complete_nodes():
    """Tile height 2, 6 leaves: tile (0, 0) holds leaves 0..3 and nodes (1,0),
    (1,1); the partial tile (0, 1) leaves 4, 5 and node (1,2); tile (1, 0),
    levels 2 and 3, holds node (2,0) alone. Keys are prefix, height, tile
    level, 8-byte tile index."""
    log = MerkleLog(MemoryStore(), 0, prefix=b"m", tile_height=2)
    batch = WriteBatch()
    log.append(LEAVES[:6], batch)
    node = lambda level, index: subtree(LEAVES, level, index)  # noqa: E731
    assert dict(batch.ops) == {
        b"m\x02\x00" + (0).to_bytes(8, "big"): b"".join([*LEAVES[0:4], node(1, 0), node(1, 1)]),
        b"m\x02\x00" + (1).to_bytes(8, "big"): b"".join([*LEAVES[4:6], node(1, 2)]),
        b"m\x02\x01" + (0).to_bytes(8, "big"): node(2, 0),
    }
    assert len(batch) == 3
    # The next append rewrites the edge tiles it extends, and only those.
    batch = WriteBatch()
    log.append(LEAVES[6:9], batch)
    assert dict(batch.ops) == {
        tile_key(b"m", 2, 0, 1): b"".join([*LEAVES[4:8], node(1, 2), node(1, 3)]),
        tile_key(b"m", 2, 0, 2): LEAVES[8],
        tile_key(b"m", 2, 1, 0): b"".join([node(2, 0), node(2, 1), node(3, 0)]),
    }
    assert len(batch) == 3


def test_a_big_append_puts_about_one_value_per_256_leaves():
    log = MerkleLog(MemoryStore(), 0, tile_height=8, cache_level=8)
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(10_000)]
    batch = WriteBatch()
    log.append(leaves[:100], batch)
    batch = WriteBatch()
    log.append(leaves[100:], batch)
    assert len(batch) == 40 + 1  # tiles (0, 0..39), tile (1, 0)
    assert all(len(value) == 510 * 32 for _, value in batch.ops[:-2])


def test_tile_values_are_self_describing():
    table = row_offsets_by_length(8)
    assert len(table) == 256
    assert table[tile_size(256, 8)] == (0, 8192, 12288, 14336, 15360, 15872, 16128, 16256, 16320)
    assert table[tile_size(1, 8)] == (0, 32, 32, 32, 32, 32, 32, 32, 32)
    assert row_offsets_by_length(2)[tile_size(3, 2)] == (0, 96, 128)


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


@pytest.mark.parametrize(("size", "tile_height"), [((1 << 12) + 5, 8), ((1 << 17) + 300, 8), (700, 3)])
def test_proofs_and_roots_read_at_most_a_tile_per_tile_level(size, tile_height):
    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(size)]
    store = CountingStore()
    log = MerkleLog(store, 0, tile_height=tile_height)
    batch = WriteBatch()
    log.append(leaves, batch)
    store.write(batch)
    log.flushed()

    tile_levels = math.ceil(size.bit_length() / tile_height)
    store.reads = 0
    log = MerkleLog(store, size, tile_height=tile_height)  # resuming reads only the edge tiles
    assert store.reads <= tile_levels
    for tree_size in (size, size - 1, 3000 % size, 1 << 9):
        prefix_root = merkle.root(leaves[:tree_size])
        for index in sorted({0, 1, 257, 1234, tree_size - 1} & set(range(tree_size))):
            store.reads = 0
            proof = log.inclusion_proof(index, tree_size)
            # the path's tiles, and those of the ephemeral node's parts
            assert store.reads <= 2 * tile_levels, (index, tree_size, store.reads)
            merkle.verify_inclusion(leaves[index], index, tree_size, proof, prefix_root)
        old_size = min(777, tree_size)
        store.reads = 0
        proof = log.consistency_proof(old_size, tree_size)
        assert store.reads <= 2 * tile_levels
        merkle.verify_consistency(old_size, tree_size, merkle.root(leaves[:old_size]), prefix_root, proof)
        store.reads = 0
        assert log.root(tree_size) == prefix_root
        assert store.reads <= tile_levels
    assert log.inclusion_proof(123, size - 2) == merkle.inclusion_proof(123, leaves[:size - 2])
    assert log.consistency_proof(123, size - 2) == merkle.consistency_proof(123, leaves[:size - 2])
    # With the upper levels cached, a proof at the full size reads one tile
    # per tile level below cache_level (8): the edge tiles, which hold its
    # ephemeral node's parts, are in memory. At a past size the ephemeral
    # node's parts may need as many again.
    log.warm_cache()
    uncached_tile_levels = math.ceil(8 / tile_height)
    for index in (0, 2049 % size, size - 1):
        store.reads = 0
        log.inclusion_proof(index, size)
        assert store.reads <= uncached_tile_levels
        store.reads = 0
        log.inclusion_proof(index // 4, size - 1 - index // 4)
        assert store.reads <= 2 * uncached_tile_levels


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
    ("leaf_hash_at", (4,)), ("inclusion_proof", (True, 3)), ("node", (2, 1)), ("node", (0, True)),
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


@pytest.mark.parametrize("damage", ["delete", "truncate", "garble"])
def test_a_missing_or_malformed_tile_is_reported_as_corruption(damage):
    store = MemoryStore()
    log = MerkleLog(store, 0, tile_height=8, cache_level=8)
    batch = WriteBatch()
    log.append(LEAVES[:300], batch)
    store.write(batch)
    edge, inner = tile_key(b"t", 8, 0, 1), tile_key(b"t", 8, 0, 0)
    broken = WriteBatch()
    for key in (edge, inner):
        if damage == "delete":
            broken.delete(key)
        elif damage == "truncate":  # a valid tile length, but narrower than the size needs
            broken.put(key, store.get(key)[:32])
        else:
            broken.put(key, store.get(key)[:-1])
    store.write(broken)
    with pytest.raises(MissingNodeError):
        MerkleLog(store, 300, tile_height=8, cache_level=8)  # the edge tile
    log = MerkleLog(store, 256, tile_height=8, cache_level=8)  # no edge tile: tile (0, 0) is read on demand
    assert log.root() == merkle.root(LEAVES[:256])
    with pytest.raises(MissingNodeError):
        log.inclusion_proof(3, 256)
    with pytest.raises(MissingNodeError):
        log.leaf_hash_at(200)
    with pytest.raises(MissingNodeError):
        log.root(255)


def test_a_log_of_another_tile_height_finds_no_tiles():
    store = MemoryStore()
    batch = WriteBatch()
    MerkleLog(store, 0, tile_height=8).append(LEAVES[:5], batch)
    store.write(batch)
    with pytest.raises(MissingNodeError):
        MerkleLog(store, 5, tile_height=4)


@pytest.mark.parametrize("sizes", [
    (255, 256, 257, 511, 512, 513),
    (65_535, 65_536, 65_537),
    (65_280, 65_535, 65_536),  # 255 full tiles, then the tile completing tile (1, 0)
])
def test_sizes_around_tile_edges(sizes):
    """Appends ending just before, at and after a tile edge (256 leaves for
    level 0; 65,536 for tile level 1), reopening at each size: roots, edge
    tiles, proofs and the public `node` all agree with the reference."""
    total = max(sizes) + 3
    leaves = [merkle.leaf_hash(b"leaf %d" % i) for i in range(total)]
    store = MemoryStore()
    log = MerkleLog(store, 0)
    written = 0
    for size in (*sizes, total):
        batch = WriteBatch()
        log.append(leaves[written:size], batch)
        store.write(batch)
        log.flushed()
        written = size
        reopened = MerkleLog(store, size)
        root = merkle.root(leaves[:size])
        assert log.root() == reopened.root() == root
        for other in (log, reopened):
            for index in {0, 255, 256, size // 2, size - 257, size - 256, size - 2, size - 1} - {-1}:
                if 0 <= index < size:
                    merkle.verify_inclusion(leaves[index], index, size, other.inclusion_proof(index, size), root)
                    assert other.leaf_hash_at(index) == leaves[index]
            for old_size in (1, 255, 256, 257, size - 1):
                if 0 < old_size <= size:
                    merkle.verify_consistency(old_size, size, merkle.root(leaves[:old_size]), root,
                                              other.consistency_proof(old_size, size))
        for level, index in ((8, size // 256 - 1), (7, size // 128 - 1), (16, 0)):
            if 0 <= index and (index + 1) << level <= size:
                assert reopened.node(level, index) == subtree(leaves, level, index)
    last = min(sizes)
    assert log.inclusion_proof(last - 1, last) == merkle.inclusion_proof(last - 1, leaves[:last])
    assert log.consistency_proof(last - 1, total) == merkle.consistency_proof(last - 1, leaves)


def test_node_serves_complete_nodes_only(make_store):
    store = make_store()
    log = MerkleLog(store, 0, tile_height=2)
    batch = WriteBatch()
    log.append(LEAVES[:11], batch)  # before the batch is written
    assert [log.node(level, index) for level, index in [(3, 0), (1, 4), (0, 10)]] == [
        subtree(LEAVES, 3, 0), subtree(LEAVES, 1, 4), LEAVES[10]]
    store.write(batch)
    log.flushed()
    for level, index in [(3, 1), (2, 2), (0, 11), (-1, 0), (1, -1), (65, 0)]:
        with pytest.raises(MerkleLogError):
            log.node(level, index)
    assert MerkleLog(store, 11, tile_height=2).node(2, 1) == subtree(LEAVES, 2, 1)


def test_the_empty_log():
    log = MerkleLog(MemoryStore(), 0)
    assert log.root() == log.root(0) == merkle.EMPTY_ROOT
    assert log.append([], WriteBatch()) == merkle.EMPTY_ROOT

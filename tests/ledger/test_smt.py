"""The authenticated map (ledger.smt, ledger.smt_proof) against a naive reference.

The reference below is docs/state.md's definition written as plainly as
possible: a subtree with no leaf hashes to EMPTY, one with a single leaf to
that leaf's hash, any other to the node hash of its two halves. Whatever the
sequence of batched updates, competing proposals, reopenings and stores, the
map's root, proofs and even its stored tiles equal what the reference derives
from the key -> value-hash set alone; every proof verifies, and no tampered
or forged proof does.
"""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger.leveldb_store import LevelDBStore
from ledger.smt import MapError, MapUpdate, MissingNodeError, SparseMerkleMap, TooManyLeavesError
from ledger.smt_proof import (
    EMPTY,
    PROOF_BYTES_MAX,
    PrefixProof,
    Proof,
    ProofError,
    leaf_hash,
    node_hash,
    proven_value_hash,
    root_from_prefix_proof,
    root_from_proof,
    subtree_hash,
    verify,
    verify_prefix,
)
from ledger.smt_update import derived_tile
from ledger.store import MemoryStore, WriteBatch

PREFIX = b"zc"


# -- the reference -------------------------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def bit(key: bytes, depth: int) -> int:
    return key[depth // 8] >> (7 - depth % 8) & 1


def ref_hash(items: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The canonical hash of the subtree at `depth` holding `items`."""
    if not items:
        return bytes(32)
    if len(items) == 1:
        [(key, value_hash)] = items.items()
        return sha256(b"\x10" + key + value_hash)
    left = {k: v for k, v in items.items() if bit(k, depth) == 0}
    right = {k: v for k, v in items.items() if bit(k, depth) == 1}
    return sha256(b"\x11" + ref_hash(left, depth + 1) + ref_hash(right, depth + 1))


def ref_proof(items: dict[bytes, bytes], key: bytes) -> Proof:
    """Walk down key's path until the subtree holds at most one leaf."""
    siblings = []
    depth = 0
    while len(items) > 1:
        here = {k: v for k, v in items.items() if bit(k, depth) == bit(key, depth)}
        other = {k: v for k, v in items.items() if bit(k, depth) != bit(key, depth)}
        siblings.append(ref_hash(other, depth + 1))
        items = here
        depth += 1
    return Proof(tuple(siblings), next(iter(items.items()), None))


def ref_positions(items: dict[bytes, bytes], depth: int = 0, path: int = 0,
                  positions: dict[tuple[int, int], bytes] | None = None) -> dict[tuple[int, int], bytes]:
    """{(depth, path as a depth-bit int): stored value} of every non-empty
    position: the preimage of its hash (ref_hash, computed along the way)."""
    if positions is None:
        positions = {}
    if len(items) == 1:
        [(key, value_hash)] = items.items()
        positions[(depth, path)] = b"\x10" + key + value_hash
    elif items:
        left = {k: v for k, v in items.items() if bit(k, depth) == 0}
        right = {k: v for k, v in items.items() if bit(k, depth) == 1}
        ref_positions(left, depth + 1, path << 1, positions)
        ref_positions(right, depth + 1, path << 1 | 1, positions)
        hashes = [sha256(positions[(depth + 1, path << 1 | side)]) if half else bytes(32)
                  for side, half in enumerate((left, right))]
        positions[(depth, path)] = b"\x11" + hashes[0] + hashes[1]
    return positions


def ref_store(items: dict[bytes, bytes], prefix: bytes = PREFIX) -> dict[bytes, bytes]:
    """The store contents docs/state.md describes: a tile per non-empty
    position at a depth divisible by 4, holding the positions of its 4 levels."""
    positions = ref_positions(items)
    tiles = {}
    for (band, band_path), _ in sorted((p, v) for p, v in positions.items() if p[0] % 4 == 0):
        slots = {}
        for row in range(4):
            for offset in range(1 << row):
                value = positions.get((band + row, band_path << row | offset))
                if value is not None:
                    slots[(1 << row) - 1 + offset] = value
        bitmap = sum(1 << (15 - slot) for slot in slots)
        size = (band + 7) // 8
        key = prefix + band.to_bytes(2, "big") + (band_path << (8 * size - band)).to_bytes(size, "big")
        tiles[key] = bitmap.to_bytes(2, "big") + b"".join(slots[slot] for slot in sorted(slots))
    return tiles


def stored(store, prefix: bytes = PREFIX) -> dict[bytes, bytes]:
    return dict(store.iterate(prefix))


def commit(store, tree: SparseMerkleMap, changes: dict[bytes, bytes]) -> MapUpdate:
    update = tree.update(changes)
    batch = WriteBatch()
    update.add_to(batch)
    store.write(batch, sync=False)  # durability is the store's business, tested elsewhere
    tree.committed(update)
    return update


def value_of(label) -> bytes:
    return sha256(b"value %r" % (label,))


def flip(key: bytes, *depths: int) -> bytes:
    number = int.from_bytes(key, "big")
    for depth in depths:
        number ^= 1 << (255 - depth)
    return number.to_bytes(32, "big")


# Keys with long shared prefixes: templates with a few bits flipped, so that
# leaves sit deep (down to depth 256) and tiles fill at every band.
TEMPLATES = [bytes(32), b"\xff" * 32, sha256(b"a"), sha256(b"b")]
keys = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.builds(lambda template, depths: flip(template, *depths),
              st.sampled_from(TEMPLATES), st.lists(st.integers(0, 255), max_size=3)),
)
values = st.binary(min_size=32, max_size=32)


@pytest.fixture(params=["memory", "leveldb"])
def make_store(request, tmp_path_factory):
    """A factory of empty stores of one kind."""
    opened = []

    def make():
        store = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path_factory.mktemp("smt"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def assert_agrees(tree: SparseMerkleMap, items: dict[bytes, bytes], absent: list[bytes]) -> None:
    root = ref_hash(items)
    assert tree.root() == root
    for key in [*items, *absent]:
        proof = tree.prove(key)
        assert proof == ref_proof(items, key), key.hex()
        verify(root, key, items.get(key), proof)
        assert tree.value_hash(key) == items.get(key)


# -- the tree --------------------------------------------------------------------


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.tuples(st.dictionaries(keys, values, max_size=12),
                               st.sampled_from(["write", "write", "competing", "reopen"])),
                     min_size=1, max_size=5),
    absent=st.lists(keys, max_size=4),
    cache_depth=st.sampled_from([0, 4, 8, 16]),
)
def test_any_update_history_agrees_with_the_reference(make_store, batches, absent, cache_depth):
    """Batches are committed, computed beside a competing proposal that is
    dropped, or committed and then the map is reopened from the store alone.
    After each: the root, every proof and the stored tiles are the reference's."""
    store = make_store()
    tree = SparseMerkleMap(store, PREFIX, cache_depth=cache_depth)
    items: dict[bytes, bytes] = {}
    for changes, action in batches:
        if action == "competing":
            rival = tree.update({key: sha256(value) for key, value in changes.items()})
            assert rival.root == ref_hash({**items, **{k: sha256(v) for k, v in changes.items()}})
        update = commit(store, tree, changes)
        before = ref_store(items)
        items.update(changes)
        assert update.root == ref_hash(items)
        after = ref_store(items)
        assert dict(update.puts) == {k: v for k, v in after.items() if before.get(k) != v}
        assert len(update.puts) == len(dict(update.puts))  # each tile put once
        if action == "reopen":
            tree = SparseMerkleMap(store, PREFIX, cache_depth=cache_depth)
        assert stored(store) == after
        assert_agrees(tree, items, absent)
    tree.warm_cache()
    assert_agrees(tree, items, absent)


def below(tiles: dict[bytes, bytes], memory_depth: int) -> dict[bytes, bytes]:
    """The tiles of band depth >= memory_depth: what a map with memory-only bands stores."""
    return {k: v for k, v in tiles.items() if int.from_bytes(k[len(PREFIX):len(PREFIX) + 2], "big") >= memory_depth}


# Histories of batches (each maybe beside a competing update that is dropped)
# over a map with memory-only bands.
BANDED_HISTORIES = dict(
    batches=st.lists(st.tuples(st.dictionaries(keys, values, max_size=12), st.booleans()), min_size=1, max_size=5),
    absent=st.lists(keys, max_size=4),
    memory_depth=st.sampled_from([4, 8, 20]),
)


@settings(max_examples=20, deadline=None)
@given(**BANDED_HISTORIES)
def test_memory_only_bands_give_the_same_tree_and_store_only_the_tiles_below(batches, absent, memory_depth):
    """Tiles above `memory_depth` never reach the store: the root, every proof
    and the puts below it are the reference's; competing updates still count
    only once committed."""
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX, memory_depth=memory_depth)
    items: dict[bytes, bytes] = {}
    for changes, competing in batches:
        if competing:
            tree.update({key: sha256(value) for key, value in reversed(changes.items())})
        update = commit(store, tree, changes)
        before = ref_store(items)
        items.update(changes)
        after = ref_store(items)
        assert update.root == ref_hash(items)
        assert dict(update.puts) == below({k: v for k, v in after.items() if before.get(k) != v}, memory_depth)
        assert stored(store) == below(after, memory_depth)
        assert_agrees(tree, items, absent)
    loaded = SparseMerkleMap(MemoryStore(), PREFIX, memory_depth=memory_depth)
    assert loaded.load(items.items()) == ref_hash(items)
    assert_agrees(loaded, items, absent)


@settings(max_examples=25, deadline=None)
@given(**BANDED_HISTORIES)
def test_derived_bands_give_the_same_tree_from_the_leaves_alone(batches, absent, memory_depth):
    """Below the memory-only bands, a map given its leaves stores no tile: each
    is rebuilt from the leaves under it, and the root and every proof are the
    reference's."""
    committed: dict[bytes, bytes] = {}  # the caller's own record of the leaves
    asked = []

    def leaves(depth: int, path: int) -> list[tuple[bytes, bytes]]:
        asked.append(depth)
        top = path >> (256 - depth)
        return sorted((k, v) for k, v in committed.items() if int.from_bytes(k, "big") >> (256 - depth) == top)

    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX, memory_depth=memory_depth, leaves=leaves)
    items: dict[bytes, bytes] = {}
    for changes, competing in batches:
        if competing:
            tree.update({key: sha256(value) for key, value in reversed(changes.items())})
        update = commit(store, tree, changes)
        items.update(changes)
        committed.update(changes)
        assert update.root == ref_hash(items)
        assert update.puts == [] and stored(store) == {}
        assert_agrees(tree, items, absent)
    assert all(depth >= memory_depth for depth in asked)
    event(f"tiles derived: {'some' if asked else 'none'}")


def test_a_derived_tile_is_the_stored_tile_of_the_same_leaves():
    """Tile by tile, down to depth 256: `derived_tile` of the leaves under a
    position is the tile the store would hold there."""
    items = {flip(bytes(32), *depths): value_of(depths)
             for depths in [(), (0,), (3,), (7,), (8, 9), (20,), (21, 255), (254,), (255,)]}
    for key, tile in ref_store(items).items():
        depth = int.from_bytes(key[len(PREFIX):len(PREFIX) + 2], "big")
        path = int.from_bytes(key[len(PREFIX) + 2:].ljust(32, b"\0"), "big")
        under = sorted((k, v) for k, v in items.items()
                       if int.from_bytes(k, "big") >> (256 - depth) == path >> (256 - depth))
        assert derived_tile(depth, under) == tile, depth
    assert derived_tile(8, []) is None


def test_derived_bands_need_memory_only_ones():
    with pytest.raises(MapError):
        SparseMerkleMap(MemoryStore(), PREFIX, leaves=lambda depth, path: [])


def test_a_map_with_memory_only_bands_starts_empty():
    store = MemoryStore()
    commit(store, SparseMerkleMap(store, PREFIX), {b"\x01" * 32: sha256(b"v")})
    with pytest.raises(MapError):
        SparseMerkleMap(store, PREFIX, memory_depth=4)
    with pytest.raises(MapError):
        SparseMerkleMap(MemoryStore(), PREFIX, memory_depth=6)


@settings(max_examples=15, deadline=None)
@given(items=st.dictionaries(keys, values, min_size=1, max_size=40), seed=st.integers(0, 1 << 32))
def test_the_root_and_the_store_depend_only_on_the_final_key_set(items, seed):
    """One batch, key by key in a shuffled order, or a bulk load: the same
    tiles byte for byte, and values overwritten on the way leave no trace."""
    rng = random.Random(seed)
    order = list(items)
    rng.shuffle(order)
    one_by_one = MemoryStore()
    tree = SparseMerkleMap(one_by_one, PREFIX)
    for key in order:
        commit(one_by_one, tree, {key: rng.randbytes(32)})  # a value replaced below
    for key in order:
        commit(one_by_one, tree, {key: items[key]})
    at_once = MemoryStore()
    commit(at_once, SparseMerkleMap(at_once, PREFIX), items)
    loaded = MemoryStore()
    assert SparseMerkleMap(loaded, PREFIX).load(items.items()) == ref_hash(items)
    assert tree.root() == ref_hash(items)
    assert stored(one_by_one) == stored(at_once) == stored(loaded) == ref_store(items)
    assert SparseMerkleMap(loaded, PREFIX).root() == ref_hash(items)


def test_the_empty_map_and_the_one_leaf_map():
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    key = sha256(b"only")
    assert tree.root() == EMPTY and stored(store) == {}
    assert tree.prove(key) == Proof(())
    verify(EMPTY, key, None, tree.prove(key))
    assert tree.update({}).root == EMPTY
    commit(store, tree, {key: value_of(1)})
    # One leaf is its own root, stored in slot 0 of the depth-0 tile.
    assert tree.root() == leaf_hash(key, value_of(1))
    assert stored(store) == {PREFIX + b"\x00\x00": b"\x80\x00" + b"\x10" + key + value_of(1)}
    assert tree.prove(key) == Proof((), (key, value_of(1)))
    other = flip(key, 255)
    assert tree.prove(other) == Proof((), (key, value_of(1)))  # non-membership: another leaf
    verify(tree.root(), other, None, tree.prove(other))


def test_the_tile_layout_of_a_small_tree():
    """docs/state.md's example: keys 0000..., 0100..., 0110..."""
    k1, k2, k3 = bytes(32), b"\x40" + bytes(31), b"\x60" + bytes(31)
    v1, v2, v3 = value_of(1), value_of(2), value_of(3)
    store = MemoryStore()
    commit(store, SparseMerkleMap(store, PREFIX), {k1: v1, k2: v2, k3: v3})
    l1, l2, l3 = leaf_hash(k1, v1), leaf_hash(k2, v2), leaf_hash(k3, v3)
    b = node_hash(l2, l3)
    a = node_hash(l1, b)
    # depth 0: slot 0 = node(A, EMPTY); depth 1: slot 1 = A; depth 2: slots
    # 3 (leaf k1) and 4 (B); depth 3: slots 9, 10 (leaves k2, k3).
    tile = (0b1101_1000_0110_0000).to_bytes(2, "big") + b"".join([
        b"\x11" + a + EMPTY, b"\x11" + l1 + b, b"\x10" + k1 + v1, b"\x11" + l2 + l3,
        b"\x10" + k2 + v2, b"\x10" + k3 + v3,
    ])
    assert stored(store) == {PREFIX + b"\x00\x00": tile}
    assert SparseMerkleMap(store, PREFIX).root() == node_hash(a, EMPTY)


def test_leaves_that_differ_only_in_the_last_bit_sit_at_depth_256():
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    key = sha256(b"deep")
    twin = flip(key, 255)
    commit(store, tree, {key: value_of(1)})
    commit(store, tree, {twin: value_of(2)})
    items = {key: value_of(1), twin: value_of(2)}
    assert stored(store) == ref_store(items)
    proof = tree.prove(twin)
    assert len(proof.siblings) == 256 and proof.leaf == (twin, value_of(2))
    assert proof.siblings[-1] == leaf_hash(key, value_of(1))
    assert set(proof.siblings[:-1]) == {EMPTY}
    assert_agrees(tree, items, [flip(key, 254), flip(key, 0)])
    assert Proof.decode(proof.encode()) == proof and len(proof.encode()) <= PROOF_BYTES_MAX


def test_load_requires_an_empty_map_and_distinct_keys():
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    key = sha256(b"k")
    with pytest.raises(MapError):
        tree.load([(key, value_of(1)), (key, value_of(2))])
    assert tree.load([]) == EMPTY
    tree.load([(key, value_of(1))])
    with pytest.raises(MapError):
        tree.load([(sha256(b"j"), value_of(1))])


@pytest.mark.parametrize("changes", [
    {b"short": bytes(32)}, {bytes(32): b"short"}, {"text" * 8: bytes(32)}, {bytes(32): None},
])
def test_malformed_changes_are_refused(changes):
    tree = SparseMerkleMap(MemoryStore(), PREFIX)
    with pytest.raises(MapError):
        tree.update(changes)
    with pytest.raises(MapError):
        tree.load(changes.items())


@pytest.mark.parametrize("cache_depth", [-4, 3, 260, 4.0])
def test_cache_depth_is_a_multiple_of_the_tile_height(cache_depth):
    with pytest.raises(MapError):
        SparseMerkleMap(MemoryStore(), PREFIX, cache_depth=cache_depth)


# -- updates and the committed state ----------------------------------------------


def test_an_update_changes_nothing_until_written_and_committed():
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    base = {sha256(b"%d" % i): value_of(i) for i in range(50)}
    commit(store, tree, base)
    before, root = stored(store), tree.root()
    proofs = {key: tree.prove(key) for key in base}

    changes = {sha256(b"new %d" % i): value_of(-i) for i in range(20)} | {next(iter(base)): value_of("x")}
    update = tree.update(changes)
    assert update.base_root == root and update.root == ref_hash({**base, **changes})
    assert stored(store) == before and tree.root() == root
    assert {key: tree.prove(key) for key in base} == proofs
    batch = WriteBatch()
    update.add_to(batch)
    store.write(batch)
    tree.committed(update)
    assert tree.root() == update.root
    assert_agrees(tree, {**base, **changes}, [sha256(b"absent")])


def test_competing_updates_from_one_state_only_the_committed_one_counts():
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX, cache_depth=4)
    base = {sha256(b"%d" % i): value_of(i) for i in range(40)}
    commit(store, tree, base)
    first = tree.update({sha256(b"first"): value_of("a"), next(iter(base)): value_of("b")})
    second = tree.update({sha256(b"second"): value_of("c")})
    assert first.base_root == second.base_root == tree.root()
    assert first.root != second.root
    batch = WriteBatch()
    second.add_to(batch)
    store.write(batch)
    tree.committed(second)
    with pytest.raises(MapError):
        tree.committed(first)  # computed from a state that is no longer committed
    assert tree.root() == ref_hash({**base, sha256(b"second"): value_of("c")})
    assert_agrees(tree, {**base, sha256(b"second"): value_of("c")}, [sha256(b"first")])


def test_setting_a_key_to_its_value_puts_nothing():
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    items = {sha256(b"%d" % i): value_of(i) for i in range(30)}
    commit(store, tree, items)
    update = tree.update(dict(list(items.items())[:10]))
    assert update.root == tree.root() and update.puts == []


class CountingStore:
    """A MemoryStore wrapper that counts point reads."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.reads = 0

    def get(self, key):
        self.reads += 1
        return self.inner.get(key)

    def write(self, batch, sync=True):
        self.inner.write(batch, sync)

    def iterate(self, prefix, start=None, reverse=False):
        return self.inner.iterate(prefix, start, reverse)

    def close(self):
        self.inner.close()


def test_a_proof_reads_one_tile_per_band_below_the_cache():
    store = CountingStore()
    items = {sha256(b"%d" % i): value_of(i) for i in range(3000)}
    SparseMerkleMap(store, PREFIX).load(items.items())
    tree = SparseMerkleMap(store, PREFIX, cache_depth=8)
    tree.warm_cache()
    for key in [*list(items)[:200], *(sha256(b"absent %d" % i) for i in range(50))]:
        store.reads = 0
        proof = tree.prove(key)
        # The walk reads positions down to depth len(siblings) (its leaf) or
        # one above (the node whose child is EMPTY): the tiles of bands 8, 12, ...
        deepest = len(proof.siblings) - (proof.leaf is None)
        assert store.reads == max(0, deepest // 4 - 8 // 4 + 1)


def test_a_batch_reads_and_rebuilds_each_touched_tile_once():
    store = CountingStore()
    items = {sha256(b"%d" % i): value_of(i) for i in range(2000)}
    SparseMerkleMap(store, PREFIX).load(items.items())
    tree = SparseMerkleMap(store, PREFIX, cache_depth=4)
    changes = {sha256(b"new %d" % i): value_of(i) for i in range(300)}
    changes.update((key, value_of("changed")) for key in list(items)[:300])
    store.reads = 0
    update = tree.update(changes)
    before, after = ref_store(items), ref_store({**items, **changes})
    changed = {key for key, value in after.items() if before.get(key) != value}
    assert [key for key, _ in update.puts if key in before] == [key for key, _ in update.puts if key in changed & set(before)]
    assert {key for key, _ in update.puts} == changed
    # Every tile put that existed before was read once; new tiles are not read,
    # except the cached band, read through the cache.
    assert store.reads <= len(changed & set(before))


@pytest.mark.parametrize("damage", ["delete", "truncate", "garble tag"])
def test_a_missing_or_malformed_tile_is_reported_as_corruption(damage):
    store = MemoryStore()
    items = {sha256(b"%d" % i): value_of(i) for i in range(100)}
    SparseMerkleMap(store, PREFIX).load(items.items())
    key = next(iter(items))
    proof = SparseMerkleMap(store, PREFIX).prove(key)
    depth = len(proof.siblings) // 4 * 4  # the tile of the key's leaf
    size = (depth + 7) // 8
    path = int.from_bytes(key, "big") >> (256 - depth) << (8 * size - depth)
    tile_key = PREFIX + depth.to_bytes(2, "big") + path.to_bytes(size, "big")
    tile = store.get(tile_key)
    broken = WriteBatch()
    if damage == "delete":
        broken.delete(tile_key)
    elif damage == "truncate":
        broken.put(tile_key, tile[:-1])
    else:
        broken.put(tile_key, tile[:2] + b"\x07" + tile[3:])
    store.write(broken)
    tree = SparseMerkleMap(store, PREFIX, cache_depth=0)
    with pytest.raises(MissingNodeError):
        tree.prove(key)
    with pytest.raises(MissingNodeError):
        tree.update({flip(key, 255): value_of("x")})


# -- proofs --------------------------------------------------------------------------


def small_map() -> tuple[SparseMerkleMap, dict[bytes, bytes]]:
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    items = {sha256(b"%d" % i): value_of(i) for i in range(64)}
    base = sha256(b"twins")
    items.update({base: value_of("t0"), flip(base, 255): value_of("t1"), flip(base, 200): value_of("t2")})
    commit(store, tree, items)
    return tree, items


def test_membership_and_both_kinds_of_non_membership_proofs_verify():
    tree, items = small_map()
    root = tree.root()
    for key, value_hash in items.items():
        proof = tree.prove(key)
        assert proof.leaf == (key, value_hash)
        verify(root, key, value_hash, proof)
        assert proven_value_hash(root, key, proof) == value_hash
    kinds = set()
    for index in range(200):
        key = sha256(b"absent %d" % index)
        proof = tree.prove(key)
        kinds.add(proof.leaf is None)
        verify(root, key, None, proof)
        assert proven_value_hash(root, key, proof) is None
        assert root_from_proof(proof, key, None) == root
    assert kinds == {True, False}  # ended at EMPTY, and at another key's leaf
    base = sha256(b"twins")
    for key in (flip(base, 254), flip(base, 201), flip(base, 200, 255)):  # share 200+ bits with leaves
        proof = tree.prove(key)
        assert len(proof.siblings) > 200
        verify(root, key, None, proof)


def tamperings(proof: Proof, rng: random.Random):
    """Proofs that differ from `proof` and must not verify its statement
    (EMPTY padding below a lone terminal is not among them: it proves the
    same thing, see test_empty_padding_below_a_lone_terminal_proves_the_same)."""
    siblings = list(proof.siblings)
    for index, sibling in enumerate(siblings):
        position = rng.randrange(256)
        flipped = bytes([sibling[position // 8] ^ 1 << position % 8])
        yield Proof(tuple(siblings[:index] + [sibling[:position // 8] + flipped + sibling[position // 8 + 1:]]
                          + siblings[index + 1:]), proof.leaf)
        yield Proof(tuple(siblings[:index] + siblings[index + 1:]), proof.leaf)
        yield Proof(tuple(siblings[:index] + [EMPTY if sibling != EMPTY else rng.randbytes(32)]
                          + siblings[index + 1:]), proof.leaf)
    for index in range(len(siblings) + 1):
        yield Proof(tuple(siblings[:index] + [rng.randbytes(32)] + siblings[index:]), proof.leaf)
        if index < len(siblings):
            yield Proof(tuple(siblings[:index] + [EMPTY] + siblings[index:]), proof.leaf)
    if proof.leaf is not None:
        key, value_hash = proof.leaf
        yield Proof(proof.siblings, None)
        yield Proof(proof.siblings, (key, rng.randbytes(32)))
        yield Proof(proof.siblings, (flip(key, 255), value_hash))
    else:
        yield Proof(proof.siblings, (rng.randbytes(32), rng.randbytes(32)))


def test_every_tampering_of_a_proof_fails():
    tree, items = small_map()
    root = tree.root()
    rng = random.Random(7)
    cases = [(key, items[key]) for key in list(items)[::9]]
    cases += [(sha256(b"absent %d" % i), None) for i in range(12)]
    cases += [(flip(sha256(b"twins"), 254), None)]
    for key, value_hash in cases:
        proof = tree.prove(key)
        for tampered in tamperings(proof, rng):
            with pytest.raises(ProofError):
                verify(root, key, value_hash, tampered)
        # The right proof, the wrong statement.
        with pytest.raises(ProofError):
            verify(root, key, rng.randbytes(32), proof)
        with pytest.raises(ProofError):
            verify(root, key, None if value_hash is not None else value_of("claimed"), proof)
        with pytest.raises(ProofError):
            verify(rng.randbytes(32), key, value_hash, proof)
    # A proof of one key says nothing about another.
    some, other = list(items)[:2]
    with pytest.raises(ProofError):
        verify(root, other, items[some], tree.prove(some))


def test_empty_padding_below_a_lone_terminal_proves_the_same():
    """The compression rule folds EMPTY siblings under a lone leaf or EMPTY
    away, so a padded proof reaches the same root; its terminal must still
    share the key's path to the new depth, and its statement stays true."""
    tree, items = small_map()
    root = tree.root()
    key = next(iter(items))
    proof = tree.prove(key)
    padded = Proof(proof.siblings + (EMPTY,) * 3, proof.leaf)
    verify(root, key, items[key], padded)
    with pytest.raises(ProofError):
        verify(root, key, None, padded)
    absent = flip(key, len(proof.siblings) + 5)  # shares 5 more bits with key's leaf
    verify(root, absent, None, tree.prove(absent))
    too_deep = Proof(proof.siblings + (EMPTY,) * 8, proof.leaf)
    with pytest.raises(ProofError):  # key's leaf does not share absent's first bits that deep
        verify(root, absent, None, too_deep)


def test_no_proof_over_a_small_universe_proves_anything_false():
    """Exhaustive forgery search. Keys differ in their first two bits only;
    for several maps, every proof of up to 3 siblings drawn from the map's
    own subtree hashes (and EMPTY, and a stranger) with every terminal drawn
    from its leaves (and strangers) either fails or states the truth."""
    universe = [flip(sha256(b"u"), *depths) for depths in [(), (0,), (1,), (0, 1)]]
    universe = [bytes([key[0] & 0x3F]) + key[1:] for key in universe]  # bits 0, 1 vary; the rest equal
    outsider = flip(universe[0], 255)
    rng = random.Random(3)
    for mask in (0b0001, 0b0011, 0b0101, 0b1110, 0b1111):
        items = {key: value_of(index) for index, key in enumerate(universe) if mask >> index & 1}
        root = ref_hash(items)
        pool = {EMPTY, rng.randbytes(32)}
        for depth in range(4):
            for path in range(1 << depth):
                under = {k: v for k, v in items.items() if int.from_bytes(k, "big") >> (256 - depth) == path}
                pool.add(ref_hash(under, depth))
        pool |= {leaf_hash(k, v) for k, v in items.items()}
        terminals = [None, *items.items(), (universe[0], value_of("forged")), (outsider, value_of(0))]
        accepted = 0
        for length in range(4):
            for siblings in itertools.product(sorted(pool), repeat=length):
                for leaf in terminals:
                    proof = Proof(siblings, leaf)
                    for key in [*universe, outsider]:
                        claim = leaf[1] if leaf is not None and leaf[0] == key else None
                        try:
                            verify(root, key, claim, proof)
                        except ProofError:
                            continue
                        accepted += 1
                        assert items.get(key) == claim, (mask, key.hex(), siblings, leaf)
        assert accepted >= len(universe)


def test_hashes_are_domain_separated_and_empty_is_zero():
    key, value_hash = sha256(b"k"), sha256(b"v")
    assert EMPTY == bytes(32)
    assert leaf_hash(key, value_hash) == sha256(b"\x10" + key + value_hash)
    assert node_hash(key, value_hash) == sha256(b"\x11" + key + value_hash)
    assert subtree_hash([], 0) == EMPTY
    assert subtree_hash([(key, value_hash)], 9) == leaf_hash(key, value_hash)
    items = {sha256(b"%d" % i): value_of(i) for i in range(30)}
    assert subtree_hash(sorted(items.items()), 0) == ref_hash(items)


# -- the wire ------------------------------------------------------------------------


def test_encodings_round_trip_and_are_compact():
    tree, items = small_map()
    for key in [*list(items)[:10], sha256(b"absent"), flip(sha256(b"twins"), 254)]:
        proof = tree.prove(key)
        data = proof.encode()
        assert Proof.decode(data) == proof
        assert Proof.from_json(proof.to_json()) == proof
        empty = proof.siblings.count(EMPTY)
        assert len(data) == 2 + (len(proof.siblings) + 7) // 8 + 32 * (len(proof.siblings) - empty) + (
            1 if proof.leaf is None else 65)
    document = Proof((EMPTY, b"\xab" * 32), (b"\x01" * 32, b"\x02" * 32)).to_json()
    assert document == {"siblings": ["", "ab" * 32], "leaf": {"key": "01" * 32, "value_hash": "02" * 32}}
    assert Proof((), None).encode() == b"\x00\x00\x00"
    assert Proof((EMPTY, b"\xab" * 32)).encode() == b"\x00\x02\x40" + b"\xab" * 32 + b"\x00"


GOOD = Proof((EMPTY, b"\xab" * 32, EMPTY), (b"\x01" * 32, b"\x02" * 32)).encode()


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "no sibling count"),
    (GOOD[:-1], "truncated leaf"),
    (GOOD + b"\x00", "trailing"),
    (GOOD[:3 + 32], "no terminal"),
    (GOOD[:3 + 32] + b"\x02", "unknown terminal"),
    (b"\x00\x03\x41" + GOOD[3:], "padding bits"),
    (b"\x00\x03\x60" + b"\xab" * 40, "truncated sibling hash"),
    (b"\x00\x01\x80" + bytes(32) + b"\x00", "all zero"),
    (b"\x01\x01" + bytes(33) + b"\x00", "at most 256"),
    (b"\x00\x09\x00", "truncated sibling bitmap"),
    (bytes(PROOF_BYTES_MAX + 1), "at most"),
])
def test_malformed_proof_bytes_are_refused_with_a_reason(data, reason):
    with pytest.raises(ProofError, match=reason):
        Proof.decode(data)


@pytest.mark.parametrize("document", [
    None, [], {"siblings": []}, {"siblings": [], "leaf": None, "extra": 1},
    {"siblings": "", "leaf": None}, {"siblings": ["00" * 32], "leaf": None},
    {"siblings": ["AB" * 32], "leaf": None}, {"siblings": ["ab" * 31], "leaf": None},
    {"siblings": [" ab" * 32], "leaf": None}, {"siblings": [None], "leaf": None},
    {"siblings": [""] * 257, "leaf": None}, {"siblings": [], "leaf": {"key": "01" * 32}},
    {"siblings": [], "leaf": {"key": "01" * 32, "value_hash": "02" * 33}},
    {"siblings": [], "leaf": ["01" * 32, "02" * 32]},
])
def test_malformed_proof_json_is_refused(document):
    with pytest.raises(ProofError):
        Proof.from_json(document)


@pytest.mark.parametrize(("siblings", "leaf"), [
    ([EMPTY], None), ((b"short",), None), ((EMPTY,) * 257, None), ((), (b"k" * 32,)),
    ((), (b"k" * 32, b"v" * 31)), ((), [b"k" * 32, b"v" * 32]), (("ab" * 32,), None),
])
def test_proofs_are_validated_on_construction(siblings, leaf):
    with pytest.raises(ProofError):
        Proof(siblings, leaf)


@pytest.mark.parametrize("arguments", [
    (b"r" * 31, b"k" * 32, None), (b"r" * 32, b"k" * 31, None), (b"r" * 32, b"k" * 32, b"v"),
    ("r" * 32, b"k" * 32, None),
])
def test_verify_refuses_malformed_arguments(arguments):
    root, key, value_hash = arguments
    with pytest.raises(ProofError):
        verify(root, key, value_hash, Proof(()))
    with pytest.raises(ProofError):
        verify(b"r" * 32, b"k" * 32, None, Proof(()).to_json())


# -- prefix proofs ----------------------------------------------------------------------


def under(items: dict[bytes, bytes], prefix: bytes, bits: int) -> list[tuple[bytes, bytes]]:
    top = int.from_bytes(prefix[:8].ljust(8, b"\x00"), "big") >> (64 - bits)
    return sorted((k, v) for k, v in items.items() if int.from_bytes(k[:8], "big") >> (64 - bits) == top)


def prefix_map() -> tuple[SparseMerkleMap, dict[bytes, bytes]]:
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    items = {sha256(b"%d" % i): value_of(i) for i in range(300)}
    base = b"\x5a" * 8 + bytes(24)  # a cluster sharing 40..63 bits
    items.update({flip(base, depth): value_of(depth) for depth in range(40, 64)})
    items[base] = value_of("base")
    commit(store, tree, items)
    return tree, items


def test_prefix_proofs_prove_complete_sets():
    tree, items = prefix_map()
    root = tree.root()
    rng = random.Random(5)
    prefixes = [rng.randbytes(8) for _ in range(16)] + [k[:8] for k in list(items)[:8]] + [b"\x5a" * 8]
    seen = set()
    for prefix in prefixes:
        for bits in (2, 7, 8, 9, 12, 40, 50, 63, 64):
            proof = tree.prove_prefix(prefix, bits)
            expected = under(items, prefix, bits)
            assert verify_prefix(root, prefix, bits, proof) == expected
            assert root_from_prefix_proof(proof, prefix, bits) == (root, expected)
            assert PrefixProof.decode(proof.encode()) == proof
            assert PrefixProof.from_json(proof.to_json()) == proof
            # Which shape: stopped at the prefix depth, or above it at EMPTY / a leaf that does or does not match.
            stopped_above = len(proof.siblings) < bits
            seen.add((stopped_above, len(proof.leaves), len(expected) == len(proof.leaves)))
    assert {(True, 0, True), (True, 1, True), (True, 1, False), (False, 0, True)} <= seen
    assert any(not above and count > 1 for above, count, _ in seen)


def test_a_lone_leaf_above_the_prefix_depth():
    """One leaf far from the others: the walk along any prefix below its
    position stops at it. It is the whole answer if it matches the prefix,
    and proves the prefix empty if it does not."""
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    lone = b"\x80" + bytes(31)
    others = {bytes([0, i]) + bytes(30): value_of(i) for i in range(5)}
    commit(store, tree, {lone: value_of("lone"), **others})
    root = tree.root()
    proof = tree.prove_prefix(b"\x80\x00", 16)
    assert len(proof.siblings) == 1 and proof.leaves == ((lone, value_of("lone")),)
    assert verify_prefix(root, b"\x80\x00", 16, proof) == [(lone, value_of("lone"))]
    proof = tree.prove_prefix(b"\x80\x01", 16)
    assert len(proof.siblings) == 1 and proof.leaves == ((lone, value_of("lone")),)
    assert verify_prefix(root, b"\x80\x01", 16, proof) == []
    # The same proof read for a prefix off the leaf's path does not verify.
    with pytest.raises(ProofError):
        verify_prefix(root, b"\x00\x01", 16, proof)


def test_every_tampering_of_a_prefix_proof_fails():
    tree, items = prefix_map()
    root = tree.root()
    rng = random.Random(11)
    base = b"\x5a" * 8
    cases = [(base, 44), (base, 60), (list(items)[0][:8], 4), (list(items)[1][:8], 5)]
    for prefix, bits in cases:
        proof = tree.prove_prefix(prefix, bits)
        leaves, siblings = list(proof.leaves), list(proof.siblings)
        assert len(leaves) >= 2
        stranger = (flip(leaves[0][0], 255), value_of("stranger"))
        forged = [
            PrefixProof(proof.siblings, tuple(leaves[1:])),  # drop a leaf
            PrefixProof(proof.siblings, tuple(leaves[:-1])),
            PrefixProof(proof.siblings, tuple(sorted(leaves + [stranger]))),  # add one
            PrefixProof(proof.siblings, ((leaves[0][0], rng.randbytes(32)), *leaves[1:])),  # alter a value
            PrefixProof(proof.siblings[:-1], proof.leaves),
            PrefixProof((*proof.siblings, EMPTY), proof.leaves),
        ]
        for index, sibling in enumerate(siblings):
            forged.append(PrefixProof(tuple(siblings[:index] + [rng.randbytes(32)] + siblings[index + 1:]),
                                      proof.leaves))
        for tampered in forged:
            with pytest.raises(ProofError):
                verify_prefix(root, prefix, bits, tampered)
        with pytest.raises(ProofError):
            verify_prefix(root, flip(prefix.ljust(32, b"\x00"), bits - 1)[:8], bits, proof)
        with pytest.raises(ProofError):
            verify_prefix(rng.randbytes(32), prefix, bits, proof)


def test_too_many_leaves_under_a_prefix_is_refused():
    tree, items = prefix_map()
    with pytest.raises(TooManyLeavesError):
        tree.prove_prefix(b"\x00", 1, leaves_max=100)
    proof = tree.prove_prefix(b"\x00", 1, leaves_max=1000)
    assert len(proof.leaves) == len(under(items, b"\x00", 1))
    with pytest.raises(ProofError):
        PrefixProof.decode(proof.encode(), leaves_max=10)


@pytest.mark.parametrize(("prefix", "bits"), [
    (b"", 1), (b"\x00", 0), (b"\x00", 9), (b"\x00" * 9, 65), (b"\x00" * 33, 8), ("00", 8), (b"\x00", True),
])
def test_bad_prefixes_are_refused(prefix, bits):
    tree, _ = prefix_map()
    with pytest.raises(MapError):
        tree.prove_prefix(prefix, bits)
    with pytest.raises(ProofError):
        verify_prefix(tree.root(), prefix, bits, PrefixProof(()))


def test_a_prefix_proof_is_strictly_shaped():
    leaf = (b"\x80" + bytes(31), value_of(1))
    other = (b"\x81" + bytes(31), value_of(2))
    with pytest.raises(ProofError):  # leaves out of order
        PrefixProof((), (other, leaf))
    with pytest.raises(ProofError):  # duplicate
        PrefixProof((), (leaf, leaf))
    with pytest.raises(ProofError):  # more siblings than prefix bits
        root_from_prefix_proof(PrefixProof((EMPTY,) * 3, ()), b"\x80", 2)
    with pytest.raises(ProofError):  # a walk that stops early ends at one leaf at most
        root_from_prefix_proof(PrefixProof((), (leaf, other)), b"\x80", 8)
    with pytest.raises(ProofError):  # a leaf off the prefix at the prefix depth
        root_from_prefix_proof(PrefixProof((EMPTY,) * 8, (other,)), b"\x80", 8)
    good = PrefixProof((EMPTY, b"\xab" * 32), (leaf,)).encode()
    for data in (good[:-1], good + b"\x00", good[:3 + 32 + 3]):
        with pytest.raises(ProofError):
            PrefixProof.decode(data)
    with pytest.raises(ProofError):
        PrefixProof.from_json({"siblings": [], "leaves": [{"key": "80" * 32, "value_hash": "01" * 32}] * 2})


def test_the_vectors_of_docs_state_md():
    items = {sha256(b"key %d" % i): sha256(b"value %d" % i) for i in range(4)}
    store = MemoryStore()
    tree = SparseMerkleMap(store, PREFIX)
    tree.load(items.items())
    root = bytes.fromhex("0b87f496669857745ace740a896086fdcfcaa9d9843e75e3f2a8cdefe32eb199")
    assert tree.root() == ref_hash(items) == root
    member = bytes.fromhex(
        "000240bf2efa75baaf2c03b368d6ef27f9d4e69959b08dcc021793f46b43164d25089e"
        "0149ac5de219edae62f9fdeea0fc3f3af48fd832f22fac50820ac11174d6e068bd"
        "f2a69722b820ceb39ae47f76059ccbfb57584ae46c37304c6ed77f5f500b81cd")
    key_0 = sha256(b"key 0")
    assert tree.prove(key_0).encode() == member
    verify(root, key_0, sha256(b"value 0"), Proof.decode(member))
    assert tree.prove(sha256(b"absent 0")).encode() == member
    verify(root, sha256(b"absent 0"), None, Proof.decode(member))
    absent = bytes.fromhex("0001806d467096ef1704cd335bda74a31a9ef74a6fec8e36feaded037d0eff5bea3c9a00")
    assert tree.prove(sha256(b"absent 2")).encode() == absent
    verify(root, sha256(b"absent 2"), None, Proof.decode(absent))
    prefix = member[:-65] + (1).to_bytes(4, "big") + member[-64:]
    assert tree.prove_prefix(b"\x40", 2).encode() == prefix
    assert verify_prefix(root, b"\x40", 2, PrefixProof.decode(prefix)) == [(key_0, sha256(b"value 0"))]

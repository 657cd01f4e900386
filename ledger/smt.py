r"""The authenticated map: a compressed sparse Merkle tree stored in tiles.

Theory of operation
-------------------
`ledger.smt_proof` fixes the tree (docs/state.md, "Authenticated map"):
256-bit key paths, a subtree with one leaf hashes to that leaf, an empty one
to EMPTY, any other to node_hash(left, right). This module keeps that tree
in a `Store` and builds its roots and proofs; it never sees entries, only
their 32-byte value hashes.

A position is (depth, the first `depth` bits of a path). Each non-empty
position of the canonical tree has a 65-byte value, the preimage of its
hash, so hash(position) = SHA-256(value):

    0x11 || left hash || right hash     a subtree with >= 2 leaves (a node)
    0x10 || leaf key  || value hash     a subtree with one leaf

Positions are stored in tiles of TILE_HEIGHT = 4 levels, like the 16-way
nodes of Diem's Jellyfish Merkle tree: the tile of band depth b (a multiple
of 4) at path p holds the non-empty positions of depths b .. b + 3 below
(b, p), in heap order (slot 0 is (b, p), the children of slot s are slots
2s + 1 (left) and 2s + 2 (right)):

                      slot 0                     depth b
               1                 2               depth b + 1
           3       4         5       6           depth b + 2
          7 8     9 10     11 12   13 14         depth b + 3
                                                 (depth b + 4: the next tiles)

    key    prefix || b (u16, big-endian) || the first ceil(b / 8) bytes of p,
           bits past b zeroed
    value  u16 bitmap (bit 15 - s set iff slot s is non-empty; bit 0 zero)
           || the values of the non-empty slots, in slot order

A tile exists iff its slot 0 is non-empty. A proof walk reads one tile per
four levels instead of one entry per level: at 10M random keys about 2.6
store reads below the cache instead of about 10, which is what keeps proofs
fast when the store is far larger than LevelDB's block cache. A tile holds
at most 15 values (977 bytes); one deep in a large tree holds a few.

Keys are never deleted, so a non-empty position stays non-empty: a leaf that
gains a neighbour is replaced, in the same slot, by a node, and moves down to
positions that were empty. Writes are only puts, and the store holds exactly
the tiles of the canonical tree (the tests check this against a reference).

Updates
-------
`update(changes)` computes the new root and the puts of a batch without
writing anything. It sorts the changed keys and descends the stored tree
once, splitting the sorted keys at each node's bit (a bisection), and down a
path alone once only one key is left, so a subtree with no change is neither
read nor hashed, and every changed position is read once and rebuilt once,
bottom-up. It works a tile at a time: the changed slots of a tile collect in
a small dict while the tiles below it are rebuilt, then the stored tile is
spliced (unchanged slots copied in runs) and put, once. The caller writes
`MapUpdate.puts` in its own batch and then calls `committed(update)`;
updates never touch the committed state, so competing proposals can be
computed from one state and all but one dropped. The update itself is
`ledger.smt_update`, which is also compiled (docs/native.md).

Cache
-----
Tiles of band depth < `cache_depth` (default 16, a multiple of 4: at most
4,369 tiles, under 5 MB) are kept in memory once read, one dict per band
keyed by the path as an int, and `committed` puts the new ones there.
`warm_cache` loads them all with one ordered scan per band.

Memory-only bands. A map built with `memory_depth` > 0 keeps the tiles of
band depth < `memory_depth` in that cache only: it never reads them from
the store nor writes them there. They are the tiles every batch rewrites
(depth 16: one per key, up to 65,536 of 977 bytes), so a map that need not
outlive its process (an audit without a saved state) spares its store most
of its writes and LevelDB most of its compaction, for at most
(16^(memory_depth / 4) - 1) / 15 tiles in memory: 68 MB at depth 20. Such a
map starts empty and its store holds only the tiles below `memory_depth`.

Derived bands. A map with memory-only bands may also store nothing below
them: given `leaves`, a function that lists the (key, value hash) pairs
under a position from the caller's own records (the state's entries, which
it writes anyway, one per key), each tile below `memory_depth` is rebuilt
from the leaves under it when it is read, and never written. A tile of a
large map rewritten for every new key then costs its leaves' hashes instead
of its bytes in the store (and LevelDB's merging of them, again at every
level): the audit, which never reopens its map, writes only its entries.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ledger.smt_proof import (
    EMPTY,
    HASH_SIZE,
    KEY_BITS,
    KEY_SIZE,
    LEAF_TAG,
    NODE_TAG,
    PREFIX_BITS_MAX,
    PrefixProof,
    Proof,
)
from ledger.smt_update import (
    DEPTH_MASK,
    PATH_SHIFT,
    TILE_HEIGHT,
    Builder,
    Leaves,
    MissingNodeError,
    Tiles,
    check_tile,
    slot_offsets,
    slot_value,
)
from ledger.store import Store, WriteBatch

CACHE_DEPTH = 16
LEAVES_MAX = 4096

_sha256 = hashlib.sha256
_first = operator.itemgetter(0)
_LEAF = LEAF_TAG[0]
_NODE = NODE_TAG[0]


class MapError(ValueError):
    """The caller misused the map: a malformed key or value hash, a bad
    prefix, an update committed out of turn."""


class TooManyLeavesError(MapError):
    """More leaves than allowed sit under the prefix asked for."""

    def __init__(self, leaves_max: int) -> None:
        super().__init__(f"more than {leaves_max} leaves under the prefix")
        self.leaves_max = leaves_max


@dataclass(frozen=True, slots=True)
class MapUpdate:
    """A batch of changes computed against one committed root.

    `puts` are the (store key, value) pairs to write, each key once; `root`
    is the map's root once they are written. Pass it to
    `SparseMerkleMap.committed` after the store write succeeded.
    """

    base_root: bytes
    root: bytes
    puts: list[tuple[bytes, bytes]]
    cached: list[tuple[int, int, bytes]] = field(default_factory=list, repr=False)
    """(band, path, tile) of the puts the map's cache keeps."""

    def add_to(self, batch: WriteBatch) -> None:
        """Append the puts to `batch`."""
        batch.ops.extend(self.puts)


# -- tiles ---------------------------------------------------------------------


def _slot_of(depth: int, path: int) -> int:
    """The slot of position (depth, path) in its tile."""
    row = depth & 3
    return (1 << row) - 1 + ((path >> (KEY_BITS - depth)) & ((1 << row) - 1))


class SparseMerkleMap:
    """A map of 32-byte keys to 32-byte value hashes in `store` under `prefix`.

    Invariant: the store holds, under `prefix`, exactly the tiles of the
    canonical tree of the committed state below `memory_depth` (plus, after
    an interrupted `load`, tiles no path reaches), and the cache exactly
    those above it; `root()` is the hash of slot 0 of the depth-0 tile (EMPTY
    if there is none); every other cached tile equals the stored one.
    """

    def __init__(self, store: Store, prefix: bytes, cache_depth: int = CACHE_DEPTH, memory_depth: int = 0,
                 leaves: Leaves | None = None) -> None:
        """`memory_depth` > 0: tiles above it live in memory only (module docstring); the
        map must then be empty in `store`, or MapError is raised. `leaves` (with
        `memory_depth` > 0): the tiles below it are derived from the leaves it gives,
        never stored (module docstring, "Derived bands")."""
        for name, depth in (("cache_depth", cache_depth), ("memory_depth", memory_depth)):
            if type(depth) is not int or not 0 <= depth <= KEY_BITS or depth % TILE_HEIGHT:
                raise MapError(f"{name} must be a multiple of {TILE_HEIGHT} in 0..{KEY_BITS}")
        if leaves is not None and not memory_depth:
            raise MapError("derived bands lie below memory-only ones: give a memory_depth")
        self._store = store
        self._prefix = bytes(prefix)
        # Derived tiles change without being rebuilt (`Builder.derived`): none is cached.
        cache_depth = memory_depth if leaves is not None else max(cache_depth, memory_depth)
        self._tiles = Tiles(store.get, self._prefix, memory_depth // TILE_HEIGHT, cache_depth // TILE_HEIGHT, leaves)
        self._fetch = self._tiles.fetch
        if self._tiles.memory_bands and store.get(self._tiles.key(0, 0)) is not None:
            raise MapError("a map with memory-only tiles starts empty; this store holds one")
        value = self._read(0, 0)
        self._root = EMPTY if value is None else _sha256(value).digest()

    # -- reading -----------------------------------------------------------------

    def root(self) -> bytes:
        """The committed root: EMPTY for the empty map."""
        return self._root

    def value_hash(self, key: bytes) -> bytes | None:
        """The committed value hash of `key`, or None if the map lacks it."""
        leaf = self.prove(key).leaf
        return leaf[1] if leaf is not None and leaf[0] == key else None

    def prove(self, key: bytes) -> Proof:
        """The proof of `key` (membership or non-membership) against `root()`.

        Reads the tiles on the key's path below `cache_depth`: in a map of n
        random keys, about (log2(n) + 1.3 - cache_depth) / 4 + 0.5 of them.
        """
        path = _key_int(key)
        tile = self._fetch(0, path)
        if tile is None:
            return Proof(())
        # The proof server's hot loop: slot offsets from a table, one slice a
        # level, locals only, one fetch per tile; the parts are slices of
        # checked tiles, so the proof is built without checking them again.
        fetch = self._fetch
        node, leaf, empty = _NODE, _LEAF, EMPTY
        siblings: list[bytes] = []
        append = siblings.append
        depth = 0
        slot = 0
        offsets = slot_offsets(tile[0] << 8 | tile[1])
        while True:
            offset = offsets[slot]
            tag = tile[offset]
            if tag == node:
                if path >> (255 - depth) & 1:
                    append(tile[offset + 1:offset + 33])
                    offset += 33
                    slot = 2 * slot + 2
                else:
                    append(tile[offset + 33:offset + 65])
                    offset += 1
                    slot = 2 * slot + 1
                depth += 1
                if tile.startswith(empty, offset):  # the child is EMPTY
                    return Proof.from_checked_parts(tuple(siblings), None)
                if not depth & 3:
                    tile = fetch(depth >> 2, path)
                    if tile is None:
                        raise MissingNodeError(f"map tile at depth {depth} missing")
                    offsets = slot_offsets(tile[0] << 8 | tile[1])
                    slot = 0
            elif tag == leaf:
                return Proof.from_checked_parts(
                    tuple(siblings), (tile[offset + 1:offset + 33], tile[offset + 33:offset + 65]))
            elif offset == 0:  # an empty slot: offset 0 is the bitmap, >= 0x80, no tag
                raise MissingNodeError(f"map position at depth {depth} missing")
            else:
                raise MissingNodeError(f"map position at depth {depth} has an unknown tag")

    def prove_prefix(self, prefix: bytes, bits: int, leaves_max: int = LEAVES_MAX) -> PrefixProof:
        """The proof of every leaf whose key starts with the first `bits` bits
        of `prefix` (1 <= bits <= 64; `prefix` holds at least `bits` bits,
        later ones are ignored).

        Raises TooManyLeavesError as soon as it finds more than `leaves_max`
        leaves under the prefix.
        """
        if type(bits) is not int or not 0 < bits <= PREFIX_BITS_MAX:
            raise MapError(f"bits must be an int in 1..{PREFIX_BITS_MAX}, got {bits!r}")
        if type(prefix) is not bytes or not (bits + 7) // 8 <= len(prefix) <= KEY_SIZE:
            raise MapError(f"prefix must be {(bits + 7) // 8}..{KEY_SIZE} bytes for {bits} bits")
        path = int.from_bytes(prefix, "big") << (KEY_BITS - 8 * len(prefix)) & DEPTH_MASK[bits]
        if self._root == EMPTY:
            return PrefixProof(())
        siblings: list[bytes] = []
        value = self._child(0, 0)
        depth = 0
        while depth < bits and value[0] == _NODE:
            if path >> (255 - depth) & 1:
                siblings.append(value[1:33])
                child = value[33:]
            else:
                siblings.append(value[33:])
                child = value[1:33]
            depth += 1
            if child == EMPTY:
                return PrefixProof(tuple(siblings))
            value = self._child(depth, path)
        if value[0] == _LEAF:  # at the prefix depth or above it
            return PrefixProof(tuple(siblings), ((value[1:33], value[33:]),))
        return PrefixProof(tuple(siblings), tuple(self._leaves_under(depth, path, value, leaves_max)))

    def _leaves_under(self, depth: int, path: int, value: bytes, leaves_max: int) -> list[tuple[bytes, bytes]]:
        """Every leaf below the node `value` at (depth, path), in key order."""
        leaves: list[tuple[bytes, bytes]] = []
        stack = [(depth, path, value)]
        while stack:
            depth, path, value = stack.pop()
            if value[0] == _LEAF:
                if len(leaves) == leaves_max:
                    raise TooManyLeavesError(leaves_max)
                leaves.append((value[1:33], value[33:]))
                continue
            right_path = path | 1 << (255 - depth)
            if value[33:] != EMPTY:
                stack.append((depth + 1, right_path, self._child(depth + 1, right_path)))
            if value[1:33] != EMPTY:
                stack.append((depth + 1, path, self._child(depth + 1, path)))
        return leaves

    # -- writing -----------------------------------------------------------------

    def update(self, changes: Mapping[bytes, bytes]) -> MapUpdate:
        """The root and store puts that set each key of `changes` to its value
        hash; changes nothing (neither the store nor this object's state).

        Requires 32-byte keys and value hashes; raises MapError otherwise.
        """
        for key, value_hash in changes.items():
            if type(key) is not bytes or len(key) != KEY_SIZE:
                raise MapError("keys must be 32 bytes")
            if type(value_hash) is not bytes or len(value_hash) != HASH_SIZE:
                raise MapError("value hashes must be 32 bytes")
        if not changes:
            return MapUpdate(self._root, self._root, [], [])
        builder = self._builder(sorted(changes.items(), key=_first))
        root = builder.run()
        return MapUpdate(self._root, root, builder.puts, builder.cached)

    def committed(self, update: MapUpdate) -> None:
        """The caller wrote `update.puts` to the store: follow it.

        Requires `update` computed from the current committed state; raises
        MapError (changing nothing) otherwise.
        """
        if update.base_root != self._root:
            raise MapError("the update was computed from another state than the committed one")
        self._tiles.keep(update.cached)
        self._root = update.root

    def load(self, items: Iterable[tuple[bytes, bytes]], sync: bool = True) -> bytes:
        """Fill an empty map with (key, value hash) pairs, writing to the store
        in batches of about `ledger.smt_update.LOAD_PUTS_MAX` puts; returns the new root.

        For a first load (a bulk import, a benchmark): the same tree as
        `update`, built without reading the store or holding all its puts in
        memory. The root tile is written last, so an interrupted load leaves
        an empty map (and unreachable tiles that later writes overwrite).
        Requires an empty map and distinct 32-byte keys; raises MapError
        otherwise.
        """
        if self._root != EMPTY:
            raise MapError("load requires an empty map")
        pairs = sorted(items, key=_first)
        for index, (key, value_hash) in enumerate(pairs):
            if type(key) is not bytes or len(key) != KEY_SIZE:
                raise MapError("keys must be 32 bytes")
            if type(value_hash) is not bytes or len(value_hash) != HASH_SIZE:
                raise MapError("value hashes must be 32 bytes")
            if index and key == pairs[index - 1][0]:
                raise MapError(f"key {key.hex()} appears twice")
        if not pairs:
            return EMPTY
        store = self._store

        def flush(puts: list[tuple[bytes, bytes]]) -> None:
            batch = WriteBatch()
            batch.put_all(puts)
            store.write(batch, sync=False)
            puts.clear()

        builder = self._builder(pairs, flush)
        root = builder.run()
        batch = WriteBatch()
        batch.put_all(builder.puts)
        store.write(batch, sync=sync)
        self.committed(MapUpdate(self._root, root, [], builder.cached))
        return root

    def warm_cache(self) -> None:
        """Load every tile above `cache_depth` now: one ordered scan per band."""
        key_size = len(self._prefix) + 2
        tiles = self._tiles
        for band in range(tiles.memory_bands, tiles.cache_bands):
            depth = band * TILE_HEIGHT
            level = tiles.cache[band]
            shift = PATH_SHIFT[depth]
            for key, tile in self._store.iterate(tiles.band_keys[band]):
                path = int.from_bytes(key[key_size:], "big") << shift >> (KEY_BITS - depth)
                level[path] = check_tile(tile, band)

    # -- internals -----------------------------------------------------------------

    def _builder(self, items: list[tuple[bytes, bytes]],
                 flush: Callable[[list[tuple[bytes, bytes]]], None] | None = None) -> Builder:
        return Builder(self._tiles, self._root, items, flush)

    def _read(self, depth: int, path: int) -> bytes | None:
        """The committed value of position (depth, first `depth` bits of `path`), or None."""
        tile = self._fetch(depth >> 2, path)
        return None if tile is None else slot_value(tile, _slot_of(depth, path))

    def _child(self, depth: int, path: int) -> bytes:
        """The value of a position its parent says is not empty."""
        value = self._read(depth, path)
        if value is None or value[0] not in (_LEAF, _NODE):
            raise MissingNodeError(f"map position at depth {depth} missing or malformed")
        return value


def _key_int(key: bytes) -> int:
    if type(key) is not bytes or len(key) != KEY_SIZE:
        raise MapError("keys must be 32 bytes")
    return int.from_bytes(key, "big")

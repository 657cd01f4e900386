"""The persistent Merkle log: RFC 9162 roots and proofs from stored subtree hashes.

Theory of operation
-------------------
Node (level, index) is the perfect subtree of 2**level leaves covering the
half-open leaf range [index * 2**level, (index + 1) * 2**level). Level 0 holds
the leaf hashes. A node exists once its last leaf is appended and never
changes afterwards, so the stored nodes serve every past tree size at once.
Nodes are stored in tiles (`ledger.merkle_tiles`): one value per 256-aligned
run of a level and the 7 levels above it, so an append of n leaves puts about
n / 256 values and a proof reads one value per 8 levels.

A tree of any size t <= size is a forest of perfect subtrees, one per set bit
of t, largest first (its compact range). Its root folds them right to left:

    t = 6:      [ 0 1 2 3 ][ 4 5 ]      root = H(n(2,0), n(1,2))

An audit path walks up from the leaf. At each level the sibling is either
entirely inside [0, t) (one stored node), entirely outside (the RFC promotes
the node: no hash at this level), or straddles t: then it is "ephemeral", the
root of [begin, t), folded from that range's own perfect subtrees:

    t = 7, leaf 2:               root
                          /              \\
                  (2,0)                   eph = H(n(1,2), n(0,6))
                 /     \\                  /            \\
            (1,0)       (1,1)        (1,2)             (0,6)
                       /    \\
                    (0,2)  (0,3)        path = [n(0,3), n(1,0), eph]

A consistency proof from m is the audit path, in the tree of size n, of the
largest perfect subtree ending at m, preceded by that subtree's own hash
unless m is a power of two. Planning (which node ids a proof needs) is pure
and lives in `plan_inclusion` / `plan_consistency`; `MerkleLog` only fetches.
A proof reads O(log n / tile height) tiles; no proof or root walks leaves.

Staging, the right edge and caching
-----------------------------------
`append` puts the new version of every tile it touches into the caller's
`WriteBatch` and also keeps those values in memory until `flushed()`, so
reads are right before the batch is written (16 KB per 256 staged leaves). The edge tile of each tile
level (the partial one, at most one per 8 levels, 16 KB each) stays in
memory for good: appends extend it, and opening reads it, which is all that
resuming needs (O(log n) reads, none of them over leaves). If a batch is
never written, reopen with the committed size: tiles in the store may then be
wider than that size (an unwritten or older batch), and are only read for
nodes within it; later appends overwrite them.

Nodes at level >= `cache_level` (default 8, the second tile level) are few,
size / 2**cache_level per level, and are cached in one bytearray per level,
32 bytes a node (all-zero = not loaded yet): about size / 4 bytes in all at
the default, so 2.5 MB at 10M leaves, 250 MB at 1G leaves; raise
`cache_level` to trade memory for reads. Appends fill the cache as they go; a
reopened log fills it lazily, a whole tile per miss, or at once with
`warm_cache()`. With a warm cache a proof reads one tile (two when it has an
ephemeral node built from an older tile) whatever the size.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from ledger.merkle import EMPTY_ROOT, HASH_SIZE, parent_hashes
from ledger.merkle_tiles import TILE_HEIGHT, row_offsets_by_length, tile_key_prefix
from ledger.store import Store, WriteBatch

NodeId = tuple[int, int]
"""(level, index) of a perfect subtree."""

Plan = list[tuple[NodeId, ...]]
"""One entry per proof hash: the node ids whose hashes fold (right to left) into it."""

Tile = tuple[bytes, tuple[int, ...]]
"""A tile value and its row offsets (`ledger.merkle_tiles.row_offsets`)."""

_sha256 = hashlib.sha256
_pack_u64 = struct.Struct(">Q").pack
_ZERO_HASH = bytes(HASH_SIZE)
_LEVELS_MAX = 64  # sizes are u64


class MerkleLogError(ValueError):
    """A caller asked for a size or index the log cannot serve (e.g. tree_size > size)."""


class MissingNodeError(LookupError):
    """The store lacks a node the committed size says it holds: the store is corrupt."""


# -- planning (pure) ---------------------------------------------------------


def range_ids(begin: int, end: int) -> list[NodeId]:
    """The perfect subtrees covering leaves [begin, end), largest first.

    Requires begin == 0, or begin a multiple of a power of two above
    end - begin (true of every range this module asks for), so that each piece
    is aligned and therefore a real node.
    """
    ids = []
    count = end - begin
    offset = begin
    for level in range(count.bit_length() - 1, -1, -1):
        if count >> level & 1:
            ids.append((level, offset >> level))
            offset += 1 << level
    return ids


def _plan_path(level: int, index: int, size: int) -> Plan:
    """Audit path of node (level, index) inside the tree of `size` leaves."""
    plan: Plan = []
    top = (size - 1).bit_length()  # the level at which one node covers [0, size)
    while level < top:
        sibling = index ^ 1
        begin = sibling << level
        if begin < size:  # else the sibling is empty and the node is promoted
            end = begin + (1 << level)
            if end <= size:
                plan.append(((level, sibling),))
            else:
                plan.append(tuple(range_ids(begin, size)))  # the ephemeral node
        level += 1
        index >>= 1
    return plan


def plan_inclusion(index: int, tree_size: int) -> Plan:
    """Node ids of the audit path of leaf `index`. Requires 0 <= index < tree_size."""
    if not 0 <= index < tree_size:
        raise MerkleLogError(f"requires 0 <= index < tree_size, got {index}, {tree_size}")
    return _plan_path(0, index, tree_size)


def plan_consistency(old_size: int, new_size: int) -> Plan:
    """Node ids of the consistency proof from old_size to new_size.

    Requires 0 < old_size <= new_size: a proof from the empty tree is
    meaningless (verifiers reject it). Equal sizes give the empty plan.
    """
    if not 0 < old_size <= new_size:
        raise MerkleLogError(f"requires 0 < old_size <= new_size, got {old_size}, {new_size}")
    if old_size == new_size:
        return []
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    head: Plan = [] if index == 0 else [((level, index),)]
    return head + _plan_path(level, index, new_size)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Root of adjacent perfect subtrees given largest (leftmost) first."""
    accumulated = hashes[-1]
    for left in reversed(hashes[:-1]):
        accumulated = _sha256(b"\x01" + left + accumulated).digest()
    return accumulated


def _check_int(value: object, what: str) -> int:
    if type(value) is not int:
        raise MerkleLogError(f"{what} must be an int, got {value!r}")
    return value


# -- the log -----------------------------------------------------------------


class MerkleLog:
    """An append-only RFC 9162 tree stored tile by tile in a `Store`.

    Invariants: every node completed by the first `size` leaves is readable,
    from `_tiles` (tiles put since the last flush, and the edge tiles) or else
    from the store; `_edge[level]` holds, concatenated, the nodes of that
    level in the edge tile of its tile level; `_border` holds the compact
    range of [0, size).
    """

    def __init__(
        self,
        store: Store,
        size: int,
        prefix: bytes = b"t",
        cache_level: int = TILE_HEIGHT,
        tile_height: int = TILE_HEIGHT,
    ) -> None:
        """Open a log whose committed size is `size` (the caller keeps the size in
        its own metadata). Resumes at once: reads only the edge tile of each tile
        level (at most ceil(log2(size) / tile_height)), never walks leaves.

        `tile_height` (1..8) is part of the storage layout: open a store with
        the height it was written with (other heights find no tiles).
        """
        if _check_int(size, "size") < 0 or size >= 1 << _LEVELS_MAX:
            raise MerkleLogError(f"size {size} out of range")
        if not 1 <= _check_int(cache_level, "cache_level") <= _LEVELS_MAX:
            raise MerkleLogError(f"cache_level {cache_level} out of range")
        if not 1 <= _check_int(tile_height, "tile_height") <= 8:
            raise MerkleLogError(f"tile_height {tile_height} out of range")
        height = tile_height
        self._store = store
        self._size = size
        self._height = height
        self._tile_mask = (1 << height) - 1
        self._offsets = row_offsets_by_length(height)
        full = self._offsets[max(self._offsets)]
        self._full_tile_size = full[-1]
        # For a leaf at each position of a full bottom tile: where its first
        # `height` siblings start in the tile.
        self._sibling_starts = [
            tuple(full[row] + (((position >> row) ^ 1) << 5) for row in range(height))
            for position in range(1 << height)
        ]
        levels = range(_LEVELS_MAX + 1)
        # Per node level: its tile level's key prefix and its row in the tile.
        # Node (level, index) is in tile index >> (height - row).
        self._tile_keys = [tile_key_prefix(prefix, height, level // height) for level in levels]
        self._rows = [level % height for level in levels]
        self._cache_level = cache_level
        # One bytearray per level >= cache_level; zero bytes mark unloaded nodes.
        self._cache = [
            bytearray(HASH_SIZE * (size >> level))
            for level in range(cache_level, size.bit_length())
        ]
        self._tiles: dict[bytes, bytes] = {}
        self._edge_keys: list[bytes | None] = [None] * (_LEVELS_MAX // height + 1)
        self._edge = [b""] * (_LEVELS_MAX + 1)
        for base in range(0, size.bit_length(), height):
            count = size >> base  # nodes at the tile level's bottom
            width = count & self._tile_mask
            if not width:
                continue
            key = self._tile_keys[base] + _pack_u64(count >> height)
            value, offsets = self._tile(key, {})
            rows = [value[offsets[row]:offsets[row] + HASH_SIZE * (width >> row)] for row in range(height)]
            if any(len(data) != HASH_SIZE * (width >> row) for row, data in enumerate(rows)):
                raise MissingNodeError(f"Merkle tile {base // height}/{count >> height} too short")
            self._edge[base:base + height] = rows
            self._tiles[key] = b"".join(rows)  # as wide as `size` says: later appends extend it
            self._edge_keys[base // height] = key
        # border[level]: hash of the frontier subtree of that level, if size has that bit.
        self._border: list[bytes | None] = [
            self._edge[level][-HASH_SIZE:] if size >> level & 1 else None for level in levels
        ]
        self._right_roots: list[bytes | None] | None = None  # see `_right_roots_now`

    @property
    def size(self) -> int:
        """Number of leaves, staged ones included."""
        return self._size

    def append(self, leaf_hashes: Sequence[bytes], batch: WriteBatch) -> bytes:
        """Stage leaves: the new version of every tile they touch goes into `batch`;
        the in-memory frontier and size advance, and the new tiles are kept in
        memory until `flushed()` so reads stay correct even before the caller has
        written the batch. Returns the new root.

        Requires 32-byte leaf hashes; raises MerkleLogError (and changes
        nothing) otherwise.
        """
        nodes = list(leaf_hashes)
        if nodes and (set(map(len, nodes)) != {HASH_SIZE} or set(map(type, nodes)) != {bytes}):
            raise MerkleLogError("leaf hashes must be 32-byte bytes")
        old_size = self._size
        new_size = old_size + len(nodes)
        if new_size >= 1 << _LEVELS_MAX:
            raise MerkleLogError("the log is full")
        # Level by level rather than leaf by leaf: each level's new nodes are a
        # contiguous index run, so hashes are one list comprehension per level
        # (`parent_hashes`), which is what makes Python fast here.
        border = self._border
        cache = self._cache
        cache_level = self._cache_level
        added: list[bytes] = []  # added[level]: the new nodes of that level, concatenated
        first = old_size
        level = 0
        while nodes:
            joined = b"".join(nodes)
            added.append(joined)
            if level >= cache_level:
                if level - cache_level == len(cache):
                    cache.append(bytearray())
                cache[level - cache_level] += joined
            if first & 1:  # the first new node is a right child: its left sibling is on the border
                nodes.insert(0, border[level])
                first -= 1
            # An odd count leaves the last node unpaired: it is this level's border node.
            border[level] = nodes[-1] if len(nodes) & 1 else None
            nodes = parent_hashes(nodes)
            first >>= 1
            level += 1
        # Cut each touched tile level into tiles: row r of tile k is the slice of
        # (edge row + new nodes) of level base + r starting at node k << (height - r).
        height = self._height
        edge = self._edge
        tiles = self._tiles
        puts = batch.ops  # WriteBatch.put appends (key, value); skip the call
        for base in range(0, len(added), height):
            first_tile = (old_size >> base) >> height
            last_tile = ((new_size >> base) - 1) >> height
            edge_tile = (new_size >> base) >> height
            data = [edge[level] + added[level] if level < len(added) else edge[level]
                    for level in range(base, base + height)]
            key_prefix = self._tile_keys[base]
            for tile in range(first_tile, last_tile + 1):
                value = b"".join([
                    row_data[((tile - first_tile) << (height - row)) * HASH_SIZE:
                             ((tile - first_tile + 1) << (height - row)) * HASH_SIZE]
                    for row, row_data in enumerate(data)
                ])
                key = key_prefix + _pack_u64(tile)
                puts.append((key, value))
                tiles[key] = value
            for row, row_data in enumerate(data):
                edge[base + row] = row_data[((edge_tile - first_tile) << (height - row)) * HASH_SIZE:]
            self._edge_keys[base // height] = key if edge_tile == last_tile else None
        self._size = new_size
        self._right_roots = None
        return self.root()

    def flushed(self) -> None:
        """The caller wrote every batch passed to `append`: drop the staged tiles
        (keeping the edge tiles)."""
        tiles = self._tiles
        self._tiles = {key: tiles[key] for key in self._edge_keys if key is not None}

    def root(self, tree_size: int | None = None) -> bytes:
        """The root of the tree of the first `tree_size` leaves (default: all).

        Requires 0 <= tree_size <= size. Reads at most one tile per tile level
        below `cache_level`, and none for the full size.
        """
        if tree_size is None or tree_size == self._size:
            return self._right_roots_now()[-1] or EMPTY_ROOT
        self._check_size(tree_size)
        if tree_size == 0:
            return EMPTY_ROOT
        memo: dict[bytes, Tile] = {}
        return _fold([self._node(level, index, memo) for level, index in range_ids(0, tree_size)])

    def node(self, level: int, index: int) -> bytes:
        """The hash of node (level, index): the perfect subtree of leaves
        [index * 2**level, (index + 1) * 2**level). Requires it complete within
        size, i.e. (index + 1) * 2**level <= size."""
        _check_int(level, "level")
        if not (0 <= level <= _LEVELS_MAX and 0 <= _check_int(index, "index")
                and (index + 1) << level <= self._size):
            raise MerkleLogError(f"node {level}/{index} is not complete within size {self._size}")
        return self._node(level, index, {})

    def leaf_hash_at(self, index: int) -> bytes:
        """The hash of leaf `index`. Requires 0 <= index < size."""
        if not 0 <= _check_int(index, "index") < self._size:
            raise MerkleLogError(f"requires 0 <= index < size, got {index}, {self._size}")
        return self._node(0, index, {})

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """RFC 9162 audit path of leaf `index` in the tree of `tree_size` leaves.

        Requires 0 <= index < tree_size <= size. Reads from the store the tiles
        of the path below `cache_level` (one, at the defaults), and near the
        right border the tiles of one ephemeral node's parts.
        """
        self._check_size(tree_size)
        if not 0 <= _check_int(index, "index") < tree_size:
            raise MerkleLogError(f"requires 0 <= index < tree_size, got {index}, {tree_size}")
        # `_plan_path` + `_fetch` fused, with the common cases inlined: this is
        # the proof server's hot loop.
        height = self._height
        if index | self._tile_mask < tree_size:
            # The leaf's whole bottom tile is inside the tree: its first `height`
            # siblings are perfect nodes of that one full tile.
            key = self._tile_keys[0] + _pack_u64(index >> height)
            value = self._tiles.get(key)
            if value is None:
                value = self._store.get(key)
            if value is None or len(value) != self._full_tile_size:
                raise MissingNodeError(f"Merkle tile 0/{index >> height} missing or malformed")
            proof = [value[start:start + HASH_SIZE] for start in self._sibling_starts[index & self._tile_mask]]
            level = height
        else:
            proof = []
            level = 0
        # Then one sibling a level: cached, read through `_node` (from the tiles
        # of a leaf near the edge, or of levels between `height` and
        # `cache_level`), or ephemeral.
        cache_level = self._cache_level
        cache = self._cache
        node = self._node
        memo: dict[bytes, Tile] = {}
        for level in range(level, (tree_size - 1).bit_length()):
            sibling = (index >> level) ^ 1
            end = (sibling + 1) << level
            if end <= tree_size:
                if level >= cache_level:
                    start = sibling << 5  # HASH_SIZE bytes a node
                    cached = bytes(cache[level - cache_level][start:start + HASH_SIZE])
                    proof.append(cached if cached != _ZERO_HASH else node(level, sibling, memo))
                else:
                    proof.append(node(level, sibling, memo))
            elif end - (1 << level) < tree_size:  # the sibling straddles tree_size: ephemeral
                if tree_size == self._size:
                    proof.append(self._right_roots_now()[level])
                else:
                    proof.append(_fold([node(*part, memo) for part in range_ids(end - (1 << level), tree_size)]))
        return proof

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between two past sizes.

        Requires 0 < old_size <= new_size <= size.
        """
        self._check_size(new_size)
        _check_int(old_size, "old_size")
        plan = plan_consistency(old_size, new_size)
        node = self._node
        memo: dict[bytes, Tile] = {}
        proof = []
        for ids in plan:
            if len(ids) == 1:
                proof.append(node(*ids[0], memo))
            else:
                proof.append(_fold([node(level, index, memo) for level, index in ids]))
        return proof

    def warm_cache(self) -> None:
        """Load every cached-level node now, one ordered scan per tile level.

        Optional: reads the tiles of every tile level holding a level >=
        cache_level, about size / 2**(tile_height * tile_level) bottom nodes
        each (at the defaults, size / 256 nodes in size / 65536 tiles), so call
        it where a pause is fine (node start-up), not on a hot path.
        """
        height = self._height
        for base in range(0, self._size.bit_length(), height):
            if base + height <= self._cache_level:
                continue
            count = self._size >> base
            expected = (count + (1 << height) - 1) >> height  # tiles at this tile level
            key_prefix = self._tile_keys[base]
            position = 0
            for key, value in self._store.iterate(key_prefix):
                if len(key) != len(key_prefix) + 8:
                    raise MissingNodeError(f"malformed Merkle tile key {key!r}")
                tile = int.from_bytes(key[len(key_prefix):], "big")
                if tile >= expected:
                    break
                while position < tile:  # a gap: only a staged tile may fill it
                    self._warm_tile(base, position, {})
                    position += 1
                self._warm_tile(base, tile, {key: self._parse(key, self._tiles.get(key, value))})
                position += 1
            while position < expected:
                self._warm_tile(base, position, {})
                position += 1

    # -- internals -----------------------------------------------------------

    def _check_size(self, tree_size: int) -> None:
        if not 0 <= _check_int(tree_size, "tree_size") <= self._size:
            raise MerkleLogError(f"requires 0 <= tree_size <= size, got {tree_size}, {self._size}")

    def _right_roots_now(self) -> list[bytes | None]:
        """right_roots[level]: the root of [size - size % 2**level, size), the
        ephemeral node at that level of every audit path at the full size (None
        if empty); the last entry is the root of the whole tree."""
        right_roots = self._right_roots
        if right_roots is None:
            right_roots = []
            accumulated = None
            for node in self._border[:self._size.bit_length() + 1]:
                right_roots.append(accumulated)
                if node is not None:
                    accumulated = node if accumulated is None else _sha256(b"\x01" + node + accumulated).digest()
            self._right_roots = right_roots
        return right_roots

    def _node(self, level: int, index: int, memo: dict[bytes, Tile]) -> bytes:
        """The hash of node (level, index); requires it complete within `size`.

        `memo` holds the tiles this call's caller already read."""
        if level >= self._cache_level:
            nodes = self._cache[level - self._cache_level]
            start = index * HASH_SIZE
            cached = bytes(nodes[start:start + HASH_SIZE])
            if cached != _ZERO_HASH:
                return cached
        row = self._rows[level]
        shift = self._height - row
        tile = index >> shift
        key = self._tile_keys[level] + _pack_u64(tile)
        value, offsets = self._tile(key, memo)
        start = offsets[row] + (index & ((1 << shift) - 1)) * HASH_SIZE
        if start + HASH_SIZE > offsets[row + 1]:
            raise MissingNodeError(f"Merkle node {level}/{index} missing: its tile is too short")
        if level >= self._cache_level:
            self._fill_cache(level - row, tile, value, offsets)
        return value[start:start + HASH_SIZE]

    def _tile(self, key: bytes, memo: dict[bytes, Tile]) -> Tile:
        """The newest version of tile `key`: from `memo`, memory, or the store."""
        found = memo.get(key)
        if found is None:
            value = self._tiles.get(key)
            if value is None:
                value = self._store.get(key)
            found = memo[key] = self._parse(key, value)
        return found

    def _parse(self, key: bytes, value: bytes | None) -> Tile:
        offsets = self._offsets.get(len(value)) if value is not None else None
        if offsets is None:
            raise MissingNodeError(f"Merkle tile {key!r} missing or malformed")
        return value, offsets

    def _warm_tile(self, base: int, tile: int, memo: dict[bytes, Tile]) -> None:
        key = self._tile_keys[base] + _pack_u64(tile)
        self._fill_cache(base, tile, *self._tile(key, memo))

    def _fill_cache(self, base: int, tile: int, value: bytes, offsets: tuple[int, ...]) -> None:
        """Copy the cached-level rows of tile `tile` at node level `base` into the
        cache, clipped to the nodes complete within size (a stored tile may be wider)."""
        height = self._height
        cache_level = self._cache_level
        for row in range(height):
            level = base + row
            if level < cache_level:
                continue
            if level - cache_level >= len(self._cache):
                break
            nodes = self._cache[level - cache_level]
            first = tile << (height - row)
            end = min(first + ((offsets[row + 1] - offsets[row]) >> 5), len(nodes) >> 5)
            if end > first:
                nodes[first * HASH_SIZE:end * HASH_SIZE] = value[offsets[row]:offsets[row] + (end - first) * HASH_SIZE]

"""The batch update of the authenticated map (`ledger.smt`), and its tiles.

`ledger.smt` keeps the map; this module computes what one batch of changes
does to it (the theory is in that module's docstring, "Updates"), and reads
and names the tiles it works on (`Tiles`: the cache of the upper bands, the
store below). It is the
map's hot path, one pass per key of every block a node validates or an audit
replays, so it is also compiled by mypyc (`scripts/_native.py`, `ledger`'s
docstring): it takes only inputs `ledger.smt` has checked, and its type hints
are exact, since compiled code enforces them.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Callable

from ledger.smt_proof import EMPTY, HASH_SIZE, KEY_BITS, LEAF_TAG, NODE_TAG

TILE_HEIGHT = 4
LOAD_PUTS_MAX = 100_000
"""`load` writes its puts in store batches of about this many."""

_sha256 = hashlib.sha256
_LEAF = LEAF_TAG[0]
_NODE = NODE_TAG[0]
VALUE_SIZE = 1 + 2 * HASH_SIZE
_SLOTS = (1 << TILE_HEIGHT) - 1


class MissingNodeError(LookupError):
    """The store lacks a tile or position the tree says it holds, or holds a
    malformed one: the store is corrupt."""


# -- tiles ---------------------------------------------------------------------


def slot_value(tile: bytes, slot: int) -> bytes | None:
    bitmap = tile[0] << 8 | tile[1]
    if not bitmap >> (15 - slot) & 1:
        return None
    offset = 2 + VALUE_SIZE * (bitmap >> (16 - slot)).bit_count()
    return tile[offset:offset + VALUE_SIZE]


@functools.cache
def slot_offsets(bitmap: int) -> tuple[int, ...]:
    """The byte offset of each slot in a tile with this bitmap; 0 if the slot is empty."""
    offsets = [0] * _SLOTS
    offset = 2
    for slot in range(_SLOTS):
        if bitmap >> (15 - slot) & 1:
            offsets[slot] = offset
            offset += VALUE_SIZE
    return tuple(offsets)


def splice_tile(tile: bytes, edits: dict[int, bytes]) -> bytes:
    """`tile` with the slot values in `edits` set: unchanged slots are copied
    in runs, not one by one. Slots are only ever set, never emptied."""
    bitmap = new_bitmap = tile[0] << 8 | tile[1]
    offsets = slot_offsets(bitmap)
    pieces = [b""]
    position = 2
    for slot in sorted(edits):
        offset = offsets[slot]
        if offset:  # replaced
            pieces += (tile[position:offset], edits[slot])
            position = offset + VALUE_SIZE
        else:  # inserted before the next non-empty slot
            offset = 2 + VALUE_SIZE * (bitmap >> (16 - slot)).bit_count()
            pieces += (tile[position:offset], edits[slot])
            position = offset
            new_bitmap |= 1 << (15 - slot)
    pieces.append(tile[position:])
    pieces[0] = new_bitmap.to_bytes(2, "big")
    return b"".join(pieces)


NO_TILE = b"\x00\x00"
"""What a tile that does not exist yet is spliced into."""

_BANDS = KEY_BITS // TILE_HEIGHT + 1  # band depths 0, 4, ..., 256
# Path bytes of a tile key at each depth: ceil(depth / 8) of them, and how a
# key (as an int) turns into them.
_PATH_BYTES = [(depth + 7) // 8 for depth in range(KEY_BITS + 1)]
PATH_SHIFT = [KEY_BITS - 8 * size for size in _PATH_BYTES]
DEPTH_MASK = [((1 << depth) - 1) << (KEY_BITS - depth) for depth in range(KEY_BITS + 1)]


def check_tile(tile: bytes, band: int) -> bytes:
    """`tile`, read from the store, if it is well formed; MissingNodeError otherwise."""
    bitmap = tile[0] << 8 | tile[1] if len(tile) >= 2 else 0
    if not bitmap & 0x8000 or bitmap & 1 or len(tile) != 2 + VALUE_SIZE * bitmap.bit_count():
        raise MissingNodeError(f"malformed map tile at depth {band * TILE_HEIGHT}")
    return tile


Leaves = Callable[[int, int], list[tuple[bytes, bytes]]]
"""(depth, path) -> every (key, value hash) of the map below position (depth,
the first `depth` bits of path), sorted by key: the caller's own record of
the leaves, from which a map with derived bands rebuilds its tiles."""


class Tiles:
    """A map's committed tiles (`ledger.smt`, "Cache", "Memory-only bands"
    and "Derived bands").

    Tiles of band < `cache_bands` stay in `cache` once read, one dict per
    band keyed by the path as an int; those of band < `memory_bands` live
    there only. The rest are read with `get`, the store's, each time, or,
    given `leaves`, never stored: each is rebuilt from the leaves below it.
    Here, in the compiled module, because every key of an update reads a
    tile and puts one or two.
    """

    def __init__(self, get: Callable[[bytes], bytes | None], prefix: bytes, memory_bands: int,
                 cache_bands: int, leaves: Leaves | None = None) -> None:
        self.get = get
        self.band_keys = [prefix + (band * TILE_HEIGHT).to_bytes(2, "big") for band in range(_BANDS)]
        self.memory_bands = memory_bands
        self.cache_bands = cache_bands
        self.cache: list[dict[int, bytes]] = [{} for _ in range(cache_bands)]
        self.leaves = leaves

    def key(self, band: int, path: int) -> bytes:
        """The store key of the tile of `band` above `path`."""
        depth = band * TILE_HEIGHT
        return self.band_keys[band] + (
            (path & DEPTH_MASK[depth]) >> PATH_SHIFT[depth]
        ).to_bytes(_PATH_BYTES[depth], "big")

    def fetch(self, band: int, path: int) -> bytes | None:
        """The committed tile of `band` above `path`, or None if it is empty."""
        if band < self.cache_bands:
            level = self.cache[band]
            tile_path = path >> (KEY_BITS - band * TILE_HEIGHT)
            tile: bytes | None = level.get(tile_path)
            if tile is None and band >= self.memory_bands:
                tile = self.below(band, path)
                if tile is not None:
                    level[tile_path] = tile
            return tile
        return self.below(band, path)

    def derives(self, band: int) -> bool:
        """Whether the tiles of `band` are derived from leaves, never stored."""
        return self.leaves is not None and band >= self.memory_bands

    def keep(self, tiles: list[tuple[int, int, bytes]]) -> None:
        """Cache each (band, path, tile) of a committed update (a block's: thousands)."""
        cache = self.cache
        for band, path, tile in tiles:
            cache[band][path] = tile

    def below(self, band: int, path: int) -> bytes | None:
        """The committed tile of `band` (>= `memory_bands`) above `path`: read and checked, or derived."""
        leaves = self.leaves
        if leaves is not None:
            depth = band * TILE_HEIGHT
            return derived_tile(depth, leaves(depth, path))
        stored: bytes | None = self.get(self.key(band, path))
        return stored if stored is None else check_tile(stored, band)


def derived_tile(depth: int, leaves: list[tuple[bytes, bytes]]) -> bytes | None:
    """The tile at band depth `depth` of the canonical tree of `leaves` (all
    below one position of that depth, sorted by key), or None if there are none."""
    if not leaves:
        return None
    keys = [key for key, _ in leaves]
    value_hashes = [value_hash for _, value_hash in leaves]
    ints = [int.from_bytes(key, "big") for key in keys]
    edits: dict[int, bytes] = {}
    _derive(edits, 0, depth, depth + TILE_HEIGHT, ints, keys, value_hashes, 0, len(ints))
    return new_tile_of(edits)


def new_tile_of(slots: dict[int, bytes]) -> bytes:
    """The tile holding exactly these slot values."""
    bitmap = 0
    for slot in slots:
        bitmap |= 1 << (15 - slot)
    return bitmap.to_bytes(2, "big") + b"".join([slots[slot] for slot in sorted(slots)])


def _derive(edits: dict[int, bytes] | None, slot: int, depth: int, bottom: int,
            ints: list[int], keys: list[bytes], value_hashes: list[bytes], low: int, high: int) -> bytes:
    """The hash of the subtree at `slot` (depth `depth`) holding exactly [low,
    high) (at least one); its values down to `bottom` go into `edits`, none
    below (`edits` None). `Builder.fresh` without the tiles below."""
    if high - low == 1:
        value = LEAF_TAG + keys[low] + value_hashes[low]
    else:
        shift = 255 - depth
        middle = bisect.bisect_left(ints, (ints[low] >> shift | 1) << shift, low, high)
        depth += 1
        below = edits if depth < bottom else None
        left = _derive(below, 2 * slot + 1, depth, bottom, ints, keys, value_hashes, low, middle) \
            if middle > low else EMPTY
        right = _derive(below, 2 * slot + 2, depth, bottom, ints, keys, value_hashes, middle, high) \
            if high > middle else EMPTY
        value = NODE_TAG + left + right
    if edits is not None:
        edits[slot] = value
    return _sha256(value).digest()


# -- the update ----------------------------------------------------------------


class Builder:
    """One batch of changes applied to the committed tree, in memory.

    `ints`, `keys`, `value_hashes` are the changes sorted by key. The
    methods work tile by tile: a tile is its committed bytes (`tile`, or
    NO_TILE) and `edits`, the slots rebuilt so far (slot -> value); a
    position's children are slots 2s + 1 and 2s + 2, or slot 0 of a tile of
    the next band. A tile is spliced and put once, after everything below
    it. Each method works on a half-open range [low, high) of changes below
    one position and returns that position's new hash.
    """

    def __init__(self, tiles: Tiles, old_root: bytes, items: list[tuple[bytes, bytes]],
                 flush: Callable[[list[tuple[bytes, bytes]]], None] | None = None) -> None:
        """`tiles`, `old_root`: the map's (`SparseMerkleMap`); `items`: the changes, sorted by key, checked."""
        self.tiles = tiles
        self.old_root = old_root
        self.keys = [key for key, _ in items]
        self.value_hashes = [value_hash for _, value_hash in items]
        self.ints = [int.from_bytes(key, "big") for key in self.keys]
        self.puts: list[tuple[bytes, bytes]] = []
        self.cached: list[tuple[int, int, bytes]] = []
        self.flush = flush  # set for a load: puts stream out to the store

    def run(self) -> bytes:
        tile = None if self.flush else self.tiles.fetch(0, 0)
        if tile is None:
            return self.new_tile(0, self.ints, self.keys, self.value_hashes, 0, len(self.ints))
        return self.old_tile(0, tile, self.old_root, 0, len(self.ints))

    def emit(self, depth: int, path: int, tile: bytes, edits: dict[int, bytes]) -> None:
        """Put the tile whose slot 0 is position (depth, path)."""
        band = depth >> 2
        tiles = self.tiles
        if tiles.derives(band):
            return  # neither stored nor cached
        if tile is NO_TILE:  # every slot is new: no splicing
            tile = new_tile_of(edits)
        else:
            tile = splice_tile(tile, edits)
        if band >= tiles.memory_bands:
            self.puts.append((tiles.key(band, path), tile))
        if band < tiles.cache_bands:
            self.cached.append((band, path >> (KEY_BITS - depth), tile))
        if self.flush is not None and len(self.puts) >= LOAD_PUTS_MAX:
            self.flush(self.puts)

    def new_tile(self, depth: int, ints: list[int], keys: list[bytes], value_hashes: list[bytes],
                 low: int, high: int) -> bytes:
        """A tile that was empty, at band depth `depth`, holding [low, high) (at least one)."""
        if self.tiles.derives(depth >> 2):
            return _derive(None, 0, depth, depth, ints, keys, value_hashes, low, high)
        edits: dict[int, bytes] = {}
        root = self.fresh(edits, 0, depth, depth + TILE_HEIGHT, ints, keys, value_hashes, low, high)
        self.emit(depth, ints[low], NO_TILE, edits)
        return root

    def old_tile(self, depth: int, tile: bytes, old_hash: bytes, low: int, high: int) -> bytes:
        """The stored `tile` at band depth `depth` (slot 0 hashing to
        `old_hash`), with the changes [low, high) below it."""
        edits: dict[int, bytes] = {}
        if high - low == 1:
            root = self.single(tile, edits, 0, depth, depth + TILE_HEIGHT, old_hash, low)
        else:
            root = self.existing(tile, edits, 0, depth, depth + TILE_HEIGHT, old_hash, low, high)
        if root != old_hash:
            self.emit(depth, self.ints[low], tile, edits)
        return root

    def child_tile(self, depth: int, old_hash: bytes, low: int, high: int) -> bytes:
        """The tile at band depth `depth` below the changes [low, high), whose
        slot 0 hashes to `old_hash` (EMPTY: it does not exist yet)."""
        if old_hash == EMPTY:
            return self.new_tile(depth, self.ints, self.keys, self.value_hashes, low, high)
        if self.tiles.derives(depth >> 2):
            return self.derived(depth, low, high)
        tile = self.tiles.fetch(depth >> 2, self.ints[low])
        if tile is None:
            raise MissingNodeError(f"map tile at depth {depth} missing")
        return self.old_tile(depth, tile, old_hash, low, high)

    def derived(self, depth: int, low: int, high: int) -> bytes:
        """The new hash of the subtree at band depth `depth` (a derived band)
        above the changes [low, high): its committed leaves with the changes
        merged in, hashed afresh; no tile is built, none is put."""
        leaves = self.tiles.leaves
        assert leaves is not None
        committed = leaves(depth, self.ints[low])
        keys: list[bytes] = []
        value_hashes: list[bytes] = []
        index, count = 0, len(committed)
        for change in range(low, high):
            key = self.keys[change]
            while index < count and committed[index][0] < key:
                keys.append(committed[index][0])
                value_hashes.append(committed[index][1])
                index += 1
            if index < count and committed[index][0] == key:  # the change replaces it
                index += 1
            keys.append(key)
            value_hashes.append(self.value_hashes[change])
        for key, value_hash in committed[index:]:
            keys.append(key)
            value_hashes.append(value_hash)
        ints = [int.from_bytes(key, "big") for key in keys]
        return _derive(None, 0, depth, depth, ints, keys, value_hashes, 0, len(ints))

    def fresh(self, edits: dict[int, bytes], slot: int, depth: int, bottom: int,
              ints: list[int], keys: list[bytes], value_hashes: list[bytes], low: int, high: int) -> bytes:
        """A new subtree at `slot` (depth `depth`) holding exactly [low, high)
        (at least one); depth `bottom` starts the next band's tiles."""
        sha256 = _sha256
        if high - low == 1:
            value = edits[slot] = LEAF_TAG + keys[low] + value_hashes[low]
            return sha256(value).digest()
        shift = 255 - depth
        middle = bisect.bisect_left(ints, (ints[low] >> shift | 1) << shift, low, high)
        depth += 1
        if depth == bottom:
            left = self.new_tile(depth, ints, keys, value_hashes, low, middle) if middle > low else EMPTY
            right = self.new_tile(depth, ints, keys, value_hashes, middle, high) if high > middle else EMPTY
        else:
            if middle == low:
                left = EMPTY
            elif middle - low == 1:  # a leaf, inline: half the calls of a load
                value = edits[2 * slot + 1] = LEAF_TAG + keys[low] + value_hashes[low]
                left = sha256(value).digest()
            else:
                left = self.fresh(edits, 2 * slot + 1, depth, bottom, ints, keys, value_hashes, low, middle)
            if middle == high:
                right = EMPTY
            elif high - middle == 1:
                value = edits[2 * slot + 2] = LEAF_TAG + keys[middle] + value_hashes[middle]
                right = sha256(value).digest()
            else:
                right = self.fresh(edits, 2 * slot + 2, depth, bottom, ints, keys, value_hashes, middle, high)
        value = edits[slot] = NODE_TAG + left + right
        return sha256(value).digest()

    def child(self, tile: bytes, edits: dict[int, bytes], slot: int, depth: int, bottom: int,
              old_hash: bytes, low: int, high: int) -> bytes:
        """The new hash of a node's child at `slot` (depth `depth`, stored hash
        `old_hash`, EMPTY if none) with the changes [low, high) below it."""
        if depth == bottom:
            return self.child_tile(depth, old_hash, low, high)
        if old_hash == EMPTY:
            return self.fresh(edits, slot, depth, bottom, self.ints, self.keys, self.value_hashes, low, high)
        if high - low == 1:
            return self.single(tile, edits, slot, depth, bottom, old_hash, low)
        return self.existing(tile, edits, slot, depth, bottom, old_hash, low, high)

    def existing(self, tile: bytes, edits: dict[int, bytes], slot: int, depth: int, bottom: int,
                 old_hash: bytes, low: int, high: int) -> bytes:
        """The stored, non-empty position at `slot` (depth `depth`, hash
        `old_hash`) with at least two changes [low, high) below it."""
        value = slot_value(tile, slot)
        if value is None or value[0] not in (_LEAF, _NODE):
            raise MissingNodeError(f"map position at depth {depth} missing or malformed")
        ints = self.ints
        if value[0] == _LEAF:
            # The lone leaf gains neighbours: rebuild the subtree with it.
            old_key = value[1:33]
            old_int = int.from_bytes(old_key, "big")
            index = bisect.bisect_left(ints, old_int, low, high)
            if index < high and ints[index] == old_int:  # the changes replace it
                return self.fresh(edits, slot, depth, bottom, ints, self.keys, self.value_hashes, low, high)
            return self.fresh(
                edits, slot, depth, bottom,
                ints[low:index] + [old_int] + ints[index:high],
                self.keys[low:index] + [old_key] + self.keys[index:high],
                self.value_hashes[low:index] + [value[33:]] + self.value_hashes[index:high],
                0, high - low + 1,
            )
        left, right = value[1:33], value[33:]
        shift = 255 - depth
        middle = bisect.bisect_left(ints, (ints[low] >> shift | 1) << shift, low, high)
        depth += 1
        new_left, new_right = left, right
        if middle > low:
            new_left = self.child(tile, edits, 2 * slot + 1, depth, bottom, left, low, middle)
        if high > middle:
            new_right = self.child(tile, edits, 2 * slot + 2, depth, bottom, right, middle, high)
        if new_left == left and new_right == right:
            return old_hash
        value = edits[slot] = NODE_TAG + new_left + new_right
        return _sha256(value).digest()

    def single(self, tile: bytes, edits: dict[int, bytes], slot: int, depth: int, bottom: int,
               old_hash: bytes, index: int) -> bytes:
        """`existing` with one change, `index`: walk down its path, through
        the tiles below too, then rebuild upwards; no search, no call per
        level or tile. Puts the tiles below; the caller puts `tile`."""
        sha256 = _sha256
        node, leaf, empty = _NODE, _LEAF, EMPTY
        path = self.ints[index]
        key = self.keys[index]
        value_hash = self.value_hashes[index]
        offsets = slot_offsets(tile[0] << 8 | tile[1])
        passed = []  # (edits, slot, sibling, bit) of the nodes walked through
        below = []  # (depth, tile, edits) of the tiles entered below `tile`
        while True:
            offset = offsets[slot]
            tag = tile[offset] if offset else None
            if tag == node:
                bit = path >> (255 - depth) & 1
                if bit:
                    passed.append((edits, slot, tile[offset + 1:offset + 33], 1))
                    child = tile[offset + 33:offset + 65]
                else:
                    passed.append((edits, slot, tile[offset + 33:offset + 65], 0))
                    child = tile[offset + 1:offset + 33]
                depth += 1
                slot = 2 * slot + 1 + bit
                if depth == bottom:  # the child is slot 0 of a tile of the next band
                    edits = {}
                    if child == empty:
                        value = edits[0] = LEAF_TAG + key + value_hash
                        below.append((depth, NO_TILE, edits))
                        current = sha256(value).digest()
                        break
                    if self.tiles.derives(depth >> 2):
                        current = self.derived(depth, index, index + 1)
                        break
                    fetched = self.tiles.fetch(depth >> 2, path)
                    if fetched is None:
                        raise MissingNodeError(f"map tile at depth {depth} missing")
                    tile = fetched
                    below.append((depth, tile, edits))
                    offsets = slot_offsets(tile[0] << 8 | tile[1])
                    slot = 0
                    bottom += TILE_HEIGHT
                elif child == empty:
                    value = edits[slot] = LEAF_TAG + key + value_hash
                    current = sha256(value).digest()
                    break
            elif tag == leaf:
                old_key = tile[offset + 1:offset + 33]
                old_value_hash = tile[offset + 33:offset + 65]
                if old_key == key:
                    if old_value_hash == value_hash:
                        return old_hash  # nothing changed on the way down
                    value = edits[slot] = LEAF_TAG + key + value_hash
                    current = sha256(value).digest()
                else:  # two leaves where one was
                    old_int = int.from_bytes(old_key, "big")
                    if path < old_int:
                        ints, keys, value_hashes = [path, old_int], [key, old_key], [value_hash, old_value_hash]
                    else:
                        ints, keys, value_hashes = [old_int, path], [old_key, key], [old_value_hash, value_hash]
                    current = self.fresh(edits, slot, depth, bottom, ints, keys, value_hashes, 0, 2)
                break
            else:
                raise MissingNodeError(f"map position at depth {depth} missing or malformed")
        for edits, slot, sibling, bit in reversed(passed):
            value = edits[slot] = NODE_TAG + sibling + current if bit else NODE_TAG + current + sibling
            current = sha256(value).digest()
        for depth, tile, edits in below:
            self.emit(depth, path, tile, edits)
        return current

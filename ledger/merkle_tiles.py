"""Tiles: how `ledger.merkle_log` packs Merkle node hashes into store values.

A private storage layout in the spirit of C2SP tlog-tiles. With tile height
h (8 by default), node levels are grouped in bands of h: tile level L holds
node levels h*L .. h*L + h - 1. Tile (L, k) covers the 2**h nodes of level
h*L with indexes [k * 2**h, (k + 1) * 2**h) and every node above them inside
the band, so it stands for one 2**(h*(L+1))-leaf-aligned subtree cut off
below its root (the root is the bottom of the tile above):

    h = 2                                   (3,0)          } tile (1,0):
                                  (2,0)               (2,1)  } rows [(2,0)(2,1)] [(3,0)]
    tile (0,0):            (1,0)       (1,1)     (1,2)      ...
    rows [(0,0)..(0,3)]  (0,0) (0,1) (0,2) (0,3) (0,4) ...  tile (0,1) ...
         [(1,0)(1,1)]

The value of a tile of `width` bottom nodes (1 <= width <= 2**h) is its rows
concatenated, bottom first, row r holding the width >> r complete nodes of
level h*L + r, 32 bytes each:

    row 0 || row 1 || ... || row h-1          (h = 8, full: 510 hashes, 16,320 bytes)

A tile stores only complete nodes. Tiles left of the right edge are full
and never change; the edge tile of each tile level is partial and is
rewritten, one longer version per append that reaches it. A longer version
agrees with every shorter one on the nodes they share, so any version at
least as wide as a reader needs serves it. The width follows from the value's
length (the row lengths strictly grow with the width), so a value is
self-describing: `row_offsets_by_length` maps each valid length to the byte
offset of every row.

Key: prefix + bytes([h, L]) + k as 8 bytes big-endian. The height is part of
the key, so logs of different heights (and the earlier one-key-per-node
layout, whose keys are one byte shorter) never read each other's values.
"""

from __future__ import annotations

import struct

TILE_HEIGHT = 6
"""Default tile height: a tile spans 64 leaves (or nodes) and 6 levels, so a
full bottom tile (126 hashes, 4,032 bytes) is one page: a proof's one store
read at 10M leaves costs little more than at 1M (measured 1.3x, against 2.3x
with 16 KB tiles of height 8)."""

TILE_HEIGHT_MAX = 8
"""Heights are small: every valid width gets an entry in the offsets table."""

_pack_u64 = struct.Struct(">Q").pack


def tile_key_prefix(prefix: bytes, tile_height: int, tile_level: int) -> bytes:
    """The key of tile (tile_level, k) is this + k as 8 bytes big-endian."""
    return prefix + bytes([tile_height, tile_level])


def tile_key(prefix: bytes, tile_height: int, tile_level: int, tile_index: int) -> bytes:
    """The store key of tile (tile_level, tile_index)."""
    return tile_key_prefix(prefix, tile_height, tile_level) + _pack_u64(tile_index)


def tile_of(level: int, index: int, tile_height: int) -> tuple[int, int, int, int]:
    """(tile level, tile index, row, position in the row) of node (level, index)."""
    tile_level, row = divmod(level, tile_height)
    shift = tile_height - row
    return tile_level, index >> shift, row, index & ((1 << shift) - 1)


def tile_size(width: int, tile_height: int) -> int:
    """Bytes in the value of a tile with `width` bottom nodes."""
    return 32 * sum(width >> row for row in range(tile_height))


def row_offsets(width: int, tile_height: int) -> tuple[int, ...]:
    """Byte offset of each row in a tile of `width` bottom nodes, then the end."""
    offsets = [0]
    for row in range(tile_height):
        offsets.append(offsets[-1] + 32 * (width >> row))
    return tuple(offsets)


def row_offsets_by_length(tile_height: int) -> dict[int, tuple[int, ...]]:
    """`row_offsets` for every valid width, keyed by the value length it gives.

    A length that is not a key is not a tile of this height (a corrupt value).
    """
    if not 1 <= tile_height <= TILE_HEIGHT_MAX:
        raise ValueError(f"tile height {tile_height} out of range")
    table = {}
    for width in range(1, (1 << tile_height) + 1):
        offsets = row_offsets(width, tile_height)
        table[offsets[-1]] = offsets
    return table

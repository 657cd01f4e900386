"""A fixed-size Bloom filter of 32-byte ids that are hashes already.

For a state that starts empty and is never reopened (an audit without a
saved state), the filter answers "certainly absent" for most ids never
written, without the store read that a LevelDB miss costs (it probes a table
per level). Its memory is fixed, so it stays flat in chain length; as more
ids go in, more lookups say "maybe" and fall back to the store, which is
always right. No false negatives: every id added is reported as maybe
present.

Credential ids are SHA-256 outputs, so the bit positions are slices of the
id itself rather than further hashes. An id crafted to collide only costs a
store read.
"""

from __future__ import annotations

import struct

_POSITIONS = struct.Struct(">III").unpack_from
"""The id's first 12 bytes give its 3 bit positions. With 2^27 bits (16 MB):
about 0.1% false positives at 5M ids, 2% at 20M."""


class IdFilter:
    """A Bloom filter of `size_bytes` (a power of two, at least 8) over ids of at least 12 bytes."""

    def __init__(self, size_bytes: int) -> None:
        if not isinstance(size_bytes, int):  # compiled (scripts/_native.py), the call itself refuses it
            raise TypeError("the filter's size is an int")
        if size_bytes < 8 or size_bytes & (size_bytes - 1):
            raise ValueError("the filter's size is a power of two of at least 8 bytes")
        self._bits = bytearray(size_bytes)
        self._mask = size_bytes * 8 - 1

    def add(self, item: bytes) -> None:
        bits, mask = self._bits, self._mask
        for position in _POSITIONS(item):
            position &= mask
            bits[position >> 3] |= 1 << (position & 7)

    def add_all(self, items) -> None:
        for item in items:
            self.add(item)

    def may_contain(self, item: bytes) -> bool:
        """False only if `item` was never added."""
        bits, mask = self._bits, self._mask
        for position in _POSITIONS(item):
            position &= mask
            if not bits[position >> 3] >> (position & 7) & 1:
                return False
        return True

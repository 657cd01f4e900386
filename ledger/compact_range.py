"""The compact range [0, size): the right border of an RFC 9162 tree.

A tree of `size` leaves decomposes into perfect subtrees, one per set bit of
`size`, largest first. Their hashes (the frontier) are all that is needed to
compute the root of the tree after appending more leaves, which is how a block
is validated before it is committed: the stored log stays untouched until the
block has its certificate.

    size 6 = 0b110:   [ 0 1 2 3 ][ 4 5 ]      frontier = [h(0..4), h(4..6)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.merkle import EMPTY_ROOT, node_hash


@dataclass(frozen=True, slots=True)
class CompactRange:
    """Frontier hashes of the tree [0, size), largest subtree first."""

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != bin(self.size).count("1"):
            raise ValueError("a compact range holds one hash per set bit of its size")

    @classmethod
    def empty(cls) -> "CompactRange":
        return cls(0, ())

    def root(self) -> bytes:
        """The RFC 9162 root of the tree [0, size)."""
        if not self.hashes:
            return EMPTY_ROOT
        accumulated = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            accumulated = node_hash(left, accumulated)
        return accumulated

    def extend(self, leaf_hashes: Iterable[bytes]) -> "CompactRange":
        """The compact range after appending `leaf_hashes`."""
        size = self.size
        stack = list(self.hashes)
        for leaf in leaf_hashes:
            stack.append(leaf)
            # Each trailing one bit of the old size is a subtree the new leaf completes.
            carry = size
            while carry & 1:
                right = stack.pop()
                stack[-1] = node_hash(stack[-1], right)
                carry >>= 1
            size += 1
        return CompactRange(size, tuple(stack))


def subtree_ids(size: int) -> list[tuple[int, int]]:
    """(level, index) of the frontier subtrees of [0, size), largest first."""
    ids = []
    offset = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            ids.append((level, offset >> level))
            offset += 1 << level
    return ids


def from_nodes(size: int, nodes: Sequence[bytes]) -> CompactRange:
    """A compact range from the hashes of `subtree_ids(size)`, in that order."""
    return CompactRange(size, tuple(nodes))

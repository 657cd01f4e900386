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

from ledger.merkle import EMPTY_ROOT, node_hash, parent_hashes


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
        nodes = list(leaf_hashes)
        new_size = self.size + len(nodes)
        # Level by level, as MerkleLog.append: each level's new nodes are a
        # run hashed in one comprehension (`parent_hashes`), not a call per
        # leaf (every block a node validates and commits, every block an
        # audit replays).
        old = list(reversed(self.hashes))  # the old frontier, smallest subtree first
        low: list[bytes] = []  # the new frontier below the levels left untouched, smallest first
        first = self.size
        while nodes:
            if first & 1:  # the first new node is a right child: its left sibling is old frontier
                nodes.insert(0, old.pop(0))
            if len(nodes) & 1:  # the last node stays unpaired: a subtree of the new frontier
                low.append(nodes[-1])
            nodes = parent_hashes(nodes)
            first >>= 1
        # Above the last level with new nodes, the old frontier stands.
        return CompactRange(new_size, tuple(reversed(old)) + tuple(reversed(low)))


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

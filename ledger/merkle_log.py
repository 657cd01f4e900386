"""The persistent Merkle log: RFC 9162 roots and proofs from stored subtree hashes.

Theory of operation
-------------------
Node (level, index) is the perfect subtree of 2**level leaves covering the
half-open leaf range [index * 2**level, (index + 1) * 2**level). Level 0 holds
the leaf hashes. Every node is stored once, when its last leaf is appended,
under

    prefix + bytes([level]) + index.to_bytes(8, "big")  ->  32-byte hash

and never changes afterwards: a node only exists once it is complete, so the
stored nodes serve every past tree size at once.

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
A proof needs O(log n) node reads; no proof or root ever walks leaves.

Staging and caching
-------------------
`append` puts the new nodes into the caller's `WriteBatch` and also keeps them
in memory (the overlay) until `flushed()`, so reads are right before the batch
is written. If the batch is never written, reopen with the committed size:
nodes past that size may exist in the store (an unwritten or older batch) but
are never read, and later appends overwrite them.

Nodes at level >= `cache_level` (default 8) are few, size / 2**cache_level
per level, and are cached in one bytearray per level, 32 bytes a node
(all-zero = not loaded yet): about size / 4 bytes in all at the default, so
2.5 MB at 10M leaves, 250 MB at 1G leaves; raise `cache_level` to trade
memory for reads. Appends fill the cache as they go; a reopened log fills it
lazily from reads, or at once with `warm_cache()`. With a warm cache a proof
reads about `cache_level` nodes from the store whatever the size.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from ledger.merkle import EMPTY_ROOT, HASH_SIZE
from ledger.store import Store, WriteBatch

NodeId = tuple[int, int]
"""(level, index) of a perfect subtree."""

Plan = list[tuple[NodeId, ...]]
"""One entry per proof hash: the node ids whose hashes fold (right to left) into it."""

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
    """An append-only RFC 9162 tree stored node by node in a `Store`.

    Invariant: every node completed by the first `size` leaves is readable,
    from the store if it completed within the first `flushed_size` leaves,
    else from the overlay; `_border` holds the compact range of [0, size).
    """

    def __init__(self, store: Store, size: int, prefix: bytes = b"t", cache_level: int = 8) -> None:
        """Open a log whose committed size is `size` (the caller keeps the size in
        its own metadata). Resumes at once: reads only the O(log n) right-border
        subtree hashes, never walks leaves."""
        if _check_int(size, "size") < 0 or size >= 1 << _LEVELS_MAX:
            raise MerkleLogError(f"size {size} out of range")
        if not 1 <= cache_level <= _LEVELS_MAX:
            raise MerkleLogError(f"cache_level {cache_level} out of range")
        self._store = store
        self._size = size
        self._flushed_size = size
        self._keys = [prefix + bytes([level]) for level in range(_LEVELS_MAX + 1)]
        self._cache_level = cache_level
        # One bytearray per level >= cache_level; zero bytes mark unloaded nodes.
        self._cache = [
            bytearray(HASH_SIZE * (size >> level))
            for level in range(cache_level, size.bit_length())
        ]
        # Unflushed nodes of level < cache_level, index-ordered from flushed_size >> level.
        self._staged: list[list[bytes]] = [[] for _ in range(cache_level)]
        # border[level]: hash of the frontier subtree of that level, if size has that bit.
        self._border: list[bytes | None] = [None] * (_LEVELS_MAX + 1)
        for level, index in range_ids(0, size):
            self._border[level] = self._node(level, index)

    @property
    def size(self) -> int:
        """Number of leaves, staged ones included."""
        return self._size

    def append(self, leaf_hashes: Sequence[bytes], batch: WriteBatch) -> bytes:
        """Stage leaves: puts go into `batch`; the in-memory frontier and size advance,
        and the new nodes are kept in an in-memory overlay until `flushed()` so reads
        stay correct even before the caller has written the batch. Returns the new root.

        Requires 32-byte leaf hashes; raises MerkleLogError (and changes
        nothing) otherwise.
        """
        nodes = list(leaf_hashes)
        if nodes and (set(map(len, nodes)) != {HASH_SIZE} or set(map(type, nodes)) != {bytes}):
            raise MerkleLogError("leaf hashes must be 32-byte bytes")
        if self._size + len(nodes) >= 1 << _LEVELS_MAX:
            raise MerkleLogError("the log is full")
        # Level by level rather than leaf by leaf: each level's new nodes are a
        # contiguous index run [first, first + len(nodes)), so keys, puts and
        # hashes are list comprehensions, which is what makes Python fast here.
        sha256 = _sha256
        pack = _pack_u64
        puts = batch.ops  # WriteBatch.put appends (key, value); skip the call
        border = self._border
        cache = self._cache
        cache_level = self._cache_level
        first = self._size
        level = 0
        while nodes:
            key = self._keys[level]
            puts.extend(zip([key + pack(index) for index in range(first, first + len(nodes))], nodes))
            if level < cache_level:
                self._staged[level].extend(nodes)
            else:
                if level - cache_level == len(cache):
                    cache.append(bytearray())
                cache[level - cache_level] += b"".join(nodes)
            if first & 1:  # the first new node is a right child: its left sibling is on the border
                nodes.insert(0, border[level])
                first -= 1
            # An odd count leaves the last node unpaired: it is this level's border node.
            border[level] = nodes[-1] if len(nodes) & 1 else None
            nodes = [sha256(b"\x01" + left + right).digest() for left, right in zip(nodes[0::2], nodes[1::2])]
            first >>= 1
            level += 1
        self._size += len(leaf_hashes)
        return self.root()

    def flushed(self) -> None:
        """The caller wrote every batch passed to `append`: drop the overlay."""
        self._flushed_size = self._size
        for level_nodes in self._staged:
            level_nodes.clear()

    def root(self, tree_size: int | None = None) -> bytes:
        """The root of the tree of the first `tree_size` leaves (default: all).

        Requires 0 <= tree_size <= size. Reads at most log2(size) nodes.
        """
        if tree_size is None or tree_size == self._size:
            frontier = [node for node in reversed(self._border) if node is not None]
            return _fold(frontier) if frontier else EMPTY_ROOT
        self._check_size(tree_size)
        if tree_size == 0:
            return EMPTY_ROOT
        return _fold([self._node(level, index) for level, index in range_ids(0, tree_size)])

    def leaf_hash_at(self, index: int) -> bytes:
        """The hash of leaf `index`. Requires 0 <= index < size."""
        if not 0 <= _check_int(index, "index") < self._size:
            raise MerkleLogError(f"requires 0 <= index < size, got {index}, {self._size}")
        return self._node(0, index)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """RFC 9162 audit path of leaf `index` in the tree of `tree_size` leaves.

        Requires 0 <= index < tree_size <= size. Reads from the store only the
        path's nodes below `cache_level` (and, near the right border, the parts
        of one ephemeral node).
        """
        self._check_size(tree_size)
        if not 0 <= _check_int(index, "index") < tree_size:
            raise MerkleLogError(f"requires 0 <= index < tree_size, got {index}, {tree_size}")
        # `_plan_path` + `_fetch` fused, with the common case (a stored,
        # perfect sibling) inlined: this is the proof server's hot loop.
        get = self._store.get
        keys = self._keys
        flushed_size = self._flushed_size
        cache_level = self._cache_level
        cache = self._cache
        proof = []
        top = (tree_size - 1).bit_length()
        level = 0
        while level < top:
            sibling = (index >> level) ^ 1
            begin = sibling << level
            if begin + (1 << level) <= tree_size:
                if level >= cache_level:
                    start = sibling << 5  # HASH_SIZE bytes a node
                    value = bytes(cache[level - cache_level][start:start + HASH_SIZE])
                    proof.append(value if value != _ZERO_HASH else self._node(level, sibling))
                elif begin + (1 << level) <= flushed_size:
                    value = get(keys[level] + _pack_u64(sibling))
                    if value is None or len(value) != HASH_SIZE:
                        raise MissingNodeError(f"Merkle node {level}/{sibling} missing or malformed")
                    proof.append(value)
                else:
                    proof.append(self._node(level, sibling))
            elif begin < tree_size:  # the sibling straddles tree_size: ephemeral
                proof.append(_fold([self._node(*node) for node in range_ids(begin, tree_size)]))
            level += 1
        return proof

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between two past sizes.

        Requires 0 < old_size <= new_size <= size.
        """
        self._check_size(new_size)
        _check_int(old_size, "old_size")
        return self._fetch(plan_consistency(old_size, new_size))

    def warm_cache(self) -> None:
        """Load every cached-level node now, one ordered scan per level.

        Optional: reads size / 2**(cache_level - 1) nodes, so call it where a
        pause is fine (node start-up), not on a hot path.
        """
        for offset, nodes in enumerate(self._cache):
            level = self._cache_level + offset
            key_prefix = self._keys[level]
            # Nodes completed after the last flush may not be in the store yet.
            count = min(len(nodes) // HASH_SIZE, self._flushed_size >> level)
            position = 0
            for key, value in self._store.iterate(key_prefix):
                index = int.from_bytes(key[len(key_prefix):], "big")
                if index >= count:
                    break
                if index != position or len(value) != HASH_SIZE:
                    raise MissingNodeError(f"Merkle node {level}/{position} missing or malformed")
                nodes[index * HASH_SIZE:(index + 1) * HASH_SIZE] = value
                position += 1
            if position < count:
                raise MissingNodeError(f"Merkle node {level}/{position} missing")

    # -- internals -----------------------------------------------------------

    def _check_size(self, tree_size: int) -> None:
        if not 0 <= _check_int(tree_size, "tree_size") <= self._size:
            raise MerkleLogError(f"requires 0 <= tree_size <= size, got {tree_size}, {self._size}")

    def _fetch(self, plan: Plan) -> list[bytes]:
        node = self._node
        proof = []
        for ids in plan:
            if len(ids) == 1:
                proof.append(node(*ids[0]))
            else:
                proof.append(_fold([node(level, index) for level, index in ids]))
        return proof

    def _node(self, level: int, index: int) -> bytes:
        """The hash of node (level, index); requires it complete within `size`."""
        if level >= self._cache_level:
            nodes = self._cache[level - self._cache_level]
            start = index * HASH_SIZE
            cached = bytes(nodes[start:start + HASH_SIZE])
            if cached != _ZERO_HASH:
                return cached
            stored = self._read(level, index)
            nodes[start:start + HASH_SIZE] = stored
            return stored
        base = self._flushed_size >> level
        if index >= base:
            return self._staged[level][index - base]
        return self._read(level, index)

    def _read(self, level: int, index: int) -> bytes:
        value = self._store.get(self._keys[level] + _pack_u64(index))
        if value is None or len(value) != HASH_SIZE:
            raise MissingNodeError(f"Merkle node {level}/{index} missing or malformed")
        return value

r"""RFC 9162 Merkle trees: hashing, reference proofs and proof verification.

Everything here is pure and in memory. The functions that build a root or a
proof take the whole list of leaf hashes and follow the RFC's recursive
definitions word for word: they are the oracle that `ledger.merkle_log` (which
builds the same outputs from stored subtree hashes) is tested against, not a
fast path. The two verifiers are what the offline client uses; they follow
transparency-dev/merkle's `proof` package and pass its probe files
(`tests/vectors/rfc9162/`).

A tree of `n` leaves splits at k, the largest power of two below n; the left
part is perfect, the right part recurses. For n = 7:

                 root = MTH(D[0:7])
               /                    \
        MTH(D[0:4])              MTH(D[4:7])
        /        \              /          \
   MTH(D[0:2]) MTH(D[2:4])  MTH(D[4:6])    d6   <- promoted, no hash of its own
     /   \       /   \        /   \
    d0   d1     d2   d3      d4   d5

Ranges are half-open: D[a:b] holds leaves a, a+1, ..., b-1. Proof hashes are
ordered from the leaf upwards, as the RFC prints them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32

_sha256 = hashlib.sha256

EMPTY_ROOT: bytes = _sha256(b"").digest()
"""The root of the tree with no leaves: SHA-256 of the empty string."""


class ProofError(ValueError):
    """A proof does not verify: malformed arguments, wrong length, or wrong root.

    The verifiers raise nothing else on bad input, so a caller can treat any
    ProofError as "the other side sent something that does not check out".
    """


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def parent_hashes(nodes: Sequence[bytes]) -> list[bytes]:
    """`node_hash` of each pair (nodes[0], nodes[1]), (nodes[2], nodes[3]), ...: a run
    of nodes one level up, in one comprehension rather than a call a pair; an
    unpaired last node is left out."""
    return [_sha256(b"\x01" + left + right).digest() for left, right in zip(nodes[0::2], nodes[1::2])]


def _split(size: int) -> int:
    """The largest power of two strictly below `size`; requires size >= 2."""
    return 1 << ((size - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1 over already hashed leaves.

    The empty list gives EMPTY_ROOT; one leaf is its own root.
    """
    size = len(leaf_hashes)
    if size == 0:
        return EMPTY_ROOT
    if size == 1:
        return leaf_hashes[0]
    k = _split(size)
    return node_hash(root(leaf_hashes[:k]), root(leaf_hashes[k:]))


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1: the audit path of leaf `index`.

    Requires 0 <= index < len(leaf_hashes); raises ValueError otherwise.
    """
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"requires 0 <= index < size, got index {index}, size {len(leaf_hashes)}")
    return _path(index, leaf_hashes)


def _path(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    size = len(leaf_hashes)
    if size == 1:
        return []
    k = _split(size)
    if index < k:
        return _path(index, leaf_hashes[:k]) + [root(leaf_hashes[k:])]
    return _path(index - k, leaf_hashes[k:]) + [root(leaf_hashes[:k])]


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 between sizes m = old_size and n.

    Requires 0 < old_size <= len(leaf_hashes); raises ValueError otherwise (a
    proof from the empty tree proves nothing, and verifiers reject it). Equal
    sizes give the empty proof.
    """
    if not 0 < old_size <= len(leaf_hashes):
        raise ValueError(
            f"requires 0 < old_size <= size, got old_size {old_size}, size {len(leaf_hashes)}"
        )
    return _subproof(old_size, leaf_hashes, True)


def _subproof(m: int, leaf_hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    # `complete` is the RFC's b: true while D[0:m] is still the whole old tree,
    # whose root the verifier already has.
    size = len(leaf_hashes)
    if m == size:
        return [] if complete else [root(leaf_hashes)]
    k = _split(size)
    if m <= k:
        return _subproof(m, leaf_hashes[:k], complete) + [root(leaf_hashes[k:])]
    return _subproof(m - k, leaf_hashes[k:], False) + [root(leaf_hashes[:k])]


# -- verification ------------------------------------------------------------


def _check_size(value: object, what: str) -> int:
    # bool is an int subclass; a True tree size is a caller's bug, not size 1.
    if type(value) is not int or value < 0:
        raise ProofError(f"{what} must be a non-negative int, got {value!r}")
    return value


def _check_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ProofError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _check_hash(value: object, what: str) -> bytes:
    value = _check_bytes(value, what)
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, want {HASH_SIZE}")
    return value


def _check_proof(proof: object) -> list[bytes]:
    if proof is None:  # the probe files spell an empty proof as null
        return []
    if type(proof) is list and all(type(item) is bytes and len(item) == HASH_SIZE for item in proof):
        return proof  # the common, already well-formed case, without a call per hash
    if isinstance(proof, (bytes, bytearray, memoryview, str)):
        raise ProofError("proof must be a sequence of hashes, not one byte string")
    try:
        items = list(proof)  # type: ignore[call-overload]
    except TypeError:
        raise ProofError(f"proof must be a sequence of hashes, got {type(proof).__name__}") from None
    return [_check_hash(item, f"proof[{i}]") for i, item in enumerate(items)]


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split the audit path of `index` in a tree of `size` leaves in two.

    `inner` hashes lie below the level where the paths to `index` and to
    `size - 1` meet; `border` hashes are the left siblings above it, on the
    tree's right border. Requires 0 <= index < size.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    sha256 = hashlib.sha256  # hashed inline: the verifier's hot loop
    for i, sibling in enumerate(proof):
        if (index >> i) & 1:
            seed = sha256(b"\x01" + sibling + seed).digest()
        else:
            seed = sha256(b"\x01" + seed + sibling).digest()
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    # Only the left siblings: what the same subtree hashed to before the
    # right-hand leaves existed.
    for i, sibling in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(sibling, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    sha256 = hashlib.sha256
    for sibling in proof:
        seed = sha256(b"\x01" + sibling + seed).digest()
    return seed


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that `proof` gives leaf `index` of a tree of `tree_size` leaves.

    Requires 0 <= index < tree_size, a 32-byte leaf hash and a proof of exactly
    the RFC length; raises ProofError otherwise.
    """
    tree_size = _check_size(tree_size, "tree_size")
    index = _check_size(index, "index")
    if index >= tree_size:
        raise ProofError(f"requires 0 <= index < tree_size, got {index} >= {tree_size}")
    seed = _check_hash(leaf_hash, "leaf hash")
    path = _check_proof(proof)
    inner, border = _decompose(index, tree_size)
    if len(path) != inner + border:
        raise ProofError(f"proof has {len(path)} hashes, want {inner + border}")
    seed = _chain_inner(seed, path[:inner], index)
    return _chain_border_right(seed, path[inner:])


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf `index` of the tree (`tree_size`, `root`) hashes to `leaf_hash`.

    RFC 9162 §2.1.3.2. Requires 0 <= index < tree_size. Returns None on
    success and raises ProofError on any failure.
    """
    calculated = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if calculated != _check_bytes(root, "root"):
        raise ProofError("inclusion proof leads to a different root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (`old_size`, `old_root`) is a prefix of (`new_size`, `new_root`).

    RFC 9162 §2.1.4.2, with transparency-dev/merkle's edge cases:
    - requires 0 < old_size <= new_size: a proof from the empty tree is
      meaningless and is rejected, even between two empty trees;
    - old_size == new_size needs the empty proof and byte-equal roots (no
      hashing happens, so nothing else about the roots is checked).
    Returns None on success and raises ProofError on any failure.
    """
    old_size = _check_size(old_size, "old_size")
    new_size = _check_size(new_size, "new_size")
    old_root = _check_bytes(old_root, "old root")
    new_root = _check_bytes(new_root, "new root")
    path = _check_proof(proof)
    if new_size < old_size:
        raise ProofError(f"new_size {new_size} < old_size {old_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    if old_size == new_size:
        if path:
            raise ProofError("equal sizes need the empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes but different roots")
        return
    if not path:
        raise ProofError("different sizes need a non-empty proof")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")

    # The proof is the audit path, in the new tree, of the largest perfect
    # subtree ending at old_size (level `shift`), preceded by that subtree's
    # hash unless it is the whole old tree, which the verifier already has.
    inner, border = _decompose(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    inner -= shift
    if old_size == 1 << shift:
        seed, start = old_root, 0
    else:
        seed, start = path[0], 1
    if len(path) != start + inner + border:
        raise ProofError(f"proof has {len(path)} hashes, want {start + inner + border}")
    path = path[start:]
    mask = (old_size - 1) >> shift
    old_calculated = _chain_border_right(_chain_inner_right(seed, path[:inner], mask), path[inner:])
    if old_calculated != old_root:
        raise ProofError("consistency proof leads to a different old root")
    new_calculated = _chain_border_right(_chain_inner(seed, path[:inner], mask), path[inner:])
    if new_calculated != new_root:
        raise ProofError("consistency proof leads to a different new root")

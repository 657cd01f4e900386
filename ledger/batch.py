"""Cohort batches: one issuer signature over many credential ids.

A `credential.issue_batch` record signs the RFC 9162 Merkle tree hash of a
list of credential ids, in the issuer's order:

    leaf i      SHA-256(0x00 || credential id i)        (the id is the leaf data)
    interior    SHA-256(0x01 || left || right)
    root        MTH(ids) of RFC 9162 section 2.1.1

so "this id is in the batch the issuer signed" is an ordinary RFC 9162
inclusion proof (index, size = the batch's count, audit path) to the
record's `root`, checkable by any RFC 9162 verifier. The ids travel with the
record to every node, which recomputes the root before it accepts them.

Pure and deterministic: no storage, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

from ledger.merkle import ProofError, verify_inclusion

T = TypeVar("T")

ID_BYTES = 32
BATCH_CREDENTIALS_MAX = 65_536
"""Ids in one batch: 2 MiB of ids, well inside every frame and body limit."""


def split_ids(blob: bytes) -> list[bytes]:
    """The ids packed in `blob` (32 bytes each, concatenated)."""
    if len(blob) % ID_BYTES:
        raise ValueError("ids must be a whole number of 32-byte ids")
    return [blob[i : i + ID_BYTES] for i in range(0, len(blob), ID_BYTES)]


def _leaf_hashes(ids: Sequence[bytes]) -> list[bytes]:
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + credential_id).digest() for credential_id in ids]


def _parent_level(level: list[bytes]) -> list[bytes]:
    # Pairs from the left; an odd last node moves up unchanged. Level by
    # level this yields exactly RFC 9162's MTH, which splits at the largest
    # power of two below n: the left subtrees are complete, and the lone
    # right-edge node is the root of the remaining (smaller) subtree.
    sha256 = hashlib.sha256
    parents = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


def batch_root(ids: Sequence[bytes]) -> bytes:
    """MTH over the ids as leaf data; requires at least one id."""
    if not ids:
        raise ValueError("a batch holds at least one id")
    level = _leaf_hashes(ids)
    while len(level) > 1:
        level = _parent_level(level)
    return level[0]


class BatchTree:
    """Every level of a batch's tree, to hand out audit paths in O(log n) each."""

    __slots__ = ("levels", "index")

    def __init__(self, ids: Sequence[bytes]) -> None:
        if not ids:
            raise ValueError("a batch holds at least one id")
        self.index = {credential_id: i for i, credential_id in enumerate(ids)}
        level = _leaf_hashes(ids)
        self.levels = [level]
        while len(level) > 1:
            level = _parent_level(level)
            self.levels.append(level)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def path(self, index: int) -> list[bytes]:
        """The RFC 9162 audit path of leaf `index`, leaf to root."""
        if not 0 <= index < self.size:
            raise ValueError(f"index {index} outside a batch of {self.size}")
        return level_path(self.levels, index)


def level_path(levels: Sequence[Sequence[T]], index: int) -> list[T]:
    """The siblings of leaf `index`'s ancestors in `levels` (a BatchTree's, or the same nodes
    in another form, e.g. hex), leaf to root: its audit path. The last level is the root."""
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def verify_batch_path(credential_id: bytes, index: int, count: int, path: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless `credential_id` is leaf `index` of the `count`-id batch with `root`."""
    if type(credential_id) is not bytes or len(credential_id) != ID_BYTES:
        raise ProofError("credential id must be 32 bytes")
    verify_inclusion(hashlib.sha256(b"\x00" + credential_id).digest(), index, count, list(path), root)

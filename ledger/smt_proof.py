r"""The authenticated map's hashing, proofs and proof verification (pure).

This is all an offline verifier needs from `ledger.smt`: no storage, no
clock. `docs/state.md` ("Authenticated map") is the specification; this
module follows it word for word.

The tree
--------
A map from 32-byte keys to 32-byte value hashes is a binary tree of depth
256: bit i of the key (bit 0 = the most significant bit of byte 0) chooses
the child at depth i + 1, 0 = left. The tree is kept in compressed canonical
form, so its root depends only on the set of (key, value hash) pairs:

    subtree with no leaf        EMPTY = 32 zero bytes
    subtree with one leaf       leaf_hash(key, value_hash) = SHA-256(0x10 || key || value_hash)
    subtree with >= 2 leaves    node_hash(left, right)     = SHA-256(0x11 || left || right)

A leaf therefore sits at the highest position where it is alone. Keys
0000..., 0100..., 0110... (first bits shown):

            root = node(A, EMPTY)                depth 0
              /            \
    A = node(l1, B)       EMPTY                  depth 1
        /         \
    leaf 0000..   B = node(leaf 0100.., leaf 0110..)   depth 2, 3

Proofs
------
A `Proof` of key K is the walk from the root along K's path to where the
search stops: the siblings it passed, root side first (siblings[i] is the
sibling at depth i + 1), and the terminal: None if the walk ended at an EMPTY
subtree, else the leaf found there. That leaf is K's (membership) or another
key sharing K's first len(siblings) bits (non-membership). A verifier folds
from the terminal upwards (`_fold`): while the current subtree is a lone leaf
or EMPTY and the sibling is EMPTY, the parent is the current subtree itself
(the compression rule); otherwise parent = node_hash, ordered by K's bit. An
honest prover never sends such EMPTY padding below a lone terminal, but a
padded proof folds to the same root and proves the same, true, statement
(the soundness argument is in docs/state.md).

A `PrefixProof` proves the complete set of leaves whose keys start with a
bit prefix: the walk along the prefix stops at the prefix depth, or earlier
at an EMPTY subtree or a lone leaf; the proof gives the siblings passed and
every leaf of the subtree where it stopped, and the verifier rebuilds that
subtree's canonical hash from them before folding.

Everything raises `ProofError` (a `ledger.merkle.ProofError`) on input that
does not check out, and nothing else.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger import merkle

HASH_SIZE = 32
KEY_SIZE = 32
KEY_BITS = 256
EMPTY = bytes(HASH_SIZE)
"""The hash of an empty subtree, at every depth."""

LEAF_TAG = b"\x10"
NODE_TAG = b"\x11"
PREFIX_BITS_MAX = 64
PREFIX_LEAVES_MAX = 1 << 20
"""The most leaves a decoded `PrefixProof` may hold (a bound on hostile input)."""

PROOF_BYTES_MAX = 2 + 32 + KEY_BITS * HASH_SIZE + 1 + KEY_SIZE + HASH_SIZE
"""The longest `Proof` encoding: 256 non-EMPTY siblings and a leaf (8,291 bytes)."""

_sha256 = hashlib.sha256
_HEX32 = re.compile(r"[0-9a-f]{64}\Z")

Leaf = tuple[bytes, bytes]
"""(key, value hash)."""


class ProofError(merkle.ProofError):
    """A map proof is malformed or does not verify."""


def leaf_hash(key: bytes, value_hash: bytes) -> bytes:
    """SHA-256(0x10 || key || value_hash): the hash of a subtree holding one leaf."""
    return _sha256(LEAF_TAG + key + value_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x11 || left || right): the hash of a subtree holding >= 2 leaves."""
    return _sha256(NODE_TAG + left + right).digest()


def key_bit(key: bytes, depth: int) -> int:
    """Bit `depth` of `key` (0 = most significant bit of byte 0): 0 left, 1 right."""
    return key[depth >> 3] >> (7 - (depth & 7)) & 1


def subtree_hash(leaves: Sequence[Leaf], depth: int) -> bytes:
    """The canonical hash of the subtree at `depth` holding exactly `leaves`.

    Requires keys strictly increasing and all sharing their first `depth`
    bits (they lie under one position at that depth).
    """
    ints = [int.from_bytes(key, "big") for key, _ in leaves]
    return _subtree_hash(ints, leaves, depth, 0, len(leaves))


def _subtree_hash(ints: list[int], leaves: Sequence[Leaf], depth: int, low: int, high: int) -> bytes:
    if high == low:
        return EMPTY
    if high - low == 1:
        key, value_hash = leaves[low]
        return _sha256(LEAF_TAG + key + value_hash).digest()
    # >= 2 distinct keys share `depth` bits, so depth <= 255 here.
    shift = 255 - depth
    middle = bisect.bisect_left(ints, (ints[low] >> shift | 1) << shift, low, high)
    return _sha256(
        NODE_TAG
        + _subtree_hash(ints, leaves, depth + 1, low, middle)
        + _subtree_hash(ints, leaves, depth + 1, middle, high)
    ).digest()


def _fold(path: int, siblings: Sequence[bytes], current: bytes, lone: bool) -> bytes:
    """The root reached from `current`, the subtree at depth len(siblings) on
    `path` (a key as an int), through `siblings` (root side first).

    `lone`: `current` is EMPTY or a single leaf's hash, so EMPTY siblings
    directly above it are compressed away.
    """
    sha256 = _sha256
    count = len(siblings)
    if lone:
        while count and siblings[count - 1] == EMPTY:
            count -= 1
    bits = path >> (KEY_BITS - count)  # the path's first `count` bits, the last one lowest
    for sibling in reversed(siblings[:count]):
        if bits & 1:
            current = sha256(NODE_TAG + sibling + current).digest()
        else:
            current = sha256(NODE_TAG + current + sibling).digest()
        bits >>= 1
    return current


# -- type checks --------------------------------------------------------------


def _check_bytes32(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != 32:
        raise ProofError(f"{what} must be 32 bytes")
    return value


def _check_leaf(value: object, what: str) -> Leaf:
    if type(value) is not tuple or len(value) != 2:
        raise ProofError(f"{what} must be a (key, value_hash) tuple")
    _check_bytes32(value[0], f"{what} key")
    _check_bytes32(value[1], f"{what} value hash")
    return value


def _check_siblings(siblings: object, count_max: int) -> None:
    if type(siblings) is not tuple:
        raise ProofError("siblings must be a tuple")
    if len(siblings) > count_max:
        raise ProofError(f"{len(siblings)} siblings, at most {count_max}")
    # Two C loops rather than one Python loop: provers build many proofs.
    if siblings and (set(map(type, siblings)) != {bytes} or set(map(len, siblings)) != {HASH_SIZE}):
        raise ProofError("every sibling must be 32 bytes")


def _prefix_path(prefix: object, bits: object) -> int:
    """The first `bits` bits of `prefix` as a 256-bit path (the rest zero)."""
    if type(bits) is not int or not 0 < bits <= PREFIX_BITS_MAX:
        raise ProofError(f"bits must be an int in 1..{PREFIX_BITS_MAX}, got {bits!r}")
    if type(prefix) is not bytes or not (bits + 7) // 8 <= len(prefix) <= KEY_SIZE:
        raise ProofError(f"prefix must be {(bits + 7) // 8}..{KEY_SIZE} bytes for {bits} bits")
    return (int.from_bytes(prefix, "big") << (KEY_BITS - 8 * len(prefix))) >> (KEY_BITS - bits) << (KEY_BITS - bits)


# -- wire helpers ---------------------------------------------------------------


def _encode_siblings(siblings: tuple[bytes, ...]) -> bytes:
    """u16 count || bitmap (bit i, MSB first: sibling i is not EMPTY) || the non-EMPTY siblings."""
    bitmap = 0
    present = []
    width = (len(siblings) + 7) // 8
    for index, sibling in enumerate(siblings):
        if sibling != EMPTY:
            bitmap |= 1 << (8 * width - 1 - index)
            present.append(sibling)
    return len(siblings).to_bytes(2, "big") + bitmap.to_bytes(width, "big") + b"".join(present)


def _decode_siblings(data: bytes, count_max: int) -> tuple[tuple[bytes, ...], int]:
    """Siblings from the start of `data` and the offset just past them."""
    if len(data) < 2:
        raise ProofError("truncated: no sibling count")
    count = int.from_bytes(data[:2], "big")
    if count > count_max:
        raise ProofError(f"{count} siblings, at most {count_max}")
    width = (count + 7) // 8
    offset = 2 + width
    if len(data) < offset:
        raise ProofError("truncated sibling bitmap")
    bitmap = int.from_bytes(data[2:offset], "big")
    if bitmap & ((1 << (8 * width - count)) - 1):
        raise ProofError("sibling bitmap has padding bits set")
    siblings = []
    for index in range(count):
        if bitmap >> (8 * width - 1 - index) & 1:
            sibling = data[offset:offset + HASH_SIZE]
            if len(sibling) != HASH_SIZE:
                raise ProofError("truncated sibling hash")
            if sibling == EMPTY:
                raise ProofError(f"sibling {index} is marked non-EMPTY but is all zero")
            siblings.append(sibling)
            offset += HASH_SIZE
        else:
            siblings.append(EMPTY)
    return tuple(siblings), offset


def _hex32(value: object, what: str) -> bytes:
    if type(value) is not str or not _HEX32.match(value):
        raise ProofError(f"{what} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def _siblings_to_json(siblings: tuple[bytes, ...]) -> list[str]:
    return ["" if sibling == EMPTY else sibling.hex() for sibling in siblings]


def _siblings_from_json(value: object, count_max: int) -> tuple[bytes, ...]:
    if type(value) is not list:
        raise ProofError("siblings must be a list")
    if len(value) > count_max:
        raise ProofError(f"{len(value)} siblings, at most {count_max}")
    siblings = []
    for index, item in enumerate(value):
        if item == "":
            siblings.append(EMPTY)
            continue
        sibling = _hex32(item, f"siblings[{index}]")
        if sibling == EMPTY:
            raise ProofError(f"siblings[{index}]: write an EMPTY sibling as \"\"")
        siblings.append(sibling)
    return tuple(siblings)


def _leaf_to_json(leaf: Leaf) -> dict:
    return {"key": leaf[0].hex(), "value_hash": leaf[1].hex()}


def _leaf_from_json(value: object, what: str) -> Leaf:
    if type(value) is not dict or set(value) != {"key", "value_hash"}:
        raise ProofError(f"{what} must be an object with the fields key, value_hash")
    return _hex32(value["key"], f"{what} key"), _hex32(value["value_hash"], f"{what} value_hash")


def _fields(document: object, names: set[str]) -> dict:
    if type(document) is not dict or set(document) != names:
        raise ProofError(f"a proof is an object with the fields {', '.join(sorted(names))}")
    return document


# -- membership and non-membership --------------------------------------------


@dataclass(frozen=True, slots=True)
class Proof:
    """The walk from the root along a key's path to where the search stopped.

    `siblings[i]` is the sibling at depth i + 1 (at most 256). `leaf` is None
    if the walk ended at an EMPTY subtree, else the (key, value hash) of the
    lone leaf found at depth len(siblings): the queried key's own leaf, or
    another key's that shares the path so far.
    """

    siblings: tuple[bytes, ...]
    leaf: Leaf | None = None

    def __post_init__(self) -> None:
        _check_siblings(self.siblings, KEY_BITS)
        if self.leaf is not None:
            _check_leaf(self.leaf, "leaf")

    @classmethod
    def from_checked_parts(cls, siblings: tuple[bytes, ...], leaf: Leaf | None) -> Proof:
        """A proof from parts the caller guarantees valid (a tuple of at most
        256 32-byte bytes; None or a tuple of two), without checking them
        again: for a prover slicing them out of checked storage."""
        proof = object.__new__(cls)
        object.__setattr__(proof, "siblings", siblings)
        object.__setattr__(proof, "leaf", leaf)
        return proof

    def encode(self) -> bytes:
        """u16 count || bitmap || non-EMPTY siblings || 0x00 | 0x01 key value_hash."""
        terminal = b"\x00" if self.leaf is None else b"\x01" + self.leaf[0] + self.leaf[1]
        return _encode_siblings(self.siblings) + terminal

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """The proof `data` encodes; exactly `encode`'s output, or ProofError."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProofError("a proof encoding is bytes")
        data = bytes(data)
        if len(data) > PROOF_BYTES_MAX:
            raise ProofError(f"proof is {len(data)} bytes, at most {PROOF_BYTES_MAX}")
        siblings, offset = _decode_siblings(data, KEY_BITS)
        kind = data[offset:offset + 1]
        if kind == b"\x00":
            leaf, end = None, offset + 1
        elif kind == b"\x01":
            end = offset + 1 + KEY_SIZE + HASH_SIZE
            if len(data) < end:
                raise ProofError("truncated leaf")
            leaf = (data[offset + 1:offset + 1 + KEY_SIZE], data[offset + 1 + KEY_SIZE:end])
        elif not kind:
            raise ProofError("truncated: no terminal")
        else:
            raise ProofError(f"unknown terminal kind {kind[0]:#04x}")
        if end != len(data):
            raise ProofError(f"{len(data) - end} trailing bytes")
        return cls(siblings, leaf)

    def to_json(self) -> dict:
        """{"siblings": [hex, "" for EMPTY, ...], "leaf": {"key", "value_hash"} | null}."""
        return {
            "siblings": _siblings_to_json(self.siblings),
            "leaf": None if self.leaf is None else _leaf_to_json(self.leaf),
        }

    @classmethod
    def from_json(cls, document: object) -> Proof:
        d = _fields(document, {"siblings", "leaf"})
        siblings = _siblings_from_json(d["siblings"], KEY_BITS)
        leaf = None if d["leaf"] is None else _leaf_from_json(d["leaf"], "leaf")
        return cls(siblings, leaf)


def root_from_proof(proof: Proof, key: bytes, value_hash: bytes | None) -> bytes:
    """The root under which `proof` shows `key` mapped to `value_hash`
    (None: `key` absent). Raises ProofError if the proof cannot show that
    under any root: wrong terminal for the claim, or a terminal leaf off
    the key's path.

    For a caller that combines the map root with others (a state root);
    `verify` compares it with a known root.
    """
    if type(proof) is not Proof:
        raise ProofError("proof must be a Proof")
    _check_bytes32(key, "key")
    if value_hash is not None:
        _check_bytes32(value_hash, "value hash")
    path = int.from_bytes(key, "big")
    depth = len(proof.siblings)
    leaf = proof.leaf
    if leaf is None:
        if value_hash is not None:
            raise ProofError("the proof shows the key absent")
        current = EMPTY
    else:
        leaf_key, leaf_value_hash = leaf
        if (int.from_bytes(leaf_key, "big") ^ path) >> (KEY_BITS - depth):
            raise ProofError(f"the terminal leaf does not share the key's first {depth} bits")
        if leaf_key == key:
            if value_hash is None:
                raise ProofError("the proof shows the key present")
            if leaf_value_hash != value_hash:
                raise ProofError("the proof shows the key with another value hash")
        elif value_hash is not None:
            raise ProofError("the proof shows the key absent (another key's leaf ends its path)")
        current = _sha256(LEAF_TAG + leaf_key + leaf_value_hash).digest()
    return _fold(path, proof.siblings, current, True)


def verify(root: bytes, key: bytes, value_hash: bytes | None, proof: Proof) -> None:
    """Check that the map with root `root` maps `key` to `value_hash`, or,
    with value_hash None, does not hold `key`. Raises ProofError otherwise."""
    _check_bytes32(root, "root")
    if root_from_proof(proof, key, value_hash) != root:
        raise ProofError("the proof leads to a different root")


def proven_value_hash(root: bytes, key: bytes, proof: Proof) -> bytes | None:
    """The value hash `proof` shows for `key` under `root` (None: absent).
    Raises ProofError if the proof does not verify."""
    leaf = proof.leaf if type(proof) is Proof else None
    value_hash = leaf[1] if leaf is not None and leaf[0] == key else None
    verify(root, key, value_hash, proof)
    return value_hash


# -- complete sets under a prefix ---------------------------------------------


@dataclass(frozen=True, slots=True)
class PrefixProof:
    """All leaves under a bit prefix, with the siblings that place them.

    The walk along the prefix stopped at depth len(siblings), at most the
    prefix's bit count; `leaves` (strictly increasing keys) are every leaf
    of the subtree where it stopped. It stops early only at an EMPTY subtree
    (no leaves) or a lone leaf (one leaf, which may or may not match the
    rest of the prefix).
    """

    siblings: tuple[bytes, ...]
    leaves: tuple[Leaf, ...] = ()

    def __post_init__(self) -> None:
        _check_siblings(self.siblings, PREFIX_BITS_MAX)
        if type(self.leaves) is not tuple:
            raise ProofError("leaves must be a tuple")
        previous = None
        for index, leaf in enumerate(self.leaves):
            _check_leaf(leaf, f"leaves[{index}]")
            if previous is not None and leaf[0] <= previous:
                raise ProofError("leaves must be in strictly increasing key order")
            previous = leaf[0]

    def encode(self) -> bytes:
        """u16 count || bitmap || non-EMPTY siblings || u32 leaf count || (key value_hash)*."""
        return (
            _encode_siblings(self.siblings)
            + len(self.leaves).to_bytes(4, "big")
            + b"".join(key + value_hash for key, value_hash in self.leaves)
        )

    @classmethod
    def decode(cls, data: bytes, leaves_max: int = PREFIX_LEAVES_MAX) -> PrefixProof:
        """The proof `data` encodes; exactly `encode`'s output, or ProofError."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProofError("a prefix proof encoding is bytes")
        data = bytes(data)
        siblings, offset = _decode_siblings(data, PREFIX_BITS_MAX)
        if len(data) < offset + 4:
            raise ProofError("truncated: no leaf count")
        count = int.from_bytes(data[offset:offset + 4], "big")
        if count > leaves_max:
            raise ProofError(f"{count} leaves, at most {leaves_max}")
        offset += 4
        size = KEY_SIZE + HASH_SIZE
        if len(data) != offset + count * size:
            raise ProofError(f"{count} leaves need {count * size} bytes, got {len(data) - offset}")
        leaves = tuple(
            (data[start:start + KEY_SIZE], data[start + KEY_SIZE:start + size])
            for start in range(offset, len(data), size)
        )
        return cls(siblings, leaves)

    def to_json(self) -> dict:
        """{"siblings": [hex, "" for EMPTY, ...], "leaves": [{"key", "value_hash"}, ...]}."""
        return {
            "siblings": _siblings_to_json(self.siblings),
            "leaves": [_leaf_to_json(leaf) for leaf in self.leaves],
        }

    @classmethod
    def from_json(cls, document: object, leaves_max: int = PREFIX_LEAVES_MAX) -> PrefixProof:
        d = _fields(document, {"siblings", "leaves"})
        siblings = _siblings_from_json(d["siblings"], PREFIX_BITS_MAX)
        if type(d["leaves"]) is not list:
            raise ProofError("leaves must be a list")
        if len(d["leaves"]) > leaves_max:
            raise ProofError(f"{len(d['leaves'])} leaves, at most {leaves_max}")
        return cls(siblings, tuple(_leaf_from_json(leaf, f"leaves[{i}]") for i, leaf in enumerate(d["leaves"])))


def root_from_prefix_proof(proof: PrefixProof, prefix: bytes, bits: int) -> tuple[bytes, list[Leaf]]:
    """(root, leaves): the root under which `proof` shows that `leaves` are
    all the leaves whose keys start with the first `bits` bits of `prefix`
    (1 <= bits <= 64; `prefix` holds at least that many bits, later bits are
    ignored). Raises ProofError if the proof is not of that shape."""
    if type(proof) is not PrefixProof:
        raise ProofError("proof must be a PrefixProof")
    path = _prefix_path(prefix, bits)
    depth = len(proof.siblings)
    leaves = proof.leaves
    if depth > bits:
        raise ProofError(f"{depth} siblings for a {bits}-bit prefix")
    if depth < bits and len(leaves) > 1:
        raise ProofError("a walk that stops above the prefix depth ends at one leaf at most")
    ints = [int.from_bytes(key, "big") for key, _ in leaves]
    for value in ints:
        if (value ^ path) >> (KEY_BITS - depth):
            raise ProofError(f"a leaf does not share the prefix's first {depth} bits")
    current = _subtree_hash(ints, leaves, depth, 0, len(leaves))
    root = _fold(path, proof.siblings, current, len(leaves) <= 1)
    matching = [leaf for leaf, value in zip(leaves, ints) if not (value ^ path) >> (KEY_BITS - bits)]
    return root, matching


def verify_prefix(root: bytes, prefix: bytes, bits: int, proof: PrefixProof) -> list[Leaf]:
    """Every (key, value hash) of the map with root `root` whose key starts
    with the first `bits` bits of `prefix`, in key order. Raises ProofError
    if the proof does not verify."""
    _check_bytes32(root, "root")
    computed, leaves = root_from_prefix_proof(proof, prefix, bits)
    if computed != root:
        raise ProofError("the prefix proof leads to a different root")
    return leaves

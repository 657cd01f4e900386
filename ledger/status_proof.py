"""Status proofs: current state entries proven against a checkpoint's state root.

A cosigned checkpoint carries the state root as the extension line
`lacre-state <base64>`; the state root joins the two maps' roots
(`ledger.state.state_root`). A status proof gives one map's proof for one
key, the entry bytes at that key (or none: never issued / never
registered), and the other map's root, so a verifier recomputes the state
root from the proof alone:

    credential status   credentials map, key = credential id
    issuer status       registry map, key = SHA-256("lacre/issuer\\0" || key)
    batch status        registry map, key = SHA-256("lacre/batch\\0" || batch id)
    prefix status       every credential whose id starts with `bits` bits

Pure: no storage, no clock. `now` for expiry is the caller's.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ledger import codec
from ledger.checkpoint import Checkpoint
from ledger.smt_proof import PrefixProof, Proof, ProofError, root_from_prefix_proof, root_from_proof
from ledger.entries import BatchEntry, CredentialEntry, IssuerEntry, entry_hash, in_force
from ledger.state import batch_path, issuer_path, state_root

STATE_EXTENSION = "lacre-state "
BLOCK_EXTENSION = "lacre-block "
TIME_EXTENSION = "lacre-time "
PREFIX_BITS_MIN = 8
PREFIX_BITS_MAX = 64


class StatusProofError(ValueError):
    """A status proof that is malformed or does not prove what it claims."""


def checkpoint_state_root(checkpoint: Checkpoint) -> bytes:
    """The state root a lacre checkpoint commits to; raises StatusProofError if absent."""
    for line in checkpoint.extensions:
        if line.startswith(STATE_EXTENSION):
            try:
                root = base64.b64decode(line[len(STATE_EXTENSION):], validate=True)
            except binascii.Error:
                break
            if len(root) == 32:
                return root
            break
    raise StatusProofError("checkpoint carries no lacre-state line")


def checkpoint_height(checkpoint: Checkpoint) -> int | None:
    """The block height a lacre checkpoint names, if any."""
    for line in checkpoint.extensions:
        if line.startswith(BLOCK_EXTENSION):
            height = line[len(BLOCK_EXTENSION):].split(" ", 1)[0]
            if height.isdigit():
                return int(height)
    return None


def checkpoint_time_ms(checkpoint: Checkpoint) -> int | None:
    """The block time (unix ms) a lacre checkpoint carries, if any."""
    for line in checkpoint.extensions:
        if line.startswith(TIME_EXTENSION):
            value = line[len(TIME_EXTENSION):]
            if value.isdigit() and len(value) <= 16:
                return int(value)
    return None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(value: object, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 1 << 16:
        raise StatusProofError(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise StatusProofError(f"{what}: {error}") from None


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise StatusProofError(f"{what} must be 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise StatusProofError(f"{what} must be 64 hex characters") from None


def _fields(document: object, names: set[str]) -> dict:
    if not isinstance(document, dict) or set(document) != names:
        raise StatusProofError(f"a status proof has the fields {', '.join(sorted(names))}")
    return document


def _decode_entry(kind: type, data: bytes):
    try:
        return kind.decode(data)
    except (codec.CodecError, KeyError, TypeError, ValueError) as error:
        raise StatusProofError(f"entry does not decode: {error}") from None


@dataclass(frozen=True, slots=True)
class CredentialStatusProof:
    credential_id: bytes
    entry: bytes | None
    proof: Proof
    registry_root: bytes

    def verify(self, root: bytes) -> CredentialEntry | None:
        """The proven entry (None: never issued) under state root `root`; raises StatusProofError."""
        entry = None
        value_hash = None
        if self.entry is not None:
            entry = _decode_entry(CredentialEntry, self.entry)
            if entry.credential_id != self.credential_id:
                raise StatusProofError("entry is for another credential")
            value_hash = entry_hash(self.entry)
        try:
            credentials_root = root_from_proof(self.proof, self.credential_id, value_hash)
        except ProofError as error:
            raise StatusProofError(f"credential map proof fails: {error}") from None
        if state_root(credentials_root, self.registry_root) != root:
            raise StatusProofError("proof does not lead to the checkpoint's state root")
        return entry

    def to_json(self) -> dict:
        return {
            "credential_id": self.credential_id.hex(),
            "entry": _b64(self.entry),
            "proof": self.proof.to_json(),
            "registry_root": self.registry_root.hex(),
        }

    @classmethod
    def from_json(cls, document: object) -> "CredentialStatusProof":
        d = _fields(document, {"credential_id", "entry", "proof", "registry_root"})
        try:
            proof = Proof.from_json(d["proof"])
        except ProofError as error:
            raise StatusProofError(f"proof: {error}") from None
        return cls(
            _hex32(d["credential_id"], "credential_id"), _unb64(d["entry"], "entry"),
            proof, _hex32(d["registry_root"], "registry_root"),
        )


def _registry_entry(kind: type, key_of, key: bytes, path: bytes, data: bytes | None, proof: Proof,
                    credentials_root: bytes, root: bytes):
    """The registry entry `data` (None: absent) at `path`, proven under state root `root`."""
    entry = None
    value_hash = None
    if data is not None:
        entry = _decode_entry(kind, data)
        if key_of(entry) != key:
            raise StatusProofError("entry is for another key")
        value_hash = entry_hash(data)
    try:
        registry_root = root_from_proof(proof, path, value_hash)
    except ProofError as error:
        raise StatusProofError(f"registry map proof fails: {error}") from None
    if state_root(credentials_root, registry_root) != root:
        raise StatusProofError("proof does not lead to the checkpoint's state root")
    return entry


def _registry_json(key_name: str, key: bytes, entry: bytes | None, proof: Proof, credentials_root: bytes) -> dict:
    return {key_name: key.hex(), "entry": _b64(entry), "proof": proof.to_json(), "credentials_root": credentials_root.hex()}


def _registry_fields(document: object, key_name: str) -> tuple[bytes, bytes | None, Proof, bytes]:
    d = _fields(document, {key_name, "entry", "proof", "credentials_root"})
    try:
        proof = Proof.from_json(d["proof"])
    except ProofError as error:
        raise StatusProofError(f"proof: {error}") from None
    return _hex32(d[key_name], key_name), _unb64(d["entry"], "entry"), proof, _hex32(d["credentials_root"], "credentials_root")


@dataclass(frozen=True, slots=True)
class IssuerStatusProof:
    issuer_key: bytes
    entry: bytes | None
    proof: Proof
    credentials_root: bytes

    def verify(self, root: bytes) -> IssuerEntry | None:
        """The proven issuer entry (None: never registered) under state root `root`."""
        return _registry_entry(IssuerEntry, lambda e: e.issuer_key, self.issuer_key, issuer_path(self.issuer_key),
                               self.entry, self.proof, self.credentials_root, root)

    def to_json(self) -> dict:
        return _registry_json("issuer_key", self.issuer_key, self.entry, self.proof, self.credentials_root)

    @classmethod
    def from_json(cls, document: object) -> "IssuerStatusProof":
        return cls(*_registry_fields(document, "issuer_key"))


@dataclass(frozen=True, slots=True)
class BatchStatusProof:
    batch_id: bytes
    entry: bytes | None
    proof: Proof
    credentials_root: bytes

    def verify(self, root: bytes) -> BatchEntry | None:
        """The proven batch entry (None: no such batch) under state root `root`."""
        return _registry_entry(BatchEntry, lambda e: e.batch_id, self.batch_id, batch_path(self.batch_id),
                               self.entry, self.proof, self.credentials_root, root)

    def to_json(self) -> dict:
        return _registry_json("batch_id", self.batch_id, self.entry, self.proof, self.credentials_root)

    @classmethod
    def from_json(cls, document: object) -> "BatchStatusProof":
        return cls(*_registry_fields(document, "batch_id"))


def member_status(
    credential_id: bytes, index: int, own: CredentialEntry | None, batch: BatchEntry
) -> CredentialEntry:
    """A batch member's status from its batch's entry and its own (None: it has none).

    Both must be proven under one state root; raises StatusProofError if the
    own entry is not this member's.
    """
    if own is None:
        return batch.member(credential_id, index)
    if own.batch_id != batch.batch_id or own.batch_index != index or own.issuance_leaf != batch.leaf_index:
        raise StatusProofError("the credential's own entry names another batch position")
    return in_force(own, batch)


@dataclass(frozen=True, slots=True)
class PrefixStatusProof:
    """Every credential whose id starts with the first `bits` bits of `prefix`.

    The node learns only the prefix: with n credentials it hides the id among
    about n / 2**bits others.
    """

    prefix: bytes
    bits: int
    entries: tuple[bytes, ...]
    proof: PrefixProof
    registry_root: bytes

    def verify(self, root: bytes) -> list[CredentialEntry]:
        """All entries under the prefix, proven complete under state root `root`."""
        try:
            credentials_root, leaves = root_from_prefix_proof(self.proof, self.prefix, self.bits)
        except ProofError as error:
            raise StatusProofError(f"prefix proof fails: {error}") from None
        if state_root(credentials_root, self.registry_root) != root:
            raise StatusProofError("proof does not lead to the checkpoint's state root")
        if len(leaves) != len(self.entries):
            raise StatusProofError("entries differ from the proven leaves")
        entries = []
        for (key, value_hash), data in zip(leaves, self.entries):
            entry = _decode_entry(CredentialEntry, data)
            if entry.credential_id != key or entry_hash(data) != value_hash:
                raise StatusProofError(f"entry for {key.hex()} differs from the proven leaf")
            entries.append(entry)
        return entries

    def to_json(self) -> dict:
        return {
            "prefix": self.prefix.hex(),
            "bits": self.bits,
            "entries": [_b64(e) for e in self.entries],
            "proof": self.proof.to_json(),
            "registry_root": self.registry_root.hex(),
        }

    @classmethod
    def from_json(cls, document: object) -> "PrefixStatusProof":
        d = _fields(document, {"prefix", "bits", "entries", "proof", "registry_root"})
        bits = d["bits"]
        if type(bits) is not int or not PREFIX_BITS_MIN <= bits <= PREFIX_BITS_MAX:
            raise StatusProofError(f"bits must be {PREFIX_BITS_MIN}..{PREFIX_BITS_MAX}")
        if not isinstance(d["prefix"], str) or len(d["prefix"]) > 16:
            raise StatusProofError("prefix must be at most 8 bytes of hex")
        try:
            prefix = bytes.fromhex(d["prefix"])
        except ValueError:
            raise StatusProofError("prefix must be hex") from None
        if not isinstance(d["entries"], list):
            raise StatusProofError("entries must be a list")
        try:
            proof = PrefixProof.from_json(d["proof"])
        except ProofError as error:
            raise StatusProofError(f"proof: {error}") from None
        entries = tuple(_unb64(e, "entry") or b"" for e in d["entries"])
        return cls(prefix, bits, entries, proof, _hex32(d["registry_root"], "registry_root"))


# -- building, over committed state (a `ledger.state.StoreStateView`) -------

def prove_credential(state, credential_id: bytes) -> CredentialStatusProof:
    """The status proof of `credential_id` under the committed state root."""
    return CredentialStatusProof(
        credential_id, state.credential_bytes(credential_id),
        state.credential_map.prove(credential_id), state.registry_map.root(),
    )


def prove_issuer(state, issuer_key: bytes) -> IssuerStatusProof:
    """The registry proof of `issuer_key` under the committed state root."""
    return IssuerStatusProof(
        issuer_key, state.issuer_bytes(issuer_key),
        state.registry_map.prove(issuer_path(issuer_key)), state.credential_map.root(),
    )


def prove_batch(state, batch_id: bytes) -> BatchStatusProof:
    """The registry proof of `batch_id` under the committed state root."""
    return BatchStatusProof(
        batch_id, state.batch_bytes(batch_id),
        state.registry_map.prove(batch_path(batch_id)), state.credential_map.root(),
    )


def prove_prefix(state, prefix: bytes, bits: int, leaves_max: int) -> PrefixStatusProof:
    """Every credential under the first `bits` bits of `prefix`, proven complete.

    Raises the map's too-many-leaves error past `leaves_max` credentials.
    """
    if not PREFIX_BITS_MIN <= bits <= PREFIX_BITS_MAX or len(prefix) * 8 < bits:
        raise StatusProofError(f"a prefix has {PREFIX_BITS_MIN}..{PREFIX_BITS_MAX} bits")
    proof = state.credential_map.prove_prefix(prefix, bits, leaves_max)
    _, matching = root_from_prefix_proof(proof, prefix, bits)
    entries = tuple(state.credential_bytes(key) for key, _ in matching)
    return PrefixStatusProof(prefix, bits, entries, proof, state.registry_map.root())

"""Blocks, their headers, and the commit certificates that make them final.

A block at height h holds the records appended to the log by that block. Its
header commits to everything: the previous header, the log size and root
after the block, the credential-state root. A commit certificate is a quorum
of authorities' precommits for the header hash; each precommit also carries
the authority's C2SP note signature over the block's checkpoint, so every
certificate doubles as a quorum-cosigned checkpoint.

    genesis <- header 1 <- header 2 <- ...      (previous_hash links)
                 |
                 +-- log_size, log_root   (RFC 9162 tree after the block)
                 +-- state_root
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ledger import codec, crypto
from ledger.checkpoint import Checkpoint
from ledger.genesis import AuthoritySet
from ledger.note import NoteSignature, NoteSigner, NoteVerifier, format_note, sign_text

HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)


class BlockError(ValueError):
    """A block, header or certificate that breaks a rule; `rule` names it."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


def _need(condition: bool, rule: str, detail: str) -> None:
    if not condition:
        raise BlockError(rule, detail)


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_BYTES


@dataclass(frozen=True, slots=True)
class BlockHeader:
    height: int
    previous_hash: bytes
    proposer: str
    round: int
    timestamp_ms: int
    record_count: int
    log_size: int
    log_root: bytes
    state_root: bytes

    def __post_init__(self) -> None:
        for name in ("height", "round", "timestamp_ms", "record_count", "log_size"):
            value = getattr(self, name)
            _need(type(value) is int and 0 <= value < 1 << 63, "header-fields", f"{name} out of range")
        _need(self.height >= 1, "header-fields", "height starts at 1")
        _need(self.record_count <= self.log_size, "header-fields", "more records than leaves")
        _need(type(self.proposer) is str and 0 < len(self.proposer) <= 64, "header-fields", "bad proposer")
        for name in ("previous_hash", "log_root", "state_root"):
            _need(_is_hash(getattr(self, name)), "header-fields", f"{name} must be 32 bytes")

    @property
    def first_leaf(self) -> int:
        return self.log_size - self.record_count

    def to_map(self) -> dict:
        return {
            "height": self.height,
            "log_root": self.log_root,
            "log_size": self.log_size,
            "previous_hash": self.previous_hash,
            "proposer": self.proposer,
            "record_count": self.record_count,
            "round": self.round,
            "state_root": self.state_root,
            "timestamp_ms": self.timestamp_ms,
        }

    @classmethod
    def from_map(cls, mapping: dict) -> "BlockHeader":
        _need(type(mapping) is dict and set(mapping) == set(cls.__dataclass_fields__), "header-fields", "wrong field set")
        return cls(**mapping)

    def encode(self) -> bytes:
        return codec.encode(self.to_map())

    @property
    def hash(self) -> bytes:
        return crypto.sha256(self.encode())

    def checkpoint(self, origin: str) -> Checkpoint:
        """The tlog checkpoint this block produces.

        Extension lines bind it to this block, its state root and its time,
        so a cosigned checkpoint is also a statement about the block; the
        time (unix milliseconds, the block's timestamp) lets a verifier
        apply a freshness policy to a status proof it was handed.
        """
        b64 = base64.b64encode
        return Checkpoint(
            origin,
            self.log_size,
            self.log_root,
            (
                f"lacre-block {self.height} {b64(self.hash).decode()}",
                f"lacre-state {b64(self.state_root).decode()}",
                f"lacre-time {self.timestamp_ms}",
            ),
        )


def vote_message(chain: bytes, kind: str, height: int, round: int, block_hash: bytes) -> bytes:
    """Bytes an authority signs to vote; `chain` (the genesis hash) stops cross-chain replay."""
    return codec.encode({"block": block_hash, "chain": chain, "height": height, "round": round, "type": kind})


@dataclass(frozen=True, slots=True)
class CommitSignature:
    """One authority's precommit for a block, with its checkpoint cosignature."""

    authority: str
    vote_signature: bytes
    checkpoint_signature: bytes

    def __post_init__(self) -> None:
        _need(type(self.authority) is str and self.authority != "", "certificate", "authority name")
        for name in ("vote_signature", "checkpoint_signature"):
            value = getattr(self, name)
            _need(type(value) is bytes and len(value) == crypto.SIGNATURE_BYTES, "certificate", f"{name} must be 64 bytes")

    def to_map(self) -> dict:
        return {"authority": self.authority, "checkpoint_sig": self.checkpoint_signature, "vote_sig": self.vote_signature}

    @classmethod
    def from_map(cls, mapping: dict) -> "CommitSignature":
        _need(type(mapping) is dict and set(mapping) == {"authority", "checkpoint_sig", "vote_sig"}, "certificate", "signature fields")
        return cls(mapping["authority"], mapping["vote_sig"], mapping["checkpoint_sig"])


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSignature, ...]

    def __post_init__(self) -> None:
        _need(type(self.height) is int and self.height >= 1, "certificate", "height")
        _need(type(self.round) is int and self.round >= 0, "certificate", "round")
        _need(_is_hash(self.block_hash), "certificate", "block hash must be 32 bytes")

    def to_map(self) -> dict:
        return {
            "block": self.block_hash,
            "height": self.height,
            "round": self.round,
            "signatures": [s.to_map() for s in self.signatures],
        }

    @classmethod
    def from_map(cls, mapping: dict) -> "CommitCertificate":
        _need(type(mapping) is dict and set(mapping) == {"block", "height", "round", "signatures"}, "certificate", "fields")
        _need(type(mapping["signatures"]) is list, "certificate", "signatures is a list")
        return cls(
            mapping["height"], mapping["round"], mapping["block"],
            tuple(CommitSignature.from_map(s) for s in mapping["signatures"]),
        )

    def verify(
        self, header: BlockHeader, authority_set: AuthoritySet, chain: bytes, origin: str,
        signatures_checked: bool = False,
    ) -> None:
        """Raise BlockError unless a quorum of `authority_set` precommitted `header`.

        Every signature counted must verify twice: the vote over the header
        hash and the note signature over the block's checkpoint. A signature by
        a non-member, a duplicate, or one that fails is a violation, not
        something to skip: an honest node never assembles such a certificate.
        `signatures_checked`: the caller assembled this certificate from
        signatures it verified itself (the consensus machine does), so only
        the binding, the membership and the quorum are checked again.
        """
        _need(self.height == header.height, "certificate", "height differs from the header's")
        _need(self.block_hash == header.hash, "certificate", "block hash differs from the header's")
        checkpoint_text = header.checkpoint(origin).text()
        message = vote_message(chain, "precommit", self.height, self.round, self.block_hash)
        seen: set[str] = set()
        for signature in self.signatures:
            authority = authority_set.by_name(signature.authority)
            _need(authority is not None, "certificate", f"{signature.authority!r} is not an authority")
            _need(signature.authority not in seen, "certificate", f"{signature.authority!r} signed twice")
            seen.add(signature.authority)
            if signatures_checked:
                continue
            try:
                crypto.verify(authority.public_key, crypto.VOTE_CONTEXT, message, signature.vote_signature)
            except crypto.SignatureError:
                raise BlockError("certificate", f"bad precommit signature by {signature.authority}") from None
            try:
                crypto.verify(authority.public_key, b"", checkpoint_text.encode(), signature.checkpoint_signature)
            except crypto.SignatureError:
                raise BlockError("certificate", f"bad checkpoint signature by {signature.authority}") from None
        _need(
            len(seen) >= authority_set.quorum, "certificate",
            f"{len(seen)} signatures, quorum is {authority_set.quorum}",
        )

    def checkpoint_note(self, header: BlockHeader, origin: str, authority_set: AuthoritySet) -> str:
        """The cosigned checkpoint as a C2SP signed note."""
        text = header.checkpoint(origin).text()
        signatures = []
        for signature in self.signatures:
            authority = authority_set.by_name(signature.authority)
            if authority is None:
                continue
            verifier = NoteVerifier.from_key(authority.name, authority.public_key)
            signatures.append(NoteSignature(verifier.name, verifier.key_id, signature.checkpoint_signature))
        return format_note(text, signatures)


def precommit(
    key: crypto.KeyPair, header: BlockHeader, round: int, chain: bytes, origin: str
) -> CommitSignature:
    """Sign a precommit for `header` and cosign its checkpoint."""
    message = vote_message(chain, "precommit", header.height, round, header.hash)
    vote_signature = key.sign(crypto.VOTE_CONTEXT, message)
    note_signature = sign_text(header.checkpoint(origin).text(), NoteSigner(key.name, key.seed))
    return CommitSignature(key.name, vote_signature, note_signature.signature)


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    records: tuple[bytes, ...]
    certificate: CommitCertificate

    def to_map(self) -> dict:
        return {
            "certificate": self.certificate.to_map(),
            "header": self.header.to_map(),
            "records": list(self.records),
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_map())

    @classmethod
    def decode(cls, data: bytes) -> "Block":
        try:
            mapping = codec.decode(data)
        except codec.CodecError as error:
            raise BlockError("encoding", str(error)) from None
        _need(type(mapping) is dict and set(mapping) == {"certificate", "header", "records"}, "encoding", "block fields")
        _need(type(mapping["records"]) is list and all(type(r) is bytes for r in mapping["records"]), "encoding", "records")
        header = BlockHeader.from_map(mapping["header"])
        _need(len(mapping["records"]) == header.record_count, "record-count", "records differ from the header's count")
        return cls(header, tuple(mapping["records"]), CommitCertificate.from_map(mapping["certificate"]))

"""Wire messages: proposals and votes, their canonical bytes and signatures.

A proposal is split in two. `Proposal` is the signed statement "authority P
proposes block hash B at (height, round), citing valid round VR"; it is small,
is what the proposer persists before sending, and is what evidence carries.
`ProposalMessage` is what travels: the statement plus the `Value` (the block
hash, the opaque block body and the checkpoint text precommits cosign). The
statement signs only the block hash; the shell's validation binds the body and
checkpoint text to that hash (for lacre: the body decodes to a header whose
hash is B and whose checkpoint text is the one given).

A `Vote` signs exactly `ledger.block.vote_message`, so the precommits the
machine collects are, unchanged, the signatures of a `CommitCertificate`. A
non-nil precommit also carries the authority's note signature over the
checkpoint text; that signature is not covered by the vote signature, so it is
checked separately against the proposal's checkpoint text.

Wire form (canonical MessagePack via ledger.codec):

    {"chain": genesis hash, "type": "proposal", "proposal": {...}, "body": bin, "checkpoint": str}
    {"chain": genesis hash, "type": "vote", "vote": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ledger import codec, crypto
from ledger.block import vote_message

HASH_BYTES = 32
NIL = b""  # the block hash of a nil vote
ROUND_MAX = 1 << 31
HEIGHT_MAX = 1 << 62


class MessageError(ValueError):
    """Bytes or fields that are not a well-formed consensus message (a peer's fault)."""


class VoteKind(str, Enum):
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


def _need(condition: bool, detail: str) -> None:
    if not condition:
        raise MessageError(detail)


def _check_position(height: object, round: object) -> None:
    _need(type(height) is int and 1 <= height < HEIGHT_MAX, "height out of range")
    _need(type(round) is int and 0 <= round < ROUND_MAX, "round out of range")


def _check_signature(value: object, what: str) -> None:
    _need(type(value) is bytes and len(value) == crypto.SIGNATURE_BYTES, f"{what} must be 64 bytes")


def _check_name(value: object) -> None:
    _need(type(value) is str and 0 < len(value) <= 64, "authority name")


@dataclass(frozen=True, slots=True)
class Value:
    """What consensus decides: a block hash, the block body, its checkpoint text.

    The machine compares values by `block_hash` only (Algorithm 1's id(v)).
    """

    block_hash: bytes
    body: bytes
    checkpoint_text: str

    def __post_init__(self) -> None:
        _need(type(self.block_hash) is bytes and len(self.block_hash) == HASH_BYTES, "block hash must be 32 bytes")
        _need(type(self.body) is bytes, "body must be bytes")
        _need(type(self.checkpoint_text) is str, "checkpoint text must be str")


def proposal_message(chain: bytes, height: int, round: int, valid_round: int, block_hash: bytes) -> bytes:
    """Bytes a proposer signs (under VOTE_CONTEXT); `chain` stops cross-chain replay."""
    return codec.encode({
        "block": block_hash, "chain": chain, "height": height,
        "round": round, "type": "proposal", "valid_round": valid_round,
    })


@dataclass(frozen=True, slots=True)
class Proposal:
    """The signed statement of a proposal. valid_round is -1 or in [0, round)."""

    height: int
    round: int
    valid_round: int
    block_hash: bytes
    proposer: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_position(self.height, self.round)
        _need(type(self.valid_round) is int and -1 <= self.valid_round < self.round, "valid round out of range")
        _need(type(self.block_hash) is bytes and len(self.block_hash) == HASH_BYTES, "block hash must be 32 bytes")
        _check_name(self.proposer)
        _check_signature(self.signature, "proposal signature")

    @property
    def authority(self) -> str:
        return self.proposer

    def signed_bytes(self, chain: bytes) -> bytes:
        return proposal_message(chain, self.height, self.round, self.valid_round, self.block_hash)

    def to_map(self) -> dict:
        return {
            "block": self.block_hash, "height": self.height, "proposer": self.proposer,
            "round": self.round, "signature": self.signature, "valid_round": self.valid_round,
        }

    @classmethod
    def from_map(cls, mapping: object) -> "Proposal":
        _need(type(mapping) is dict and set(mapping) == {"block", "height", "proposer", "round", "signature", "valid_round"}, "proposal fields")
        return cls(mapping["height"], mapping["round"], mapping["valid_round"], mapping["block"], mapping["proposer"], mapping["signature"])


@dataclass(frozen=True, slots=True)
class ProposalMessage:
    """A proposal as sent: the signed statement and the value it names."""

    proposal: Proposal
    value: Value

    def __post_init__(self) -> None:
        _need(self.value.block_hash == self.proposal.block_hash, "value hash differs from the proposal's")

    @property
    def height(self) -> int:
        return self.proposal.height

    @property
    def round(self) -> int:
        return self.proposal.round

    @property
    def authority(self) -> str:
        return self.proposal.proposer


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed prevote or precommit; block_hash is NIL (b"") for a nil vote.

    checkpoint_signature is 64 bytes on a non-nil precommit and empty otherwise.
    """

    kind: VoteKind
    height: int
    round: int
    block_hash: bytes
    authority: str
    signature: bytes
    checkpoint_signature: bytes = b""

    def __post_init__(self) -> None:
        _need(isinstance(self.kind, VoteKind), "vote kind")
        _check_position(self.height, self.round)
        _need(type(self.block_hash) is bytes and len(self.block_hash) in (0, HASH_BYTES), "block hash must be 32 bytes or nil")
        _check_name(self.authority)
        _check_signature(self.signature, "vote signature")
        if self.kind is VoteKind.PRECOMMIT and self.block_hash != NIL:
            _check_signature(self.checkpoint_signature, "checkpoint signature")
        else:
            _need(self.checkpoint_signature == b"", "only a non-nil precommit cosigns a checkpoint")

    @property
    def is_nil(self) -> bool:
        return self.block_hash == NIL

    def signed_bytes(self, chain: bytes) -> bytes:
        return vote_message(chain, self.kind.value, self.height, self.round, self.block_hash)

    def to_map(self) -> dict:
        return {
            "authority": self.authority, "block": self.block_hash, "checkpoint_sig": self.checkpoint_signature,
            "height": self.height, "kind": self.kind.value, "round": self.round, "signature": self.signature,
        }

    @classmethod
    def from_map(cls, mapping: object) -> "Vote":
        _need(type(mapping) is dict and set(mapping) == {"authority", "block", "checkpoint_sig", "height", "kind", "round", "signature"}, "vote fields")
        _need(mapping["kind"] in ("prevote", "precommit"), "vote kind")
        return cls(
            VoteKind(mapping["kind"]), mapping["height"], mapping["round"], mapping["block"],
            mapping["authority"], mapping["signature"], mapping["checkpoint_sig"],
        )


Message = ProposalMessage | Vote
Signed = Proposal | Vote  # what an authority signs; what evidence and persisted state hold


def encode_message(chain: bytes, message: Message) -> bytes:
    """The canonical wire bytes of `message` on chain `chain`."""
    if isinstance(message, Vote):
        return codec.encode({"chain": chain, "type": "vote", "vote": message.to_map()})
    return codec.encode({
        "body": message.value.body, "chain": chain, "checkpoint": message.value.checkpoint_text,
        "proposal": message.proposal.to_map(), "type": "proposal",
    })


def decode_message(data: bytes) -> tuple[bytes, Message]:
    """(chain, message) from wire bytes; raises MessageError on anything malformed."""
    try:
        mapping = codec.decode(data)
    except codec.CodecError as error:
        raise MessageError(f"not canonical MessagePack: {error}") from None
    _need(type(mapping) is dict and type(mapping.get("chain")) is bytes, "envelope")
    chain = mapping["chain"]
    if mapping.get("type") == "vote":
        _need(set(mapping) == {"chain", "type", "vote"}, "vote envelope fields")
        return chain, Vote.from_map(mapping["vote"])
    if mapping.get("type") == "proposal":
        _need(set(mapping) == {"body", "chain", "checkpoint", "proposal", "type"}, "proposal envelope fields")
        proposal = Proposal.from_map(mapping["proposal"])
        return chain, ProposalMessage(proposal, Value(proposal.block_hash, mapping["body"], mapping["checkpoint"]))
    raise MessageError("unknown message type")


def encode_signed(message: Signed) -> dict:
    """A signed statement as a map, tagged with its type (for persisted state and evidence)."""
    if isinstance(message, Vote):
        return {"type": "vote", "vote": message.to_map()}
    return {"proposal": message.to_map(), "type": "proposal"}


def decode_signed(mapping: object) -> Signed:
    _need(type(mapping) is dict and mapping.get("type") in ("vote", "proposal"), "signed statement")
    if mapping["type"] == "vote":
        _need(set(mapping) == {"type", "vote"}, "vote statement fields")
        return Vote.from_map(mapping["vote"])
    _need(set(mapping) == {"proposal", "type"}, "proposal statement fields")
    return Proposal.from_map(mapping["proposal"])


def slot(message: Signed) -> tuple[int, int, str]:
    """(height, round, kind): an authority signs at most one statement per slot."""
    kind = message.kind.value if isinstance(message, Vote) else "proposal"
    return (message.height, message.round, kind)


def conflicting(first: Signed, second: Signed) -> bool:
    """Two statements by one authority for one slot that say different things."""
    if first.authority != second.authority or slot(first) != slot(second):
        return False
    if isinstance(first, Vote):
        return first.block_hash != second.block_hash
    return (first.block_hash, first.valid_round) != (second.block_hash, second.valid_round)

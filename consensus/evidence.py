"""Evidence: two conflicting signed statements by one authority.

An authority that signs two different votes of one kind, or two different
proposals, at one (height, round) has broken the protocol; no honest
authority ever does, even across crashes. The pair proves it to anyone who
holds the authority set: `Evidence.verify` re-checks both signatures.
Proposals are kept as signed statements (no block body), so evidence is small.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec, crypto
from ledger.genesis import AuthoritySet

from consensus.messages import MessageError, Signed, conflicting, decode_signed, encode_signed
from consensus.signing import Verify, default_verify


class EvidenceError(ValueError):
    """Evidence that does not prove misbehaviour."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """`first` and `second`: same authority and slot, different content.

    Construction checks the shape; `verify` checks the signatures."""

    first: Signed
    second: Signed

    def __post_init__(self) -> None:
        if type(self.first) is not type(self.second) or not conflicting(self.first, self.second):
            raise EvidenceError("the two statements do not conflict")

    @property
    def authority(self) -> str:
        return self.first.authority

    @property
    def height(self) -> int:
        return self.first.height

    @property
    def round(self) -> int:
        return self.first.round

    def verify(self, authority_set: AuthoritySet, chain: bytes, verify: Verify = default_verify) -> None:
        """Raise EvidenceError unless both statements are validly signed by a member of `authority_set`."""
        authority = authority_set.by_name(self.authority)
        if authority is None:
            raise EvidenceError(f"{self.authority!r} is not an authority")
        for statement in (self.first, self.second):
            try:
                verify(authority.public_key, crypto.VOTE_CONTEXT, statement.signed_bytes(chain), statement.signature)
            except crypto.SignatureError:
                raise EvidenceError(f"a statement is not signed by {self.authority}") from None

    def to_map(self) -> dict:
        return {"first": encode_signed(self.first), "second": encode_signed(self.second)}

    def encode(self) -> bytes:
        return codec.encode(self.to_map())

    @classmethod
    def decode(cls, data: bytes) -> "Evidence":
        try:
            mapping = codec.decode(data)
            if type(mapping) is not dict or set(mapping) != {"first", "second"}:
                raise EvidenceError("evidence fields")
            return cls(decode_signed(mapping["first"]), decode_signed(mapping["second"]))
        except (codec.CodecError, MessageError) as error:
            raise EvidenceError(f"malformed evidence: {error}") from None

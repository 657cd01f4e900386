"""The simulated application and signature scheme, shared by simulator, checkers and scenarios.

A block body is `height (8 bytes, big-endian) || {"nonce", "records"}` (the
map in canonical MessagePack; records are small byte strings clients
submitted); its hash is SHA-256 of the body; its checkpoint text is a pure
function of (height, hash). A block is valid on a chain when it is well formed
for its height and carries no record twice, counting the chain's own.
Signatures are a deterministic stand-in for Ed25519 with the same shapes
(32-byte keys, 64-byte signatures): BLAKE2b-512 over key || context || message.
Anyone could forge it, which is fine: the simulated Byzantine authority signs
only as itself, and garbage it sends never hits a valid stand-in signature.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Container, Sequence
from dataclasses import dataclass

from ledger import codec, crypto
from ledger.block import vote_message
from ledger.genesis import Authority, AuthoritySet

from consensus.messages import Value
from consensus.signing import CHECKPOINT_CONTEXT

CHAIN_ID = hashlib.sha256(b"lacre simulated chain").digest()
ORIGIN = "sim.lacre.local/consortium"


def public_key(name: str) -> bytes:
    return hashlib.sha256(b"sim-key:" + name.encode()).digest()


def stand_in_signature(key: bytes, context: bytes, message: bytes) -> bytes:
    return hashlib.blake2b(key + context + message, digest_size=64).digest()


def stand_in_verify(key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
    if signature != stand_in_signature(key, context, message):
        raise crypto.SignatureError("bad stand-in signature")


@dataclass(frozen=True, slots=True)
class StandInSigner:
    name: str

    def sign(self, context: bytes, message: bytes) -> bytes:
        return stand_in_signature(public_key(self.name), context, message)


def authority_names(n: int) -> list[str]:
    return [f"inst-{index}" for index in range(n)]


def authority_set(n: int) -> AuthoritySet:
    return AuthoritySet(tuple(Authority(name, public_key(name)) for name in authority_names(n)))


def checkpoint_text(height: int, block_hash: bytes) -> str:
    return f"{ORIGIN}\n{height}\n{base64.b64encode(block_hash).decode()}\n"


def make_value(height: int, nonce: bytes, records: Sequence[bytes] = ()) -> Value:
    """A block at `height` carrying `records` in order; `nonce` tells apart blocks with the same records."""
    body = height.to_bytes(8, "big") + codec.encode({"nonce": nonce, "records": list(records)})
    block_hash = hashlib.sha256(body).digest()
    return Value(block_hash, body, checkpoint_text(height, block_hash))


def records_of(value: Value) -> tuple[bytes, ...] | None:
    """The records `value`'s body carries, in order; None if the body is not a block body."""
    try:
        payload = codec.decode(value.body[8:])
    except codec.CodecError:
        return None
    if type(payload) is not dict or set(payload) != {"nonce", "records"} or type(payload["records"]) is not list:
        return None
    if type(payload["nonce"]) is not bytes or any(type(record) is not bytes for record in payload["records"]):
        return None
    return tuple(payload["records"])


def is_valid(height: int, value: Value, committed: Container[bytes] = ()) -> bool:
    """The simulated chain's valid(v), on a chain whose records so far are `committed`."""
    body = value.body
    if not (
        len(body) >= 8 and int.from_bytes(body[:8], "big") == height
        and hashlib.sha256(body).digest() == value.block_hash
        and value.checkpoint_text == checkpoint_text(height, value.block_hash)
    ):
        return False
    records = records_of(value)
    return records is not None and len(set(records)) == len(records) and not any(r in committed for r in records)


def certificate_problem(certificate, value: Value, authorities: AuthoritySet) -> str | None:
    """`CommitCertificate.verify`'s logic over the stand-in scheme; None when it holds."""
    if certificate.block_hash != value.block_hash:
        return "certificate names another block"
    message = vote_message(CHAIN_ID, "precommit", certificate.height, certificate.round, certificate.block_hash)
    seen: set[str] = set()
    for signature in certificate.signatures:
        authority = authorities.by_name(signature.authority)
        if authority is None:
            return f"{signature.authority} is not an authority"
        if signature.authority in seen:
            return f"{signature.authority} signed twice"
        seen.add(signature.authority)
        try:
            stand_in_verify(authority.public_key, crypto.VOTE_CONTEXT, message, signature.vote_signature)
            stand_in_verify(authority.public_key, CHECKPOINT_CONTEXT, value.checkpoint_text.encode(), signature.checkpoint_signature)
        except crypto.SignatureError:
            return f"bad signature by {signature.authority}"
    if len(seen) < authorities.quorum:
        return f"{len(seen)} signatures, quorum is {authorities.quorum}"
    return None

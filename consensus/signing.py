"""How the machine signs and checks signatures, kept injectable.

The real node signs with an Ed25519 `ledger.crypto.KeyPair` and checks with
`ledger.crypto.verify`. The simulator injects a cheap deterministic stand-in
with the same shapes, so a hundred thousand seeds do not spend their time in
curve arithmetic. Every signature is 64 bytes in both schemes because commit
certificates (`ledger.block.CommitSignature`) require it.
"""

from __future__ import annotations

from typing import Callable, Protocol

from ledger import crypto

# A checkpoint cosignature is a C2SP note signature: Ed25519 over the note
# text's UTF-8 bytes with no context prefix, exactly what `note.sign_text` makes.
CHECKPOINT_CONTEXT = b""


class Signer(Protocol):
    """One authority's private key. `ledger.crypto.KeyPair` satisfies it."""

    @property
    def name(self) -> str: ...

    def sign(self, context: bytes, message: bytes) -> bytes:
        """The 64-byte signature over context || message."""
        ...


# verify(public_key, context, message, signature) returns None or raises
# ledger.crypto.SignatureError; `ledger.crypto.verify` is the production one.
Verify = Callable[[bytes, bytes, bytes, bytes], None]

SignatureError = crypto.SignatureError
default_verify: Verify = crypto.verify

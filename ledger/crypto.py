"""Ed25519 keys and signatures (PyNaCl), with lacre's signing contexts.

Every signature lacre makes is over `context || message`, where the context
names what is signed (a record, a vote, ...). A signature made for one purpose
can therefore never be replayed as another.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32

RECORD_CONTEXT = b"lacre/record/v1\n"
VOTE_CONTEXT = b"lacre/vote/v1\n"
PEER_CONTEXT = b"lacre/peer/v1\n"
GOVERNANCE_CONTEXT = b"lacre/governance/v1\n"


class SignatureError(ValueError):
    """A signature that does not verify, or a malformed key or signature."""


class KeyFileError(ValueError):
    """A key file that cannot be read as a lacre key."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 key pair with a human name (an authority or issuer label)."""

    name: str
    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise KeyFileError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls, name: str) -> "KeyPair":
        return cls(name, os.urandom(SEED_BYTES))

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def sign(self, context: bytes, message: bytes) -> bytes:
        return self.signing_key.sign(context + message).signature

    def to_json(self) -> dict:
        return {
            "type": "ed25519",
            "name": self.name,
            "private_key": self.seed.hex(),
            "public_key": self.public_key.hex(),
        }

    def save(self, path: str | Path) -> None:
        """Write the key file readable by its owner only."""
        path = Path(path)
        data = json.dumps(self.to_json(), indent=2) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(data)

    @classmethod
    def load(cls, path: str | Path) -> "KeyPair":
        try:
            document = json.loads(Path(path).read_text())
            if document.get("type") != "ed25519":
                raise KeyFileError(f"{path}: not an ed25519 key file")
            pair = cls(str(document["name"]), bytes.fromhex(document["private_key"]))
        except KeyFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise KeyFileError(f"{path}: not a lacre key file ({error})") from None
        if "public_key" in document and document["public_key"] != pair.public_key.hex():
            raise KeyFileError(f"{path}: public key does not match private key")
        return pair


class _VerifyKeyCache:
    """Parsed verify keys by raw bytes: parsing a point costs as much as a hash."""

    def __init__(self, size_max: int = 4096) -> None:
        self._keys: dict[bytes, nacl.signing.VerifyKey] = {}
        self._size_max = size_max

    def get(self, public_key: bytes) -> nacl.signing.VerifyKey:
        key = self._keys.get(public_key)
        if key is None:
            if len(public_key) != PUBLIC_KEY_BYTES:
                raise SignatureError("an Ed25519 public key is 32 bytes")
            try:
                key = nacl.signing.VerifyKey(public_key)
            except Exception:
                raise SignatureError("malformed Ed25519 public key") from None
            if len(self._keys) >= self._size_max:
                self._keys.clear()
            self._keys[public_key] = key
        return key


_verify_keys = _VerifyKeyCache()


def verify(public_key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` is `public_key`'s over context||message."""
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError("an Ed25519 signature is 64 bytes")
    try:
        _verify_keys.get(public_key).verify(context + message, signature)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError("bad signature") from None


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()

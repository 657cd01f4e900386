"""Ledger records: what issuers and authorities sign and the log stores.

A record is a body (one of the kinds below) signed by its author. Its
canonical bytes are the MessagePack map

    {"body": {...}, "kind": "credential.issue", "sig": <64 bytes>,
     "signer": <32-byte Ed25519 key>, "v": 1}

and those bytes are the Merkle leaf data. The signature covers the same map
without "sig", under `crypto.RECORD_CONTEXT`. The record hash is the leaf hash
`SHA-256(0x00 || bytes)`, so the hash a client holds is the hash the log
proves.

No personal data: a credential appears only as the SHA-256 of its RFC 8785
canonical form (its credential id).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ledger import codec, crypto
from ledger.merkle import leaf_hash

RECORD_VERSION = 1
RECORD_BYTES_MAX = 16 << 10
NAME_CHARS_MAX = 200
ORIGIN_CHARS_MAX = 200
ID_BYTES = 32
TIMESTAMP_MAX = 1 << 40  # seconds; far beyond any real date, bounds the encoding


class RecordError(ValueError):
    """Bytes or fields that do not form a valid record."""


class RevocationReason(enum.StrEnum):
    """Why a credential was revoked (codes after RFC 5280 CRLReason, for credentials)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key_compromise"
    ISSUED_IN_ERROR = "issued_in_error"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"
    FRAUD = "fraud"


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise RecordError(message)


def _check_id(value: Any, what: str) -> None:
    _need(type(value) is bytes and len(value) == ID_BYTES, f"{what} must be 32 bytes")


def _check_time(value: Any, what: str) -> None:
    _need(type(value) is int and 0 <= value < TIMESTAMP_MAX, f"{what} must be unix seconds")


def _check_text(value: Any, what: str, chars_max: int, empty_ok: bool = False) -> None:
    _need(type(value) is str, f"{what} must be text")
    _need(empty_ok or value.strip() != "", f"{what} must not be empty")
    _need(len(value) <= chars_max, f"{what} longer than {chars_max} characters")
    _need(value.isprintable(), f"{what} contains control characters")


@dataclass(frozen=True, slots=True)
class IssuerRegistration:
    """An authority admits an issuer key (itself, one of its units, a partner)."""

    KIND: ClassVar[str] = "issuer.register"
    issuer_key: bytes
    name: str
    country: str
    web_origin: str = ""

    def __post_init__(self) -> None:
        _need(
            type(self.issuer_key) is bytes and len(self.issuer_key) == crypto.PUBLIC_KEY_BYTES,
            "issuer_key must be a 32-byte Ed25519 key",
        )
        _check_text(self.name, "name", NAME_CHARS_MAX)
        _need(
            type(self.country) is str and len(self.country) == 2
            and self.country.isascii() and self.country.isupper(),
            "country must be an ISO 3166-1 alpha-2 code such as 'MX'",
        )
        _check_text(self.web_origin, "web_origin", ORIGIN_CHARS_MAX, empty_ok=True)

    def to_map(self) -> dict:
        return {
            "country": self.country,
            "issuer_key": self.issuer_key,
            "name": self.name,
            "web_origin": self.web_origin,
        }


@dataclass(frozen=True, slots=True)
class CredentialIssuance:
    """An issuer records that it issued the credential with this id."""

    KIND: ClassVar[str] = "credential.issue"
    credential_id: bytes
    issued_at: int
    expires_at: int = 0  # 0: does not expire

    def __post_init__(self) -> None:
        _check_id(self.credential_id, "credential_id")
        _check_time(self.issued_at, "issued_at")
        _check_time(self.expires_at, "expires_at")
        _need(
            self.expires_at == 0 or self.expires_at > self.issued_at,
            "expires_at must be after issued_at",
        )

    def to_map(self) -> dict:
        return {
            "credential_id": self.credential_id,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
        }


@dataclass(frozen=True, slots=True)
class CredentialRevocation:
    """The credential is revoked, for good."""

    KIND: ClassVar[str] = "credential.revoke"
    credential_id: bytes
    reason: RevocationReason
    revoked_at: int

    def __post_init__(self) -> None:
        _check_id(self.credential_id, "credential_id")
        _check_time(self.revoked_at, "revoked_at")
        try:
            object.__setattr__(self, "reason", RevocationReason(self.reason))
        except ValueError:
            codes = ", ".join(reason.value for reason in RevocationReason)
            raise RecordError(f"unknown revocation reason {self.reason!r}; one of {codes}") from None

    def to_map(self) -> dict:
        return {
            "credential_id": self.credential_id,
            "reason": self.reason.value,
            "revoked_at": self.revoked_at,
        }


RecordBody = IssuerRegistration | CredentialIssuance | CredentialRevocation
BODY_TYPES: dict[str, type] = {
    body.KIND: body for body in (IssuerRegistration, CredentialIssuance, CredentialRevocation)
}


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A record body with its author's key and signature.

    Construct with `sign` or `decode`; both guarantee `encoded` is canonical.
    The signature is checked by `verify`, not on construction, so the
    node can decide where that cost is paid (once, on admission).
    """

    body: RecordBody
    signer: bytes
    signature: bytes
    encoded: bytes = field(repr=False, compare=False, default=b"")
    unsigned: bytes = field(repr=False, compare=False, default=b"")
    hash: bytes = field(repr=False, compare=False, default=b"")
    """The record hash: its Merkle leaf hash (computed once)."""

    def __post_init__(self) -> None:
        _need(type(self.body) in BODY_TYPES.values(), "unknown record body")
        _need(
            type(self.signer) is bytes and len(self.signer) == crypto.PUBLIC_KEY_BYTES,
            "signer must be a 32-byte Ed25519 key",
        )
        _need(
            type(self.signature) is bytes and len(self.signature) == crypto.SIGNATURE_BYTES,
            "signature must be 64 bytes",
        )
        if not self.encoded:
            object.__setattr__(self, "encoded", codec.encode(self._map(with_signature=True)))
        if not self.unsigned:
            object.__setattr__(self, "unsigned", codec.encode(self._map(with_signature=False)))
        object.__setattr__(self, "hash", leaf_hash(self.encoded))

    @property
    def kind(self) -> str:
        return self.body.KIND

    def _map(self, with_signature: bool) -> dict:
        mapping = {
            "body": self.body.to_map(),
            "kind": self.body.KIND,
            "signer": self.signer,
            "v": RECORD_VERSION,
        }
        if with_signature:
            mapping["sig"] = self.signature
        return mapping

    def signed_message(self) -> bytes:
        """The bytes the signature covers: the record map without "sig"."""
        return self.unsigned

    @classmethod
    def sign(cls, body: RecordBody, key: crypto.KeyPair) -> "SignedRecord":
        unsigned = codec.encode({"body": body.to_map(), "kind": body.KIND, "signer": key.public_key, "v": RECORD_VERSION})
        signature = key.sign(crypto.RECORD_CONTEXT, unsigned)
        return cls(body, key.public_key, signature, unsigned=unsigned)

    def verify(self) -> None:
        """Raise crypto.SignatureError unless the signer signed this record."""
        crypto.verify(self.signer, crypto.RECORD_CONTEXT, self.unsigned, self.signature)

    @classmethod
    def decode(cls, data: bytes) -> "SignedRecord":
        """Parse canonical record bytes; raises RecordError on anything else."""
        if len(data) > RECORD_BYTES_MAX:
            raise RecordError(f"record larger than {RECORD_BYTES_MAX} bytes")
        try:
            mapping = codec.decode(data)
        except codec.CodecError as error:
            raise RecordError(str(error)) from None
        _need(type(mapping) is dict, "a record is a map")
        _need(set(mapping) == {"body", "kind", "sig", "signer", "v"}, "record fields are body, kind, sig, signer, v")
        _need(mapping["v"] == RECORD_VERSION, f"unsupported record version {mapping['v']!r}")
        body_type = BODY_TYPES.get(mapping["kind"]) if type(mapping["kind"]) is str else None
        _need(body_type is not None, f"unknown record kind {mapping['kind']!r}")
        values = mapping["body"]
        _need(type(values) is dict, "record body is a map")
        _need(set(values) == _FIELDS[body_type], f"{mapping['kind']} fields are {', '.join(sorted(_FIELDS[body_type]))}")
        try:
            body = body_type(**values)  # type: ignore[misc]
        except TypeError as error:
            raise RecordError(str(error)) from None
        signature = mapping.pop("sig")
        # The rest of a canonical map is still sorted and canonical: the
        # signed bytes come straight from it. Every body field is required
        # and kept as decoded, so `encoded` is exactly what to_map rebuilds
        # (tests/ledger/test_records.py holds both to that).
        unsigned = codec.encode_canonical(mapping)
        return cls(body, mapping["signer"], signature, encoded=bytes(data), unsigned=unsigned)


_FIELDS: dict[type, set[str]] = {body: {f.name for f in fields(body)} for body in BODY_TYPES.values()}

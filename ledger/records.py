"""Ledger records: what issuers and authorities sign and the log stores.

A record is a body (one of the kinds below) signed by its author. Its
canonical bytes are the MessagePack map

    {"body": {...}, "kind": "credential.issue", "sig": <64 bytes>,
     "signer": <32-byte Ed25519 key>, "v": 1}

and those bytes are the Merkle leaf data. The signature covers the same map
without "sig", under `crypto.RECORD_CONTEXT`. The record hash is the leaf hash
`SHA-256(0x00 || bytes)`, so the hash a client holds is the hash the log
proves.

A batch (`credential.issue_batch`) travels with its credential ids: its
bytes on the wire, in blocks and in the store are the same map plus
`"ids": <32 * count bytes>`. The ids are neither signed nor leaf data: the
signed body holds their RFC 9162 root (`ledger.batch`), which every decoder
recomputes, so a holder's receipt carries the small leaf data and one audit
path instead of the whole cohort.

No personal data: a credential appears only as the SHA-256 of its RFC 8785
canonical form (its credential id).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

from ledger import codec, crypto
from ledger.batch import BATCH_CREDENTIALS_MAX, batch_root, split_ids
from ledger.merkle import leaf_hash

RECORD_VERSION = 1
RECORD_BYTES_MAX = 16 << 10
"""Leaf data of any record; a batch's ids come on top (BATCH_RECORD_BYTES_MAX)."""
BATCH_RECORD_BYTES_MAX = RECORD_BYTES_MAX + 32 * BATCH_CREDENTIALS_MAX + 16
NAME_CHARS_MAX = 200
ORIGIN_CHARS_MAX = 200
ACHIEVEMENT_TYPE_CHARS_MAX = 100
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


def _reason(value: Any) -> "RevocationReason":
    try:
        return RevocationReason(value)
    except ValueError:
        codes = ", ".join(reason.value for reason in RevocationReason)
        raise RecordError(f"unknown revocation reason {value!r}; one of {codes}") from None


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise RecordError(message)


def _check_id(value: Any, what: str) -> None:
    _need(type(value) is bytes and len(value) == ID_BYTES, f"{what} must be 32 bytes")


def _check_key(value: Any, what: str) -> None:
    _need(type(value) is bytes and len(value) == crypto.PUBLIC_KEY_BYTES, f"{what} must be a 32-byte Ed25519 key")


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
        # Every issuance a node admits or an audit replays passes here: the
        # checks of _check_id and _check_time, inline.
        credential_id, issued_at, expires_at = self.credential_id, self.issued_at, self.expires_at
        if type(credential_id) is not bytes or len(credential_id) != ID_BYTES:
            raise RecordError("credential_id must be 32 bytes")
        if type(issued_at) is not int or not 0 <= issued_at < TIMESTAMP_MAX:
            raise RecordError("issued_at must be unix seconds")
        if type(expires_at) is not int or not 0 <= expires_at < TIMESTAMP_MAX:
            raise RecordError("expires_at must be unix seconds")
        if expires_at and expires_at <= issued_at:
            raise RecordError("expires_at must be after issued_at")

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
        object.__setattr__(self, "reason", _reason(self.reason))

    def to_map(self) -> dict:
        return {
            "credential_id": self.credential_id,
            "reason": self.reason.value,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class CredentialBatch:
    """An issuer records that it issued every credential of a cohort, signing once.

    `root` is the RFC 9162 tree hash of the `count` credential ids that
    travel with the record (`SignedRecord.ids`); the shared fields hold for
    each of them. `batch_id` names the batch on the ledger (to revoke all of
    it at once, and to resume an interrupted issuance without issuing twice).
    """

    KIND: ClassVar[str] = "credential.issue_batch"
    batch_id: bytes
    root: bytes
    count: int
    issued_at: int
    expires_at: int = 0
    achievement_type: str = ""

    def __post_init__(self) -> None:
        _check_id(self.batch_id, "batch_id")
        _check_id(self.root, "root")
        _need(type(self.count) is int and 1 <= self.count <= BATCH_CREDENTIALS_MAX,
              f"count must be 1..{BATCH_CREDENTIALS_MAX}")
        _check_time(self.issued_at, "issued_at")
        _check_time(self.expires_at, "expires_at")
        _need(self.expires_at == 0 or self.expires_at > self.issued_at, "expires_at must be after issued_at")
        _check_text(self.achievement_type, "achievement_type", ACHIEVEMENT_TYPE_CHARS_MAX, empty_ok=True)

    def to_map(self) -> dict:
        return {
            "achievement_type": self.achievement_type,
            "batch_id": self.batch_id,
            "count": self.count,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
            "root": self.root,
        }


@dataclass(frozen=True, slots=True)
class BatchRevocation:
    """Every credential of a batch is revoked, for good (e.g. after a key compromise)."""

    KIND: ClassVar[str] = "credential.revoke_batch"
    batch_id: bytes
    reason: RevocationReason
    revoked_at: int

    def __post_init__(self) -> None:
        _check_id(self.batch_id, "batch_id")
        _check_time(self.revoked_at, "revoked_at")
        object.__setattr__(self, "reason", _reason(self.reason))

    def to_map(self) -> dict:
        return {"batch_id": self.batch_id, "reason": self.reason.value, "revoked_at": self.revoked_at}


@dataclass(frozen=True, slots=True)
class CredentialSuspension:
    """The credential is suspended until reinstated (W3C Bitstring Status List's "suspension")."""

    KIND: ClassVar[str] = "credential.suspend"
    credential_id: bytes
    suspended_at: int

    def __post_init__(self) -> None:
        _check_id(self.credential_id, "credential_id")
        _check_time(self.suspended_at, "suspended_at")

    def to_map(self) -> dict:
        return {"credential_id": self.credential_id, "suspended_at": self.suspended_at}


@dataclass(frozen=True, slots=True)
class CredentialReinstatement:
    """A suspended credential is valid again."""

    KIND: ClassVar[str] = "credential.reinstate"
    credential_id: bytes
    reinstated_at: int

    def __post_init__(self) -> None:
        _check_id(self.credential_id, "credential_id")
        _check_time(self.reinstated_at, "reinstated_at")

    def to_map(self) -> dict:
        return {"credential_id": self.credential_id, "reinstated_at": self.reinstated_at}


@dataclass(frozen=True, slots=True)
class IssuerRotation:
    """An issuer moves to a new key; the old one signs nothing from then on.

    Signed by the old key, or by the authority that registered the issuer
    (the way back from a lost or compromised key). Credentials signed by the
    old key stay valid and the new key manages them.
    """

    KIND: ClassVar[str] = "issuer.rotate"
    issuer_key: bytes
    new_key: bytes

    def __post_init__(self) -> None:
        _check_key(self.issuer_key, "issuer_key")
        _check_key(self.new_key, "new_key")
        _need(self.issuer_key != self.new_key, "new_key must differ from issuer_key")

    def to_map(self) -> dict:
        return {"issuer_key": self.issuer_key, "new_key": self.new_key}


@dataclass(frozen=True, slots=True)
class IssuerRetirement:
    """An issuer key stops signing for good (the unit closed, the partnership ended)."""

    KIND: ClassVar[str] = "issuer.retire"
    issuer_key: bytes

    def __post_init__(self) -> None:
        _check_key(self.issuer_key, "issuer_key")

    def to_map(self) -> dict:
        return {"issuer_key": self.issuer_key}


@dataclass(frozen=True, slots=True)
class IssuerEndorsement:
    """The signer recognises the credentials of another issuer.

    `achievement_type` narrows the recognition to one Open Badges achievement
    type (e.g. "Certificate", "Course"); empty means every credential.
    """

    KIND: ClassVar[str] = "issuer.endorse"
    issuer_key: bytes
    achievement_type: str = ""

    def __post_init__(self) -> None:
        _check_key(self.issuer_key, "issuer_key")
        _check_text(self.achievement_type, "achievement_type", ACHIEVEMENT_TYPE_CHARS_MAX, empty_ok=True)

    def to_map(self) -> dict:
        return {"achievement_type": self.achievement_type, "issuer_key": self.issuer_key}


GOVERNANCE_ACTIONS = ("authority.add", "authority.remove", "policy.set")
APPROVALS_MAX = 64
URL_CHARS_MAX = 200


@dataclass(frozen=True, slots=True)
class ConsortiumChange:
    """A change to the consortium, approved by a quorum of its current authorities.

    Actions: "authority.add" (name, public_key, url), "authority.remove"
    (name), "policy.set" (block_records_max); unused fields are empty or 0.
    `epoch` is the authority-set epoch the change amends, so an approved
    change applies once and only on top of the set its approvers saw.
    `approvals` are (authority key, signature) pairs, sorted by key, each
    signing `ledger.governance.approval_message` for this change; the record
    signer is the authority that submits it. The change takes effect from the
    block after the one that holds it.
    """

    KIND: ClassVar[str] = "consortium.change"
    epoch: int
    action: str
    name: str = ""
    public_key: bytes = b""
    url: str = ""
    block_records_max: int = 0
    approvals: tuple[tuple[bytes, bytes], ...] = ()

    def __post_init__(self) -> None:
        _need(type(self.epoch) is int and 0 <= self.epoch < 1 << 32, "epoch must be a small non-negative integer")
        _need(self.action in GOVERNANCE_ACTIONS, f"action must be one of {', '.join(GOVERNANCE_ACTIONS)}")
        _need(type(self.name) is str and len(self.name) <= 64 and self.name.isprintable(), "name must be short text")
        _need(type(self.public_key) is bytes and len(self.public_key) in (0, crypto.PUBLIC_KEY_BYTES), "bad public_key")
        _check_text(self.url, "url", URL_CHARS_MAX, empty_ok=True)
        _need(type(self.block_records_max) is int and 0 <= self.block_records_max <= 1_000_000, "bad block_records_max")
        if self.action == "authority.add":
            _need(bool(self.name) and len(self.public_key) == crypto.PUBLIC_KEY_BYTES, "authority.add needs name and public_key")
            _need(self.block_records_max == 0, "authority.add sets no policy")
        elif self.action == "authority.remove":
            _need(bool(self.name) and not self.public_key and not self.url and not self.block_records_max,
                  "authority.remove takes only a name")
        else:
            _need(not self.name and not self.public_key and not self.url, "policy.set names no authority")
            _need(self.block_records_max >= 1, "policy.set needs block_records_max >= 1")
        approvals = self.approvals
        _need(type(approvals) in (list, tuple) and len(approvals) <= APPROVALS_MAX, f"at most {APPROVALS_MAX} approvals")
        pairs = []
        for pair in approvals:
            _need(type(pair) in (list, tuple) and len(pair) == 2, "an approval is [key, signature]")
            key, signature = pair
            _check_key(key, "approval key")
            _need(type(signature) is bytes and len(signature) == crypto.SIGNATURE_BYTES, "approval signature must be 64 bytes")
            pairs.append((key, signature))
        keys = [key for key, _ in pairs]
        _need(keys == sorted(set(keys)), "approvals must be sorted by key, one per authority")
        object.__setattr__(self, "approvals", tuple(pairs))

    def proposal_map(self) -> dict:
        """What approvers sign: every field but the approvals."""
        return {
            "action": self.action, "block_records_max": self.block_records_max, "epoch": self.epoch,
            "name": self.name, "public_key": self.public_key, "url": self.url,
        }

    def to_map(self) -> dict:
        return {**self.proposal_map(), "approvals": [[key, signature] for key, signature in self.approvals]}


RecordBody = (
    IssuerRegistration | IssuerRotation | IssuerRetirement | IssuerEndorsement
    | CredentialIssuance | CredentialRevocation | CredentialSuspension | CredentialReinstatement
    | CredentialBatch | BatchRevocation | ConsortiumChange
)
BODY_TYPES: dict[str, type] = {
    body.KIND: body
    for body in (
        IssuerRegistration, IssuerRotation, IssuerRetirement, IssuerEndorsement,
        CredentialIssuance, CredentialRevocation, CredentialSuspension, CredentialReinstatement,
        CredentialBatch, BatchRevocation, ConsortiumChange,
    )
}
_BODY_TYPE_SET = frozenset(BODY_TYPES.values())


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A record body with its author's key and signature.

    Construct with `sign` or `decode`; both guarantee `encoded` is canonical.
    The signature is checked by `verify`, not on construction, so the
    node can decide where that cost is paid (once, on admission).

    `encoded` is the record's bytes on the wire and in the store; `leaf` is
    its leaf data (the same bytes, except that a batch's leaves out `ids`).
    """

    body: RecordBody
    signer: bytes
    signature: bytes
    encoded: bytes = field(repr=False, compare=False, default=b"")
    unsigned: bytes = field(repr=False, compare=False, default=b"")
    hash: bytes = field(repr=False, compare=False, default=b"")
    """The record hash: its Merkle leaf hash (computed once)."""
    ids: bytes = field(repr=False, compare=False, default=b"")
    """A batch's credential ids, 32 bytes each, in tree order; empty for other kinds."""
    leaf: bytes = field(repr=False, compare=False, default=b"")
    listed: tuple[bytes, ...] = field(repr=False, compare=False, default=())
    """`ids` split into ids, once: a node judges a batch at admission, in the block and on commit."""

    def __post_init__(self) -> None:
        body_type = type(self.body)
        if body_type not in _BODY_TYPE_SET:
            raise RecordError("unknown record body")
        if type(self.signer) is not bytes or len(self.signer) != crypto.PUBLIC_KEY_BYTES:
            raise RecordError("signer must be a 32-byte Ed25519 key")
        if type(self.signature) is not bytes or len(self.signature) != crypto.SIGNATURE_BYTES:
            raise RecordError("signature must be 64 bytes")
        if body_type is CredentialBatch:
            object.__setattr__(self, "listed", _check_batch_ids(self.body, self.ids))
        elif self.ids:
            raise RecordError("only a batch carries ids")
        if not self.unsigned:
            object.__setattr__(self, "unsigned", codec.encode(self._map(with_signature=False)))
        if not self.leaf:
            object.__setattr__(self, "leaf", codec.encode(self._map(with_signature=True)))
        if not self.encoded:
            encoded = codec.encode({**self._map(with_signature=True), "ids": self.ids}) if self.ids else self.leaf
            object.__setattr__(self, "encoded", encoded)
        object.__setattr__(self, "hash", leaf_hash(self.leaf))

    @property
    def kind(self) -> str:
        return self.body.KIND

    def credential_ids(self) -> tuple[bytes, ...]:
        """A batch's ids, in tree order (none for a batch's leaf data alone)."""
        return self.listed

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
        """The bytes the signature covers: the record map without "sig" (and "ids")."""
        return self.unsigned

    @classmethod
    def sign(cls, body: RecordBody, key: crypto.KeyPair, ids: bytes = b"") -> "SignedRecord":
        unsigned = codec.encode({"body": body.to_map(), "kind": body.KIND, "signer": key.public_key, "v": RECORD_VERSION})
        signature = key.sign(crypto.RECORD_CONTEXT, unsigned)
        return cls(body, key.public_key, signature, unsigned=unsigned, ids=ids)

    def verify(self) -> None:
        """Raise crypto.SignatureError unless the signer signed this record."""
        crypto.verify(self.signer, crypto.RECORD_CONTEXT, self.unsigned, self.signature)

    @classmethod
    def decode(cls, data: bytes) -> "SignedRecord":
        """Parse canonical record bytes (wire form or leaf data); raises RecordError on anything else.

        The leaf data of a batch (without its ids) decodes too, for a
        verifier holding a receipt; such a record has no `ids` and its
        `encoded` is the leaf data. A node accepts only whole batches
        (`decode_whole`).
        """
        # Hot: every record a node admits or validates passes here. Error
        # messages are built only on failure.
        if len(data) > BATCH_RECORD_BYTES_MAX:
            raise RecordError(f"record larger than {BATCH_RECORD_BYTES_MAX} bytes")
        if type(data) is bytes:
            record = _decode_issuance(cls, data)
            if record is not None:
                return record
        return cls._decode_map(data)

    @classmethod
    def _decode_map(cls, data: bytes) -> "SignedRecord":
        """`decode` through the generic decoder: any kind, or RecordError."""
        try:
            mapping = codec.decode(data)
        except codec.CodecError as error:
            raise RecordError(str(error)) from None
        if type(mapping) is not dict:
            raise RecordError("a record is a map")
        ids = mapping.pop("ids", None)
        if mapping.keys() != _RECORD_KEYS:
            raise RecordError("record fields are body, kind, sig, signer, v")
        if mapping["v"] != RECORD_VERSION:
            raise RecordError(f"unsupported record version {mapping['v']!r}")
        kind = mapping["kind"]
        body_type = BODY_TYPES.get(kind) if type(kind) is str else None
        if body_type is None:
            raise RecordError(f"unknown record kind {kind!r}")
        if ids is not None and body_type is not CredentialBatch:
            raise RecordError("only a batch carries ids")
        values = mapping["body"]
        if type(values) is not dict:
            raise RecordError("record body is a map")
        if values.keys() != _FIELDS[body_type]:
            raise RecordError(f"{kind} fields are {', '.join(sorted(_FIELDS[body_type]))}")
        try:
            body = body_type(**values)  # type: ignore[misc]
        except TypeError as error:
            raise RecordError(str(error)) from None
        signature = mapping["sig"]
        signer = mapping["signer"]
        if ids is None:
            if len(data) > RECORD_BYTES_MAX:
                raise RecordError(f"record larger than {RECORD_BYTES_MAX} bytes")
            leaf = bytes(data)
            if type(signature) is bytes and len(signature) == crypto.SIGNATURE_BYTES and type(signer) is bytes \
                    and len(signer) == crypto.PUBLIC_KEY_BYTES:
                # Canonical and sorted (checked above), the map ends with
                # "sig" (70 bytes), "signer" (41) and "v": 1 (3); the signed
                # bytes are the same map without "sig", cut from the input.
                unsigned = b"\x84" + leaf[1:-114] + leaf[-44:]
            else:
                unsigned = b""  # __post_init__ refuses the record
            ids = b""
        else:
            # The rest of a canonical map is still sorted and canonical: the
            # leaf data and the signed bytes come straight from it. Every
            # body field is required and kept as decoded, so the bytes are
            # exactly what to_map rebuilds (tests/ledger/test_records.py).
            if type(ids) is not bytes:
                raise RecordError("ids must be bytes")
            leaf = codec.encode_canonical(mapping)
            if len(leaf) > RECORD_BYTES_MAX:
                raise RecordError(f"record larger than {RECORD_BYTES_MAX} bytes")
            del mapping["sig"]
            unsigned = codec.encode_canonical(mapping)
        return cls(body, signer, signature, encoded=bytes(data), unsigned=unsigned, ids=ids, leaf=leaf)

    @classmethod
    def decode_whole(cls, data: bytes) -> "SignedRecord":
        """`decode`, refusing a batch without its ids (what a node accepts and stores)."""
        record = cls.decode(data)
        _need(type(record.body) is not CredentialBatch or bool(record.ids), "a batch travels with its ids")
        return record


# The canonical bytes of a single issuance, the record a node and an audit
# see most, as one pattern, so that `_decode_issuance` reads them without
# building the map. Integers match in any unsigned MessagePack form and are
# then held to the shortest one.
_UINT = rb"([\x00-\x7f]|\xcc.|\xcd..|\xce....|\xcf........)"
_ISSUANCE = re.compile(
    rb"\x85\xa4body\x83\xadcredential_id\xc4\x20(.{32})\xaaexpires_at" + _UINT + rb"\xa9issued_at" + _UINT
    + rb"\xa4kind\xb0credential\.issue\xa3sig\xc4\x40(.{64})\xa6signer\xc4\x20(.{32})\xa1v\x01",
    re.DOTALL,
)
_UINT_LEAST = {2: 1 << 7, 3: 1 << 8, 5: 1 << 16, 9: 1 << 32}
"""By the length of a matched form: the least value that needs it."""


def _uint(encoded: bytes) -> int:
    """The integer of a matched unsigned form, or -1 if a shorter form holds it (not canonical)."""
    if len(encoded) == 1:
        return encoded[0]
    value = int.from_bytes(encoded[1:], "big")
    return value if value >= _UINT_LEAST[len(encoded)] else -1


def _decode_issuance(cls: type[SignedRecord], data: bytes) -> SignedRecord | None:
    """`SignedRecord.decode` of the canonical bytes of a single issuance, without the generic decoder.

    Returns None for any other bytes, which the generic decoder then accepts
    or refuses: this path accepts only bytes that the generic decoder reads
    as the same record (tests/ledger/test_records.py checks both at every
    edge of the integer forms and on every flipped byte). Raises
    RecordError, as the generic path does, when the fields break a rule.
    """
    match = _ISSUANCE.fullmatch(data)
    if match is None:
        return None
    credential_id, expires_at, issued_at, signature, signer = match.groups()
    issued, expires = _uint(issued_at), _uint(expires_at)
    if issued < 0 or expires < 0:
        return None
    body = CredentialIssuance(credential_id, issued, expires)
    # What __init__ and __post_init__ would set and check, set directly: the
    # pattern fixed every type and length, and there are no ids.
    record = _new_object(cls)
    _set_body(record, body)
    _set_signer(record, signer)
    _set_signature(record, signature)
    _set_encoded(record, data)
    # As in `decode`: the signed bytes are the map without "sig" (70 bytes).
    _set_unsigned(record, b"\x84" + data[1:-114] + data[-44:])
    _set_hash(record, leaf_hash(data))
    _set_ids(record, b"")
    _set_leaf(record, data)
    _set_listed(record, ())
    return record


_new_object = object.__new__


def _slot_setter(name: str) -> Callable[[SignedRecord, Any], None]:
    """The setter of a slot of SignedRecord: a frozen dataclass refuses `record.field = value`."""
    return vars(SignedRecord)[name].__set__


_set_body = _slot_setter("body")
_set_signer = _slot_setter("signer")
_set_signature = _slot_setter("signature")
_set_encoded = _slot_setter("encoded")
_set_unsigned = _slot_setter("unsigned")
_set_hash = _slot_setter("hash")
_set_ids = _slot_setter("ids")
_set_leaf = _slot_setter("leaf")
_set_listed = _slot_setter("listed")


def _check_batch_ids(body: "CredentialBatch", ids: bytes) -> tuple[bytes, ...]:
    """A batch's ids, when present, are `count` distinct ids whose root is the signed one; returns them."""
    if not ids:
        return ()  # leaf data alone: what a receipt carries
    _need(type(ids) is bytes and len(ids) == 32 * body.count, f"ids must be {body.count} ids of 32 bytes")
    listed = tuple(split_ids(ids))
    _need(len(set(listed)) == body.count, "a batch lists each credential id once")
    _need(batch_root(listed) == body.root, "ids do not hash to the signed root")
    return listed


def leaf_data(data: bytes) -> bytes:
    """The leaf data of record bytes in wire form: a batch without its ids; any other record as is."""
    # A canonical record map has five keys (first byte 0x85); only a batch
    # with its ids has six, so the common case costs one byte comparison.
    if data[:1] != b"\x86":
        return data
    try:
        mapping = codec.decode(data)
    except codec.CodecError:
        return data  # not a record at all: whoever decodes it will say so
    if type(mapping) is not dict or mapping.pop("ids", None) is None:
        return data
    return codec.encode_canonical(mapping)


_FIELDS: dict[type, frozenset[str]] = {body: frozenset(f.name for f in fields(body)) for body in BODY_TYPES.values()}
_RECORD_KEYS = frozenset({"body", "kind", "sig", "signer", "v"})

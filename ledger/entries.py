"""What the state holds: issuer, credential and batch entries, and their canonical bytes.

Each entry is the value of one key of an authenticated map (`ledger.state`
lays the maps out and judges the records that change them): its canonical
MessagePack bytes are stored as they are, and the map leaf holds their
SHA-256 (`entry_hash`). Status proofs (`ledger.status_proof`) carry these
bytes, so a verifier decodes an entry with this module alone.

A batched credential has no entry of its own until its status changes; its
key holds `member_value` (MEMBER_TAG, the batch id, its index in the batch),
and its status is the batch's (`BatchEntry.member`, `in_force`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from ledger import codec

MEMBER_TAG = b"\x00"


def member_value(batch_id: bytes, index: int) -> bytes:
    """What a batch member's credential key holds until it has an entry of its own."""
    return MEMBER_TAG + batch_id + index.to_bytes(4, "big")


def member_of(value: bytes) -> tuple[bytes, int]:
    """(batch id, index) from a `member_value`."""
    return value[1:33], int.from_bytes(value[33:37], "big")


def entry_hash(entry_bytes: bytes) -> bytes:
    """The value hash a map leaf holds for an entry's canonical bytes."""
    return hashlib.sha256(entry_bytes).digest()


class CredentialStatus(enum.StrEnum):
    ISSUED = "issued"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    # Not stored: derived by whoever reads an entry.
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class IssuerStatus(enum.StrEnum):
    ACTIVE = "active"
    ROTATED = "rotated"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class Endorsement:
    endorser_key: bytes
    achievement_type: str
    leaf_index: int


@dataclass(frozen=True, slots=True)
class IssuerEntry:
    """An issuer key's registration and standing.

    `issuer_id` is the first key of the issuer: the identity that rotation
    carries from key to key and that status changes are checked against.
    The key signs from leaf `leaf_index` (its registration, or the rotation
    that introduced it) until `changed_leaf` (its rotation or retirement;
    -1 while active), so a verifier can tell that a credential was signed
    while its key was in force.
    """

    issuer_key: bytes
    name: str
    country: str
    web_origin: str
    registered_by: bytes
    leaf_index: int
    issuer_id: bytes = b""
    status: IssuerStatus = IssuerStatus.ACTIVE
    successor: bytes = b""
    changed_leaf: int = -1
    endorsements: tuple[Endorsement, ...] = ()

    def __post_init__(self) -> None:
        if not self.issuer_id:
            object.__setattr__(self, "issuer_id", self.issuer_key)

    @property
    def active(self) -> bool:
        return self.status is IssuerStatus.ACTIVE

    def in_force_at(self, leaf: int) -> bool:
        """Whether this key could sign the record at log position `leaf`."""
        return self.leaf_index < leaf and (self.changed_leaf < 0 or leaf < self.changed_leaf)

    def encode(self) -> bytes:
        return codec.encode({
            "changed_leaf": self.changed_leaf,
            "country": self.country,
            "endorsements": [[e.endorser_key, e.achievement_type, e.leaf_index] for e in self.endorsements],
            "issuer_id": self.issuer_id,
            "issuer_key": self.issuer_key,
            "leaf": self.leaf_index,
            "name": self.name,
            "registered_by": self.registered_by,
            "status": self.status.value,
            "successor": self.successor,
            "web_origin": self.web_origin,
        })

    @classmethod
    def decode(cls, data: bytes) -> "IssuerEntry":
        m = codec.decode(data)
        return cls(
            m["issuer_key"], m["name"], m["country"], m["web_origin"], m["registered_by"], m["leaf"],
            m["issuer_id"], IssuerStatus(m["status"]), m["successor"], m["changed_leaf"],
            tuple(Endorsement(k, t, leaf) for k, t, leaf in m["endorsements"]),
        )


@dataclass(frozen=True, slots=True)
class CredentialEntry:
    """A credential's current status; `changed_*` describe the last status change."""

    credential_id: bytes
    status: CredentialStatus
    issuer_key: bytes
    issued_at: int
    expires_at: int
    issuance_leaf: int
    changed_leaf: int = -1
    changed_at: int = 0
    reason: str = ""
    batch_id: bytes = b""
    """The batch that issued it (then `issuance_leaf` is the batch's leaf), or empty."""
    batch_index: int = -1
    """Its position in that batch's tree."""

    def status_at(self, now: int) -> CredentialStatus:
        """The status a verifier reports at unix time `now` (expiry is derived)."""
        if self.status is CredentialStatus.ISSUED and self.expires_at and now >= self.expires_at:
            return CredentialStatus.EXPIRED
        return self.status

    def encode(self) -> bytes:
        # One entry per credential is encoded per change, so this is hot: the
        # map is written in sorted key order with plain int, bytes and str
        # values, which is exactly what codec.encode would produce from it
        # (tests/ledger/test_state.py holds the two to the same bytes).
        mapping = {
            "changed_at": self.changed_at,
            "changed_leaf": self.changed_leaf,
            "credential_id": self.credential_id,
            "expires_at": self.expires_at,
            "issuance_leaf": self.issuance_leaf,
            "issued_at": self.issued_at,
            "issuer": self.issuer_key,
            "reason": self.reason,
            "status": self.status.value,
        }
        if self.batch_id:
            # Only batched credentials carry the batch fields (keys that sort
            # first), so a single credential's entry bytes are what they were.
            mapping = {"batch_id": self.batch_id, "batch_index": self.batch_index, **mapping}
        return codec.encode_canonical(mapping)

    def encode_fields(self) -> bytes:
        """The fields after the id, in order and without their names: a third
        the size of `encode`. For a store that keeps entries by id and never
        serves them (an audit's own state); never hashed, never sent."""
        return codec.encode_canonical([
            self.status.value, self.issuer_key, self.issued_at, self.expires_at, self.issuance_leaf,
            self.changed_leaf, self.changed_at, self.reason, self.batch_id, self.batch_index,
        ])

    @classmethod
    def decode_fields(cls, credential_id: bytes, data: bytes) -> "CredentialEntry":
        """The entry of `credential_id` whose `encode_fields` are `data`."""
        status, issuer, issued_at, expires_at, issuance_leaf, changed_leaf, changed_at, reason, batch_id, \
            batch_index = codec.decode(data)
        return cls(credential_id, CredentialStatus(status), issuer, issued_at, expires_at, issuance_leaf,
                   changed_leaf, changed_at, reason, batch_id, batch_index)

    @classmethod
    def decode(cls, data: bytes) -> "CredentialEntry":
        m = codec.decode(data)
        status = CredentialStatus(m["status"])
        if status not in (CredentialStatus.ISSUED, CredentialStatus.SUSPENDED, CredentialStatus.REVOKED):
            raise ValueError(f"stored status {status} is not a state")
        fields = {"changed_at", "changed_leaf", "credential_id", "expires_at", "issuance_leaf", "issued_at",
                  "issuer", "reason", "status"}
        if set(m) not in (fields, fields | {"batch_id", "batch_index"}):
            raise ValueError("credential entry fields")
        return cls(
            m["credential_id"], status, m["issuer"], m["issued_at"], m["expires_at"],
            m["issuance_leaf"], m["changed_leaf"], m["changed_at"], m["reason"],
            m.get("batch_id", b""), m.get("batch_index", -1),
        )


def _slot_setters(cls: type, names: tuple[str, ...]) -> list[Callable[[object, object], None]]:
    """The setters of `cls`'s slots: a frozen dataclass refuses `entry.field = value`."""
    return [vars(cls)[name].__set__ for name in names]


_ISSUED_SETTERS = list(zip(
    _slot_setters(CredentialEntry, ("status", "changed_leaf", "changed_at", "reason", "batch_id", "batch_index")),
    (CredentialStatus.ISSUED, -1, 0, "", b"", -1),
))
_set_credential_id, _set_issuer_key, _set_issued_at, _set_expires_at, _set_issuance_leaf = _slot_setters(
    CredentialEntry, ("credential_id", "issuer_key", "issued_at", "expires_at", "issuance_leaf"))


def issued_entry(credential_id: bytes, issuer_key: bytes, issued_at: int, expires_at: int,
                 issuance_leaf: int) -> CredentialEntry:
    """`CredentialEntry(credential_id, ISSUED, issuer_key, issued_at, expires_at, issuance_leaf)`, built
    without the dataclass __init__: every record a node admits or validates, and every one an audit
    replays, makes one (the generated __init__ sets eleven slots through object.__setattr__)."""
    entry = object.__new__(CredentialEntry)
    _set_credential_id(entry, credential_id)
    _set_issuer_key(entry, issuer_key)
    _set_issued_at(entry, issued_at)
    _set_expires_at(entry, expires_at)
    _set_issuance_leaf(entry, issuance_leaf)
    for setter, value in _ISSUED_SETTERS:
        setter(entry, value)
    return entry


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """A cohort issued by one signature: its tree, shared fields and standing.

    `status` is issued or revoked (the whole batch, for good); a member's own
    suspension or revocation lives in its credential entry.
    """

    batch_id: bytes
    issuer_key: bytes
    leaf_index: int
    root: bytes
    count: int
    issued_at: int
    expires_at: int
    achievement_type: str
    status: CredentialStatus = CredentialStatus.ISSUED
    changed_leaf: int = -1
    changed_at: int = 0
    reason: str = ""

    def encode(self) -> bytes:
        return codec.encode({
            "achievement_type": self.achievement_type,
            "batch_id": self.batch_id,
            "changed_at": self.changed_at,
            "changed_leaf": self.changed_leaf,
            "count": self.count,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
            "issuer": self.issuer_key,
            "leaf": self.leaf_index,
            "reason": self.reason,
            "root": self.root,
            "status": self.status.value,
        })

    @classmethod
    def decode(cls, data: bytes) -> "BatchEntry":
        m = codec.decode(data)
        status = CredentialStatus(m["status"])
        if status not in (CredentialStatus.ISSUED, CredentialStatus.REVOKED):
            raise ValueError(f"stored batch status {status} is not a batch state")
        return cls(
            m["batch_id"], m["issuer"], m["leaf"], m["root"], m["count"], m["issued_at"], m["expires_at"],
            m["achievement_type"], status, m["changed_leaf"], m["changed_at"], m["reason"],
        )

    def member(self, credential_id: bytes, index: int) -> CredentialEntry:
        """The entry of member `index` that has no status of its own."""
        return CredentialEntry(
            credential_id, self.status, self.issuer_key, self.issued_at, self.expires_at, self.leaf_index,
            self.changed_leaf, self.changed_at, self.reason, self.batch_id, index,
        )


def in_force(entry: CredentialEntry, batch: BatchEntry | None) -> CredentialEntry:
    """A member's own entry as its batch leaves it: a revoked batch revokes every member."""
    if batch is not None and batch.status is CredentialStatus.REVOKED and entry.status is not CredentialStatus.REVOKED:
        return replace(entry, status=CredentialStatus.REVOKED, changed_leaf=batch.changed_leaf,
                       changed_at=batch.changed_at, reason=batch.reason)
    return entry

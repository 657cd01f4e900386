"""Credential state and the rules every record must satisfy.

State is two maps: issuer key -> registration, credential id -> status. The
rules below are the only place a record is judged; the mempool (admission),
block validation and an auditor's replay all call `StateDelta.apply`, so
the three can never disagree.

Rules, by record kind:

    issuer.register    signer is an authority; issuer key not yet registered
    credential.issue   signer is a registered issuer; credential id unseen
    credential.revoke  credential issued and not revoked; signer is its
                       issuer, or the authority that registered that issuer

The signature itself is checked before the rules (`SignedRecord.verify`),
once, by whoever admits the record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from ledger import codec
from ledger.genesis import AuthoritySet
from ledger.records import (
    CredentialIssuance,
    CredentialRevocation,
    IssuerRegistration,
    SignedRecord,
)

ISSUER_PREFIX = b"si"
CREDENTIAL_PREFIX = b"sc"
# TODO(issue 4): replace with the root of an authenticated (sparse Merkle) map
# of this state; the header already has its place.
STATE_ROOT_UNAUTHENTICATED = bytes(32)


class RuleError(ValueError):
    """A well-formed, correctly signed record that the rules refuse."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


class CredentialStatus(enum.StrEnum):
    ISSUED = "issued"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class IssuerEntry:
    issuer_key: bytes
    name: str
    country: str
    web_origin: str
    registered_by: bytes
    leaf_index: int

    def encode(self) -> bytes:
        return codec.encode({
            "country": self.country, "leaf": self.leaf_index, "name": self.name,
            "registered_by": self.registered_by, "web_origin": self.web_origin,
        })

    @classmethod
    def decode(cls, issuer_key: bytes, data: bytes) -> "IssuerEntry":
        m = codec.decode(data)
        return cls(issuer_key, m["name"], m["country"], m["web_origin"], m["registered_by"], m["leaf"])


@dataclass(frozen=True, slots=True)
class CredentialEntry:
    credential_id: bytes
    status: CredentialStatus
    issuer_key: bytes
    issued_at: int
    expires_at: int
    issuance_leaf: int
    revocation_leaf: int = -1
    revoked_at: int = 0
    reason: str = ""

    def encode(self) -> bytes:
        return codec.encode({
            "expires_at": self.expires_at, "issuance_leaf": self.issuance_leaf,
            "issued_at": self.issued_at, "issuer": self.issuer_key, "reason": self.reason,
            "revocation_leaf": self.revocation_leaf, "revoked_at": self.revoked_at,
            "status": self.status.value,
        })

    @classmethod
    def decode(cls, credential_id: bytes, data: bytes) -> "CredentialEntry":
        m = codec.decode(data)
        return cls(
            credential_id, CredentialStatus(m["status"]), m["issuer"], m["issued_at"], m["expires_at"],
            m["issuance_leaf"], m["revocation_leaf"], m["revoked_at"], m["reason"],
        )


class StateView(Protocol):
    def issuer(self, issuer_key: bytes) -> IssuerEntry | None: ...
    def credential(self, credential_id: bytes) -> CredentialEntry | None: ...


class StoreStateView:
    """Committed state read from a `Store`.

    Issuers are few and read by every record, so their decoded entries are
    cached; `committed` keeps the cache in step with the store.
    """

    ISSUER_CACHE_MAX = 100_000

    def __init__(self, store) -> None:
        self._store = store
        self._issuers: dict[bytes, IssuerEntry | None] = {}

    def issuer(self, issuer_key: bytes) -> IssuerEntry | None:
        try:
            return self._issuers[issuer_key]
        except KeyError:
            pass
        data = self._store.get(ISSUER_PREFIX + issuer_key)
        entry = None if data is None else IssuerEntry.decode(issuer_key, data)
        if len(self._issuers) >= self.ISSUER_CACHE_MAX:
            self._issuers.clear()
        self._issuers[issuer_key] = entry
        return entry

    def committed(self, delta: "StateDelta") -> None:
        """The store now holds `delta`: refresh cached entries it changed."""
        for key, entry in delta.issuers.items():
            self._issuers[key] = entry

    def credential(self, credential_id: bytes) -> CredentialEntry | None:
        data = self._store.get(CREDENTIAL_PREFIX + credential_id)
        return None if data is None else CredentialEntry.decode(credential_id, data)


class StateDelta:
    """Changes on top of a base view, built by applying records in order.

    A delta is also a `StateView`, so records later in the same block see the
    effects of earlier ones. `puts()` gives the store writes to commit it.
    """

    def __init__(self, base: StateView, authorities: AuthoritySet) -> None:
        self._base = base
        self._authorities = authorities
        self._issuers: dict[bytes, IssuerEntry] = {}
        self._credentials: dict[bytes, CredentialEntry] = {}

    def issuer(self, issuer_key: bytes) -> IssuerEntry | None:
        entry = self._issuers.get(issuer_key)
        return entry if entry is not None else self._base.issuer(issuer_key)

    def credential(self, credential_id: bytes) -> CredentialEntry | None:
        entry = self._credentials.get(credential_id)
        return entry if entry is not None else self._base.credential(credential_id)

    def check(self, record: SignedRecord) -> None:
        """Raise RuleError if `record` may not be applied now; change nothing."""
        self._judge(record, leaf_index=-1)

    def apply(self, record: SignedRecord, leaf_index: int) -> None:
        """Apply `record` as leaf `leaf_index`, or raise RuleError and change nothing."""
        key, entry = self._judge(record, leaf_index)
        if isinstance(entry, IssuerEntry):
            self._issuers[key] = entry
        else:
            self._credentials[key] = entry

    def _judge(self, record: SignedRecord, leaf_index: int) -> tuple[bytes, IssuerEntry | CredentialEntry]:
        body = record.body
        if isinstance(body, IssuerRegistration):
            if self._authorities.by_key(record.signer) is None:
                raise RuleError("issuer-registration-by-authority", "only an authority may register issuers")
            if self.issuer(body.issuer_key) is not None:
                raise RuleError("issuer-unique", "issuer key already registered")
            return body.issuer_key, IssuerEntry(
                body.issuer_key, body.name, body.country, body.web_origin, record.signer, leaf_index
            )
        if isinstance(body, CredentialIssuance):
            if self.issuer(record.signer) is None:
                raise RuleError("issuer-registered", "signer is not a registered issuer")
            if self.credential(body.credential_id) is not None:
                raise RuleError("credential-unique", "credential id already on the ledger")
            return body.credential_id, CredentialEntry(
                body.credential_id, CredentialStatus.ISSUED, record.signer,
                body.issued_at, body.expires_at, leaf_index,
            )
        if isinstance(body, CredentialRevocation):
            current = self.credential(body.credential_id)
            if current is None:
                raise RuleError("credential-exists", "credential was never issued")
            if current.status is CredentialStatus.REVOKED:
                raise RuleError("credential-not-revoked", "credential is already revoked")
            issuer = self.issuer(current.issuer_key)
            allowed = {current.issuer_key} | ({issuer.registered_by} if issuer else set())
            if record.signer not in allowed:
                raise RuleError(
                    "revocation-by-issuer", "only the issuer, or the authority that registered it, may revoke"
                )
            return body.credential_id, CredentialEntry(
                current.credential_id, CredentialStatus.REVOKED, current.issuer_key, current.issued_at,
                current.expires_at, current.issuance_leaf, leaf_index, body.revoked_at, body.reason.value,
            )
        raise RuleError("record-kind", f"no rule for {type(body).__name__}")

    @property
    def issuers(self) -> dict[bytes, IssuerEntry]:
        """Issuer entries this delta changed."""
        return self._issuers

    def absorb(self, other: "StateDelta") -> None:
        """Take on the changes of `other`, a delta built on top of this one."""
        self._issuers.update(other._issuers)
        self._credentials.update(other._credentials)

    def puts(self) -> list[tuple[bytes, bytes]]:
        puts = [(ISSUER_PREFIX + k, e.encode()) for k, e in self._issuers.items()]
        puts += [(CREDENTIAL_PREFIX + k, e.encode()) for k, e in self._credentials.items()]
        return puts

    def __len__(self) -> int:
        return len(self._issuers) + len(self._credentials)

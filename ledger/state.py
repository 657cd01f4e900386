"""Credential state and the rules every record must satisfy.

Theory of operation. State is two authenticated maps (`ledger.smt`):

    credentials   credential id             -> CredentialEntry
    registry      SHA-256("lacre/issuer\\0" || key) -> IssuerEntry
                  SHA-256("lacre/epoch\\0" || u64 epoch) -> ConsortiumEntry
                  SHA-256("lacre/batch\\0" || batch id) -> BatchEntry

and the state root in every block header and checkpoint is

    SHA-256(0x12 || credentials root || registry root)

Credential ids are SHA-256 digests already, so they are the credentials
map's paths as they are: every credential under an id prefix sits in one
subtree, which is what makes a k-anonymous prefix query provable complete.
Registry paths are hashed so that no issuer can choose where its entry lands.

The rules below are the only place a record is judged; the mempool
(admission), block validation and an auditor's replay all call
`StateDelta.apply`, so the three can never disagree. By record kind:

    issuer.register      signer is an authority; the key was never registered
    issuer.rotate        issuer active; signer is it or the authority that
                         registered it; the new key was never registered
    issuer.retire        issuer active; signer is it or its authority
    issuer.endorse       signer is an authority or an active issuer of another
                         identity; the endorsed issuer is active; no repeat
    credential.issue     signer is an active issuer; the id is unseen
    credential.issue_batch  signer is an active issuer; the batch id and
                         every credential id in it are unseen
    credential.revoke_batch batch not revoked; signer as for a status change
    credential.suspend   credential issued (not suspended, not revoked)
    credential.reinstate credential suspended
    credential.revoke    credential not revoked (a suspended one may be)
    consortium.change    see ledger.governance; at most one per block

A status change is signed by an active key of the issuer that issued the
credential (its identity survives rotation) or by the authority that
registered that issuer, while it is still an authority. Records by retired,
rotated or unknown keys are refused from then on; what they signed before
stays valid. Expiry is not a state change: the issuance record carries
`expires_at` and a verifier compares it with its own clock.

A batch costs the authenticated maps one registry entry, not one entry per
credential: a batched credential is proven issued by its batch (the
holder's receipt carries its RFC 9162 path to the signed root) and its
status is the batch's, unless the credential itself was suspended, revoked
or reinstated, which writes its own credentials-map entry (naming its
batch). A revoked batch revokes every credential in it. Each batched id is
also indexed, unauthenticated, under its own key (`MEMBER_TAG`), so every
node and auditor refuses an id issued twice, alone or in any batch, by the
same deterministic rule.

The signature itself is checked before the rules (`SignedRecord.verify`),
once, by whoever admits the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from ledger.entries import (
    MEMBER_TAG,
    BatchEntry,
    CredentialEntry,
    CredentialStatus,
    Endorsement,
    IssuerEntry,
    IssuerStatus,
    entry_hash,
    in_force,
    issued_entry,
    member_of,
    member_value,
)
from ledger.genesis import AuthoritySet
from ledger.governance import ConsortiumEntry, GovernanceError
from ledger.id_filter import IdFilter
from ledger.records import (
    BatchRevocation,
    ConsortiumChange,
    CredentialBatch,
    CredentialIssuance,
    CredentialReinstatement,
    CredentialRevocation,
    CredentialSuspension,
    IssuerEndorsement,
    IssuerRegistration,
    IssuerRetirement,
    IssuerRotation,
    SignedRecord,
)
from ledger.smt import MapUpdate, SparseMerkleMap
from ledger.smt_proof import HASH_SIZE, KEY_BITS, KEY_SIZE

ISSUER_PREFIX = b"si"
CREDENTIAL_PREFIX = b"sc"
BATCH_PREFIX = b"sb"
"""First byte of a credential key's value when it only marks batch membership (an entry is a map, 0x8X)."""
EPOCH_PREFIX = b"se"
CREDENTIAL_MAP_PREFIX = b"zc"
REGISTRY_MAP_PREFIX = b"zr"
REGISTRY_ISSUER_TAG = b"lacre/issuer\x00"
REGISTRY_EPOCH_TAG = b"lacre/epoch\x00"
REGISTRY_BATCH_TAG = b"lacre/batch\x00"
STATE_ROOT_TAG = b"\x12"
ENDORSEMENTS_MAX = 64


def state_root(credentials_root: bytes, registry_root: bytes) -> bytes:
    return hashlib.sha256(STATE_ROOT_TAG + credentials_root + registry_root).digest()


def issuer_path(issuer_key: bytes) -> bytes:
    """Where an issuer's entry sits in the registry map."""
    return hashlib.sha256(REGISTRY_ISSUER_TAG + issuer_key).digest()


def epoch_path(epoch: int) -> bytes:
    """Where a consortium epoch's entry sits in the registry map."""
    return hashlib.sha256(REGISTRY_EPOCH_TAG + epoch.to_bytes(8, "big")).digest()


def batch_path(batch_id: bytes) -> bytes:
    """Where a batch's entry sits in the registry map."""
    return hashlib.sha256(REGISTRY_BATCH_TAG + batch_id).digest()


class RuleError(ValueError):
    """A well-formed, correctly signed record that the rules refuse."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


class StateView(Protocol):
    def issuer(self, issuer_key: bytes) -> IssuerEntry | None: ...
    def credential(self, credential_id: bytes) -> CredentialEntry | None: ...
    def credential_exists(self, credential_id: bytes) -> bool: ...
    def first_existing(self, credential_ids: Sequence[bytes]) -> int | None: ...
    def batch(self, batch_id: bytes) -> BatchEntry | None: ...


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """A delta sealed against committed state: its root and the map writes."""

    root: bytes
    credentials: MapUpdate
    registry: MapUpdate
    credential_hashes: dict[bytes, bytes] = field(default_factory=dict)
    """Credential id -> entry hash, of each credential entry the delta writes."""


class StoreStateView:
    """Committed state read from a `Store`, with its two authenticated maps.

    Issuers are few and read by every record, so their decoded entries are
    cached; `committed` keeps the cache and the maps in step with the store.
    """

    ISSUER_CACHE_MAX = 100_000
    BATCH_CACHE_MAX = 10_000
    # Ids read and found absent, until a commit writes them: a node judges a
    # new id at admission and again in the block (a cohort: every one of its
    # ids), and only the first judgement needs the store.
    ABSENT_KNOWN_MAX = 262_144

    # An ephemeral view (a state that starts empty and that no process reopens:
    # an audit without a saved state) keeps in memory what a reopened store
    # could not rebuild: the credentials map's upper tiles, which every block
    # rewrites (`ledger.smt`, memory-only bands: at most 68 MB), and a filter
    # of the credential ids written, which spares the store read of most ids
    # never issued (`ledger.id_filter`). Both have a fixed bound, so memory
    # stays flat in chain length. Below the memory-only bands it stores no
    # tiles at all: they are derived from the credential entries, which it
    # writes anyway and which the store keeps in path order (`ledger.smt`,
    # derived bands). So that a range of entries gives the leaves as they are
    # stored, it stores each credential entry as its fields followed by its
    # entry hash (`CredentialEntry.encode_fields` || 32 bytes): a third of the
    # bytes of the canonical entry, and no hashing to read a leaf back.
    EPHEMERAL_MAP_MEMORY_DEPTH = 20
    EPHEMERAL_FILTER_BYTES = 16 << 20

    def __init__(self, store, ephemeral: bool = False) -> None:
        """`ephemeral`: see above; `store` must then hold no state."""
        self._store = store
        self._absent: set[bytes] = set()
        self._issuers: dict[bytes, IssuerEntry | None] = {}
        self._batches: dict[bytes, BatchEntry | None] = {}
        self._consortium: ConsortiumEntry | None = None
        self._written: IdFilter | None = None
        self._entry_fields = ephemeral
        if ephemeral:
            if next(iter(store.iterate(CREDENTIAL_PREFIX)), None) is not None:
                raise ValueError("an ephemeral state view starts on a store without credentials")
            self._written = IdFilter(self.EPHEMERAL_FILTER_BYTES)
            self.credential_map = SparseMerkleMap(store, CREDENTIAL_MAP_PREFIX,
                                                  memory_depth=self.EPHEMERAL_MAP_MEMORY_DEPTH,
                                                  leaves=self._credential_leaves)
        else:
            self.credential_map = SparseMerkleMap(store, CREDENTIAL_MAP_PREFIX)
        self.registry_map = SparseMerkleMap(store, REGISTRY_MAP_PREFIX)

    def root(self) -> bytes:
        return state_root(self.credential_map.root(), self.registry_map.root())

    def _credential_leaves(self, depth: int, path: int) -> list[tuple[bytes, bytes]]:
        """The credentials map's committed leaves below (depth, path): the
        credential entries there, each with its entry hash; a batch member's
        marker is no leaf."""
        size = (depth + 7) // 8
        shift = 8 * size - depth
        top = path >> (KEY_BITS - depth)
        start = CREDENTIAL_PREFIX + (top << shift).to_bytes(size, "big")
        if (top + 1) >> depth:  # the last prefix: up to the end of the credentials
            stop = CREDENTIAL_PREFIX + b"\xff" * (KEY_SIZE + 1)
        else:
            stop = CREDENTIAL_PREFIX + ((top + 1) << shift).to_bytes(size, "big")
        cut = len(CREDENTIAL_PREFIX)
        return [(key[cut:], data[-HASH_SIZE:]) for key, data in self._store.range(start, stop) if data[:1] != MEMBER_TAG]

    def epochs(self) -> list[ConsortiumEntry]:
        """Every consortium epoch, in order (empty before genesis is written)."""
        return [ConsortiumEntry.decode(value) for _, value in self._store.iterate(EPOCH_PREFIX)]

    def consortium(self) -> ConsortiumEntry | None:
        """The latest epoch: the configuration in force from the next block."""
        if self._consortium is None:
            last = next(iter(self._store.iterate(EPOCH_PREFIX, reverse=True)), None)
            self._consortium = None if last is None else ConsortiumEntry.decode(last[1])
        return self._consortium

    def epoch_bytes(self, epoch: int) -> bytes | None:
        return self._store.get(EPOCH_PREFIX + epoch.to_bytes(8, "big"))

    def _cached(self, cache: dict, prefix: bytes, kind: type, key: bytes, cache_max: int):
        try:
            return cache[key]
        except KeyError:
            pass
        data = self._store.get(prefix + key)
        entry = None if data is None else kind.decode(data)
        if len(cache) >= cache_max:
            cache.clear()
        cache[key] = entry
        return entry

    def issuer(self, issuer_key: bytes) -> IssuerEntry | None:
        return self._cached(self._issuers, ISSUER_PREFIX, IssuerEntry, issuer_key, self.ISSUER_CACHE_MAX)

    def issuer_bytes(self, issuer_key: bytes) -> bytes | None:
        return self._store.get(ISSUER_PREFIX + issuer_key)

    def credential(self, credential_id: bytes) -> CredentialEntry | None:
        if credential_id in self._absent or (self._written is not None and not self._written.may_contain(credential_id)):
            return None
        data = self._store.get(CREDENTIAL_PREFIX + credential_id)
        if data is None:
            return None
        if data[:1] == MEMBER_TAG:
            batch_id, index = member_of(data)
            batch = self.batch(batch_id)
            if batch is None:
                raise ValueError("a batch member's batch is missing")
            return batch.member(credential_id, index)
        if self._entry_fields:
            entry = CredentialEntry.decode_fields(credential_id, data[:-HASH_SIZE])
        else:
            entry = CredentialEntry.decode(data)
        return in_force(entry, self.batch(entry.batch_id)) if entry.batch_id else entry

    def credential_exists(self, credential_id: bytes) -> bool:
        return self.first_existing((credential_id,)) is not None

    def first_existing(self, credential_ids: Sequence[bytes]) -> int | None:
        """The index of the first id with an entry (a cohort's ids: one call, not one per id)."""
        absent, get, prefix = self._absent, self._store.get, CREDENTIAL_PREFIX
        written = self._written
        for index, credential_id in enumerate(credential_ids):
            if credential_id in absent or (written is not None and not written.may_contain(credential_id)):
                continue
            if get(prefix + credential_id) is not None:
                return index
            if len(absent) >= self.ABSENT_KNOWN_MAX:
                absent.clear()
            absent.add(credential_id)
        return None

    def credential_bytes(self, credential_id: bytes) -> bytes | None:
        """The credential's own entry in the credentials map (none for a batch member without one)."""
        data = self._store.get(CREDENTIAL_PREFIX + credential_id)
        if data is None or data[:1] == MEMBER_TAG:
            return None
        return CredentialEntry.decode_fields(credential_id, data[:-HASH_SIZE]).encode() if self._entry_fields else data

    def credential_puts(self, delta: "StateDelta") -> list[tuple[bytes, bytes]]:
        """The store writes of the credential entries of `delta`, sealed over this view."""
        encoded = delta.encoded_credentials()
        if not self._entry_fields:
            return [(CREDENTIAL_PREFIX + key, data) for key, data in encoded.items()]
        sealed = delta.sealed
        hashes = sealed.credential_hashes if sealed is not None else {
            key: entry_hash(data) for key, data in encoded.items()}
        entries = delta.credentials
        return [(CREDENTIAL_PREFIX + key, entries[key].encode_fields() + value_hash) for key, value_hash in hashes.items()]

    def batch(self, batch_id: bytes) -> BatchEntry | None:
        return self._cached(self._batches, BATCH_PREFIX, BatchEntry, batch_id, self.BATCH_CACHE_MAX)

    def batch_bytes(self, batch_id: bytes) -> bytes | None:
        return self._store.get(BATCH_PREFIX + batch_id)

    def seal(self, delta: "StateDelta") -> StateUpdate:
        """The root after `delta` and the map writes; changes nothing."""
        # In key order: the map sorts its changes (a sorted list costs it one
        # pass), and the entries reach LevelDB's memtable in order, which
        # inserts them faster than at random.
        hashes = {key: entry_hash(data) for key, data in sorted(delta.encoded_credentials().items())}
        credentials = self.credential_map.update(hashes)
        changes = {issuer_path(key): entry_hash(data) for key, data in delta.encoded_issuers().items()}
        if delta.consortium_change is not None:
            changes[epoch_path(delta.consortium_change.epoch)] = entry_hash(delta.consortium_change.encode())
        for key, data in delta.encoded_batches().items():
            changes[batch_path(key)] = entry_hash(data)
        registry = self.registry_map.update(changes)
        return StateUpdate(state_root(credentials.root, registry.root), credentials, registry, hashes)

    def committed(self, delta: "StateDelta", update: StateUpdate) -> None:
        """The store now holds `delta` and `update`: follow it."""
        if self._absent:
            self._absent.difference_update(delta.credential_ids_written())
        if self._written is not None:
            self._written.add_all(delta.credential_ids_written())
        for key, entry in delta.issuers.items():
            self._issuers[key] = entry
        for key, entry in delta.batches.items():
            self._batches[key] = entry
        if delta.consortium_change is not None:
            self._consortium = delta.consortium_change
        self.credential_map.committed(update.credentials)
        self.registry_map.committed(update.registry)


class StateDelta:
    """Changes on top of a base view, built by applying records in order.

    A delta is also a `StateView`, so records later in the same block see the
    effects of earlier ones. `puts()` gives the entry writes to commit it;
    the map writes come from sealing it (`StoreStateView.seal`).
    """

    def __init__(self, base: StateView, authorities: AuthoritySet, height: int = 0) -> None:
        """Judge the records of block `height` by `authorities`, the set in force at that height."""
        self._base = base
        self._authorities = authorities
        self._height = height
        self.consortium_change: ConsortiumEntry | None = None
        self._issuers: dict[bytes, IssuerEntry] = {}
        self._credentials: dict[bytes, CredentialEntry] = {}
        self._batches: dict[bytes, BatchEntry] = {}
        self._members: dict[bytes, bytes] = {}  # credential id -> member_value, for new batches
        self._sealed: StateUpdate | None = None
        self._encoded: tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes]] | None = None

    def issuer(self, issuer_key: bytes) -> IssuerEntry | None:
        entry = self._issuers.get(issuer_key)
        return entry if entry is not None else self._base.issuer(issuer_key)

    def credential(self, credential_id: bytes) -> CredentialEntry | None:
        entry = self._credentials.get(credential_id)
        if entry is None:
            member = self._members.get(credential_id)
            if member is not None:
                batch_id, index = member_of(member)
                return self._batches[batch_id].member(credential_id, index)
            entry = self._base.credential(credential_id)
            if entry is None:
                return None
        # The base judged the batch as committed; this delta may have revoked it since.
        return in_force(entry, self._batches.get(entry.batch_id)) if entry.batch_id else entry

    def credential_exists(self, credential_id: bytes) -> bool:
        return (credential_id in self._credentials or credential_id in self._members
                or self._base.credential_exists(credential_id))

    def first_existing(self, credential_ids: Sequence[bytes]) -> int | None:
        first = self._base.first_existing(credential_ids)
        credentials, members = self._credentials, self._members
        if credentials or members:
            for index, credential_id in enumerate(credential_ids[:first]):
                if credential_id in credentials or credential_id in members:
                    return index
        return first

    def batch(self, batch_id: bytes) -> BatchEntry | None:
        entry = self._batches.get(batch_id)
        return entry if entry is not None else self._base.batch(batch_id)

    def consortium(self) -> ConsortiumEntry | None:
        if self.consortium_change is not None:
            return self.consortium_change
        base = getattr(self._base, "consortium", None)
        return base() if base is not None else None

    def check(self, record: SignedRecord) -> None:
        """Raise RuleError if `record` may not be applied now; change nothing."""
        self._judge(record, -1)

    def apply(self, record: SignedRecord, leaf_index: int) -> None:
        """Apply `record` as leaf `leaf_index`, or raise RuleError and change nothing."""
        if self._sealed is not None:
            raise RuntimeError("a sealed delta does not change")
        body = record.body
        if type(body) is CredentialIssuance:  # most records: judged without the general dispatch
            self._credentials[body.credential_id] = self._issuance(body, record.signer, leaf_index)
            return
        for entry in self._judge(record, leaf_index):
            if isinstance(entry, IssuerEntry):
                self._issuers[entry.issuer_key] = entry
            elif isinstance(entry, BatchEntry):
                self._batches[entry.batch_id] = entry
                if type(record.body) is CredentialBatch:
                    batch_id = entry.batch_id
                    members = self._members
                    for index, credential_id in enumerate(record.credential_ids()):
                        members[credential_id] = member_value(batch_id, index)
            elif isinstance(entry, ConsortiumEntry):
                self.consortium_change = entry
            else:
                self._credentials[entry.credential_id] = entry

    # -- the rules ---------------------------------------------------------

    def _judge(self, record: SignedRecord, leaf: int) -> list[IssuerEntry | CredentialEntry | ConsortiumEntry]:
        """The entries `record` writes, or RuleError. Pure: reads state only."""
        body = record.body
        signer = record.signer
        if isinstance(body, CredentialIssuance):
            return [self._issuance(body, signer, leaf)]
        if isinstance(body, (CredentialRevocation, CredentialSuspension, CredentialReinstatement)):
            return [self._status_change(record, leaf)]
        if isinstance(body, CredentialBatch):
            return [self._batch_issuance(record, leaf)]
        if isinstance(body, BatchRevocation):
            return [self._batch_revocation(record, leaf)]
        if isinstance(body, IssuerRegistration):
            if self._authorities.by_key(signer) is None:
                raise RuleError("issuer-registration-by-authority", "only an authority may register issuers")
            if self.issuer(body.issuer_key) is not None:
                raise RuleError("issuer-unique", "issuer key already registered")
            return [IssuerEntry(body.issuer_key, body.name, body.country, body.web_origin, signer, leaf)]
        if isinstance(body, (IssuerRotation, IssuerRetirement)):
            current = self._managed_issuer(body.issuer_key, signer)
            if isinstance(body, IssuerRetirement):
                return [replace(current, status=IssuerStatus.RETIRED, changed_leaf=leaf)]
            if self.issuer(body.new_key) is not None:
                raise RuleError("issuer-unique", "new key already registered")
            return [
                replace(current, status=IssuerStatus.ROTATED, successor=body.new_key, changed_leaf=leaf),
                replace(current, issuer_key=body.new_key, leaf_index=leaf),
            ]
        if isinstance(body, IssuerEndorsement):
            return [self._endorsement(body, signer, leaf)]
        if isinstance(body, ConsortiumChange):
            if self.consortium_change is not None:
                raise RuleError("governance-one-per-block", "a block holds at most one consortium change")
            current = self.consortium()
            if current is None:
                raise RuleError("governance-disabled", "this ledger view takes no consortium changes")
            try:
                return [current.apply(body, signer, self._height, leaf)]
            except GovernanceError as error:
                raise RuleError(error.rule, error.detail) from None
        raise RuleError("record-kind", f"no rule for {type(body).__name__}")

    def _managed_issuer(self, issuer_key: bytes, signer: bytes) -> IssuerEntry:
        """The active issuer entry `signer` may rotate or retire."""
        current = self.issuer(issuer_key)
        if current is None:
            raise RuleError("issuer-registered", "issuer key is not registered")
        if not current.active:
            raise RuleError("issuer-active", f"issuer key is {current.status.value}")
        if signer != issuer_key and not self._is_registering_authority(current, signer):
            raise RuleError("issuer-change-by-issuer", "only the issuer, or the authority that registered it, may")
        return current

    def _is_registering_authority(self, issuer: IssuerEntry, signer: bytes) -> bool:
        return signer == issuer.registered_by and self._authorities.by_key(signer) is not None

    def _check_status_changer(self, issuer_key: bytes, signer: bytes) -> None:
        """Only an active key of the issuing identity, or the authority that registered it, changes a status."""
        issuer = self.issuer(issuer_key)
        signer_entry = self.issuer(signer)
        by_issuer = (
            issuer is not None and signer_entry is not None and signer_entry.active
            and signer_entry.issuer_id == issuer.issuer_id
        )
        if not by_issuer and not (issuer is not None and self._is_registering_authority(issuer, signer)):
            raise RuleError(
                "status-change-by-issuer",
                "only an active key of the issuer, or the authority that registered it, may change a status",
            )

    def _status_change(self, record: SignedRecord, leaf: int) -> CredentialEntry:
        body = record.body
        current = self.credential(body.credential_id)
        if current is None:
            raise RuleError("credential-exists", "credential was never issued")
        self._check_status_changer(current.issuer_key, record.signer)
        if current.status is CredentialStatus.REVOKED:
            raise RuleError("credential-not-revoked", "credential is revoked for good")
        if isinstance(body, CredentialRevocation):
            return replace(
                current, status=CredentialStatus.REVOKED, changed_leaf=leaf,
                changed_at=body.revoked_at, reason=body.reason.value,
            )
        if isinstance(body, CredentialSuspension):
            if current.status is CredentialStatus.SUSPENDED:
                raise RuleError("credential-not-suspended", "credential is already suspended")
            return replace(
                current, status=CredentialStatus.SUSPENDED, changed_leaf=leaf,
                changed_at=body.suspended_at, reason="",
            )
        if current.status is not CredentialStatus.SUSPENDED:
            raise RuleError("credential-suspended", "only a suspended credential is reinstated")
        return replace(
            current, status=CredentialStatus.ISSUED, changed_leaf=leaf, changed_at=body.reinstated_at, reason="",
        )

    def _issuance(self, body: CredentialIssuance, signer: bytes, leaf: int) -> CredentialEntry:
        self._active_issuer(signer)
        if self.credential_exists(body.credential_id):
            raise RuleError("credential-unique", "credential id already on the ledger")
        return issued_entry(body.credential_id, signer, body.issued_at, body.expires_at, leaf)

    def _active_issuer(self, signer: bytes) -> IssuerEntry:
        issuer = self.issuer(signer)
        if issuer is None:
            raise RuleError("issuer-registered", "signer is not a registered issuer")
        if not issuer.active:
            raise RuleError("issuer-active", f"issuer key is {issuer.status.value}")
        return issuer

    def _batch_issuance(self, record: SignedRecord, leaf: int) -> BatchEntry:
        body = record.body
        self._active_issuer(record.signer)
        if not record.ids:
            raise RuleError("batch-ids", "a batch is judged with its ids")
        if self.batch(body.batch_id) is not None:
            raise RuleError("batch-unique", "batch id already on the ledger")
        listed = record.credential_ids()
        index = self.first_existing(listed)
        if index is not None:
            raise RuleError("credential-unique", f"credential {index} ({listed[index].hex()}) already on the ledger")
        return BatchEntry(
            body.batch_id, record.signer, leaf, body.root, body.count, body.issued_at, body.expires_at,
            body.achievement_type,
        )

    def _batch_revocation(self, record: SignedRecord, leaf: int) -> BatchEntry:
        body = record.body
        current = self.batch(body.batch_id)
        if current is None:
            raise RuleError("batch-exists", "no batch with this id")
        self._check_status_changer(current.issuer_key, record.signer)
        if current.status is CredentialStatus.REVOKED:
            raise RuleError("batch-not-revoked", "batch is revoked for good")
        return replace(
            current, status=CredentialStatus.REVOKED, changed_leaf=leaf,
            changed_at=body.revoked_at, reason=body.reason.value,
        )

    def _endorsement(self, body: IssuerEndorsement, signer: bytes, leaf: int) -> IssuerEntry:
        endorsed = self.issuer(body.issuer_key)
        if endorsed is None:
            raise RuleError("issuer-registered", "endorsed key is not a registered issuer")
        if not endorsed.active:
            raise RuleError("issuer-active", f"endorsed issuer key is {endorsed.status.value}")
        if self._authorities.by_key(signer) is None:
            endorser = self.issuer(signer)
            if endorser is None or not endorser.active:
                raise RuleError("endorsement-by-member", "only an authority or an active issuer may endorse")
            if endorser.issuer_id == endorsed.issuer_id:
                raise RuleError("endorsement-of-other", "an issuer does not endorse itself")
        if any(e.endorser_key == signer and e.achievement_type == body.achievement_type for e in endorsed.endorsements):
            raise RuleError("endorsement-unique", "already endorsed")
        if len(endorsed.endorsements) >= ENDORSEMENTS_MAX:
            raise RuleError("endorsements-max", f"an issuer holds at most {ENDORSEMENTS_MAX} endorsements")
        endorsements = (*endorsed.endorsements, Endorsement(signer, body.achievement_type, leaf))
        return replace(endorsed, endorsements=endorsements)

    # -- results -----------------------------------------------------------

    @property
    def issuers(self) -> dict[bytes, IssuerEntry]:
        """Issuer entries this delta changed."""
        return self._issuers

    @property
    def sealed(self) -> StateUpdate | None:
        """What `seal` gave, or None before it."""
        return self._sealed

    @property
    def credentials(self) -> dict[bytes, CredentialEntry]:
        """Credential entries this delta changed."""
        return self._credentials

    @property
    def batches(self) -> dict[bytes, BatchEntry]:
        """Batch entries this delta added or changed."""
        return self._batches

    @property
    def members(self) -> int:
        """Credentials issued in this delta's new batches."""
        return len(self._members)

    def credential_ids_written(self) -> Iterator[bytes]:
        """Every credential id this delta gives a store entry: its own, or a batch member's marker."""
        yield from self._credentials
        yield from self._members

    def encoded_batches(self) -> dict[bytes, bytes]:
        if self._encoded is not None:
            return self._encoded[2]
        return {key: entry.encode() for key, entry in self._batches.items()}

    def encoded_issuers(self) -> dict[bytes, bytes]:
        if self._encoded is not None:
            return self._encoded[0]
        return {key: entry.encode() for key, entry in self._issuers.items()}

    def encoded_credentials(self) -> dict[bytes, bytes]:
        if self._encoded is not None:
            return self._encoded[1]
        return {key: entry.encode() for key, entry in self._credentials.items()}

    def seal(self) -> StateUpdate:
        """Fix the delta and compute its root over the committed base (once).

        The entries are encoded once, here: the root and `puts` use the same bytes.
        """
        if self._sealed is None:
            if not isinstance(self._base, StoreStateView):
                raise TypeError("only a delta over committed state is sealed")
            self._encoded = (self.encoded_issuers(), self.encoded_credentials(), self.encoded_batches())
            self._sealed = self._base.seal(self)
        return self._sealed

    def absorb(self, other: "StateDelta") -> None:
        """Take on the changes of `other`, a delta built on top of this one."""
        self._issuers.update(other._issuers)
        self._credentials.update(other._credentials)
        self._batches.update(other._batches)
        self._members.update(other._members)
        if other.consortium_change is not None:
            self.consortium_change = other.consortium_change

    def puts(self) -> list[tuple[bytes, bytes]]:
        """Entry writes, then (if sealed) the authenticated maps' writes."""
        puts = [(ISSUER_PREFIX + k, data) for k, data in self.encoded_issuers().items()]
        puts += [(BATCH_PREFIX + k, data) for k, data in self.encoded_batches().items()]
        # Markers first: a member's own entry (a status change in the same block) wins.
        puts += [(CREDENTIAL_PREFIX + k, marker) for k, marker in self._members.items()]
        if isinstance(self._base, StoreStateView):
            puts += self._base.credential_puts(self)
        else:
            puts += [(CREDENTIAL_PREFIX + k, data) for k, data in self.encoded_credentials().items()]
        if self.consortium_change is not None:
            change = self.consortium_change
            puts.append((EPOCH_PREFIX + change.epoch.to_bytes(8, "big"), change.encode()))
        if self._sealed is not None:
            puts += self._sealed.credentials.puts
            puts += self._sealed.registry.puts
        return puts

    def __len__(self) -> int:
        return (len(self._issuers) + len(self._credentials) + len(self._batches) + len(self._members)
                + (self.consortium_change is not None))

"""The record rules, as scenarios: each step applies one record or is refused by a named rule."""

from __future__ import annotations

import hashlib

import pytest

from ledger.batch import batch_root
from ledger.records import (
    BatchRevocation,
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
from ledger.entries import BatchEntry, CredentialEntry, CredentialStatus, IssuerEntry, IssuerStatus, issued_entry
from ledger.state import RuleError, StateDelta
from tests.conftest import make_consortium, seeded_key

C = make_consortium(1)
AUTHORITY, ISSUER, OTHER, STRANGER = C.authority, C.issuer, seeded_key("other-issuer"), seeded_key("stranger")
NEW, NEWER = seeded_key("issuer-new-key"), seeded_key("issuer-newer-key")
CID = hashlib.sha256(b"cred").digest()


def register(issuer, by=AUTHORITY):
    return SignedRecord.sign(IssuerRegistration(issuer.public_key, issuer.name, "BR"), by)


def issue(by=ISSUER, cid=CID, at=100):
    return SignedRecord.sign(CredentialIssuance(cid, at), by)


def revoke(by=ISSUER, cid=CID, at=200):
    return SignedRecord.sign(CredentialRevocation(cid, "withdrawn", at), by)


def suspend(by=ISSUER, cid=CID, at=150):
    return SignedRecord.sign(CredentialSuspension(cid, at), by)


def reinstate(by=ISSUER, cid=CID, at=160):
    return SignedRecord.sign(CredentialReinstatement(cid, at), by)


def rotate(old=ISSUER, new=NEW, by=None):
    return SignedRecord.sign(IssuerRotation(old.public_key, new.public_key), by or old)


def retire(issuer=ISSUER, by=None):
    return SignedRecord.sign(IssuerRetirement(issuer.public_key), by or issuer)


def endorse(issuer=ISSUER, by=AUTHORITY, kind=""):
    return SignedRecord.sign(IssuerEndorsement(issuer.public_key, kind), by)


def cid(n: int) -> bytes:
    return hashlib.sha256(b"cohort %d" % n).digest()


def batch(*members: int, by=ISSUER, batch_id=b"\xb1" * 32, listed: list[bytes] | None = None):
    listed = listed or [cid(n) for n in members]
    body = CredentialBatch(batch_id, batch_root(listed), len(listed), 100, 0, "Course")
    return SignedRecord.sign(body, by, ids=b"".join(listed))


def revoke_batch(by=ISSUER, batch_id=b"\xb1" * 32, at=300):
    return SignedRecord.sign(BatchRevocation(batch_id, "key_compromise", at), by)


NEXT_BLOCK = ("next block", None)
"""A scenario step that starts a new block (a delta on top of the last)."""

# (name, steps): each step is (record, None if accepted else the rule that refuses it)
SCENARIOS = [
    ("authority registers an issuer who issues and revokes", [
        (register(ISSUER), None), (issue(), None), (revoke(), None),
    ]),
    ("only authorities register issuers", [
        (register(ISSUER, by=STRANGER), "issuer-registration-by-authority"),
        (register(OTHER, by=ISSUER), "issuer-registration-by-authority"),
    ]),
    ("an issuer key is registered once", [
        (register(ISSUER), None), (register(ISSUER), "issuer-unique"),
    ]),
    ("unregistered keys cannot issue", [
        (issue(by=STRANGER), "issuer-registered"),
    ]),
    ("a credential id is issued once, by anyone", [
        (register(ISSUER), None), (register(OTHER), None),
        (issue(), None), (issue(at=101), "credential-unique"), (issue(by=OTHER), "credential-unique"),
    ]),
    ("only a credential that exists can be revoked, suspended or reinstated", [
        (register(ISSUER), None), (revoke(), "credential-exists"), (suspend(), "credential-exists"),
        (reinstate(), "credential-exists"),
    ]),
    ("revocation is final", [
        (register(ISSUER), None), (issue(), None), (revoke(), None), (revoke(at=201), "credential-not-revoked"),
        (suspend(), "credential-not-revoked"), (reinstate(), "credential-not-revoked"),
    ]),
    ("another issuer cannot change a status", [
        (register(ISSUER), None), (register(OTHER), None), (issue(), None),
        (revoke(by=OTHER), "status-change-by-issuer"), (suspend(by=OTHER), "status-change-by-issuer"),
        (suspend(by=STRANGER), "status-change-by-issuer"),
    ]),
    ("the registering authority can revoke its issuer's credential", [
        (register(ISSUER), None), (issue(), None), (revoke(by=AUTHORITY), None),
    ]),
    ("suspension is reversible, and a suspended credential can still be revoked", [
        (register(ISSUER), None), (issue(), None), (reinstate(), "credential-suspended"),
        (suspend(), None), (suspend(at=151), "credential-not-suspended"), (reinstate(), None),
        (suspend(by=AUTHORITY, at=170), None), (revoke(), None),
    ]),
    ("a rotated key signs nothing more; the new key issues and manages old credentials", [
        (register(ISSUER), None), (issue(), None), (rotate(), None),
        (issue(cid=b"\x01" * 32), "issuer-active"), (suspend(), "status-change-by-issuer"),
        (issue(by=NEW, cid=b"\x02" * 32), None), (suspend(by=NEW), None), (reinstate(by=NEW), None),
        (rotate(), "issuer-active"), (rotate(old=NEW, new=ISSUER), "issuer-unique"),
        (rotate(old=NEW, new=NEWER, by=AUTHORITY), None), (revoke(by=NEWER), None),
    ]),
    ("only the issuer or its authority rotates or retires it", [
        (register(ISSUER), None), (register(OTHER), None),
        (rotate(by=OTHER), "issuer-change-by-issuer"), (retire(by=OTHER), "issuer-change-by-issuer"),
        (rotate(old=STRANGER, new=NEW), "issuer-registered"), (rotate(new=OTHER), "issuer-unique"),
    ]),
    ("a retired key signs nothing more, but its authority still manages its credentials", [
        (register(ISSUER), None), (issue(), None), (retire(), None), (retire(), "issuer-active"),
        (issue(cid=b"\x03" * 32), "issuer-active"), (suspend(), "status-change-by-issuer"),
        (rotate(), "issuer-active"), (revoke(by=AUTHORITY), None),
    ]),
    ("authorities and other active issuers endorse an active issuer, once per achievement type", [
        (register(ISSUER), None), (register(OTHER), None),
        (endorse(), None), (endorse(), "endorsement-unique"), (endorse(kind="Certificate"), None),
        (endorse(by=OTHER), None), (endorse(by=ISSUER), "endorsement-of-other"),
        (endorse(by=STRANGER), "endorsement-by-member"), (endorse(issuer=STRANGER), "issuer-registered"),
        (retire(issuer=OTHER), None), (endorse(by=OTHER, kind="Course"), "endorsement-by-member"),
        (endorse(issuer=OTHER), "issuer-active"),
    ]),
    ("a batch issues its members; a member's status changes alone; revoking the batch revokes all, for good", [
        (register(ISSUER), None), (batch(1, 2, 3), None),
        (suspend(cid=cid(1)), None), (reinstate(cid=cid(1)), None), (revoke(cid=cid(2)), None),
        (revoke(cid=cid(2)), "credential-not-revoked"), (suspend(cid=cid(3)), None),
        (revoke_batch(), None), (revoke_batch(at=301), "batch-not-revoked"),
        (reinstate(cid=cid(3)), "credential-not-revoked"), (suspend(cid=cid(1)), "credential-not-revoked"),
    ]),
    ("an id is issued once, alone or in any batch, and a batch id once", [
        (register(ISSUER), None), (register(OTHER), None), (issue(cid=cid(9)), None),
        (batch(8, 9), "credential-unique"), (batch(4, 5), None), (batch(6, batch_id=b"\xb1" * 32), "batch-unique"),
        (issue(cid=cid(4)), "credential-unique"), (batch(5, 6, by=OTHER, batch_id=b"\xb2" * 32), "credential-unique"),
        (batch(6, 7, by=OTHER, batch_id=b"\xb2" * 32), None),
    ]),
    ("only an active issuer issues a batch; only its identity or authority revokes it", [
        (batch(1, by=STRANGER), "issuer-registered"), (register(ISSUER), None), (register(OTHER), None),
        (batch(1, 2), None), NEXT_BLOCK, (revoke_batch(by=OTHER), "status-change-by-issuer"),
        (revoke_batch(batch_id=b"\xff" * 32), "batch-exists"), (suspend(cid=cid(1), by=OTHER), "status-change-by-issuer"),
        (rotate(), None), (batch(3, by=ISSUER, batch_id=b"\xb3" * 32), "issuer-active"),
        (suspend(cid=cid(1), by=NEW), None), (revoke_batch(by=AUTHORITY), None),
    ]),
    ("endorsements follow the issuer to its new key", [
        (register(ISSUER), None), (register(OTHER), None), (endorse(), None), (rotate(), None),
        (endorse(issuer=NEW, by=OTHER), None), (endorse(issuer=NEW), "endorsement-unique"),
    ]),
]


class EmptyState:
    def issuer(self, key):
        return None

    def credential(self, cid):
        return None

    def credential_exists(self, cid):
        return False

    def first_existing(self, cids):
        return None

    def batch(self, batch_id):
        return None


@pytest.mark.parametrize("steps", [s for _, s in SCENARIOS], ids=[n for n, _ in SCENARIOS])
def test_scenario(steps):
    delta = StateDelta(EmptyState(), C.genesis.authority_set)
    for leaf, (record, refused_by) in enumerate(steps):
        if (record, refused_by) == NEXT_BLOCK:
            delta = StateDelta(delta, C.genesis.authority_set)
            continue
        before = delta.puts()
        if refused_by is None:
            delta.check(record)
            delta.apply(record, leaf)
        else:
            with pytest.raises(RuleError) as caught:
                delta.apply(record, leaf)
            assert caught.value.rule == refused_by
            assert delta.puts() == before, "a refused record changed state"


def test_state_entries_record_where_things_happened():
    delta = StateDelta(EmptyState(), C.genesis.authority_set)
    delta.apply(register(ISSUER), 0)
    delta.apply(issue(), 1)
    delta.apply(suspend(), 2)
    assert delta.credential(CID).status is CredentialStatus.SUSPENDED
    delta.apply(revoke(), 3)
    entry = delta.credential(CID)
    assert (entry.status, entry.issuance_leaf, entry.changed_leaf, entry.changed_at, entry.reason) == (
        CredentialStatus.REVOKED, 1, 3, 200, "withdrawn"
    )
    assert delta.issuer(ISSUER.public_key).registered_by == AUTHORITY.public_key


def test_rotation_hands_the_identity_to_the_new_key_and_bounds_the_old_one():
    delta = StateDelta(EmptyState(), C.genesis.authority_set)
    delta.apply(register(ISSUER), 0)
    delta.apply(endorse(), 1)
    delta.apply(rotate(), 2)
    old, new = delta.issuer(ISSUER.public_key), delta.issuer(NEW.public_key)
    assert (old.status, old.successor, old.changed_leaf) == (IssuerStatus.ROTATED, NEW.public_key, 2)
    assert (new.status, new.issuer_id, new.leaf_index, new.name) == (IssuerStatus.ACTIVE, ISSUER.public_key, 2, old.name)
    assert [e.endorser_key for e in new.endorsements] == [AUTHORITY.public_key]
    assert old.in_force_at(1) and not old.in_force_at(3) and not new.in_force_at(2) and new.in_force_at(3)


def test_batch_members_take_their_batch_status_unless_their_own_changed():
    delta = StateDelta(EmptyState(), C.genesis.authority_set)
    delta.apply(register(ISSUER), 0)
    delta.apply(batch(1, 2, 3), 1)
    members = [delta.credential(cid(n)) for n in (1, 2, 3)]
    assert [(m.status, m.batch_index, m.issuance_leaf, m.batch_id) for m in members] == [
        (CredentialStatus.ISSUED, i, 1, b"\xb1" * 32) for i in range(3)
    ]
    assert delta.credentials == {} and delta.members == 3, "members cost no credentials-map entries"
    delta = StateDelta(delta, C.genesis.authority_set)
    delta.apply(suspend(cid=cid(2)), 2)
    assert set(delta.credentials) == {cid(2)} and delta.credential(cid(2)).batch_index == 1
    delta.apply(revoke_batch(), 3)
    for n in (1, 2, 3):
        entry = delta.credential(cid(n))
        assert (entry.status, entry.changed_leaf, entry.reason) == (CredentialStatus.REVOKED, 3, "key_compromise")
    assert delta.batch(b"\xb1" * 32).status is CredentialStatus.REVOKED


def test_expiry_is_derived_from_the_clock_not_stored():
    entry = CredentialEntry(CID, CredentialStatus.ISSUED, ISSUER.public_key, 100, 1_000, 1)
    assert entry.status_at(999) is CredentialStatus.ISSUED
    assert entry.status_at(1_000) is CredentialStatus.EXPIRED
    revoked = CredentialEntry(CID, CredentialStatus.REVOKED, ISSUER.public_key, 100, 1_000, 1, 2, 500, "fraud")
    assert revoked.status_at(2_000) is CredentialStatus.REVOKED


@pytest.mark.parametrize("entry", [
    CredentialEntry(CID, CredentialStatus.REVOKED, ISSUER.public_key, 100, 1_000, 1, 2, 500, "fraud"),
    CredentialEntry(CID, CredentialStatus.SUSPENDED, ISSUER.public_key, 100, 0, 1, 2, 500, "", b"\xb1" * 32, 7),
    IssuerEntry(ISSUER.public_key, "U", "MX", "", AUTHORITY.public_key, 3),
    BatchEntry(b"\xb1" * 32, ISSUER.public_key, 4, b"\x01" * 32, 10, 100, 0, "Course",
               CredentialStatus.REVOKED, 9, 300, "fraud"),
])
def test_entries_round_trip_through_their_canonical_bytes(entry):
    assert type(entry).decode(entry.encode()) == entry


@pytest.mark.parametrize("fields", [(CID, ISSUER.public_key, 100, 1_000, 1), (CID, ISSUER.public_key, 0, 0, -1)])
def test_an_issued_entry_is_the_entry_the_dataclass_builds(fields):
    # issued_entry sets the slots itself (it is hot); every slot, its bytes
    # and its hash must be what the generated __init__ gives.
    credential_id, issuer_key, issued_at, expires_at, leaf = fields
    fast = issued_entry(credential_id, issuer_key, issued_at, expires_at, leaf)
    built = CredentialEntry(credential_id, CredentialStatus.ISSUED, issuer_key, issued_at, expires_at, leaf)
    assert [getattr(fast, name) for name in CredentialEntry.__slots__] == \
        [getattr(built, name) for name in CredentialEntry.__slots__]
    assert fast == built and hash(fast) == hash(built) and fast.encode() == built.encode()


@pytest.mark.parametrize("entry", [
    CredentialEntry(CID, CredentialStatus.REVOKED, ISSUER.public_key, 100, 1_000, 1, 2, 500, "fraud"),
    CredentialEntry(CID, CredentialStatus.ISSUED, ISSUER.public_key, (1 << 40) - 1, 0, (1 << 62), -1, 0, ""),
    CredentialEntry(CID, CredentialStatus.SUSPENDED, ISSUER.public_key, 0, 7, 0, 1, 9, ""),
    CredentialEntry(CID, CredentialStatus.SUSPENDED, ISSUER.public_key, 0, 7, 0, 1, 9, "", b"\xb1" * 32, 0),
])
def test_a_credential_entry_encodes_as_the_canonical_codec_would(entry):
    """The fast path (a map already in key order) gives codec.encode's bytes
    exactly; its fields alone, in half the bytes, give it back."""
    from ledger import codec

    mapping = codec.decode(entry.encode())
    assert entry.encode() == codec.encode(mapping) and list(mapping) == sorted(mapping)
    assert CredentialEntry.decode_fields(entry.credential_id, entry.encode_fields()) == entry
    assert len(entry.encode_fields()) < len(entry.encode()) / 2


def test_committed_state_reads_an_absent_id_once_until_a_commit_writes_it(chain):
    from ledger.state import CREDENTIAL_PREFIX

    reads: list[bytes] = []
    get = chain.store.get
    chain.store.get = lambda key: (reads.append(key) if key.startswith(CREDENTIAL_PREFIX) else None) or get(key)
    C_chain = make_consortium(1)  # the `chain` fixture's consortium: same seeded keys
    C_chain.commit(chain, [register(ISSUER)])
    cohort = batch(1, 2, 3)
    proposed = chain.propose([cohort], "inst-0", 0, 1_700_000_000_001)  # judged against the store: 3 reads
    chain.validate(proposed.header, [cohort])                            # judged again: none
    assert len(reads) == 3 and not any(chain.state.credential_exists(cid(n)) for n in (1, 2, 3))
    C_chain.commit(chain, [cohort])
    assert all(chain.state.credential_exists(cid(n)) for n in (1, 2, 3)), "the commit wrote them: read again"
    with pytest.raises(RuleError, match="credential-unique|batch-unique"):
        StateDelta(chain.state, chain.authority_set).apply(batch(2, batch_id=b"\xb2" * 32), 9)


@pytest.mark.parametrize("listed, first", [
    ((9,), None),
    ((9, 5, 2), 1),   # issued in the delta, before one committed
    ((9, 2, 5), 1),   # committed, before one issued in the delta
    ((9, 8, 4), 2),
    ((), None),
])
def test_first_existing_is_the_first_id_issued_in_the_delta_or_before_it(chain, listed, first):
    consortium = make_consortium(1)
    consortium.commit(chain, [register(ISSUER)])
    consortium.commit(chain, [batch(1, 2, 3)])
    delta = StateDelta(chain.state, chain.authority_set)
    delta.apply(batch(4, 5, batch_id=b"\xb2" * 32), 9)
    ids = [cid(n) for n in listed]
    assert delta.first_existing(ids) == first
    assert chain.state.first_existing(ids) == next((i for i, n in enumerate(listed) if n in (1, 2, 3)), None)


def test_an_ephemeral_view_stores_an_entry_as_its_fields_and_hash_and_reads_it_back():
    """What an audit's state stores for a credential (`CredentialEntry.encode_fields`
    || the entry hash, the map leaf) reads back as the entry and its canonical bytes."""
    from ledger.entries import entry_hash
    from ledger.state import CREDENTIAL_PREFIX, StoreStateView
    from ledger.store import MemoryStore, WriteBatch

    store = MemoryStore()
    view = StoreStateView(store, ephemeral=True)
    for records in ([register(ISSUER)], [issue()], [suspend()]):
        delta = StateDelta(view, C.genesis.authority_set)
        for leaf, record in enumerate(records):
            delta.apply(record, leaf + 1)
        sealed = delta.seal()
        batch = WriteBatch()
        batch.put_all(delta.puts())
        store.write(batch)
        view.committed(delta, sealed)
    entry = view.credential(CID)
    assert entry.status is CredentialStatus.SUSPENDED and entry.issuer_key == ISSUER.public_key
    assert store.get(CREDENTIAL_PREFIX + CID) == entry.encode_fields() + entry_hash(entry.encode())
    assert view.credential_bytes(CID) == entry.encode()
    assert view.credential_map.value_hash(CID) == entry_hash(entry.encode())


def test_an_ephemeral_view_starts_on_a_store_without_credentials():
    from ledger.state import CREDENTIAL_PREFIX, StoreStateView
    from ledger.store import MemoryStore, WriteBatch

    store = MemoryStore()
    StoreStateView(store, ephemeral=True)
    batch = WriteBatch()
    batch.put(CREDENTIAL_PREFIX + cid(1), b"an entry")
    store.write(batch)
    with pytest.raises(ValueError):
        StoreStateView(store, ephemeral=True)

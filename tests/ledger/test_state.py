"""The record rules, as scenarios: each step applies one record or is refused by a named rule."""

from __future__ import annotations

import hashlib

import pytest

from ledger.genesis import AuthoritySet
from ledger.records import CredentialIssuance, CredentialRevocation, IssuerRegistration, SignedRecord
from ledger.state import CredentialStatus, RuleError, StateDelta
from tests.conftest import make_consortium, seeded_key

C = make_consortium(1)
AUTHORITY, ISSUER, OTHER, STRANGER = C.authority, C.issuer, seeded_key("other-issuer"), seeded_key("stranger")
CID = hashlib.sha256(b"cred").digest()


def register(issuer, by=AUTHORITY):
    return SignedRecord.sign(IssuerRegistration(issuer.public_key, issuer.name, "BR"), by)


def issue(by=ISSUER, cid=CID, at=100):
    return SignedRecord.sign(CredentialIssuance(cid, at), by)


def revoke(by=ISSUER, cid=CID, at=200):
    return SignedRecord.sign(CredentialRevocation(cid, "withdrawn", at), by)


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
    ("only a credential that exists can be revoked", [
        (register(ISSUER), None), (revoke(), "credential-exists"),
    ]),
    ("revocation is final", [
        (register(ISSUER), None), (issue(), None), (revoke(), None), (revoke(at=201), "credential-not-revoked"),
    ]),
    ("another issuer cannot revoke", [
        (register(ISSUER), None), (register(OTHER), None), (issue(), None), (revoke(by=OTHER), "revocation-by-issuer"),
    ]),
    ("the registering authority can revoke its issuer's credential", [
        (register(ISSUER), None), (issue(), None), (revoke(by=AUTHORITY), None),
    ]),
]


class EmptyState:
    def issuer(self, key):
        return None

    def credential(self, cid):
        return None


@pytest.mark.parametrize("steps", [s for _, s in SCENARIOS], ids=[n for n, _ in SCENARIOS])
def test_scenario(steps):
    delta = StateDelta(EmptyState(), C.genesis.authority_set)
    for leaf, (record, refused_by) in enumerate(steps):
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
    delta.apply(revoke(), 2)
    entry = delta.credential(CID)
    assert (entry.status, entry.issuance_leaf, entry.revocation_leaf, entry.reason) == (
        CredentialStatus.REVOKED, 1, 2, "withdrawn"
    )
    assert delta.issuer(ISSUER.public_key).registered_by == AUTHORITY.public_key

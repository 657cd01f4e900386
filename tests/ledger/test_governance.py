"""Consortium governance: quorum-approved changes, in force from the next block, with the history kept."""

from __future__ import annotations

import pytest

from ledger.block import BlockError, CommitCertificate, precommit
from ledger.chain import Chain
from ledger.genesis import AuthoritySet
from ledger.governance import ConsortiumEntry, approve
from ledger.records import ConsortiumChange, SignedRecord
from ledger.state import RuleError, StateDelta
from ledger.store import MemoryStore
from tests.conftest import make_consortium, seeded_key

C = make_consortium(4)
KEYS = {k.name: k for k in C.authorities}
NEWCOMER = seeded_key("inst-4")
OUTSIDER = seeded_key("outsider")


def change(epoch=0, action="authority.add", approvers=("inst-0", "inst-1", "inst-2"), chain_id=C.genesis.hash, **fields):
    if action == "authority.add":
        fields = {"name": "inst-4", "public_key": NEWCOMER.public_key, "url": "http://127.0.0.1:7004", **fields}
    elif action == "authority.remove":
        fields = {"name": "inst-3", **fields}
    else:
        fields = {"block_records_max": 500, **fields}
    draft = ConsortiumChange(epoch, action, **fields)
    keys = [KEYS[name] if name in KEYS else seeded_key(name) for name in approvers]
    approvals = tuple(sorted(approve(key, chain_id, draft) for key in keys))
    return ConsortiumChange(epoch, action, **fields, approvals=approvals)


def submitted(body, by="inst-0"):
    return SignedRecord.sign(body, KEYS.get(by) or seeded_key(by))


GENESIS = ConsortiumEntry.from_genesis(C.genesis)

# (name, change record, rule that refuses it or None)
CASES = [
    ("a quorum adds an authority", submitted(change()), None),
    ("all four remove one", submitted(change(action="authority.remove", approvers=KEYS)), None),
    ("a quorum sets the policy", submitted(change(action="policy.set")), None),
    ("two approvals are not a quorum of four", submitted(change(approvers=("inst-0", "inst-1"))), "governance-quorum"),
    ("an outsider's approval does not count", submitted(change(approvers=("inst-0", "inst-1", "outsider"))),
     "governance-approval"),
    ("a forged approval is refused", submitted(ConsortiumChange(
        0, "policy.set", block_records_max=9,
        approvals=tuple(sorted(approve(KEYS[n], C.genesis.hash, ConsortiumChange(0, "policy.set", block_records_max=10))
                               for n in ("inst-0", "inst-1", "inst-2"))))), "governance-approval"),
    ("approvals for another consortium do not count", submitted(change(chain_id=bytes(32))), "governance-approval"),
    ("a change for an old or future epoch is refused", submitted(change(epoch=1)), "governance-epoch"),
    ("only an authority submits", submitted(change(), by="outsider"), "governance-by-authority"),
    ("an existing name is not added again", submitted(change(name="inst-2")), "governance-authority-unique"),
    ("an existing key is not added again", submitted(change(public_key=KEYS["inst-1"].public_key)),
     "governance-authority-unique"),
    ("only a member is removed", submitted(change(action="authority.remove", name="inst-9")),
     "governance-authority-known"),
]


@pytest.mark.parametrize("record, refused_by", [(r, x) for _, r, x in CASES], ids=[n for n, _, _ in CASES])
def test_changes_need_a_quorum_of_the_current_authorities(record, refused_by):
    chain = Chain(MemoryStore(), C.genesis)
    delta = StateDelta(chain.state, chain.authority_set, height=1)
    if refused_by is None:
        delta.apply(record, 0)
        assert delta.consortium_change.epoch == 1 and delta.consortium_change.from_height == 2
    else:
        with pytest.raises(RuleError) as caught:
            delta.apply(record, 0)
        assert caught.value.rule == refused_by
        assert delta.consortium_change is None


def test_one_change_per_block():
    chain = Chain(MemoryStore(), C.genesis)
    delta = StateDelta(chain.state, chain.authority_set, height=1)
    delta.apply(submitted(change()), 0)
    with pytest.raises(RuleError) as caught:
        delta.apply(submitted(change(epoch=1, action="policy.set")), 1)
    assert caught.value.rule == "governance-one-per-block"


def _commit(chain: Chain, records, signers) -> None:
    proposer = chain.authority_set.proposer(chain.height + 1, 0).name
    proposed = chain.propose(records, proposer, 0, 1_700_000_000_000 + chain.height)
    assert not proposed.rejected, proposed.rejected
    header = proposed.header
    signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in signers)
    chain.commit(header, proposed.records, CommitCertificate(header.height, 0, header.hash, signatures), proposed.delta)


def test_the_new_set_certifies_from_the_next_block_and_the_history_stays():
    store = MemoryStore()
    chain = Chain(store, C.genesis)
    old = list(C.authorities)
    _commit(chain, [C.registration()], old)
    _commit(chain, [submitted(change())], old)  # block 2 holds the change
    assert [a.name for a in chain.authority_set.authorities][-1] == "inst-4"
    assert chain.authority_set_at(2) == C.genesis.authority_set
    new = old + [NEWCOMER]
    # Quorum of five is four: three old signatures no longer certify block 3.
    proposer = chain.authority_set.proposer(3, 0).name
    proposed = chain.propose([C.issuance(1)], proposer, 0, 1_700_000_000_100)
    header = proposed.header
    short = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in old[:3])
    with pytest.raises(BlockError):
        chain.commit(header, proposed.records, CommitCertificate(3, 0, header.hash, short), proposed.delta)
    _commit(chain, [C.issuance(1)], new[1:])
    # Checkpoints of old heights are cosigned by the set of their time.
    assert chain.checkpoint_note(2) and chain.checkpoint_note(3)
    # Reopening restores the whole history from the store.
    reopened = Chain(store, C.genesis)
    assert [e.epoch for e in reopened.history.epochs] == [0, 1]
    assert reopened.authority_set == chain.authority_set
    assert reopened.state.root() == chain.head.state_root


def test_a_policy_change_bounds_later_blocks():
    chain = Chain(MemoryStore(), C.genesis)
    _commit(chain, [C.registration(), submitted(change(action="policy.set", block_records_max=2))], C.authorities)
    assert chain.block_records_max == 2
    proposed = chain.propose([C.issuance(i) for i in range(5)], chain.authority_set.proposer(2, 0).name, 0, 1)
    assert len(proposed.records) == 2


def test_a_removed_authority_no_longer_registers_issuers():
    chain = Chain(MemoryStore(), C.genesis)
    _commit(chain, [submitted(change(action="authority.remove", approvers=KEYS))], C.authorities)
    assert chain.authority_set == AuthoritySet(C.genesis.authorities[:3])
    proposed = chain.propose([C.registration(by=KEYS["inst-3"])], chain.authority_set.proposer(2, 0).name, 0, 1)
    assert [error.rule for _, error in proposed.rejected] == ["issuer-registration-by-authority"]

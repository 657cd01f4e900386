"""The mempool: bounded, deduplicated, and its pending effects stay right across commits."""

from __future__ import annotations

import hashlib

import pytest

from ledger.chain import Chain
from ledger.records import CredentialIssuance, SignedRecord
from ledger.state import RuleError, StateDelta
from ledger.store import MemoryStore
from node.mempool import Mempool, MempoolFullError


def _mempool(consortium, chain, records_max=100) -> Mempool:
    return Mempool(records_max, chain.state, chain.authority_set)


def _admit(mempool, records):
    scratch = StateDelta(mempool.pending_state, mempool._authorities())
    for record in records:
        scratch.apply(record, -1)
    mempool.admit(records, scratch)


def test_records_leave_in_arrival_order_and_peek_leaves_them(consortium, chain):
    mempool = _mempool(consortium, chain)
    records = [consortium.registration()] + [consortium.issuance(i) for i in range(3)]
    _admit(mempool, records)
    assert mempool.peek(2) == records[:2] and len(mempool) == 4
    assert mempool.take(3) == records[:3] and len(mempool) == 1


def test_admission_beyond_the_bound_is_refused_whole(consortium, chain):
    mempool = _mempool(consortium, chain, records_max=2)
    with pytest.raises(MempoolFullError):
        _admit(mempool, [consortium.registration()] + [consortium.issuance(i) for i in range(2)])
    assert len(mempool) == 0


def test_pending_effects_survive_a_block_of_our_own_records(consortium, chain):
    mempool = _mempool(consortium, chain)
    _admit(mempool, [consortium.registration(), consortium.issuance(1), consortium.issuance(2)])
    block = mempool.take(2)
    consortium.commit(chain, block)
    assert mempool.after_commit(only_pending_committed=True) == []
    # issuance 1 is committed, issuance 2 still pending: both ids are taken
    for n in (1, 2):
        again = SignedRecord.sign(CredentialIssuance(consortium.issuance(n).body.credential_id, 7), consortium.issuer)
        with pytest.raises(RuleError):
            mempool.check(again)


def test_a_foreign_block_drops_pending_records_it_conflicts_with(consortium):
    chain = Chain(MemoryStore(), consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    mempool = _mempool(consortium, chain)
    credential_id = hashlib.sha256(b"contested").digest()
    ours = SignedRecord.sign(CredentialIssuance(credential_id, 1), consortium.issuer)
    theirs = SignedRecord.sign(CredentialIssuance(credential_id, 2), consortium.issuer)
    _admit(mempool, [ours])
    consortium.commit(chain, [theirs])  # proposed elsewhere
    assert mempool.after_commit(only_pending_committed=False) == [ours]
    assert len(mempool) == 0

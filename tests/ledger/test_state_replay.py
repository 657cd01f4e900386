"""Every node, and a replay from genesis, reach the same state root from any mix of valid and invalid records."""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger.block import Block, CommitCertificate, precommit
from ledger.chain import Chain
from ledger.governance import approve
from ledger.leveldb_store import LevelDBStore
from ledger.batch import batch_root
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
from ledger.store import MemoryStore
from tests.conftest import make_consortium, seeded_key

C = make_consortium(4)
AUTHORITIES = {k.name: k for k in C.authorities}
EXTRA = seeded_key("inst-4")
ISSUERS = [seeded_key(f"issuer-{i}") for i in range(4)]
SIGNERS = [*C.authorities, EXTRA, *ISSUERS]
CREDENTIALS = [hashlib.sha256(b"cred %d" % i).digest() for i in range(6)]
BATCH_IDS = [hashlib.sha256(b"batch %d" % i).digest() for i in range(3)]


def _governance(epoch: int, action: str, approvers: list) -> ConsortiumChange:
    fields = {
        "authority.add": {"name": "inst-4", "public_key": EXTRA.public_key},
        "authority.remove": {"name": "inst-3"},
        "policy.set": {"block_records_max": 50},
    }[action]
    draft = ConsortiumChange(epoch, action, **fields)
    return ConsortiumChange(
        epoch, action, **fields, approvals=tuple(sorted(approve(k, C.genesis.hash, draft) for k in approvers))
    )


@st.composite
def records(draw) -> SignedRecord:
    """A record of any kind, usually by a plausible signer, sometimes by anyone: many are refused."""
    kind = draw(st.integers(0, 11))
    issuer = draw(st.sampled_from(ISSUERS))
    plausible = C.authorities if kind in (0, 8, 9) else [issuer]
    ids = b""
    signer = draw(st.sampled_from(plausible) if draw(st.integers(0, 4)) else st.sampled_from(SIGNERS))
    cid = draw(st.sampled_from(CREDENTIALS))
    at = draw(st.integers(1, 1000))
    if kind == 0:
        body = IssuerRegistration(issuer.public_key, issuer.name, "UY")
    elif kind == 1:
        body = CredentialIssuance(cid, at, draw(st.sampled_from([0, at + 10])))
    elif kind == 2:
        body = CredentialRevocation(cid, draw(st.sampled_from(["fraud", "withdrawn"])), at)
    elif kind == 3:
        body = CredentialSuspension(cid, at)
    elif kind == 4:
        body = CredentialReinstatement(cid, at)
    elif kind == 5:
        other = draw(st.sampled_from([i for i in ISSUERS if i is not issuer]))
        body = IssuerRotation(issuer.public_key, other.public_key)
    elif kind == 6:
        body = IssuerRetirement(issuer.public_key)
    elif kind == 7:
        body = IssuerEndorsement(issuer.public_key, draw(st.sampled_from(["", "Course"])))
    elif kind == 10:
        # Batches share ids with single issuances and each other: many collide.
        members = draw(st.lists(st.sampled_from(CREDENTIALS), min_size=1, max_size=4, unique=True))
        body = CredentialBatch(draw(st.sampled_from(BATCH_IDS)), batch_root(members), len(members), at)
        ids = b"".join(members)
    elif kind == 11:
        body = BatchRevocation(draw(st.sampled_from(BATCH_IDS)), "key_compromise", at)
    else:
        approvers = draw(st.lists(st.sampled_from(C.authorities + [EXTRA]), min_size=2, max_size=5, unique_by=lambda k: k.name))
        action = draw(st.sampled_from(["authority.add", "authority.remove", "policy.set"]))
        body = _governance(draw(st.sampled_from([0, 0, 1, 2])), action, approvers)
    return SignedRecord.sign(body, signer, ids=ids)


def _certify(chain: Chain, header) -> CommitCertificate:
    keys = [AUTHORITIES.get(a.name) or EXTRA for a in chain.authority_set.authorities]
    signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in keys)
    return CommitCertificate(header.height, 0, header.hash, signatures)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.lists(records(), max_size=10), min_size=1, max_size=8))
def test_followers_and_a_replay_agree_on_every_state_root(tmp_path_factory, blocks):
    proposer_chain = Chain(MemoryStore(), C.genesis)
    follower_store = LevelDBStore(str(tmp_path_factory.mktemp("follower") / "chain"))
    follower = Chain(follower_store, C.genesis)
    committed: list[Block] = []
    for block_records in blocks:
        height = proposer_chain.height + 1
        proposed = proposer_chain.propose(block_records, proposer_chain.authority_set.proposer(height, 0).name, 0, height)
        certificate = _certify(proposer_chain, proposed.header)
        block = Block(proposed.header, tuple(r.encoded for r in proposed.records), certificate)
        # The follower judges the block itself, with its own state.
        follower.apply_block(Block.decode(block.encode()))
        proposer_chain.commit(proposed.header, proposed.records, certificate, proposed.delta)
        assert follower.state.root() == proposer_chain.state.root() == proposed.header.state_root
        assert follower.authority_set == proposer_chain.authority_set
        committed.append(block)
    event(f"consortium epochs reached: {len(proposer_chain.history.epochs) - 1}")
    event(f"records accepted: {'some' if proposer_chain.log_size else 'none'}")
    event(f"batches accepted: {'some' if any(proposer_chain.state.batch(b) for b in BATCH_IDS) else 'none'}")
    # A from-scratch replay of the same blocks reaches the same state.
    replay = Chain(MemoryStore(), C.genesis)
    for block in committed:
        replay.apply_block(block)
    assert replay.state.root() == proposer_chain.state.root()
    # Batch membership is indexed outside the root: it must agree too.
    for chain in (follower, replay):
        assert [chain.state.credential(c) for c in CREDENTIALS] == [proposer_chain.state.credential(c) for c in CREDENTIALS]
    assert [e.epoch for e in replay.history.epochs] == [e.epoch for e in proposer_chain.history.epochs]
    # And reopening the follower's LevelDB files restores it exactly.
    follower.close()
    reopened = Chain(LevelDBStore(str(follower_store.path)), C.genesis)
    assert reopened.state.root() == proposer_chain.state.root()
    reopened.close()

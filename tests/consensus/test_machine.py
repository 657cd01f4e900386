"""The machine with real Ed25519 keys and lacre block headers: certificates verify with
`CommitCertificate.verify`, restarts never double-sign, bad input is dropped with a reason."""

from __future__ import annotations

import hashlib

from consensus.actions import (
    Broadcast, BuildProposal, CatchUp, Commit, Dropped, PersistSigned, RecordEvidence, ValidateProposal,
)
from consensus.events import BlockApplied, MessageReceived, ProposalBodyReady, ProposalValidated, Start, TimeoutFired, TimeoutKind
from consensus.evidence import Evidence
from consensus.machine import Machine
from consensus.messages import Value, Vote, VoteKind, decode_message, encode_message
from consensus.signed_state import SignedState
from ledger import crypto
from ledger.block import BlockHeader
from ledger.genesis import Authority, AuthoritySet

ORIGIN = "test.lacre.local/consortium"
CHAIN = hashlib.sha256(b"test chain").digest()
KEYS = [crypto.KeyPair(f"inst-{i}", hashlib.sha256(b"key %d" % i).digest()) for i in range(4)]
AUTHORITIES = AuthoritySet(tuple(Authority(k.name, k.public_key) for k in KEYS))


def header(height: int, proposer: str, salt: int = 0) -> BlockHeader:
    return BlockHeader(height, bytes(32), proposer, 0, 1_700_000_000_000 + salt, 0, 0, bytes(32), bytes(32))


def value_of(block: BlockHeader) -> Value:
    return Value(block.hash, block.encode(), block.checkpoint(ORIGIN).text())


def machine(index: int, height: int = 1, signed: SignedState | None = None) -> Machine:
    return Machine(authority_set=AUTHORITIES, chain_id=CHAIN, signer=KEYS[index], height=height, signed=signed)


class Cluster:
    """Four machines wired by hand: every broadcast is delivered at once, in order."""

    def __init__(self) -> None:
        self.machines = [machine(i) for i in range(4)]
        self.commits: dict[int, list[Commit]] = {i: [] for i in range(4)}
        self.headers: dict[bytes, BlockHeader] = {}

    def start(self) -> None:
        started = [(index, self.machines[index].step(Start())) for index in range(4)]
        for index, actions in started:
            self.run(index, None, actions)

    def run(self, index: int, event, actions: list | None = None) -> None:
        pending = [(index, event)]
        while pending:
            target, event = pending.pop(0)
            if actions is None:
                actions = self.machines[target].step(event)
            batch, actions = actions, None
            for action in batch:
                if isinstance(action, Broadcast):
                    pending += [(other, MessageReceived(action.data)) for other in range(4) if other != target]
                elif isinstance(action, BuildProposal):
                    block = header(action.height, KEYS[target].name)
                    self.headers[block.hash] = block
                    pending.append((target, ProposalBodyReady(action.height, action.round, value_of(block))))
                elif isinstance(action, ValidateProposal):
                    pending.append((target, ProposalValidated(action.message.height, action.message.value.block_hash, True)))
                elif isinstance(action, Commit):
                    self.commits[target].append(action)


def test_four_authorities_commit_and_the_certificate_verifies() -> None:
    cluster = Cluster()
    cluster.start()
    for index in range(4):
        assert len(cluster.commits[index]) == 1
        commit = cluster.commits[index][0]
        block = cluster.headers[commit.value.block_hash]
        commit.certificate.verify(block, AUTHORITIES, CHAIN, ORIGIN)  # raises on any flaw
        assert commit.certificate.checkpoint_note(block, ORIGIN, AUTHORITIES).count("\u2014 ") >= 3


def test_persist_comes_before_broadcast() -> None:
    single = Machine(authority_set=AuthoritySet((Authority(KEYS[0].name, KEYS[0].public_key),)),
                     chain_id=CHAIN, signer=KEYS[0], height=1)
    actions = single.step(Start())
    build = next(a for a in actions if isinstance(a, BuildProposal))
    actions = single.step(ProposalBodyReady(1, build.round, value_of(header(1, "inst-0"))))
    kinds = [type(a).__name__ for a in actions if isinstance(a, (PersistSigned, Broadcast, Commit))]
    assert kinds[:2] == ["PersistSigned", "Broadcast"] and kinds[-1] == "Commit"
    for position, action in enumerate(actions):
        if isinstance(action, Broadcast):
            assert any(isinstance(a, PersistSigned) for a in actions[:position])


def test_restart_never_signs_a_conflicting_vote() -> None:
    node = machine(1)
    node.step(Start())
    proposal_value = value_of(header(1, "inst-1"))
    # inst-1 is not the proposer of (1, 0); its propose timeout makes it prevote nil.
    actions = node.step(TimeoutFired(1, 0, TimeoutKind.PROPOSE))
    state = [a for a in actions if isinstance(a, PersistSigned)][-1].state
    first = state.find(0, "prevote")
    assert first is not None and first.is_nil
    restarted = machine(1, signed=SignedState.decode(state.encode()))
    restarted.step(Start())
    # The proposal now arrives: the restarted node must not prevote it in round 0.
    from consensus.messages import Proposal, ProposalMessage
    unsigned = Proposal(1, 0, -1, proposal_value.block_hash, "inst-1", bytes(64))
    proposer = KEYS[AUTHORITIES.index(AUTHORITIES.proposer(1, 0).name)]
    proposal = Proposal(1, 0, -1, proposal_value.block_hash, proposer.name, proposer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(CHAIN)))
    value = Value(proposal.block_hash, proposal_value.body, proposal_value.checkpoint_text)
    actions = restarted.step(MessageReceived(encode_message(CHAIN, ProposalMessage(proposal, value))))
    actions += restarted.step(ProposalValidated(1, value.block_hash, True))
    sent = [decode_message(a.data)[1] for a in actions if isinstance(a, Broadcast)]
    prevotes = [m for m in sent if isinstance(m, Vote) and m.kind is VoteKind.PREVOTE and m.round == 0]
    assert prevotes and all(v == first for v in prevotes)
    assert not any(isinstance(a, PersistSigned) for a in actions)


def test_drops_say_why() -> None:
    node = machine(0)
    node.step(Start())

    def reason(data: bytes) -> str:
        return next(a.reason for a in node.step(MessageReceived(data)) if isinstance(a, Dropped))

    vote = Vote(VoteKind.PREVOTE, 1, 0, b"", "inst-2", bytes(64))
    assert reason(b"\x00garbage").startswith("malformed")
    assert reason(encode_message(b"other", vote)) == "other chain"
    assert reason(encode_message(CHAIN, Vote(VoteKind.PREVOTE, 1, 0, b"", "mallory", bytes(64)))) == "not an authority"
    assert reason(encode_message(CHAIN, vote)) == "bad signature"


def test_equivocation_becomes_verifiable_evidence() -> None:
    node = machine(0)
    node.step(Start())
    byzantine = KEYS[3]

    def signed_vote(block_hash: bytes) -> Vote:
        unsigned = Vote(VoteKind.PREVOTE, 1, 0, block_hash, byzantine.name, bytes(64))
        return Vote(VoteKind.PREVOTE, 1, 0, block_hash, byzantine.name, byzantine.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(CHAIN)))

    node.step(MessageReceived(encode_message(CHAIN, signed_vote(b""))))
    actions = node.step(MessageReceived(encode_message(CHAIN, signed_vote(b"\x01" * 32))))
    evidence = next(a.evidence for a in actions if isinstance(a, RecordEvidence))
    assert evidence.authority == "inst-3"
    Evidence.decode(evidence.encode()).verify(AUTHORITIES, CHAIN)


def test_block_applied_by_catch_up_moves_to_the_next_height() -> None:
    node = machine(0)
    node.step(Start())
    actions = node.step(BlockApplied(5))
    assert node.height == 6 and node.round == 0
    assert any(isinstance(a, BuildProposal) for a in actions) == (AUTHORITIES.proposer(6, 0).name == "inst-0")


def prevote_by(index: int, height: int) -> bytes:
    key = KEYS[index]
    unsigned = Vote(VoteKind.PREVOTE, height, 0, b"", key.name, bytes(64))
    signed = Vote(VoteKind.PREVOTE, height, 0, b"", key.name, key.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(CHAIN)))
    return encode_message(CHAIN, signed)


def test_catch_up_asks_each_peer_ahead_in_turn() -> None:
    """Hints go to the peer ahead heard from last, then the one before it, and
    so on. A peer that is down stays the one "heard from last" when the others
    relay its votes, and asking only it stalled two nodes for good (simulator
    seed 957643)."""
    node = machine(0)
    node.step(Start())
    hints = []
    for index in (2, 1, 3):  # inst-3 heard from last
        hints += [a.peer for a in node.step(MessageReceived(prevote_by(index, 5))) if isinstance(a, CatchUp)]
    assert hints == ["inst-2"]  # one hint per retransmit period
    for _ in range(4):
        actions = node.step(TimeoutFired(1, 0, TimeoutKind.RETRANSMIT))
        hints += [a.peer for a in actions if isinstance(a, CatchUp)]
    assert hints == ["inst-2", "inst-1", "inst-2", "inst-3", "inst-1"]
    # Another height starts from the most recent peer again.
    node.step(BlockApplied(1))
    actions = node.step(MessageReceived(prevote_by(3, 6)))
    assert [a.peer for a in actions if isinstance(a, CatchUp)] == ["inst-3"]


def test_a_body_swapped_under_a_signed_proposal_is_neither_trusted_nor_fatal() -> None:
    """The proposal signs only the block hash. A copy whose checkpoint text was
    altered is found invalid (the round prevotes nil), but the genuine copy is
    still validated, and a later altered copy takes the validated value instead
    of being trusted under the hash (simulator seed 30947)."""
    proposer, voter = machine(1), machine(0)
    proposer.step(Start())
    actions = proposer.step(ProposalBodyReady(1, 0, value_of(header(1, KEYS[1].name))))
    proposal = next(a.message for a in actions if isinstance(a, Broadcast) and not isinstance(a.message, Vote))
    value = proposal.value
    forged = type(proposal)(proposal.proposal, Value(value.block_hash, value.body, value.checkpoint_text + "x"))
    voter.step(Start())
    asked = [a for a in voter.step(MessageReceived(encode_message(CHAIN, forged))) if isinstance(a, ValidateProposal)]
    assert [a.message.value for a in asked] == [forged.value]
    prevotes = [a.message for a in voter.step(ProposalValidated(1, value.block_hash, False)) if isinstance(a, Broadcast)]
    assert [(v.kind, v.block_hash) for v in prevotes] == [(VoteKind.PREVOTE, b"")]  # this round: valid(v) was false
    asked = [a for a in voter.step(MessageReceived(encode_message(CHAIN, proposal))) if isinstance(a, ValidateProposal)]
    assert [a.message.value for a in asked] == [value]
    voter.step(ProposalValidated(1, value.block_hash, True))
    assert not any(isinstance(a, ValidateProposal) for a in voter.step(MessageReceived(encode_message(CHAIN, forged))))


def _signed_vote(key: crypto.KeyPair, kind: VoteKind, height: int, round: int, block_hash: bytes = b"") -> Vote:
    unsigned = Vote(kind, height, round, block_hash, key.name, bytes(64))
    signature = key.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(CHAIN))
    return Vote(kind, height, round, block_hash, key.name, signature)


def test_retransmit_relays_others_precommits_of_the_previous_round_and_votes_of_the_current_one() -> None:
    """Gossip over a lossy transport (simulator seed 31872): what justified our round reaches the others."""
    node = machine(0)
    node.step(Start())
    for round in (0, 1, 2):
        for key in KEYS[1:3]:  # f+1 = 2 senders per round: node skips up to round 2
            node.step(MessageReceived(encode_message(CHAIN, _signed_vote(key, VoteKind.PRECOMMIT, 1, round))))
    assert node.round == 2
    actions = node.step(TimeoutFired(1, 2, TimeoutKind.RETRANSMIT))
    relayed = {(a.message.authority, a.message.round) for a in actions
               if isinstance(a, Broadcast) and a.message.authority != "inst-0"}
    assert relayed == {(name, round) for name in ("inst-1", "inst-2") for round in (1, 2)}


def test_a_relayed_copy_is_not_verified_again_but_a_forged_one_still_is() -> None:
    checked: list[bytes] = []

    def counting_verify(public_key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
        checked.append(signature)
        crypto.verify(public_key, context, message, signature)

    node = Machine(authority_set=AUTHORITIES, chain_id=CHAIN, signer=KEYS[0], height=1, verify=counting_verify)
    node.step(Start())
    vote = _signed_vote(KEYS[2], VoteKind.PREVOTE, 1, 0)
    data = encode_message(CHAIN, vote)
    node.step(MessageReceived(data))
    reasons = [a.reason for a in node.step(MessageReceived(data)) if isinstance(a, Dropped)]
    assert checked == [vote.signature] and reasons == ["duplicate"]
    forged = Vote(vote.kind, vote.height, vote.round, vote.block_hash, vote.authority, bytes(64))
    reasons = [a.reason for a in node.step(MessageReceived(encode_message(CHAIN, forged))) if isinstance(a, Dropped)]
    assert checked == [vote.signature, bytes(64)] and reasons == ["bad signature"]
    # The same signature claimed by another authority is that authority's to prove.
    borrowed = Vote(vote.kind, vote.height, vote.round, vote.block_hash, KEYS[3].name, vote.signature)
    reasons = [a.reason for a in node.step(MessageReceived(encode_message(CHAIN, borrowed))) if isinstance(a, Dropped)]
    assert reasons == ["bad signature"]
    # A verified statement of the next height is remembered across the advance.
    ahead = _signed_vote(KEYS[3], VoteKind.PREVOTE, 2, 0)
    node.step(MessageReceived(encode_message(CHAIN, ahead)))
    node.step(BlockApplied(1))
    node.step(MessageReceived(encode_message(CHAIN, ahead)))
    assert checked.count(ahead.signature) == 1

"""The simulated Byzantine authority: an honest machine with a malicious shell.

It runs a normal `Machine` (so it still helps liveness some of the time) but
rewrites what it sends: as proposer it equivocates (one block to each half of
the cluster, sometimes an invalid one for another height), puts replayed or
repeated records in the blocks it proposes, it double-votes (a conflicting vote to
half the cluster), and on its own clock it replays old messages, sends
garbage bytes, corrupts real messages and signs messages for other chains,
heights and rounds. It signs only with its own key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consensus.actions import Broadcast
from consensus.messages import NIL, Proposal, ProposalMessage, Vote, VoteKind, decode_message, encode_message
from consensus.signing import CHECKPOINT_CONTEXT
from ledger import crypto

from tests.consensus import sim_app

if TYPE_CHECKING:
    from tests.consensus.simulator import Node, Simulation

REPLAY_POOL_MAX = 200


class Byzantine:
    def __init__(self, simulation: "Simulation", node: "Node") -> None:
        self.simulation = simulation
        self.node = node
        self.rng = simulation.rng
        self.signer = sim_app.StandInSigner(node.name)
        self.seen: list[bytes] = []  # messages it sent or could have overheard, for replay

    def others(self) -> list[int]:
        return [other.index for other in self.simulation.nodes if other is not self.node]

    def halves(self) -> tuple[list[int], list[int]]:
        others = self.others()
        self.rng.shuffle(others)
        middle = len(others) // 2
        return others[:middle], others[middle:]

    def send_to(self, receivers: list[int], data: bytes) -> None:
        for receiver in receivers:
            self.simulation.send(self.node.index, receiver, ("message", data))

    def remember(self, data: bytes) -> None:
        if len(self.seen) < REPLAY_POOL_MAX:
            self.seen.append(data)
        else:
            self.seen[self.rng.randrange(REPLAY_POOL_MAX)] = data

    def rewrite(self, actions: list) -> list:
        """Replace some broadcasts with equivocations; keep every other action."""
        kept = []
        for action in actions:
            if isinstance(action, Broadcast):
                self.remember(action.data)
                if isinstance(action.message, ProposalMessage) and self.rng.random() < 0.7:
                    self.equivocate_proposal(action)
                    continue
                if isinstance(action.message, Vote) and self.rng.random() < 0.3:
                    self.double_vote(action)
                    continue
            kept.append(action)
        return kept

    def sign_proposal(self, template: Proposal, value) -> bytes:
        unsigned = Proposal(template.height, template.round, template.valid_round, value.block_hash, template.proposer, bytes(64))
        signature = self.signer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(sim_app.CHAIN_ID))
        proposal = Proposal(template.height, template.round, template.valid_round, value.block_hash, template.proposer, signature)
        return encode_message(sim_app.CHAIN_ID, ProposalMessage(proposal, value))

    def sign_vote(self, template: Vote, block_hash: bytes, checkpoint_text: str | None) -> bytes:
        cosign = template.kind is VoteKind.PRECOMMIT and block_hash != NIL
        unsigned = Vote(template.kind, template.height, template.round, block_hash, template.authority, bytes(64), bytes(64) if cosign else b"")
        signature = self.signer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(sim_app.CHAIN_ID))
        cosignature = b""
        if cosign:
            text = checkpoint_text if checkpoint_text is not None else sim_app.checkpoint_text(template.height, block_hash)
            cosignature = self.signer.sign(CHECKPOINT_CONTEXT, text.encode())
        return encode_message(sim_app.CHAIN_ID, Vote(template.kind, template.height, template.round, block_hash, template.authority, signature, cosignature))

    def equivocate_proposal(self, action: Broadcast) -> None:
        """A different block to each half (the second sometimes invalid)."""
        proposal = action.message.proposal
        other_height = proposal.height if self.rng.random() < 0.8 else proposal.height + 1
        other = sim_app.make_value(other_height, self.rng.randbytes(16), self.tamper_records(sim_app.records_of(action.message.value) or ()))
        first_half, second_half = self.halves()
        conflicting = self.sign_proposal(proposal, other)
        for data in (action.data, conflicting):  # validity checks what right proposers proposed
            self.simulation.invariants.on_broadcast(self.node.name, decode_message(data)[1], honest=False)
        self.send_to(first_half, action.data)
        self.send_to(second_half, conflicting)

    def tamper_records(self, records) -> list[bytes]:
        """The records it puts in a block it proposes: `records` reordered, and
        sometimes a committed one replayed or one repeated (either makes the block invalid)."""
        rng = self.simulation.record_rng
        records = list(records)
        rng.shuffle(records)
        choice = rng.randrange(4)
        if choice == 0 and self.node.positions:
            records.append(rng.choice(sorted(self.node.positions)))
        elif choice == 1 and records:
            records.append(rng.choice(records))
        return records

    def double_vote(self, action: Broadcast) -> None:
        """The real vote to one half, a conflicting one to the other."""
        vote = action.message
        if vote.block_hash == NIL:
            conflicting_hash = sim_app.make_value(vote.height, self.rng.randbytes(16)).block_hash
        else:
            conflicting_hash = NIL if self.rng.random() < 0.5 else self.rng.randbytes(32)
        first_half, second_half = self.halves()
        self.send_to(first_half, action.data)
        self.send_to(second_half, self.sign_vote(vote, conflicting_hash, None))

    def mischief(self) -> None:
        """Unprovoked noise: replays, garbage, corruption, out-of-place signed messages."""
        if not self.node.up or self.node.machine is None:
            return
        choice = self.rng.randrange(5)
        target = [self.rng.choice(self.others())] if self.others() else []
        if choice == 0 and self.seen:
            self.send_to(target, self.rng.choice(self.seen))
        elif choice == 1:
            self.send_to(target, self.rng.randbytes(self.rng.randint(0, 80)))
        elif choice == 2 and self.seen:
            data = bytearray(self.rng.choice(self.seen))
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            self.send_to(target, bytes(data))
        else:
            machine = self.node.machine
            height = machine.height + self.rng.choice((0, 0, 1, 5))
            round = machine.round + self.rng.choice((0, 1, 2, 3, 10_000))
            kind = self.rng.choice((VoteKind.PREVOTE, VoteKind.PRECOMMIT))
            template = Vote(kind, height, round, NIL, self.node.name, bytes(64))
            block_hash = self.rng.choice((NIL, self.rng.randbytes(32)))
            self.send_to(self.others(), self.sign_vote(template, block_hash, None))

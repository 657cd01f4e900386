"""Invariant checkers for the simulation, kept apart from the driver.

The driver reports what happens (a node broadcast, persisted, committed,
recorded evidence, restarted); each hook checks its invariants at once and
raises `InvariantViolation` naming the broken rule.
"""

from __future__ import annotations

from consensus.evidence import Evidence, EvidenceError
from consensus.messages import Proposal, ProposalMessage, Signed, Value, Vote, slot
from consensus.signed_state import SignedState
from ledger.block import CommitCertificate

from tests.consensus import sim_app


class InvariantViolation(AssertionError):
    """A safety or liveness property failed."""


class Invariants:
    def __init__(self, n: int, byzantine: str | None) -> None:
        self.authorities = sim_app.authority_set(n)
        self.byzantine = byzantine
        self.committed: dict[int, bytes] = {}              # height -> block hash (agreement)
        self.signed_by: dict[str, dict[tuple, Signed]] = {}  # honest node -> slot -> statement, across crashes
        self.durable: dict[str, set[Signed]] = {}         # honest node -> statements in its durable state
        self.durable_height: dict[str, int] = {}
        self.finalized: dict[str, int] = {}               # node -> highest committed height ever seen
        self.proposed: set[tuple[int, bytes]] = set()     # (height, hash) proposed by the right proposer
        self.record_positions: dict[bytes, tuple[int, int]] = {}  # record -> (height, index) honest nodes committed it at
        self.acknowledged: dict[bytes, tuple[int, int]] = {}      # acknowledged record -> its (height, index)
        self.evidence_count = 0

    def on_persist(self, node: str, state: SignedState) -> None:
        self.durable[node] = set(state.statements)
        self.durable_height[node] = state.height

    def on_broadcast(self, node: str, message, honest: bool) -> None:
        statement = message.proposal if isinstance(message, ProposalMessage) else message
        if isinstance(statement, Proposal) and statement.proposer == self.authorities.proposer(statement.height, statement.round).name:
            self.proposed.add((statement.height, statement.block_hash))
        if not honest or statement.authority != node:
            return
        if statement not in self.durable.get(node, ()):
            raise InvariantViolation(f"persist before send: {node} sent {slot(statement)} not in its durable state")
        mine = self.signed_by.setdefault(node, {})
        previous = mine.setdefault(slot(statement), statement)
        if previous != statement and _content(previous) != _content(statement):
            raise InvariantViolation(f"double sign: {node} signed two statements for {slot(statement)}")

    def on_commit(self, node: str, height: int, value: Value, certificate: CommitCertificate) -> None:
        first = self.committed.setdefault(height, value.block_hash)
        if first != value.block_hash:
            raise InvariantViolation(f"agreement: {node} committed another block at height {height}")
        records = sim_app.records_of(value)
        if not sim_app.is_valid(height, value) or records is None:
            raise InvariantViolation(f"validity: {node} committed an invalid value at height {height}")
        for index, record in enumerate(records):
            position = self.record_positions.setdefault(record, (height, index))
            if position != (height, index):
                raise InvariantViolation(
                    f"exactly once: {node} committed record {record!r} at {(height, index)}, already at {position}")
        if (height, value.block_hash) not in self.proposed:
            raise InvariantViolation(f"validity: {node} committed a value no right proposer proposed at {height}")
        problem = sim_app.certificate_problem(certificate, value, self.authorities)
        if problem is not None or certificate.height != height:
            raise InvariantViolation(f"certificate at height {height} by {node}: {problem or 'wrong height'}")
        self.on_finalized(node, height)

    def on_acknowledge(self, node: str, record: bytes) -> None:
        """`node` acknowledged `record` to a client: it committed it (on_commit saw it first)."""
        position = self.record_positions.get(record)
        if position is None:
            raise InvariantViolation(f"acknowledged: {node} acknowledged {record!r}, which no honest node committed")
        self.acknowledged.setdefault(record, position)

    def check_acknowledged(self, logs: dict[str, list[Value]]) -> None:
        """Every acknowledged record is at its (height, index) on every honest log that reached the height.

        That it appears nowhere else was checked block by block in `on_commit`."""
        for record, (height, index) in self.acknowledged.items():
            for node, log in logs.items():
                if len(log) < height:
                    continue
                records = sim_app.records_of(log[height - 1]) or ()
                if index >= len(records) or records[index] != record:
                    raise InvariantViolation(f"acknowledged record {record!r} is not at {(height, index)} on {node}")

    def on_finalized(self, node: str, height: int) -> None:
        previous = self.finalized.get(node, 0)
        if height < previous:
            raise InvariantViolation(f"finalized height of {node} regressed from {previous} to {height}")
        self.finalized[node] = height

    def on_evidence(self, node: str, evidence: Evidence) -> None:
        try:
            evidence.verify(self.authorities, sim_app.CHAIN_ID, sim_app.stand_in_verify)
        except EvidenceError as error:
            raise InvariantViolation(f"evidence recorded by {node} does not verify: {error}") from None
        if evidence.authority != self.byzantine:
            raise InvariantViolation(f"evidence by {node} names honest {evidence.authority}")
        self.evidence_count += 1


def _content(statement: Signed) -> tuple:
    if isinstance(statement, Vote):
        return (statement.kind, statement.block_hash)
    return (statement.block_hash, statement.valid_round)

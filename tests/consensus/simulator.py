"""Deterministic simulation of a lacre consortium (TigerBeetle VOPR style).

A seed picks every option (cluster size, latency distribution, drop and
duplicate rates, partitions, crashes, a Byzantine authority) and drives one
`random.Random`; the whole cluster runs in one thread over a simulated
network, disk and clock, so a seed replays exactly. Checks live in
`invariants.py`; this module only drives.

A run has two phases. In the fault phase anything goes: any number of honest
authorities may crash (a crash may even cut a batch of actions short, so only
what was made durable survives), partitions come and go, messages are lost,
duplicated and reordered. Then the network heals: drops and partitions stop,
crashed authorities restart except at most f (counting the Byzantine one),
and every honest running authority must commit `liveness_heights` more
heights before a deadline derived from the timeouts (a bounded number of
rounds per height).

Throughout, clients submit records (small byte strings) to random
authorities, and resubmit to another one when not acknowledged in time. An
authority keeps them in a mempool it loses when it crashes and puts them in
the blocks it proposes; a record is acknowledged when an honest authority it
was submitted to commits it. Every acknowledged record must appear exactly
once, at the same (height, index), on every honest authority that reached
that height. Clients draw from their own generator, so adding them did not
change which faults a seed picks.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from consensus.actions import (
    Broadcast, BuildProposal, CatchUp, Commit, Dropped, PersistSigned, RecordEvidence, ScheduleTimeout,
    ValidateProposal,
)
from consensus.events import BlockApplied, MessageReceived, ProposalBodyReady, ProposalValidated, Start, TimeoutFired
from consensus.machine import Machine
from consensus.messages import Value
from consensus.signed_state import SignedState
from consensus.timeouts import Timeouts
from ledger.block import CommitCertificate
from ledger.quorum import faults_tolerated

from tests.consensus import sim_app
from tests.consensus.byzantine import Byzantine
from tests.consensus.invariants import InvariantViolation, Invariants

SIM_TIMEOUTS = Timeouts(
    propose_ms=200, propose_per_round_ms=100, prevote_ms=100, prevote_per_round_ms=50,
    precommit_ms=100, precommit_per_round_ms=50, retransmit_ms=300,
)
CLUSTER_SIZES = (1, 2, 3, 4, 4, 4, 4, 4, 5, 6, 7)
SYNC_BLOCKS_MAX = 64
RECORD_INTERVAL_MEAN_MS = 40
RECORD_RETRY_MS = 1_500
RECORD_ATTEMPTS_MAX = 3
RECORDS_PER_BLOCK_MAX = 8


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a seed decides. `describe()` is printed with a failure."""

    n: int
    byzantine_index: int | None
    latency_min_ms: int
    latency_mean_ms: int
    latency_shape: str
    drop_probability: float
    duplicate_probability: float
    partitions: bool
    crashes: bool
    crash_in_batch_probability: float
    fault_phase_ms: int
    keep_down: int
    liveness_heights: int

    @classmethod
    def pick(cls, rng: random.Random, fault_phase_ms_max: int) -> "Options":
        n = rng.choice(CLUSTER_SIZES)
        f = faults_tolerated(n)
        byzantine_index = rng.randrange(n) if f >= 1 and rng.random() < 0.6 else None
        budget = f - (1 if byzantine_index is not None else 0)
        return cls(
            n=n, byzantine_index=byzantine_index,
            latency_min_ms=rng.randint(1, 10), latency_mean_ms=rng.choice((5, 15, 40)),
            latency_shape=rng.choice(("uniform", "exponential", "bimodal")),
            drop_probability=rng.choice((0.0, 0.01, 0.05, 0.15, 0.3)),
            duplicate_probability=rng.choice((0.0, 0.02, 0.1)),
            partitions=rng.random() < 0.5, crashes=rng.random() < 0.6,
            crash_in_batch_probability=rng.choice((0.0, 0.01, 0.05)),
            fault_phase_ms=rng.randint(fault_phase_ms_max // 4, fault_phase_ms_max),
            keep_down=rng.randint(0, budget) if budget > 0 else 0,
            liveness_heights=3,
        )

    def describe(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in self.__dataclass_fields__)


@dataclass(slots=True)
class Node:
    name: str
    index: int
    byzantine: bool
    up: bool = True
    incarnation: int = 0
    machine: Machine | None = None
    disk_signed: bytes | None = None                      # durable PersistSigned bytes
    log: list[tuple[Value, CommitCertificate]] = field(default_factory=list)  # durable committed blocks
    positions: dict[bytes, tuple[int, int]] = field(default_factory=dict)   # record -> (height, index), from the log
    mempool: list[bytes] = field(default_factory=list)                       # submitted, not committed; lost on a crash


@dataclass(slots=True)
class Result:
    seed: int
    options: Options
    failure: str | None
    heights: list[int]
    time_ms: int
    deliveries: int
    evidence: int
    acknowledged: int

    @property
    def replay(self) -> str:
        return f"scripts/simulate --seed {self.seed}"


class Simulation:
    """One seeded run. `run()` returns a Result; it never raises for a protocol failure."""

    def __init__(self, seed: int, fault_phase_ms_max: int = 6_000) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.options = Options.pick(self.rng, fault_phase_ms_max)
        o = self.options
        self.authorities = sim_app.authority_set(o.n)
        names = sim_app.authority_names(o.n)
        self.nodes = [Node(name, index, index == o.byzantine_index) for index, name in enumerate(names)]
        self.invariants = Invariants(o.n, names[o.byzantine_index] if o.byzantine_index is not None else None)
        self.byzantine = Byzantine(self, self.nodes[o.byzantine_index]) if o.byzantine_index is not None else None
        self.now_ms = 0
        self._queue: list[tuple[int, int, tuple]] = []
        self._sequence = 0
        self.groups: list[int] | None = None  # partition group per node, None when healed
        self.healed = False
        self.drop_probability = o.drop_probability
        self.deliveries = 0
        self.record_rng = random.Random(f"records {seed}")  # clients and forged record lists; apart from `rng`
        self.records_created = 0
        self.submitted_to: dict[bytes, set[int]] = {}  # record -> nodes that accepted it

    # -- the event queue -------------------------------------------------------

    def schedule(self, delay_ms: int, event: tuple) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (self.now_ms + delay_ms, self._sequence, event))

    def latency_ms(self) -> int:
        o = self.options
        if o.latency_shape == "uniform":
            extra = self.rng.uniform(0, 2 * o.latency_mean_ms)
        elif o.latency_shape == "exponential":
            extra = self.rng.expovariate(1 / o.latency_mean_ms)
        else:
            extra = o.latency_mean_ms * (10 if self.rng.random() < 0.1 else 0.5)
        return o.latency_min_ms + int(extra)

    def send(self, sender: int, receiver: int, payload: tuple) -> None:
        """Put a message on the simulated wire: may be lost, duplicated, delayed (reordered)."""
        if self.groups is not None and self.groups[sender] != self.groups[receiver]:
            return
        if self.rng.random() < self.drop_probability:
            return
        copies = 2 if self.rng.random() < self.options.duplicate_probability else 1
        for _ in range(copies):
            self.schedule(self.latency_ms(), ("deliver", receiver, payload))

    # -- the run ---------------------------------------------------------------

    def run(self) -> Result:
        failure = None
        try:
            self._run()
        except InvariantViolation as violation:
            failure = str(violation)
        return Result(
            self.seed, self.options, failure, [len(node.log) for node in self.nodes],
            self.now_ms, self.deliveries, self.invariants.evidence_count, len(self.invariants.acknowledged),
        )

    def _run(self) -> None:
        o = self.options
        for node in self.nodes:
            self.boot(node)
        if o.partitions:
            self.schedule(self.rng.randint(0, o.fault_phase_ms), ("partition",))
        if o.crashes:
            self.schedule(self.rng.randint(0, o.fault_phase_ms), ("crash",))
        if self.byzantine is not None:
            self.schedule(50, ("mischief",))
        self.schedule(o.fault_phase_ms, ("heal",))
        self.schedule(int(self.record_rng.expovariate(1 / RECORD_INTERVAL_MEAN_MS)), ("new record",))
        deadline_ms = o.fault_phase_ms + self.liveness_budget_ms()
        target = None
        while self._queue:
            time_ms, _, event = heapq.heappop(self._queue)
            self.now_ms = time_ms
            if self.healed and target is None:
                target = max(len(node.log) for node in self.honest()) + o.liveness_heights
            if target is not None and all(len(node.log) >= target for node in self.honest() if node.up):
                self.invariants.check_acknowledged({node.name: [value for value, _ in node.log] for node in self.honest()})
                return
            if time_ms > deadline_ms:
                heights = {node.name: len(node.log) for node in self.honest() if node.up}
                raise InvariantViolation(f"liveness: honest heights {heights} short of {target} at {time_ms} ms")
            self.dispatch(event)

    def liveness_budget_ms(self) -> int:
        """Catch-up time plus, per height, enough rounds to pass every faulty proposer."""
        rounds = self.options.n + 2
        per_height = sum(
            SIM_TIMEOUTS.propose_ms + SIM_TIMEOUTS.prevote_ms + SIM_TIMEOUTS.precommit_ms
            + r * (SIM_TIMEOUTS.propose_per_round_ms + SIM_TIMEOUTS.prevote_per_round_ms + SIM_TIMEOUTS.precommit_per_round_ms)
            + 8 * (self.options.latency_min_ms + 10 * self.options.latency_mean_ms)
            for r in range(rounds)
        )
        return 5_000 + self.options.liveness_heights * per_height

    def honest(self) -> list[Node]:
        return [node for node in self.nodes if not node.byzantine]

    def dispatch(self, event: tuple) -> None:
        kind = event[0]
        if kind == "deliver":
            self.deliver(self.nodes[event[1]], event[2])
        elif kind == "step":
            _, index, incarnation, machine_event = event
            node = self.nodes[index]
            if node.up and node.incarnation == incarnation:
                self.step(node, machine_event)
        elif kind == "restart":
            node = self.nodes[event[1]]
            if not node.up and not (self.healed and node.index in self.kept_down):
                self.boot(node)
        elif kind == "partition":
            self.partition_or_heal()
        elif kind == "crash":
            self.crash_random()
        elif kind == "mischief" and self.byzantine is not None:
            self.byzantine.mischief()
            self.schedule(self.rng.randint(20, 200), ("mischief",))
        elif kind == "heal":
            self.heal()
        elif kind == "new record":
            self.records_created += 1
            self.submit(b"record %d" % self.records_created, 1)
            self.schedule(int(self.record_rng.expovariate(1 / RECORD_INTERVAL_MEAN_MS)), ("new record",))
        elif kind == "resubmit":
            _, record, attempt = event
            if record not in self.invariants.acknowledged:
                self.submit(record, attempt)

    # -- clients ---------------------------------------------------------------

    def submit(self, record: bytes, attempt: int) -> None:
        """A client hands `record` to a random authority; if it is down, the attempt is lost."""
        node = self.record_rng.choice(self.nodes)
        if node.up:
            self.submitted_to.setdefault(record, set()).add(node.index)
            if record not in node.positions and record not in node.mempool:
                node.mempool.append(record)
        if attempt < RECORD_ATTEMPTS_MAX:
            self.schedule(RECORD_RETRY_MS, ("resubmit", record, attempt + 1))

    # -- faults ----------------------------------------------------------------

    def partition_or_heal(self) -> None:
        if self.healed:
            return
        if self.groups is None:
            self.groups = [self.rng.randrange(2) for _ in self.nodes]
        else:
            self.groups = None
        self.schedule(self.rng.randint(100, 2_000), ("partition",))

    def crash_random(self) -> None:
        if self.healed:
            return
        candidates = [node for node in self.honest() if node.up]
        if candidates:
            self.crash(self.rng.choice(candidates))
        self.schedule(self.rng.randint(100, 1_500), ("crash",))

    def crash(self, node: Node) -> None:
        """Lose everything but the disk; restart later (unless kept down after healing)."""
        node.up = False
        node.machine = None
        node.mempool = []
        node.incarnation += 1
        if not self.healed:
            self.schedule(self.rng.randint(50, 2_000), ("restart", node.index))

    def heal(self) -> None:
        self.healed = True
        self.groups = None
        self.drop_probability = 0.0
        honest_down = [node for node in self.honest() if not node.up]
        honest_up = [node for node in self.honest() if node.up]
        keep = self.options.keep_down
        kept = honest_down[:keep] + honest_up[: max(0, keep - len(honest_down))]
        self.kept_down = {node.index for node in kept}
        for node in kept:
            if node.up:
                self.crash(node)
        for node in self.honest():
            if not node.up and node.index not in self.kept_down:
                self.boot(node)

    # -- one authority's shell ---------------------------------------------------

    def boot(self, node: Node) -> None:
        """Start (or restart) `node` from its durable disk."""
        node.up = True
        node.incarnation += 1
        signed = SignedState.decode(node.disk_signed) if node.disk_signed is not None else None
        self.invariants.on_finalized(node.name, len(node.log))
        node.machine = Machine(
            authority_set=self.authorities, chain_id=sim_app.CHAIN_ID, signer=sim_app.StandInSigner(node.name),
            height=len(node.log) + 1, signed=signed, timeouts=SIM_TIMEOUTS, verify=sim_app.stand_in_verify,
        )
        self.step(node, Start())

    def deliver(self, node: Node, payload: tuple) -> None:
        if not node.up:
            return
        self.deliveries += 1
        kind = payload[0]
        if kind == "message":
            self.step(node, MessageReceived(payload[1]))
        elif kind == "sync request":
            _, requester, from_height = payload
            blocks = node.log[from_height - 1: from_height - 1 + SYNC_BLOCKS_MAX]
            if blocks:
                self.send(node.index, requester, ("sync reply", from_height, tuple(blocks)))
        elif kind == "sync reply":
            self.apply_synced(node, payload[1], payload[2])

    def apply_synced(self, node: Node, from_height: int, blocks: tuple) -> None:
        """Catch-up: check each block's certificate and validity before applying it."""
        applied = 0
        for offset, (value, certificate) in enumerate(blocks):
            height = from_height + offset
            if height != len(node.log) + 1:
                continue
            if certificate.height != height or not sim_app.is_valid(height, value, node.positions):
                return
            if sim_app.certificate_problem(certificate, value, self.authorities) is not None:
                return
            self.invariants.on_commit(node.name, height, value, certificate)
            self.append_block(node, value, certificate)
            applied = height
        if applied:
            self.step(node, BlockApplied(applied))

    def step(self, node: Node, event) -> None:
        actions = node.machine.step(event)
        if self.byzantine is not None and node.byzantine:
            actions = self.byzantine.rewrite(actions)
        crash_at = None
        if self.options.crash_in_batch_probability and not node.byzantine and not self.healed:
            if self.rng.random() < self.options.crash_in_batch_probability:
                crash_at = self.rng.randrange(len(actions) + 1)
        for position, action in enumerate(actions):
            if position == crash_at:
                return self.crash(node)
            self.perform(node, action)
        if crash_at == len(actions):
            self.crash(node)

    def perform(self, node: Node, action) -> None:
        if isinstance(action, PersistSigned):
            node.disk_signed = action.state.encode()
            if not node.byzantine:
                self.invariants.on_persist(node.name, action.state)
        elif isinstance(action, Broadcast):
            self.invariants.on_broadcast(node.name, action.message, honest=not node.byzantine)
            for other in self.nodes:
                if other is not node:
                    self.send(node.index, other.index, ("message", action.data))
        elif isinstance(action, ScheduleTimeout):
            event = TimeoutFired(action.height, action.round, action.kind)
            self.schedule(action.duration_ms, ("step", node.index, node.incarnation, event))
        elif isinstance(action, BuildProposal):
            records = [record for record in node.mempool if record not in node.positions][:RECORDS_PER_BLOCK_MAX]
            if node.byzantine and self.byzantine is not None:
                records = self.byzantine.tamper_records(records)
            value = sim_app.make_value(action.height, self.rng.randbytes(16), records)
            event = ProposalBodyReady(action.height, action.round, value)
            self.schedule(self.rng.randint(0, 3), ("step", node.index, node.incarnation, event))
        elif isinstance(action, ValidateProposal):
            height = action.message.height
            valid = sim_app.is_valid(height, action.message.value, node.positions)
            event = ProposalValidated(height, action.message.value.block_hash, valid)
            self.schedule(self.rng.randint(0, 3), ("step", node.index, node.incarnation, event))
        elif isinstance(action, Commit):
            if not node.byzantine:
                self.invariants.on_commit(node.name, action.height, action.value, action.certificate)
            self.append_block(node, action.value, action.certificate)
            self.schedule(0, ("step", node.index, node.incarnation, BlockApplied(action.height)))
        elif isinstance(action, RecordEvidence):
            if not node.byzantine:
                self.invariants.on_evidence(node.name, action.evidence)
        elif isinstance(action, CatchUp):
            peer = self.authorities.index(action.peer)
            self.send(node.index, peer, ("sync request", node.index, len(node.log) + 1))
        elif isinstance(action, Dropped):
            pass


    def append_block(self, node: Node, value: Value, certificate: CommitCertificate) -> None:
        """Apply a committed block durably; acknowledge the records submitted to this node."""
        node.log.append((value, certificate))
        height = len(node.log)
        records = sim_app.records_of(value) or ()
        for index, record in enumerate(records):
            node.positions[record] = (height, index)
            if not node.byzantine and node.index in self.submitted_to.get(record, ()):
                self.invariants.on_acknowledge(node.name, record)
        if records:
            committed = set(records)
            node.mempool = [record for record in node.mempool if record not in committed]


def run_seed(seed: int, fault_phase_ms_max: int = 6_000) -> Result:
    return Simulation(seed, fault_phase_ms_max).run()

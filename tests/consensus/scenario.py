"""A tiny interpreter for etcd-style consensus scenarios (testdata/*.txt).

Each block is a command, a line `----`, and the expected output, blocks
separated by a blank line; lines before the command that start with `#` are
comments. Messages are held in flight until `deliver`, so a
scenario fixes the interleaving exactly. Commands:

    cluster n=N                  N machines inst-0..inst-(N-1), started; their first messages in flight
    deliver [FILTER]             deliver in-flight messages (matching), and what they cause, until none match
    drop [FILTER]                discard in-flight messages
    equivocate A to=B,C          A signs a second, different proposal for its current (height, round)
                                 (another valid block, same valid round) and puts it in flight to B and C
    timeout A KIND               fire A's KIND timeout (propose, prevote, precommit, retransmit) for its current round
    apply                        every machine that committed moves to the next height (BlockApplied)
    crash A / restart A          lose A's memory / rebuild it from its persisted SignedState and log
    status                       height, round, step and lock of every machine
    timers                       the timeouts each machine has scheduled for its current height and round
                                 (retransmit aside); `timeout` fires one whether scheduled or not
    commits                      per height, each distinct block committed and by whom

FILTER is any of from=A, to=B, kind=proposal|prevote|precommit, round=R; a
message matches when it matches every one given.

Output lines name what machines did: signed statements (and, as "relay B ...",
B's statements they re-sent), commits, evidence.
Block hashes print as the first 4 hex digits.
"""

from __future__ import annotations

from consensus.actions import (
    Broadcast, BuildProposal, Commit, PersistSigned, RecordEvidence, ScheduleTimeout, ValidateProposal,
)
from consensus.events import BlockApplied, MessageReceived, ProposalBodyReady, ProposalValidated, Start, TimeoutFired, TimeoutKind
from consensus.machine import Machine
from consensus.messages import Proposal, ProposalMessage, Vote, decode_message, encode_message
from consensus.signed_state import SignedState
from ledger import crypto

from tests.consensus import sim_app


def _short(block_hash: bytes) -> str:
    return block_hash[:2].hex() if block_hash else "nil"


class Scenario:
    def __init__(self) -> None:
        self.machines: dict[str, Machine | None] = {}
        self.disk: dict[str, bytes] = {}
        self.logs: dict[str, int] = {}
        self.in_flight: list[tuple[str, str, bytes]] = []  # (sender, receiver, wire bytes)
        self.committed: dict[int, dict[bytes, list[str]]] = {}  # height -> block hash -> committers
        self.output: list[str] = []
        self.n = 0
        self.scheduled: dict[str, set[tuple[int, int, TimeoutKind]]] = {}  # name -> (height, round, kind)

    def run(self, command: str) -> str:
        self.output = []
        words = " ".join(line for line in command.splitlines() if not line.lstrip().startswith("#")).split()
        options = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        positional = [word for word in words[1:] if "=" not in word]
        getattr(self, "do_" + words[0])(options, positional)
        return "\n".join(self.output) if self.output else "ok"

    def build(self, name: str) -> Machine:
        stored = self.disk.get(name)
        return Machine(
            authority_set=sim_app.authority_set(self.n), chain_id=sim_app.CHAIN_ID, signer=sim_app.StandInSigner(name),
            height=self.logs[name] + 1, signed=SignedState.decode(stored) if stored else None, verify=sim_app.stand_in_verify,
        )

    def step(self, name: str, event) -> None:
        queue = [event]
        while queue:
            machine = self.machines[name]
            if machine is None:
                return
            for action in machine.step(queue.pop(0)):
                if isinstance(action, PersistSigned):
                    self.disk[name] = action.state.encode()
                elif isinstance(action, ScheduleTimeout):
                    self.scheduled.setdefault(name, set()).add((action.height, action.round, action.kind))
                elif isinstance(action, Broadcast):
                    message = action.message
                    # Another authority's statement is a relay: "inst-2: relay inst-0 precommit ...".
                    relay = "" if message.authority == name else f"relay {message.authority} "
                    if isinstance(message, ProposalMessage):
                        p = message.proposal
                        self.output.append(f"{name}: {relay}propose h={p.height} r={p.round} {_short(p.block_hash)} valid_round={p.valid_round}")
                    elif isinstance(message, Vote):
                        self.output.append(f"{name}: {relay}{message.kind.value} h={message.height} r={message.round} {_short(message.block_hash)}")
                    self.in_flight += [(name, other, action.data) for other in self.machines if other != name]
                elif isinstance(action, BuildProposal):
                    value = sim_app.make_value(action.height, f"{name} r{action.round}".encode())
                    queue.append(ProposalBodyReady(action.height, action.round, value))
                elif isinstance(action, ValidateProposal):
                    value = action.message.value
                    queue.append(ProposalValidated(action.message.height, value.block_hash, sim_app.is_valid(action.message.height, value)))
                elif isinstance(action, Commit):
                    self.output.append(f"{name}: commit h={action.height} {_short(action.value.block_hash)} "
                                       f"round={action.certificate.round} signatures={len(action.certificate.signatures)}")
                    self.logs[name] = action.height  # BlockApplied waits for `apply`, so `deliver` ends
                    self.committed.setdefault(action.height, {}).setdefault(action.value.block_hash, []).append(name)
                elif isinstance(action, RecordEvidence):
                    self.output.append(f"{name}: evidence against {action.evidence.authority} h={action.evidence.height} r={action.evidence.round}")

    def do_cluster(self, options: dict, positional: list) -> None:
        self.n = int(options["n"])
        names = sim_app.authority_names(self.n)
        self.logs = {name: 0 for name in names}
        self.machines = {name: self.build(name) for name in names}
        for name in names:
            self.step(name, Start())

    def _matching(self, options: dict) -> list[tuple[str, str, bytes]]:
        return [m for m in self.in_flight if options.get("from", m[0]) == m[0] and options.get("to", m[1]) == m[1]
                and all(options.get(key, value) == value for key, value in _describe(m[2]).items())]

    def do_deliver(self, options: dict, positional: list) -> None:
        while matching := self._matching(options):
            message = matching[0]
            self.in_flight.remove(message)
            if self.machines[message[1]] is not None:
                self.step(message[1], MessageReceived(message[2]))

    def do_drop(self, options: dict, positional: list) -> None:
        for message in self._matching(options):
            self.in_flight.remove(message)

    def do_equivocate(self, options: dict, positional: list) -> None:
        name, = positional
        machine = self.machines[name]
        first = machine.signed_state.find(machine.round, "proposal")
        if first is None:
            raise ValueError(f"{name} has not proposed at h={machine.height} r={machine.round}")
        value = sim_app.make_value(machine.height, f"{name} r{machine.round} equivocation".encode())
        signer = sim_app.StandInSigner(name)
        unsigned = Proposal(first.height, first.round, first.valid_round, value.block_hash, name, bytes(64))
        signature = signer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(sim_app.CHAIN_ID))
        proposal = Proposal(first.height, first.round, first.valid_round, value.block_hash, name, signature)
        data = encode_message(sim_app.CHAIN_ID, ProposalMessage(proposal, value))
        self.output.append(f"{name}: equivocate h={first.height} r={first.round} {_short(value.block_hash)} valid_round={first.valid_round}")
        self.in_flight += [(name, receiver, data) for receiver in options["to"].split(",")]

    def do_timeout(self, options: dict, positional: list) -> None:
        name, kind = positional
        machine = self.machines[name]
        self.step(name, TimeoutFired(machine.height, machine.round, TimeoutKind(kind)))

    def do_apply(self, options: dict, positional: list) -> None:
        for name, machine in self.machines.items():
            if machine is not None and self.logs[name] >= machine.height:
                self.step(name, BlockApplied(self.logs[name]))

    def do_crash(self, options: dict, positional: list) -> None:
        self.machines[positional[0]] = None
        self.scheduled.pop(positional[0], None)  # timers die with the process  # messages in flight to it wait for the restart

    def do_restart(self, options: dict, positional: list) -> None:
        self.machines[positional[0]] = self.build(positional[0])
        self.step(positional[0], Start())

    def do_status(self, options: dict, positional: list) -> None:
        for name, machine in self.machines.items():
            if machine is None:
                self.output.append(f"{name}: down")
            else:
                locked_round, locked_hash = machine.locked
                self.output.append(f"{name}: h={machine.height} r={machine.round} {machine.step_name} locked={locked_round}:{_short(locked_hash)}")

    def do_timers(self, options: dict, positional: list) -> None:
        for name, machine in self.machines.items():
            if machine is None:
                continue
            kinds = [kind.value for kind in TimeoutKind if kind is not TimeoutKind.RETRANSMIT
                     and (machine.height, machine.round, kind) in self.scheduled.get(name, ())]
            self.output.append(f"{name}: h={machine.height} r={machine.round} {' '.join(kinds) or 'none'}")

    def do_commits(self, options: dict, positional: list) -> None:
        for height in sorted(self.committed):
            for block_hash, names in self.committed[height].items():
                self.output.append(f"h={height} {_short(block_hash)}: {' '.join(sorted(names))}")


def _describe(data: bytes) -> dict[str, str]:
    """The filterable fields of wire bytes: kind and round."""
    message = decode_message(data)[1]
    if isinstance(message, ProposalMessage):
        return {"kind": "proposal", "round": str(message.proposal.round)}
    return {"kind": message.kind.value, "round": str(message.round)}

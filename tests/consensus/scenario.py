"""A tiny interpreter for etcd-style consensus scenarios (testdata/*.txt).

Each block is a command, a line `----`, and the expected output, blocks
separated by a blank line. Messages are held in flight until `deliver`, so a
scenario fixes the interleaving exactly. Commands:

    cluster n=N                  N machines inst-0..inst-(N-1), started; their first messages in flight
    deliver [from=A] [to=B]      deliver in-flight messages (matching), and what they cause, until none match
    drop [from=A] [to=B]         discard in-flight messages
    timeout A KIND               fire A's KIND timeout (propose, prevote, precommit) for its current round
    apply                        every machine that committed moves to the next height (BlockApplied)
    crash A / restart A          lose A's memory / rebuild it from its persisted SignedState and log
    status                       height, round, step and lock of every machine

Output lines name what machines did: signed statements, commits, evidence.
Block hashes print as the first 4 hex digits.
"""

from __future__ import annotations

from consensus.actions import Broadcast, BuildProposal, Commit, PersistSigned, RecordEvidence, ValidateProposal
from consensus.events import BlockApplied, MessageReceived, ProposalBodyReady, ProposalValidated, Start, TimeoutFired, TimeoutKind
from consensus.machine import Machine
from consensus.messages import ProposalMessage, Vote
from consensus.signed_state import SignedState

from tests.consensus import sim_app


def _short(block_hash: bytes) -> str:
    return block_hash[:2].hex() if block_hash else "nil"


class Scenario:
    def __init__(self) -> None:
        self.machines: dict[str, Machine | None] = {}
        self.disk: dict[str, bytes] = {}
        self.logs: dict[str, int] = {}
        self.in_flight: list[tuple[str, str, bytes]] = []
        self.output: list[str] = []
        self.n = 0

    def run(self, command: str) -> str:
        self.output = []
        words = command.split()
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
                elif isinstance(action, Broadcast):
                    message = action.message
                    if isinstance(message, ProposalMessage):
                        p = message.proposal
                        self.output.append(f"{name}: propose h={p.height} r={p.round} {_short(p.block_hash)} valid_round={p.valid_round}")
                    elif isinstance(message, Vote):
                        self.output.append(f"{name}: {message.kind.value} h={message.height} r={message.round} {_short(message.block_hash)}")
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
        return [m for m in self.in_flight if options.get("from", m[0]) == m[0] and options.get("to", m[1]) == m[1]]

    def do_deliver(self, options: dict, positional: list) -> None:
        while matching := self._matching(options):
            message = matching[0]
            self.in_flight.remove(message)
            if self.machines[message[1]] is not None:
                self.step(message[1], MessageReceived(message[2]))

    def do_drop(self, options: dict, positional: list) -> None:
        for message in self._matching(options):
            self.in_flight.remove(message)

    def do_timeout(self, options: dict, positional: list) -> None:
        name, kind = positional
        machine = self.machines[name]
        self.step(name, TimeoutFired(machine.height, machine.round, TimeoutKind(kind)))

    def do_apply(self, options: dict, positional: list) -> None:
        for name, machine in self.machines.items():
            if machine is not None and self.logs[name] >= machine.height:
                self.step(name, BlockApplied(self.logs[name]))

    def do_crash(self, options: dict, positional: list) -> None:
        self.machines[positional[0]] = None  # messages in flight to it wait for the restart

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

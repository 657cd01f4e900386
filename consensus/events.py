"""Events: everything that can happen to a consensus machine.

The shell (the node, or the simulator) turns the world into these and feeds
them to `Machine.step` one at a time. Time enters only as `TimeoutFired`,
scheduled earlier by a `ScheduleTimeout` action; the machine reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from consensus.messages import Value


class TimeoutKind(str, Enum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"
    RETRANSMIT = "retransmit"  # resend own statements, relay others' of recent rounds (Machine._retransmit)


@dataclass(frozen=True, slots=True)
class Start:
    """Begin (or, after a restart, resume) work. Step it exactly once, first."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Wire bytes from a peer, as received; the machine decodes and verifies them."""

    data: bytes


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    """A timeout scheduled by `ScheduleTimeout(height, round, kind, ...)` expired."""

    height: int
    round: int
    kind: TimeoutKind


@dataclass(frozen=True, slots=True)
class ProposalBodyReady:
    """The shell's answer to `BuildProposal(height, round)`: a valid value to propose."""

    height: int
    round: int
    value: Value


@dataclass(frozen=True, slots=True)
class ProposalValidated:
    """The shell's answer to `ValidateProposal`: Algorithm 1's valid(v) for that block hash.

    `valid` is True only if the body is a valid next block on the shell's chain
    (`Chain.validate`), its hash is `block_hash`, and `checkpoint_text` is the
    text of the checkpoint that block produces.
    """

    height: int
    block_hash: bytes
    valid: bool


@dataclass(frozen=True, slots=True)
class BlockApplied:
    """The shell made block `height` durable (by a `Commit` or by catch-up): go to height + 1."""

    height: int


Event = Start | MessageReceived | TimeoutFired | ProposalBodyReady | ProposalValidated | BlockApplied

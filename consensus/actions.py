"""Actions: what a consensus machine asks its shell to do.

`Machine.step` returns a list of actions. The shell performs them in list
order; the ordering rules below are what make a crash at any moment safe.
The one rule that matters for safety: a `PersistSigned` is durable (synced)
before the shell performs any later action of the same list, in particular
before any `Broadcast`. A shell may coalesce several `PersistSigned` of one
list into the last one (each carries the whole state) provided it syncs it
before the first `Broadcast` that follows the first of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.block import CommitCertificate

from consensus.events import TimeoutKind
from consensus.evidence import Evidence
from consensus.messages import Message, ProposalMessage, Value
from consensus.signed_state import SignedState


@dataclass(frozen=True, slots=True)
class PersistSigned:
    """Make `state` durable, replacing the previous one, before any later action of the batch.

    It is the authority's record of everything it signed at `state.height`;
    a machine built from it never signs a conflicting statement.
    """

    state: SignedState


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send `data` (the canonical encoding of `message`) to every other authority.

    Only after every earlier `PersistSigned` of the batch is durable. Delivery
    may be lossy: on its RETRANSMIT timeout the machine re-sends its own
    messages and relays the others' it holds of the current and previous round
    (`Machine._retransmit`), so the transport need not buffer across reconnects.
    `message` may be another authority's statement (a relay).
    """

    message: Message
    data: bytes


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Step `TimeoutFired(height, round, kind)` once `duration_ms` from now.

    Never cancelled: the machine ignores a timeout that no longer applies.
    """

    height: int
    round: int
    kind: TimeoutKind
    duration_ms: int


@dataclass(frozen=True, slots=True)
class BuildProposal:
    """This authority proposes at (height, round): build a valid block body on the
    current chain and step `ProposalBodyReady`. Ignoring it only costs the round."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class ValidateProposal:
    """Check `message.value` against the chain (`Chain.validate` and the hash and
    checkpoint bindings), then step `ProposalValidated`. The proposal's signature
    and proposer were already checked. The signature covers only the block hash, so
    a peer can attach another body or checkpoint text: after an invalid answer the
    same hash may be asked about again with a different value, never while an
    answer for it is pending, never after a valid one."""

    message: ProposalMessage


@dataclass(frozen=True, slots=True)
class Commit:
    """`value` is decided at `height`: apply it with `certificate` durably, then step
    `BlockApplied(height)`. The certificate holds at least a quorum of precommits,
    each with its checkpoint cosignature, all checked."""

    height: int
    value: Value
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class RecordEvidence:
    """Store `evidence` (two conflicting signed statements by one authority) and log it loudly.
    No ordering constraint."""

    evidence: Evidence


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Authority `peer` signed a message for `height`, above ours: fetch committed
    blocks from it, verify their certificates, apply them, step `BlockApplied`.
    A hint, emitted at most once per height per retransmit period; no ordering constraint."""

    peer: str
    height: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """A received message was not used; `reason` is for logs and metrics only.

    A message that produced no `Dropped` was new and valid: a gossiping shell
    may relay it once."""

    reason: str
    sender: str | None = None


Action = PersistSigned | Broadcast | ScheduleTimeout | BuildProposal | ValidateProposal | Commit | RecordEvidence | CatchUp | Dropped

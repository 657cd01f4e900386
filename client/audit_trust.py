"""With `lacre audit --trust`: the trust file's history must be the epochs the chain makes.

A verifier checks a checkpoint of block h against the trust file's set in
force at h, so a trust file whose history differs from the chain's own
`consortium.change` records would make it accept or refuse the wrong
signatures. Each epoch the chain makes (epoch e, from block f, because block
f - 1 holds the change) must be the trust file's epoch e: the same first
block and the same authorities (names and keys) in the same order. A trust
file epoch the chain should have made by a block it did not is a violation at
that block; epochs of the trust file past the audited blocks are not judged.
"""

from __future__ import annotations

from client.audit_report import Violation
from ledger.genesis import Trust, TrustedEpoch
from ledger.governance import ConsortiumEntry, ConsortiumHistory


def epoch_differs(height: int, trusted: TrustedEpoch, entry: ConsortiumEntry) -> Violation | None:
    """A "trust-history" violation at block `height` unless `trusted` is the chain's `entry`."""
    theirs = [(a.name, a.verifier.public_key) for a in trusted.authorities]
    ours = [(a.name, a.public_key) for a in entry.authorities]
    if trusted.from_height != entry.from_height or theirs != ours:
        return Violation(height, "trust-history", (
            f"the trust file's epoch {entry.epoch} (from block {trusted.from_height}: "
            f"{', '.join(n for n, _ in theirs)}) differs from the chain's (from block {entry.from_height}: "
            f"{', '.join(n for n, _ in ours)})"))
    return None


def trust_history_violation(
    trust: Trust, history: ConsortiumHistory, height: int, produced: ConsortiumEntry | None,
) -> Violation | None:
    """Judge block `height`, which made the epoch `produced` (or none), against the trust file.

    `history` holds the epochs made before this block.
    """
    if produced is not None:
        if produced.epoch >= len(trust.history):
            return Violation(height, "trust-history", (
                f"block {height} makes epoch {produced.epoch} (from block {produced.from_height}), "
                "which the trust file does not list: export a fresh one (lacre trust export)"))
        return epoch_differs(height, trust.history[produced.epoch], produced)
    following = len(history.epochs)
    if following < len(trust.history) and trust.history[following].from_height <= height + 1:
        return Violation(height, "trust-history", (
            f"the trust file has epoch {following} from block {trust.history[following].from_height}, "
            f"but block {trust.history[following].from_height - 1} changes nothing"))
    return None

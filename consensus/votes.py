"""Vote bookkeeping for one height: who voted what, per round and kind.

The first vote of an authority in a (round, kind) slot is its vote; an
identical later one is a duplicate; a different later one is an equivocation,
returned to the caller with the first so it can become evidence.

Counting is per block hash: an authority counts once toward each hash it
signed a vote for, conflicting votes included. That is as safe as counting
only first votes (an equivocator can already show each node a different vote,
and any two quorums share an honest authority), and it is needed for
liveness: a node that first saw an equivocator's vote for X must still be
able to see the polka for Y that the others saw, when it is relayed to it.
So that a Byzantine authority cannot grow these sets without bound, at most
`CONFLICTING_HASHES_MAX` hashes per authority and slot are counted, plus any
hash the caller says matters (one of this height's proposals).

A non-nil precommit's checkpoint cosignature is not covered by its vote
signature, so a relaying peer could swap it. The set therefore keeps a few
candidate cosignatures per precommit (`CHECKPOINT_CANDIDATES_MAX`); the
machine picks one that verifies when it assembles a certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from consensus.messages import Vote, VoteKind

CHECKPOINT_CANDIDATES_MAX = 4
CONFLICTING_HASHES_MAX = 4


class Added(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(slots=True)
class _Slot:
    """Votes of one (round, kind)."""

    first_by_authority: dict[str, Vote] = field(default_factory=dict)
    hashes_by_authority: dict[str, int] = field(default_factory=dict)
    voters_by_hash: dict[bytes, dict[str, Vote]] = field(default_factory=dict)
    checkpoint_candidates: dict[tuple[str, bytes], list[bytes]] = field(default_factory=dict)


class HeightVotes:
    """All votes counted at one height, and the authorities heard from per round."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, VoteKind], _Slot] = {}
        self._senders_by_round: dict[int, set[str]] = {}

    def add(self, vote: Vote, matters: bool = False) -> tuple[Added, Vote | None]:
        """Count `vote`. Returns (NEW, None), (DUPLICATE, first) or (CONFLICT, first).

        `matters`: count it even past the per-authority cap of conflicting hashes.
        A DUPLICATE may still bring a new checkpoint cosignature candidate; it is kept.
        """
        entry = self._slots.setdefault((vote.round, vote.kind), _Slot())
        first = entry.first_by_authority.setdefault(vote.authority, vote)
        voters = entry.voters_by_hash.get(vote.block_hash)
        if voters is None or vote.authority not in voters:
            hashes = entry.hashes_by_authority.get(vote.authority, 0)
            if hashes < CONFLICTING_HASHES_MAX or matters:
                entry.hashes_by_authority[vote.authority] = hashes + 1
                entry.voters_by_hash.setdefault(vote.block_hash, {})[vote.authority] = vote
                self._keep_cosignature(entry, vote)
            self.note_sender(vote.round, vote.authority)
            return (Added.NEW, None) if first is vote else (Added.CONFLICT, first)
        if self._keep_cosignature(entry, vote):
            return Added.NEW, None  # a new cosignature candidate: worth relaying
        return Added.DUPLICATE, first

    @staticmethod
    def _keep_cosignature(entry: _Slot, vote: Vote) -> bool:
        if not vote.checkpoint_signature:
            return False
        candidates = entry.checkpoint_candidates.setdefault((vote.authority, vote.block_hash), [])
        if vote.checkpoint_signature in candidates or len(candidates) >= CHECKPOINT_CANDIDATES_MAX:
            return False
        candidates.append(vote.checkpoint_signature)
        return True

    def note_sender(self, round: int, authority: str) -> None:
        """Record that `authority` sent some message for `round` (for the f+1 round skip)."""
        self._senders_by_round.setdefault(round, set()).add(authority)

    def count(self, round: int, kind: VoteKind, block_hash: bytes) -> int:
        """Distinct authorities that signed `kind` for `block_hash` at `round`."""
        entry = self._slots.get((round, kind))
        return len(entry.voters_by_hash.get(block_hash, ())) if entry else 0

    def total(self, round: int, kind: VoteKind) -> int:
        """Distinct authorities that signed any `kind` at `round`."""
        entry = self._slots.get((round, kind))
        return len(entry.first_by_authority) if entry else 0

    def voted_or_past(self, round: int, kind: VoteKind) -> int:
        """Distinct authorities that signed any `kind` at `round` or sent some message for a later round.

        For starting timeouts only (never for a polka or a decision): an honest
        authority heard at a later round never votes at `round`, and a Byzantine
        one could as well sign a vote there."""
        entry = self._slots.get((round, kind))
        authorities = set(entry.first_by_authority) if entry else set()
        for later, senders in self._senders_by_round.items():
            if later > round:
                authorities |= senders
        return len(authorities)

    def senders(self, round: int) -> int:
        return len(self._senders_by_round.get(round, ()))

    def rounds_heard(self) -> list[int]:
        """Rounds some authority sent a message for, ascending."""
        return sorted(self._senders_by_round)

    def votes_for(self, round: int, kind: VoteKind, block_hash: bytes) -> list[Vote]:
        """The counted votes of `kind` for `block_hash` at `round`, in arrival order."""
        entry = self._slots.get((round, kind))
        return list(entry.voters_by_hash.get(block_hash, {}).values()) if entry else []

    def relayable(self, round: int, kind: VoteKind) -> list[Vote]:
        """Every vote counted at (`round`, `kind`), for retransmission by a relaying node.

        One entry per authority and hash counted (so at most n * (CONFLICTING_HASHES_MAX
        + proposals) of them); a non-nil precommit once per candidate cosignature, so a
        cosignature swapped by a relaying peer cannot hide the authority's own one.
        """
        entry = self._slots.get((round, kind))
        if entry is None:
            return []
        relayed = []
        for block_hash, voters in entry.voters_by_hash.items():
            for name, vote in voters.items():
                candidates = entry.checkpoint_candidates.get((name, block_hash))
                if not candidates:
                    relayed.append(vote)
                    continue
                relayed.extend(
                    vote if candidate == vote.checkpoint_signature else replace(vote, checkpoint_signature=candidate)
                    for candidate in candidates
                )
        return relayed

    def precommits_for(self, round: int, block_hash: bytes) -> list[tuple[Vote, list[bytes]]]:
        """Precommits for `block_hash` at `round` with their candidate cosignatures."""
        entry = self._slots.get((round, VoteKind.PRECOMMIT))
        if entry is None:
            return []
        return [
            (vote, entry.checkpoint_candidates.get((name, block_hash), []))
            for name, vote in entry.voters_by_hash.get(block_hash, {}).items()
        ]

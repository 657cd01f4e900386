"""HeightVotes: the count that starts the prevote and precommit timeouts (`voted_or_past`)."""

from __future__ import annotations

from consensus.messages import NIL, Vote, VoteKind
from consensus.votes import HeightVotes


def vote(kind: VoteKind, round: int, authority: str, block_hash: bytes = NIL) -> Vote:
    return Vote(kind, 1, round, block_hash, authority, bytes(64))


def test_an_authority_heard_at_a_later_round_counts_toward_any_vote_of_an_earlier_one() -> None:
    votes = HeightVotes()
    votes.add(vote(VoteKind.PREVOTE, 1, "inst-1", b"\x01" * 32))
    votes.add(vote(VoteKind.PREVOTE, 1, "inst-3", b"\x01" * 32))
    votes.add(vote(VoteKind.PREVOTE, 2, "inst-2"))
    assert votes.total(1, VoteKind.PREVOTE) == 2
    assert votes.voted_or_past(1, VoteKind.PREVOTE) == 3
    assert votes.voted_or_past(1, VoteKind.PRECOMMIT) == 1  # inst-2 only: nobody precommitted at 1
    assert votes.voted_or_past(2, VoteKind.PREVOTE) == 1    # the same round or an earlier one does not count
    assert votes.voted_or_past(0, VoteKind.PREVOTE) == 3


def test_an_authority_is_counted_once_and_a_proposal_makes_a_sender() -> None:
    votes = HeightVotes()
    votes.add(vote(VoteKind.PRECOMMIT, 0, "inst-1"))
    votes.add(vote(VoteKind.PREVOTE, 1, "inst-1"))  # voted at 0 and heard at 1: one authority
    votes.note_sender(3, "inst-3")                   # a proposal of round 3
    assert votes.voted_or_past(0, VoteKind.PRECOMMIT) == 2
    # Only what counts for timeouts changes: the counts behind polkas and decisions do not.
    assert votes.count(0, VoteKind.PRECOMMIT, NIL) == 1

"""Algorithm 1's upon-rules, over the variables of one height.

Theory of operation
-------------------
The rules are those of Buchman, Kwon and Milosevic, "The latest gossip on
BFT consensus" (2018), Algorithm 1, with q = quorum(n) in place of 2f+1 and
f + 1 = faults_tolerated(n) + 1:

    StartRound(r): step = propose; the proposer of (h, r) proposes validValue
        if it has one, else asks the shell for a body (BuildProposal).
    line 22  proposal(h, r, v, -1), step = propose:
                 prevote v if valid(v) and (lockedRound = -1 or lockedValue = v), else nil
    line 28  proposal(h, r, v, vr) and q prevotes(h, vr, v), 0 <= vr < r, step = propose:
                 prevote v if valid(v) and (lockedRound <= vr or lockedValue = v), else nil
    line 34  q prevotes(h, r, any)*, step = prevote, first time: schedule timeoutPrevote
    line 36  proposal(h, r, v) valid and q prevotes(h, r, v), step >= prevote, first time:
                 if step = prevote: lock v at r, precommit v, step = precommit;
                 validValue = v, validRound = r
    line 44  q prevotes(h, r, nil), step = prevote: precommit nil, step = precommit
    line 47  q precommits(h, r, any)*, first time: schedule timeoutPrecommit
    line 49  proposal(h, r', v) valid and q precommits(h, r', v), any round r': decide v
    line 55  f+1 authorities sent messages for a round r' > r: StartRound(r')
    timeouts: propose -> prevote nil; prevote -> precommit nil; precommit -> StartRound(r+1)

    * "any" also counts an authority heard at a round above r (`HeightVotes.voted_or_past`).
      Algorithm 1 assumes gossip: a node at round r' > r got there on q precommits of
      r'-1 or f+1 senders at r', and those reach everyone. Here only signed statements
      are durable, so that justification can be lost for good: in simulator seed
      204060 (n=4, one node kept down) the only copies of the down node's round-1
      precommit died in crashes of the three others; one came back at round 2 (its
      signed prevote), two at round 1 with 2 prevotes and 2 precommits each, and no
      rule fired again. An authority ahead will never vote at r (honest) or could
      sign any vote there (Byzantine), so counting it only stops a wait for votes
      that cannot come; it starts timeouts, never a polka, lock or decision, and
      timeouts do not affect safety. The lowest live honest nodes then always reach
      q (their own votes and everyone ahead) and climb until all share a round.

`HeightState` holds Algorithm 1's variables for one height (round, step,
lockedValue/lockedRound, validValue/validRound) and what has been received
(proposals, votes, the shell's validity answers). `Rules.evaluate` fires
rules until none applies, after every event; each fires at most once per
round because its guard (the step or a first-time flag) changes when it fires.
"valid(v)" is the shell's: a proposal takes part in the rules only once the
shell answered `ValidateProposal` with `ProposalValidated`.

The rules decide; they do not sign, send or schedule. They act through the
`Effects` the machine implements (`consensus.machine`), which signs through
the one place that makes restarts safe, and they read and change only the
`HeightState` they are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

from consensus.events import TimeoutKind
from consensus.messages import NIL, ProposalMessage, Value, VoteKind
from consensus.votes import HeightVotes


class Step(Enum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(slots=True)
class HeightState:
    """Algorithm 1's variables at `height`, and the messages counted there.

    `proposals` holds the first proposal per round (a second one is evidence,
    not counted); `validity` the shell's valid(v) per block hash; `fired` the
    "for the first time" flags, as (rule, round).
    """

    height: int
    round: int = 0
    step: Step = Step.PROPOSE
    decided: bool = False
    locked_round: int = -1
    locked_hash: bytes = NIL
    valid_round: int = -1
    valid_value: Value | None = None
    proposals: dict[int, ProposalMessage] = field(default_factory=dict)
    validity: dict[bytes, bool] = field(default_factory=dict)
    votes: HeightVotes = field(default_factory=HeightVotes)
    fired: set[tuple[str, int]] = field(default_factory=set)

    def valid_proposal(self, round: int) -> ProposalMessage | None:
        """The proposal of `round` if the shell answered that it is valid."""
        message = self.proposals.get(round)
        if message is None or self.validity.get(message.proposal.block_hash) is not True:
            return None
        return message


@dataclass(frozen=True, slots=True)
class Effects:
    """What the rules ask of the machine, as callables.

    start_round(round): StartRound(round): set round and step = propose,
        schedule the propose timeout, propose if this authority is the proposer.
    vote(kind, value): sign (or, if already signed, re-send) a `kind` vote for
        `value` (None: nil) in the current round.
    schedule(kind, round): schedule a timeout.
    decide(round, message): commit `message`'s value, decided at `round`;
        False if no certificate can be assembled yet.
    """

    start_round: Callable[[int], None]
    vote: Callable[[VoteKind, Value | None], None]
    schedule: Callable[[TimeoutKind, int], None]
    decide: Callable[[int, ProposalMessage], bool]


class Rules:
    """The upon-rules with the cluster's thresholds: q votes, and f+1 senders for a round skip."""

    def __init__(self, quorum: int, skip_threshold: int, effects: Effects) -> None:
        self._quorum = quorum
        self._skip_threshold = skip_threshold
        self._effects = effects

    def evaluate(self, state: HeightState) -> None:
        """Fire upon-rules until none applies (each fires at most once per round)."""
        while not state.decided:
            if self._decide(state):
                return
            if not (self._round_skip(state) or self._propose_step(state) or self._polka(state) or self._nil_polka(state)):
                break
        if not state.decided:
            self._schedule_timeouts(state)

    def on_timeout(self, state: HeightState, kind: TimeoutKind, round: int) -> None:  # lines 57-65
        """A propose, prevote or precommit timeout of `round` fired (RETRANSMIT is the machine's)."""
        if state.decided or round != state.round:
            return
        if kind is TimeoutKind.PROPOSE and state.step is Step.PROPOSE:
            self._effects.vote(VoteKind.PREVOTE, None)
            state.step = Step.PREVOTE
        elif kind is TimeoutKind.PREVOTE and state.step is Step.PREVOTE:
            self._effects.vote(VoteKind.PRECOMMIT, None)
            state.step = Step.PRECOMMIT
        elif kind is TimeoutKind.PRECOMMIT:
            self._effects.start_round(state.round + 1)

    def _decide(self, state: HeightState) -> bool:  # line 49
        for round in sorted(state.proposals):
            message = state.valid_proposal(round)
            if message is None or state.votes.count(round, VoteKind.PRECOMMIT, message.proposal.block_hash) < self._quorum:
                continue
            if self._effects.decide(round, message):
                state.decided = True
                return True
        return False

    def _round_skip(self, state: HeightState) -> bool:  # line 55
        votes = state.votes
        later = [r for r in votes.rounds_heard() if r > state.round and votes.senders(r) >= self._skip_threshold]
        if not later:
            return False
        self._effects.start_round(max(later))
        return True

    def _propose_step(self, state: HeightState) -> bool:  # lines 22 and 28
        if state.step is not Step.PROPOSE or (message := state.proposals.get(state.round)) is None:
            return False
        valid = state.validity.get(message.proposal.block_hash)
        if valid is None:
            return False
        block_hash, valid_round = message.proposal.block_hash, message.proposal.valid_round
        if valid_round == -1:
            acceptable = state.locked_round == -1 or state.locked_hash == block_hash
        elif state.votes.count(valid_round, VoteKind.PREVOTE, block_hash) >= self._quorum:
            acceptable = state.locked_round <= valid_round or state.locked_hash == block_hash
        else:
            return False  # wait for the polka the proposal cites, or the propose timeout
        self._effects.vote(VoteKind.PREVOTE, message.value if valid and acceptable else None)
        state.step = Step.PREVOTE
        return True

    def _polka(self, state: HeightState) -> bool:  # line 36
        if state.step is Step.PROPOSE or ("polka", state.round) in state.fired:
            return False
        message = state.valid_proposal(state.round)
        if message is None or state.votes.count(state.round, VoteKind.PREVOTE, message.proposal.block_hash) < self._quorum:
            return False
        state.fired.add(("polka", state.round))
        if state.step is Step.PREVOTE:
            state.locked_round, state.locked_hash = state.round, message.value.block_hash
            self._effects.vote(VoteKind.PRECOMMIT, message.value)
            state.step = Step.PRECOMMIT
        state.valid_round, state.valid_value = state.round, message.value
        return True

    def _nil_polka(self, state: HeightState) -> bool:  # line 44
        if state.step is not Step.PREVOTE or state.votes.count(state.round, VoteKind.PREVOTE, NIL) < self._quorum:
            return False
        self._effects.vote(VoteKind.PRECOMMIT, None)
        state.step = Step.PRECOMMIT
        return True

    def _schedule_timeouts(self, state: HeightState) -> None:  # lines 34 and 47
        """Start a timeout once q authorities voted `kind` in this round or were heard at a later
        one (see the theory of operation: an authority ahead never votes here)."""
        round = state.round
        if state.step is Step.PREVOTE and ("prevote timeout", round) not in state.fired:
            if state.votes.voted_or_past(round, VoteKind.PREVOTE) >= self._quorum:
                state.fired.add(("prevote timeout", round))
                self._effects.schedule(TimeoutKind.PREVOTE, round)
        if ("precommit timeout", round) not in state.fired:
            if state.votes.voted_or_past(round, VoteKind.PRECOMMIT) >= self._quorum:
                state.fired.add(("precommit timeout", round))
                self._effects.schedule(TimeoutKind.PRECOMMIT, round)

"""The consensus state machine: Tendermint's Algorithm 1, sans I/O.

Theory of operation
-------------------
One `Machine` is one authority's view of consensus. It owns no socket, task,
clock or randomness: the shell feeds it `events` one at a time through
`step(event)` and performs the `actions` it returns, in order. The rules are
those of Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus"
(2018), Algorithm 1, with q = quorum(n) in place of 2f+1 and f + 1 =
faults_tolerated(n) + 1:

    StartRound(r): step = propose; the proposer of (h, r) proposes validValue
        if it has one, else asks the shell for a body (BuildProposal).
    line 22  proposal(h, r, v, -1), step = propose:
                 prevote v if valid(v) and (lockedRound = -1 or lockedValue = v), else nil
    line 28  proposal(h, r, v, vr) and q prevotes(h, vr, v), 0 <= vr < r, step = propose:
                 prevote v if valid(v) and (lockedRound <= vr or lockedValue = v), else nil
    line 34  q prevotes(h, r, any), step = prevote, first time: schedule timeoutPrevote
    line 36  proposal(h, r, v) valid and q prevotes(h, r, v), step >= prevote, first time:
                 if step = prevote: lock v at r, precommit v, step = precommit;
                 validValue = v, validRound = r
    line 44  q prevotes(h, r, nil), step = prevote: precommit nil, step = precommit
    line 47  q precommits(h, r, any), first time: schedule timeoutPrecommit
    line 49  proposal(h, r', v) valid and q precommits(h, r', v), any round r': decide v
    line 55  f+1 authorities sent messages for a round r' > r: StartRound(r')
    timeouts: propose -> prevote nil; prevote -> precommit nil; precommit -> StartRound(r+1)

The rules are evaluated to a fixpoint after every event (`_evaluate`); each
fires at most once per round because its guard (step or a first-time flag)
changes when it fires. "valid(v)" is the shell's: a proposal takes part in the
rules only once the shell answered `ValidateProposal` with `ProposalValidated`.

A decision emits `Commit` with a certificate built from the precommits
counted, each carrying a checkpoint cosignature verified against the value's
checkpoint text. The machine then waits for `BlockApplied(h)` and starts h+1;
`BlockApplied` from catch-up moves it just the same. Messages for h+1 that
arrive early are verified and buffered; later heights are dropped with a
`CatchUp` hint.

Safety across restarts: every statement is signed through `_sign`, which first
looks the slot up in `SignedState`; a free slot is signed, recorded, emitted
as `PersistSigned` and only then broadcast; a taken slot re-sends what was
signed before. A machine built from the persisted state therefore never signs
two statements for one (height, round, kind), and recovers its lock from it.

Liveness over a lossy transport: on every RETRANSMIT timeout the machine
re-sends its own statements of the current and previous round, so lost
messages are eventually replaced once the network heals.
"""

from __future__ import annotations

from enum import Enum

from ledger import crypto
from ledger.block import CommitCertificate, CommitSignature
from ledger.genesis import AuthoritySet
from ledger.quorum import faults_tolerated, quorum

from consensus.actions import (
    Action, Broadcast, BuildProposal, CatchUp, Commit, Dropped, PersistSigned, RecordEvidence,
    ScheduleTimeout, ValidateProposal,
)
from consensus.events import (
    BlockApplied, Event, MessageReceived, ProposalBodyReady, ProposalValidated, Start, TimeoutFired, TimeoutKind,
)
from consensus.evidence import Evidence
from consensus.messages import (
    NIL, Message, MessageError, Proposal, ProposalMessage, Signed, Value, Vote, VoteKind, decode_message,
    encode_message, slot,
)
from consensus.signed_state import SignedState
from consensus.signing import CHECKPOINT_CONTEXT, Signer, Verify, default_verify
from consensus.timeouts import Timeouts
from consensus.votes import Added, HeightVotes

# A Byzantine authority may sign messages for any round; rounds this far above
# ours are dropped so it cannot make us keep unbounded vote sets.
ROUNDS_AHEAD_MAX = 1_000
NEXT_HEIGHT_BUFFER_MAX = 4_096


class Step(Enum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class MachineError(RuntimeError):
    """The shell misused the machine (our side's bug, not a peer's)."""


class Machine:
    """One authority's consensus state machine. Not thread-safe; step from one task.

    `height` is the next height to decide (the shell's committed height + 1).
    `signed` is the last `PersistSigned` state the shell made durable, or None;
    a state for another height is ignored.
    """

    def __init__(
        self, *, authority_set: AuthoritySet, chain_id: bytes, signer: Signer, height: int,
        signed: SignedState | None = None, timeouts: Timeouts = Timeouts(), verify: Verify = default_verify,
    ) -> None:
        if authority_set.by_name(signer.name) is None:
            raise MachineError(f"{signer.name!r} is not in the authority set")
        if height < 1:
            raise MachineError("heights start at 1")
        self._authorities = authority_set
        self._chain = chain_id
        self._signer = signer
        self._timeouts = timeouts
        self._verify = verify
        self._quorum = quorum(len(authority_set))
        self._skip_threshold = faults_tolerated(len(authority_set)) + 1
        self._started = False
        self._actions: list[Action] = []
        self._next_height_buffer: list[Message] = []
        self._peers_ahead: dict[str, int] = {}
        self._reset(height)
        if signed is not None and signed.height == height:
            self._signed = signed
            for vote in signed.locked_polka:
                self._votes.add(vote)
            for statement in signed.statements:
                if isinstance(statement, Vote):
                    self._votes.add(statement)
                else:
                    self._votes.note_sender(statement.round, statement.proposer)
            self._locked_round, self._locked_hash = signed.locked
            if signed.locked_value is not None:  # Algorithm 1 sets validValue when it locks
                self._valid_round, self._valid_value = self._locked_round, signed.locked_value
                self._validity[signed.locked_value.block_hash] = True
            self._round = signed.round

    def _reset(self, height: int) -> None:
        self._height = height
        self._round = 0
        self._step = Step.PROPOSE
        self._decided = False
        self._locked_round, self._locked_hash = -1, NIL
        self._valid_round, self._valid_value = -1, None
        self._proposals: dict[int, ProposalMessage] = {}
        self._own_proposals: dict[int, ProposalMessage] = {}  # with bodies, for retransmission
        self._validity: dict[bytes, bool] = {}
        self._validation_requested: set[bytes] = set()
        self._votes = HeightVotes()
        self._signed = SignedState(height)
        self._fired: set[tuple[str, int]] = set()  # Algorithm 1's "for the first time" flags
        self._evidence_slots: set[tuple[str, int, str]] = set()
        self._cosignature_checks: dict[tuple[int, str, bytes], bool] = {}
        self._awaiting_body_round: int | None = None
        self._catch_up_hinted = False

    # -- read-only view, for the shell's status page and for tests ----------

    @property
    def height(self) -> int:
        return self._height

    @property
    def round(self) -> int:
        return self._round

    @property
    def step_name(self) -> str:
        return "decided" if self._decided else self._step.name.lower()

    @property
    def locked(self) -> tuple[int, bytes]:
        return self._locked_round, self._locked_hash

    @property
    def signed_state(self) -> SignedState:
        return self._signed

    # -- the one entry point -------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        """Apply `event`; return the actions to perform, in order (see consensus.actions)."""
        if isinstance(event, Start):
            if self._started:
                raise MachineError("Start stepped twice")
            self._started = True
            self._start_round(self._round)
            self._schedule(TimeoutKind.RETRANSMIT, self._round)
        elif not self._started:
            raise MachineError("step Start first")
        elif isinstance(event, MessageReceived):
            self._on_message(event.data)
        elif isinstance(event, TimeoutFired):
            self._on_timeout(event)
        elif isinstance(event, ProposalBodyReady):
            self._on_body_ready(event)
        elif isinstance(event, ProposalValidated):
            if event.height == self._height and event.block_hash in self._validation_requested:
                self._validity.setdefault(event.block_hash, bool(event.valid))
        elif isinstance(event, BlockApplied):
            if event.height >= self._height:
                self._advance_to(event.height + 1)
        else:
            raise MachineError(f"unknown event {event!r}")
        self._evaluate()
        actions, self._actions = self._actions, []
        return actions

    # -- events ---------------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        try:
            chain, message = decode_message(data)
        except MessageError as error:
            return self._drop(f"malformed: {error}")
        sender = message.authority
        if chain != self._chain:
            return self._drop("other chain", sender)
        authority = self._authorities.by_name(sender)
        if authority is None:
            return self._drop("not an authority", sender)
        if message.height < self._height:
            return self._drop("past height", sender)
        base_round = self._round if message.height == self._height else 0
        if message.round > base_round + ROUNDS_AHEAD_MAX:
            return self._drop("round too far ahead", sender)
        statement = message.proposal if isinstance(message, ProposalMessage) else message
        if isinstance(statement, Proposal) and self._authorities.proposer(statement.height, statement.round).name != sender:
            return self._drop("wrong proposer", sender)
        try:
            self._verify(authority.public_key, crypto.VOTE_CONTEXT, statement.signed_bytes(self._chain), statement.signature)
        except crypto.SignatureError:
            return self._drop("bad signature", sender)
        # Peers heard from at later heights, most recent last: catch-up asks a live one.
        if message.height > self._height:
            self._peers_ahead[sender] = max(message.height, self._peers_ahead.pop(sender, 0))
        if message.height > self._height + 1:
            self._hint_catch_up()
            return self._drop("future height", sender)
        if message.height == self._height + 1:
            if len(self._next_height_buffer) >= NEXT_HEIGHT_BUFFER_MAX:
                return self._drop("next-height buffer full", sender)
            self._next_height_buffer.append(message)
            return None
        if self._decided:
            return self._drop("height decided", sender)
        self._accept(message)

    def _accept(self, message: Message) -> None:
        """Count a verified message of the current height."""
        if isinstance(message, ProposalMessage):
            proposal = message.proposal
            first = self._proposals.get(proposal.round)
            if first is not None:
                if first.proposal.block_hash == proposal.block_hash and first.proposal.valid_round == proposal.valid_round:
                    return self._drop("duplicate", proposal.proposer)
                self._record_evidence(first.proposal, proposal)
                return self._drop("conflicting proposal", proposal.proposer)
            self._proposals[proposal.round] = message
            self._votes.note_sender(proposal.round, proposal.proposer)
            block_hash = proposal.block_hash
            if block_hash not in self._validity and block_hash not in self._validation_requested:
                self._validation_requested.add(block_hash)
                self._actions.append(ValidateProposal(message))
            return None
        matters = any(p.proposal.block_hash == message.block_hash for p in self._proposals.values())
        added, first = self._votes.add(message, matters)
        if added is Added.DUPLICATE:
            return self._drop("duplicate", message.authority)
        if added is Added.CONFLICT:  # counted all the same (see consensus.votes), and evidence
            self._record_evidence(first, message)
        return None

    def _on_timeout(self, event: TimeoutFired) -> None:
        if event.height != self._height or self._decided:
            return
        if event.kind is TimeoutKind.RETRANSMIT:
            self._retransmit()
            self._schedule(TimeoutKind.RETRANSMIT, self._round)
        elif event.round != self._round:
            return
        elif event.kind is TimeoutKind.PROPOSE and self._step is Step.PROPOSE:
            self._sign_vote(VoteKind.PREVOTE, None)
            self._step = Step.PREVOTE
        elif event.kind is TimeoutKind.PREVOTE and self._step is Step.PREVOTE:
            self._sign_vote(VoteKind.PRECOMMIT, None)
            self._step = Step.PRECOMMIT
        elif event.kind is TimeoutKind.PRECOMMIT:
            self._start_round(self._round + 1)

    def _on_body_ready(self, event: ProposalBodyReady) -> None:
        if (event.height, event.round) != (self._height, self._round) or self._decided:
            return
        if self._awaiting_body_round != event.round or self._step is not Step.PROPOSE:
            return
        self._awaiting_body_round = None
        self._propose(event.value, -1)

    def _advance_to(self, height: int) -> None:
        buffered = self._next_height_buffer if height == self._height + 1 else []
        self._next_height_buffer = []
        self._peers_ahead = {peer: h for peer, h in self._peers_ahead.items() if h > height}
        self._reset(height)
        self._start_round(0)
        self._schedule(TimeoutKind.RETRANSMIT, 0)
        for message in buffered:
            self._accept(message)

    # -- Algorithm 1 ------------------------------------------------------------

    def _evaluate(self) -> None:
        """Fire upon-rules until none applies (each fires at most once per round)."""
        while self._started and not self._decided:
            if self._rule_decide():
                return
            if not (self._rule_round_skip() or self._rule_propose_step() or self._rule_polka() or self._rule_nil_polka()):
                break
        if not self._decided:
            self._rule_schedule_timeouts()

    def _valid_proposal(self, round: int) -> ProposalMessage | None:
        message = self._proposals.get(round)
        if message is None or self._validity.get(message.proposal.block_hash) is not True:
            return None
        return message

    def _rule_decide(self) -> bool:  # line 49
        for round in sorted(self._proposals):
            message = self._valid_proposal(round)
            if message is None or self._votes.count(round, VoteKind.PRECOMMIT, message.proposal.block_hash) < self._quorum:
                continue
            signatures = self._cosigned_precommits(round, message.value)
            if len(signatures) >= self._quorum:
                certificate = CommitCertificate(self._height, round, message.value.block_hash, tuple(signatures))
                self._actions.append(Commit(self._height, message.value, certificate))
                self._decided = True
                return True
        return False

    def _rule_round_skip(self) -> bool:  # line 55
        later = [r for r in self._votes.rounds_heard() if r > self._round and self._votes.senders(r) >= self._skip_threshold]
        if not later:
            return False
        self._start_round(max(later))
        return True

    def _rule_propose_step(self) -> bool:  # lines 22 and 28
        if self._step is not Step.PROPOSE or (message := self._proposals.get(self._round)) is None:
            return False
        valid = self._validity.get(message.proposal.block_hash)
        if valid is None:
            return False
        block_hash, valid_round = message.proposal.block_hash, message.proposal.valid_round
        if valid_round == -1:
            acceptable = self._locked_round == -1 or self._locked_hash == block_hash
        elif self._votes.count(valid_round, VoteKind.PREVOTE, block_hash) >= self._quorum:
            acceptable = self._locked_round <= valid_round or self._locked_hash == block_hash
        else:
            return False  # wait for the polka the proposal cites, or the propose timeout
        self._sign_vote(VoteKind.PREVOTE, message.value if valid and acceptable else None)
        self._step = Step.PREVOTE
        return True

    def _rule_polka(self) -> bool:  # line 36
        if self._step is Step.PROPOSE or ("polka", self._round) in self._fired:
            return False
        message = self._valid_proposal(self._round)
        if message is None or self._votes.count(self._round, VoteKind.PREVOTE, message.proposal.block_hash) < self._quorum:
            return False
        self._fired.add(("polka", self._round))
        if self._step is Step.PREVOTE:
            self._locked_round, self._locked_hash = self._round, message.value.block_hash
            self._sign_vote(VoteKind.PRECOMMIT, message.value)
            self._step = Step.PRECOMMIT
        self._valid_round, self._valid_value = self._round, message.value
        return True

    def _rule_nil_polka(self) -> bool:  # line 44
        if self._step is not Step.PREVOTE or self._votes.count(self._round, VoteKind.PREVOTE, NIL) < self._quorum:
            return False
        self._sign_vote(VoteKind.PRECOMMIT, None)
        self._step = Step.PRECOMMIT
        return True

    def _rule_schedule_timeouts(self) -> None:  # lines 34 and 47
        round = self._round
        if self._step is Step.PREVOTE and ("prevote timeout", round) not in self._fired:
            if self._votes.total(round, VoteKind.PREVOTE) >= self._quorum:
                self._fired.add(("prevote timeout", round))
                self._schedule(TimeoutKind.PREVOTE, round)
        if ("precommit timeout", round) not in self._fired and self._votes.total(round, VoteKind.PRECOMMIT) >= self._quorum:
            self._fired.add(("precommit timeout", round))
            self._schedule(TimeoutKind.PRECOMMIT, round)

    def _start_round(self, round: int) -> None:
        self._round, self._step, self._awaiting_body_round = round, Step.PROPOSE, None
        self._schedule(TimeoutKind.PROPOSE, round)
        if self._authorities.proposer(self._height, round).name != self._signer.name:
            return
        if self._signed.find(round, "proposal") is not None:
            own = self._own_proposals.get(round)  # absent after a restart: the round just times out
            if own is not None:
                self._broadcast(own)
        elif self._valid_value is not None:
            self._propose(self._valid_value, self._valid_round)
        else:
            self._awaiting_body_round = round
            self._actions.append(BuildProposal(self._height, round))

    # -- signing: the only place statements are made ---------------------------

    def _propose(self, value: Value, valid_round: int) -> None:
        round = self._round
        if self._signed.find(round, "proposal") is not None:
            return
        unsigned = Proposal(self._height, round, valid_round, value.block_hash, self._signer.name, bytes(64))
        signature = self._signer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(self._chain))
        proposal = Proposal(self._height, round, valid_round, value.block_hash, self._signer.name, signature)
        message = ProposalMessage(proposal, value)
        self._record_signed(proposal)
        self._own_proposals[round] = message
        self._validity[value.block_hash] = True  # our shell built it, or we saw it polka'd as valid
        self._broadcast(message)
        self._accept(message)

    def _sign_vote(self, kind: VoteKind, value: Value | None) -> None:
        """Vote for `value` (None: nil) in the current round, unless this slot is already signed."""
        previous = self._signed.find(self._round, kind.value)
        if previous is not None:
            self._broadcast(previous)  # never a second statement; re-send the first
            return
        block_hash = NIL if value is None else value.block_hash
        unsigned = Vote(kind, self._height, self._round, block_hash, self._signer.name, bytes(64),
                        bytes(64) if kind is VoteKind.PRECOMMIT and value is not None else b"")
        signature = self._signer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(self._chain))
        cosignature = b""
        if kind is VoteKind.PRECOMMIT and value is not None:
            cosignature = self._signer.sign(CHECKPOINT_CONTEXT, value.checkpoint_text.encode())
        vote = Vote(kind, self._height, self._round, block_hash, self._signer.name, signature, cosignature)
        self._signed = self._signed.add(vote)
        if kind is VoteKind.PRECOMMIT and value is not None:
            polka = self._votes.votes_for(self._round, VoteKind.PREVOTE, value.block_hash)
            self._signed = self._signed.with_lock(value, tuple(polka))
        self._actions.append(PersistSigned(self._signed))  # before the Broadcast that follows
        self._broadcast(vote)
        self._votes.add(vote)

    def _record_signed(self, statement: Signed) -> None:
        self._signed = self._signed.add(statement)
        self._actions.append(PersistSigned(self._signed))  # before the Broadcast that follows

    # -- helpers ----------------------------------------------------------------

    def _cosigned_precommits(self, round: int, value: Value) -> list[CommitSignature]:
        """Precommits for `value` at `round` whose checkpoint cosignature verifies, in authority order."""
        text = value.checkpoint_text.encode()
        signatures = []
        for vote, candidates in self._votes.precommits_for(round, value.block_hash):
            public_key = self._authorities.by_name(vote.authority).public_key
            for candidate in candidates:
                key = (round, vote.authority, candidate)
                if key not in self._cosignature_checks:
                    try:
                        self._verify(public_key, CHECKPOINT_CONTEXT, text, candidate)
                        self._cosignature_checks[key] = True
                    except crypto.SignatureError:
                        self._cosignature_checks[key] = False
                if self._cosignature_checks[key]:
                    signatures.append(CommitSignature(vote.authority, vote.signature, candidate))
                    break
        return sorted(signatures, key=lambda s: self._authorities.index(s.authority))

    def _retransmit(self) -> None:
        """Re-send own statements that can still matter: everything of the last two
        rounds, and every non-nil vote (an old polka is what lets a later proposal
        citing it as valid round be accepted, line 28; an old precommit quorum still
        decides, line 49)."""
        for statement in self._signed.statements:
            recent = statement.round >= self._round - 1
            if isinstance(statement, Vote):
                if recent or statement.block_hash != NIL:
                    self._broadcast(statement)
            elif recent and (own := self._own_proposals.get(statement.round)) is not None:
                self._broadcast(own)
        if self._valid_value is not None:
            # Relay the polka behind our validValue, others' prevotes included: a
            # node that missed some of them cannot accept a proposal citing it.
            for vote in self._votes.votes_for(self._valid_round, VoteKind.PREVOTE, self._valid_value.block_hash):
                if vote.authority != self._signer.name:
                    self._broadcast(vote)
        self._catch_up_hinted = False
        if self._peers_ahead:  # peers moved on a whole period ago: we missed the decision
            self._hint_catch_up()

    def _hint_catch_up(self) -> None:
        """Ask the shell to fetch blocks from the peer ahead of us we heard from last."""
        if not self._catch_up_hinted:
            self._catch_up_hinted = True
            peer = next(reversed(self._peers_ahead))
            self._actions.append(CatchUp(peer, self._peers_ahead[peer]))

    def _broadcast(self, message: Message) -> None:
        self._actions.append(Broadcast(message, encode_message(self._chain, message)))

    def _schedule(self, kind: TimeoutKind, round: int) -> None:
        self._actions.append(ScheduleTimeout(self._height, round, kind, self._timeouts.duration_ms(kind, round)))

    def _record_evidence(self, first: Signed, second: Signed) -> None:
        key = (second.authority,) + slot(second)[1:]
        if key not in self._evidence_slots:
            self._evidence_slots.add(key)
            self._actions.append(RecordEvidence(Evidence(first, second)))

    def _drop(self, reason: str, sender: str | None = None) -> None:
        self._actions.append(Dropped(reason, sender))

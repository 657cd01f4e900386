"""The consensus state machine: Tendermint's Algorithm 1, sans I/O.

Theory of operation
-------------------
One `Machine` is one authority's view of consensus. It owns no socket, task,
clock or randomness: the shell feeds it `events` one at a time through
`step(event)` and performs the `actions` it returns, in order. The machine is
the authority's side of the protocol: it decodes and verifies messages,
counts them into the current height's `HeightState`, signs, retransmits and
assembles certificates. What to do with what it counted is Algorithm 1's
upon-rules, in `consensus.rules` (with their table), which the machine
evaluates to a fixpoint after every event and which act through the machine's
`Effects`: start a round, vote, schedule a timeout, decide.

A decision emits `Commit` with a certificate built from the precommits
counted, each carrying a checkpoint cosignature verified against the value's
checkpoint text. The machine then waits for `BlockApplied(h)` and starts h+1;
`BlockApplied` from catch-up moves it just the same. Messages for h+1 that
arrive early are verified and buffered; later heights are dropped with a
`CatchUp` hint.

Safety across restarts: every statement is signed through `_propose` or
`_sign_vote`, which first look the slot up in `SignedState`; a free slot is signed, recorded, emitted
as `PersistSigned` and only then broadcast; a taken slot re-sends what was
signed before. A machine built from the persisted state therefore never signs
two statements for one (height, round, kind), and recovers its lock from it.

Liveness over a lossy transport: on every RETRANSMIT timeout the machine
re-sends its own statements of the current and previous round and its non-nil
votes of the height, and relays what it holds of the others' that the rest of
the cluster may need to follow it: the precommits of the previous round, the
votes and the proposal of the current round, and the polka behind its validValue
(`_retransmit`). Algorithm 1 assumes gossip (what one honest node received,
every honest node eventually receives); relaying only once, or not at all,
breaks that when the message's author crashed after reaching a single node.
"""

from __future__ import annotations

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
from consensus.rules import Effects, HeightState, Rules, Step
from consensus.signed_state import SignedState
from consensus.signing import CHECKPOINT_CONTEXT, Signer, Verify, default_verify
from consensus.timeouts import Timeouts
from consensus.votes import Added

# A Byzantine authority may sign messages for any round; rounds this far above
# ours are dropped so it cannot make us keep unbounded vote sets.
ROUNDS_AHEAD_MAX = 1_000
NEXT_HEIGHT_BUFFER_MAX = 4_096
# Bodies found invalid for a hash whose valid body may still come; past this
# many at one height, no more are validated.
INVALID_VALUES_MAX = 64
# Verified statements remembered for skipping the check of a relayed copy; an
# equivocator can sign without end, so past this many the memory starts over.
VERIFIED_KEPT_MAX = 8_192


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
        effects = Effects(start_round=self._start_round, vote=self._sign_vote, schedule=self._schedule, decide=self._decide)
        self._rules = Rules(self._quorum, faults_tolerated(len(authority_set)) + 1, effects)
        self._started = False
        self._actions: list[Action] = []
        self._next_height_buffer: list[Message] = []
        # Statements whose signature verified, by height: every message arrives
        # once from its author and once relayed by each other peer, and only
        # the first copy needs the Ed25519 check.
        self._verified: dict[bytes, int] = {}
        self._peers_ahead: dict[str, int] = {}
        self._reset(height)
        if signed is not None and signed.height == height:
            self._signed = signed
            for vote in signed.locked_polka:
                self._state.votes.add(vote)
            for statement in signed.statements:
                if isinstance(statement, Vote):
                    self._state.votes.add(statement)
                else:
                    self._state.votes.note_sender(statement.round, statement.proposer)
            self._state.locked_round, self._state.locked_hash = signed.locked
            if signed.locked_value is not None:  # Algorithm 1 sets validValue when it locks
                self._state.valid_round, self._state.valid_value = self._state.locked_round, signed.locked_value
                self._learn_valid(signed.locked_value)
            self._state.round = signed.round

    def _reset(self, height: int) -> None:
        self._state = HeightState(height)
        self._own_proposals: dict[int, ProposalMessage] = {}  # with bodies, for retransmission
        self._valid_values: dict[bytes, Value] = {}    # block hash -> the one body and checkpoint found valid
        self._pending_values: dict[bytes, Value] = {}  # block hash -> the value being validated
        self._invalid_values: set[Value] = set()
        self._signed = SignedState(height)
        self._evidence_slots: set[tuple[str, int, str]] = set()
        self._cosignature_checks: dict[tuple[int, str, bytes], bool] = {}
        self._awaiting_body_round: int | None = None
        self._catch_up_hinted = False
        self._catch_up_hints = 0  # hints given at this height: each asks the next peer ahead

    # -- read-only view, for the shell's status page and for tests ----------

    @property
    def height(self) -> int:
        return self._state.height

    @property
    def round(self) -> int:
        return self._state.round

    @property
    def step_name(self) -> str:
        return "decided" if self._state.decided else self._state.step.name.lower()

    @property
    def locked(self) -> tuple[int, bytes]:
        return self._state.locked_round, self._state.locked_hash

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
            self._start_round(self._state.round)
            self._schedule(TimeoutKind.RETRANSMIT, self._state.round)
        elif not self._started:
            raise MachineError("step Start first")
        elif isinstance(event, MessageReceived):
            self._on_message(event.data)
        elif isinstance(event, TimeoutFired):
            self._on_timeout(event)
        elif isinstance(event, ProposalBodyReady):
            self._on_body_ready(event)
        elif isinstance(event, ProposalValidated):
            if event.height == self._state.height and (value := self._pending_values.pop(event.block_hash, None)):
                if event.valid:
                    self._learn_valid(value)
                else:
                    self._invalid_values.add(value)
                    self._state.validity.setdefault(event.block_hash, False)
        elif isinstance(event, BlockApplied):
            if event.height >= self._state.height:
                self._advance_to(event.height + 1)
        else:
            raise MachineError(f"unknown event {event!r}")
        self._rules.evaluate(self._state)
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
        if message.height < self._state.height:
            return self._drop("past height", sender)
        base_round = self._state.round if message.height == self._state.height else 0
        if message.round > base_round + ROUNDS_AHEAD_MAX:
            return self._drop("round too far ahead", sender)
        statement = message.proposal if isinstance(message, ProposalMessage) else message
        if isinstance(statement, Proposal) and self._authorities.proposer(statement.height, statement.round).name != sender:
            return self._drop("wrong proposer", sender)
        signed = statement.signed_bytes(self._chain)
        seen = authority.public_key + statement.signature + signed
        if seen not in self._verified:
            try:
                self._verify(authority.public_key, crypto.VOTE_CONTEXT, signed, statement.signature)
            except crypto.SignatureError:
                return self._drop("bad signature", sender)
            if len(self._verified) >= VERIFIED_KEPT_MAX:
                self._verified.clear()
            self._verified[seen] = message.height
        # Peers heard from at later heights, most recent last: catch-up asks a live one.
        if message.height > self._state.height:
            self._peers_ahead[sender] = max(message.height, self._peers_ahead.pop(sender, 0))
        if message.height > self._state.height + 1:
            self._hint_catch_up()
            return self._drop("future height", sender)
        if message.height == self._state.height + 1:
            if len(self._next_height_buffer) >= NEXT_HEIGHT_BUFFER_MAX:
                return self._drop("next-height buffer full", sender)
            self._next_height_buffer.append(message)
            return None
        if self._state.decided:
            return self._drop("height decided", sender)
        self._accept(message)

    def _accept(self, message: Message) -> None:
        """Count a verified message of the current height."""
        if isinstance(message, ProposalMessage):
            # The statement signs only the block hash; body and checkpoint text are
            # bound to it by validation. Once one value is found valid for a hash,
            # it is the value of every proposal for that hash, whatever came along.
            proposal = message.proposal
            known = self._valid_values.get(proposal.block_hash)
            if known is not None and known != message.value:
                message = ProposalMessage(proposal, known)
            first = self._state.proposals.get(proposal.round)
            if first is not None:
                if first.proposal.block_hash == proposal.block_hash and first.proposal.valid_round == proposal.valid_round:
                    if self._validate(message):  # a statement seen with a body found invalid, now with another
                        return None
                    return self._drop("duplicate", proposal.proposer)
                self._record_evidence(first.proposal, proposal)
                return self._drop("conflicting proposal", proposal.proposer)
            self._state.proposals[proposal.round] = message
            self._state.votes.note_sender(proposal.round, proposal.proposer)
            self._validate(message)
            return None
        matters = any(p.proposal.block_hash == message.block_hash for p in self._state.proposals.values())
        added, first = self._state.votes.add(message, matters)
        if added is Added.DUPLICATE:
            return self._drop("duplicate", message.authority)
        if added is Added.CONFLICT:  # counted all the same (see consensus.votes), and evidence
            self._record_evidence(first, message)
        return None

    def _validate(self, message: ProposalMessage) -> bool:
        """Ask the shell about `message.value` unless its hash is settled or being asked about."""
        value = message.value
        if value.block_hash in self._valid_values or value.block_hash in self._pending_values:
            return False
        if value in self._invalid_values or len(self._invalid_values) >= INVALID_VALUES_MAX:
            return False
        self._pending_values[value.block_hash] = value
        self._actions.append(ValidateProposal(message))
        return True

    def _learn_valid(self, value: Value) -> None:
        """`value` is valid (the shell said so, or it is ours): use it for every proposal of its hash."""
        self._valid_values[value.block_hash] = value
        self._state.validity[value.block_hash] = True
        for round, message in self._state.proposals.items():
            if message.proposal.block_hash == value.block_hash and message.value != value:
                self._state.proposals[round] = ProposalMessage(message.proposal, value)

    def _on_timeout(self, event: TimeoutFired) -> None:
        if event.height != self._state.height or self._state.decided:
            return
        if event.kind is TimeoutKind.RETRANSMIT:
            self._retransmit()
            self._schedule(TimeoutKind.RETRANSMIT, self._state.round)
        else:
            self._rules.on_timeout(self._state, event.kind, event.round)

    def _on_body_ready(self, event: ProposalBodyReady) -> None:
        if (event.height, event.round) != (self._state.height, self._state.round) or self._state.decided:
            return
        if self._awaiting_body_round != event.round or self._state.step is not Step.PROPOSE:
            return
        self._awaiting_body_round = None
        self._propose(event.value, -1)

    def _advance_to(self, height: int) -> None:
        buffered = self._next_height_buffer if height == self._state.height + 1 else []
        self._next_height_buffer = []
        self._peers_ahead = {peer: h for peer, h in self._peers_ahead.items() if h > height}
        self._verified = {seen: h for seen, h in self._verified.items() if h >= height}
        self._reset(height)
        self._start_round(0)
        self._schedule(TimeoutKind.RETRANSMIT, 0)
        for message in buffered:
            self._accept(message)

    # -- effects the rules act through (see consensus.rules) ------------------

    def _decide(self, round: int, message: ProposalMessage) -> bool:
        """Commit `message`'s value if a quorum of its precommits at `round` carry valid cosignatures."""
        signatures = self._cosigned_precommits(round, message.value)
        if len(signatures) < self._quorum:
            return False
        certificate = CommitCertificate(self._state.height, round, message.value.block_hash, tuple(signatures))
        self._actions.append(Commit(self._state.height, message.value, certificate))
        return True

    def _start_round(self, round: int) -> None:
        """StartRound(round) (see consensus.rules)."""
        self._state.round, self._state.step, self._awaiting_body_round = round, Step.PROPOSE, None
        self._schedule(TimeoutKind.PROPOSE, round)
        if self._authorities.proposer(self._state.height, round).name != self._signer.name:
            return
        if self._signed.find(round, "proposal") is not None:
            own = self._own_proposals.get(round)  # absent after a restart: the round just times out
            if own is not None:
                self._broadcast(own)
        elif self._state.valid_value is not None:
            self._propose(self._state.valid_value, self._state.valid_round)
        else:
            self._awaiting_body_round = round
            self._actions.append(BuildProposal(self._state.height, round))

    # -- signing: the only place statements are made ---------------------------

    def _propose(self, value: Value, valid_round: int) -> None:
        round = self._state.round
        if self._signed.find(round, "proposal") is not None:
            return
        unsigned = Proposal(self._state.height, round, valid_round, value.block_hash, self._signer.name, bytes(64))
        signature = self._signer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(self._chain))
        proposal = Proposal(self._state.height, round, valid_round, value.block_hash, self._signer.name, signature)
        message = ProposalMessage(proposal, value)
        self._record_signed(proposal)
        self._own_proposals[round] = message
        self._learn_valid(value)  # our shell built it, or we saw it polka'd as valid
        self._broadcast(message)
        self._accept(message)

    def _sign_vote(self, kind: VoteKind, value: Value | None) -> None:
        """Vote for `value` (None: nil) in the current round, unless this slot is already signed."""
        previous = self._signed.find(self._state.round, kind.value)
        if previous is not None:
            self._broadcast(previous)  # never a second statement; re-send the first
            return
        block_hash = NIL if value is None else value.block_hash
        unsigned = Vote(kind, self._state.height, self._state.round, block_hash, self._signer.name, bytes(64),
                        bytes(64) if kind is VoteKind.PRECOMMIT and value is not None else b"")
        signature = self._signer.sign(crypto.VOTE_CONTEXT, unsigned.signed_bytes(self._chain))
        cosignature = b""
        if kind is VoteKind.PRECOMMIT and value is not None:
            cosignature = self._signer.sign(CHECKPOINT_CONTEXT, value.checkpoint_text.encode())
        vote = Vote(kind, self._state.height, self._state.round, block_hash, self._signer.name, signature, cosignature)
        self._signed = self._signed.add(vote)
        if kind is VoteKind.PRECOMMIT and value is not None:
            polka = self._state.votes.votes_for(self._state.round, VoteKind.PREVOTE, value.block_hash)
            self._signed = self._signed.with_lock(value, tuple(polka))
        self._actions.append(PersistSigned(self._signed))  # before the Broadcast that follows
        self._broadcast(vote)
        self._state.votes.add(vote)

    def _record_signed(self, statement: Signed) -> None:
        self._signed = self._signed.add(statement)
        self._actions.append(PersistSigned(self._signed))  # before the Broadcast that follows

    # -- helpers ----------------------------------------------------------------

    def _cosigned_precommits(self, round: int, value: Value) -> list[CommitSignature]:
        """Precommits for `value` at `round` whose checkpoint cosignature verifies, in authority order."""
        text = value.checkpoint_text.encode()
        signatures = []
        for vote, candidates in self._state.votes.precommits_for(round, value.block_hash):
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
        """Re-send what the others may still need to make progress (on every RETRANSMIT).

        Own statements that can still matter: everything of the last two rounds,
        and every non-nil vote (an old polka is what lets a later proposal citing
        it as valid round be accepted, line 28; an old precommit quorum still
        decides, line 49).

        Others' statements, because Algorithm 1 assumes gossip (whatever one honest
        node received, all eventually receive) and a lossy transport breaks it when
        the author is down: (1) the precommits held for the previous round, every
        vote held for the current round, and the current round's proposal. A node
        is at round r because it held q precommits of r-1 (timeoutPrecommit) or
        f+1 senders at r (line 55), and at its step because of votes of r;
        relaying them hands the others the same justification, so they reach r
        too (seed 31872 stalled: only one node had a crashed node's precommit).
        (2) The polka behind our validValue, others' prevotes included: a node
        that missed some cannot accept a proposal citing it (line 28).
        Bounded: current height, three (round, kind) slots of at most
        n * (CONFLICTING_HASHES_MAX + proposals) votes each (a precommit once per
        candidate cosignature), one proposal, one polka."""
        for statement in self._signed.statements:
            recent = statement.round >= self._state.round - 1
            if isinstance(statement, Vote):
                if recent or statement.block_hash != NIL:
                    self._broadcast(statement)
            elif recent and (own := self._own_proposals.get(statement.round)) is not None:
                self._broadcast(own)
        self._relay_others()
        self._catch_up_hinted = False
        if self._peers_ahead:  # peers moved on a whole period ago: we missed the decision
            self._hint_catch_up()

    def _relay_others(self) -> None:
        """Re-send others' precommits of the previous round, their votes of the current
        round, its proposal, and the polka behind our validValue (see `_retransmit`)."""
        me, round = self._signer.name, self._state.round
        slots = [(round - 1, VoteKind.PRECOMMIT)] if round > 0 else []
        slots += [(round, VoteKind.PREVOTE), (round, VoteKind.PRECOMMIT)]
        for r, kind in slots:
            for vote in self._state.votes.relayable(r, kind):
                if vote.authority != me:
                    self._broadcast(vote)
        proposal = self._state.proposals.get(round)
        if (proposal is not None and proposal.proposal.proposer != me
                and self._state.validity.get(proposal.proposal.block_hash) is not False):
            self._broadcast(proposal)
        if self._state.valid_value is not None and self._state.valid_round != round:
            # Relay the polka behind our validValue, others' prevotes included: a
            # node that missed some of them cannot accept a proposal citing it.
            for vote in self._state.votes.votes_for(self._state.valid_round, VoteKind.PREVOTE, self._state.valid_value.block_hash):
                if vote.authority != me:
                    self._broadcast(vote)

    def _hint_catch_up(self) -> None:
        """Ask the shell to fetch blocks from a peer ahead of us: the one we heard
        from last, and at each later hint of this height the one before it, in turn.

        "Heard from" means signed: a down peer's votes, relayed by the others,
        keep it the most recent one, so asking it alone could stall forever."""
        if not self._catch_up_hinted:
            self._catch_up_hinted = True
            peers = list(self._peers_ahead)
            peer = peers[-1 - self._catch_up_hints % len(peers)]
            self._catch_up_hints += 1
            self._actions.append(CatchUp(peer, self._peers_ahead[peer]))

    def _broadcast(self, message: Message) -> None:
        self._actions.append(Broadcast(message, encode_message(self._chain, message)))

    def _schedule(self, kind: TimeoutKind, round: int) -> None:
        self._actions.append(ScheduleTimeout(self._state.height, round, kind, self._timeouts.duration_ms(kind, round)))

    def _record_evidence(self, first: Signed, second: Signed) -> None:
        key = (second.authority,) + slot(second)[1:]
        if key not in self._evidence_slots:
            self._evidence_slots.add(key)
            self._actions.append(RecordEvidence(Evidence(first, second)))

    def _drop(self, reason: str, sender: str | None = None) -> None:
        self._actions.append(Dropped(reason, sender))

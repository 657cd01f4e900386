"""SignedState: what an authority has signed at its current height.

It is the machine's only durable state. The shell stores the latest one it is
given (one key in LevelDB is enough) and passes it back to the constructor on
restart. It holds every statement the authority signed at `height`: proposal
statements (without bodies) and votes. That suffices for safety because:

- no slot is signed twice: the machine looks up (height, round, kind) here
  before signing and, if taken, re-sends the stored statement instead;
- the lock is recoverable: Algorithm 1 sets lockedValue/lockedRound exactly
  when it signs a non-nil precommit, so the lock is the highest-round non-nil
  precommit in this state (`locked`).

It also keeps, for liveness rather than safety, the locked value's body
(`locked_value`) and the prevotes that justified the lock (`locked_polka`): a
restarted authority that is locked must be able to re-propose that value as
its validValue, and to show the others the polka a proposal citing it needs
(line 28); the authorities whose prevotes formed it may since be down.

A state whose height is at or below the shell's committed height is stale and
may be discarded: the machine never signs below its height.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec

from consensus.messages import NIL, MessageError, Signed, Value, Vote, VoteKind, decode_signed, encode_signed, slot

SIGNED_STATE_VERSION = 1


class SignedStateError(ValueError):
    """Persisted bytes that are not a SignedState (corrupt store)."""


@dataclass(frozen=True, slots=True)
class SignedState:
    height: int
    statements: tuple[Signed, ...] = ()
    locked_value: Value | None = None
    locked_polka: tuple[Vote, ...] = ()

    def __post_init__(self) -> None:
        slots = [slot(s) for s in self.statements]
        if len(set(slots)) != len(slots) or any(s[0] != self.height for s in slots):
            raise SignedStateError("one statement per slot, all at the state's height")
        if self.locked_value is not None and self.locked_value.block_hash != self.locked[1]:
            raise SignedStateError("the locked value is not the one last precommitted")

    def find(self, round: int, kind: str) -> Signed | None:
        """The statement signed for (height, round, kind), kind "proposal", "prevote" or "precommit"."""
        for statement in self.statements:
            if statement.round == round and slot(statement)[2] == kind:
                return statement
        return None

    def add(self, statement: Signed) -> "SignedState":
        """A new state with `statement`; requires its slot to be free.

        After a non-nil precommit, call `with_lock` to record what it locked on."""
        statements = self.statements + (statement,)
        locked_hash = SignedState(self.height, statements).locked[1]
        if self.locked_value is not None and self.locked_value.block_hash == locked_hash:
            return SignedState(self.height, statements, self.locked_value, self.locked_polka)
        return SignedState(self.height, statements)

    def with_lock(self, value: Value, polka: tuple[Vote, ...]) -> "SignedState":
        """This state with the locked value's body and its polka; requires `value` to be the lock."""
        return SignedState(self.height, self.statements, value, polka)

    @property
    def round(self) -> int:
        """The highest round signed in, or 0."""
        return max((s.round for s in self.statements), default=0)

    @property
    def locked(self) -> tuple[int, bytes]:
        """(locked round, locked block hash), or (-1, NIL) when not locked."""
        best = (-1, NIL)
        for statement in self.statements:
            if isinstance(statement, Vote) and statement.kind is VoteKind.PRECOMMIT and statement.block_hash != NIL:
                if statement.round > best[0]:
                    best = (statement.round, statement.block_hash)
        return best

    def encode(self) -> bytes:
        value = self.locked_value
        return codec.encode({
            "height": self.height,
            "locked_polka": [v.to_map() for v in self.locked_polka],
            "locked_value": None if value is None else {"block": value.block_hash, "body": value.body, "checkpoint": value.checkpoint_text},
            "statements": [encode_signed(s) for s in self.statements],
            "v": SIGNED_STATE_VERSION,
        })

    @classmethod
    def decode(cls, data: bytes) -> "SignedState":
        try:
            mapping = codec.decode(data)
            if type(mapping) is not dict or mapping.get("v") != SIGNED_STATE_VERSION:
                raise SignedStateError("unsupported signed state version")
            if set(mapping) != {"height", "locked_polka", "locked_value", "statements", "v"} or type(mapping["statements"]) is not list:
                raise SignedStateError("signed state fields")
            value = mapping["locked_value"]
            if value is not None:
                if type(value) is not dict or set(value) != {"block", "body", "checkpoint"}:
                    raise SignedStateError("locked value fields")
                value = Value(value["block"], value["body"], value["checkpoint"])
            if type(mapping["locked_polka"]) is not list:
                raise SignedStateError("locked polka is a list")
            polka = tuple(Vote.from_map(v) for v in mapping["locked_polka"])
            return cls(mapping["height"], tuple(decode_signed(s) for s in mapping["statements"]), value, polka)
        except (codec.CodecError, MessageError, TypeError) as error:
            raise SignedStateError(f"corrupt signed state: {error}") from None



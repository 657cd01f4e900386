"""Timeout durations: a base plus a per-round increment, so that after the
network stabilises some round is long enough for every honest authority to
hear the proposal and the votes (Algorithm 1's timeoutX(round))."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.events import TimeoutKind


@dataclass(frozen=True, slots=True)
class Timeouts:
    propose_ms: int = 3_000
    propose_per_round_ms: int = 500
    prevote_ms: int = 1_000
    prevote_per_round_ms: int = 500
    precommit_ms: int = 1_000
    precommit_per_round_ms: int = 500
    retransmit_ms: int = 2_000

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative int")
        if self.retransmit_ms == 0:
            raise ValueError("retransmit_ms must be positive")

    def duration_ms(self, kind: TimeoutKind, round: int) -> int:
        """How long the `kind` timeout of `round` lasts; grows linearly with the round."""
        if kind is TimeoutKind.PROPOSE:
            return self.propose_ms + round * self.propose_per_round_ms
        if kind is TimeoutKind.PREVOTE:
            return self.prevote_ms + round * self.prevote_per_round_ms
        if kind is TimeoutKind.PRECOMMIT:
            return self.precommit_ms + round * self.precommit_per_round_ms
        return self.retransmit_ms

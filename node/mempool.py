"""The mempool: verified records waiting for a block, bounded and deduplicated.

Every record in it has passed, once, the checks a block would apply: it
decodes canonically, its signature verifies, and the rules accept it on top
of committed state plus every record already pending. Records leave in
arrival order.

The bound counts credentials, not records: a batch weighs as many as it
issues, so memory stays bounded whatever mix of records arrives.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping

from ledger.genesis import AuthoritySet
from ledger.records import CredentialBatch, SignedRecord
from ledger.state import StateDelta, StateView


def weight(record: SignedRecord) -> int:
    """What a record counts against the bound: a batch its credentials, any other record one."""
    return record.body.count if type(record.body) is CredentialBatch else 1


class MempoolFullError(Exception):
    """No room: the caller should answer 503 and the client retry later."""


class Mempool:
    def __init__(
        self, records_max: int, state: StateView, authorities: AuthoritySet | Callable[[], AuthoritySet]
    ) -> None:
        """`authorities` may be a callable: governance changes the set in force between blocks."""
        self.records_max = records_max
        self._state = state
        self._authorities = authorities if callable(authorities) else (lambda: authorities)
        self._pending: OrderedDict[bytes, SignedRecord] = OrderedDict()
        self._weight = 0
        self._delta = StateDelta(state, self._authorities())
        self._nonempty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, record_hash: bytes) -> bool:
        return record_hash in self._pending

    @property
    def records(self) -> Mapping[bytes, SignedRecord]:
        """Pending records by hash (read-only use: each was decoded and verified once)."""
        return self._pending

    @property
    def pending_state(self) -> StateView:
        """Committed state with every pending record applied."""
        return self._delta

    @property
    def weight(self) -> int:
        """Credentials (and other records) pending: what `records_max` bounds."""
        return self._weight

    @property
    def room(self) -> int:
        return self.records_max - self._weight

    def check(self, record: SignedRecord) -> None:
        """Raise RuleError if `record` cannot join what is pending."""
        self._delta.check(record)

    def add(self, record: SignedRecord) -> None:
        """Admit a verified record. Raises RuleError or MempoolFullError; changes nothing then."""
        if self._weight + weight(record) > self.records_max:
            raise MempoolFullError()
        self._delta.apply(record, leaf_index=-1)
        self._pending[record.hash] = record
        self._weight += weight(record)
        self._nonempty.set()

    def admit(self, records: list[SignedRecord], scratch: StateDelta) -> None:
        """Admit verified records whose effects `scratch` (built on `pending_state`) holds.

        Saves judging each record twice. Precondition: nothing was added
        since `scratch` was built, and the caller checked `room`.
        """
        added = sum(map(weight, records))
        if self._weight + added > self.records_max:
            raise MempoolFullError()
        self._delta.absorb(scratch)
        for record in records:
            self._pending[record.hash] = record
        self._weight += added
        if records:
            self._nonempty.set()

    def take(self, count: int) -> list[SignedRecord]:
        """Remove and return up to `count` oldest records."""
        taken = []
        pending = self._pending
        while pending and len(taken) < count:
            record = pending.popitem(last=False)[1]
            self._weight -= weight(record)
            taken.append(record)
        if not pending:
            self._nonempty.clear()
        return taken

    def peek(self, count: int) -> list[SignedRecord]:
        """Up to `count` oldest records, left in place (a proposal may fail)."""
        taken = []
        for record in self._pending.values():
            if len(taken) >= count:
                break
            taken.append(record)
        return taken

    def remove(self, record_hashes: list[bytes]) -> None:
        """Forget records (committed, or refused by a block); call `rebase` after."""
        pending = self._pending
        for record_hash in record_hashes:
            record = pending.pop(record_hash, None)
            if record is not None:
                self._weight -= weight(record)
        if not pending:
            self._nonempty.clear()

    def after_commit(self, only_pending_committed: bool) -> list[SignedRecord]:
        """Bring pending effects up to date after a block; returns records now refused.

        A block made only of records that were pending here changes nothing
        the pending effects did not already assume, so the full recomputation
        (O(pending)) is needed only when the block held records from
        elsewhere, or now and then to drop entries of committed records.
        """
        if only_pending_committed and len(self._delta) <= 2 * self._weight + 4096:
            return []
        return self.rebase()

    def rebase(self) -> list[SignedRecord]:
        """Recompute pending effects from committed state; drop and return records now refused."""
        self._delta = StateDelta(self._state, self._authorities())
        dropped = []
        for record_hash, record in list(self._pending.items()):
            try:
                self._delta.apply(record, leaf_index=-1)
            except ValueError:
                del self._pending[record_hash]
                self._weight -= weight(record)
                dropped.append(record)
        if not self._pending:
            self._nonempty.clear()
        return dropped

    async def wait_nonempty(self) -> None:
        await self._nonempty.wait()

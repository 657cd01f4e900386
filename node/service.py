"""The node's ledger service: admission, commit waiters, and the chain.

It sits between the HTTP handlers and the pure ledger. Handlers hand it raw
record bytes; it decodes them, refuses what the rules refuse without touching
anything, verifies signatures on worker threads (PyNaCl releases the GIL, so
verification uses every core), admits the rest to the mempool and lets callers
wait until their records are committed.

All chain and mempool mutation happens on the event loop thread; only pure
signature checks run elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from ledger import crypto
from ledger.block import BlockHeader
from ledger.chain import Chain, RecordLocation, refused_again_by_rules
from ledger.records import RecordError, SignedRecord
from ledger.state import RuleError, StateDelta
from node.mempool import Mempool, weight
from node.metrics import Metrics

log = logging.getLogger("lacre.node")

VERIFY_CHUNK = 256
# Rules whose breach means "you may not", as opposed to "this conflicts".
FORBIDDEN_RULES = frozenset({"issuer-registration-by-authority", "issuer-registered", "revocation-by-issuer"})


class RecordState(enum.StrEnum):
    PENDING = "pending"
    COMMITTED = "committed"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why record `index` of a submission was refused."""

    index: int
    error: str
    detail: str
    status: int


class SubmissionRefused(Exception):
    def __init__(self, refusals: list[Refusal]) -> None:
        super().__init__(f"{len(refusals)} records refused")
        self.refusals = refusals


class Overloaded(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Admitted:
    record_hash: bytes
    state: RecordState
    location: RecordLocation | None = None


class _Waiter:
    """One `wait_committed` call: its records' locations, filled in as they commit, and a
    future done once none is left."""

    __slots__ = ("locations", "done", "left")

    def __init__(self, locations: list[RecordLocation | None], done: asyncio.Future) -> None:
        self.locations = locations
        self.done = done
        self.left = 0

    def settle(self, index: int, location: RecordLocation | None) -> None:
        """Record `index` committed at `location`, or (None) will not be."""
        self.locations[index] = location
        self.left -= 1
        if not self.left and not self.done.done():
            self.done.set_result(None)


def _verify_chunk(records: Sequence[SignedRecord]) -> list[int]:
    """Indexes (within the chunk) of records whose signature fails."""
    bad = []
    for i, record in enumerate(records):
        try:
            record.verify()
        except crypto.SignatureError:
            bad.append(i)
    return bad


class LedgerService:
    def __init__(self, chain: Chain, mempool: Mempool, metrics: Metrics, verify_threads: int) -> None:
        self.chain = chain
        self.mempool = mempool
        self.metrics = metrics
        self._verifier = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, verify_threads), thread_name_prefix="verify"
        )
        self._waiters: dict[bytes, list[tuple[_Waiter, int]]] = {}
        # Called with records newly admitted from clients (the consensus
        # driver gossips them on to the other authorities).
        self.on_admitted: Callable[[list[SignedRecord]], None] | None = None
        # Hashes of records decoded and being verified or judged, not yet in
        # the mempool or refused. A record arriving again meanwhile (gossip
        # racing a fetch) is skipped, and the consensus driver waits for it
        # rather than fetching it: each record is verified once per node.
        self.inflight: set[bytes] = set()
        self._settled: asyncio.Future | None = None

    def settled(self) -> asyncio.Future:
        """A future done when the next submission or gossip batch has been admitted or refused."""
        if self._settled is None or self._settled.done():
            self._settled = asyncio.get_running_loop().create_future()
        return self._settled

    def _settle(self, hashes: Sequence[bytes]) -> None:
        self.inflight.difference_update(hashes)
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def close(self) -> None:
        self._verifier.shutdown(wait=False, cancel_futures=True)
        for waiting in self._waiters.values():
            for waiter, _ in waiting:
                waiter.done.cancel()
        self._waiters.clear()

    async def submit(self, encoded_records: Sequence[bytes]) -> list[Admitted]:
        """Admit a submission all or nothing.

        Records already pending or committed are reported as such
        (resubmission is idempotent). If any other record is malformed,
        badly signed or refused by the rules, nothing is admitted and
        SubmissionRefused lists every refusal. Overloaded if the mempool has
        no room for the whole submission.
        """
        refusals: list[Refusal] = []
        fresh: list[tuple[int, SignedRecord]] = []
        results: list[Admitted | None] = [None] * len(encoded_records)
        seen: set[bytes] = set()
        for index, data in enumerate(encoded_records):
            try:
                record = SignedRecord.decode_whole(data)
            except RecordError as error:
                refusals.append(Refusal(index, "malformed-record", str(error), 400))
                continue
            record_hash = record.hash
            # An issuance on the ledger already is refused by the rules (its id
            # is taken): the record index is read only then, in _submit_fresh.
            location = None if refused_again_by_rules(record) else self.chain.locate(record_hash)
            if location is not None:
                results[index] = Admitted(record_hash, RecordState.COMMITTED, location)
            elif record_hash in self.mempool or record_hash in seen:
                results[index] = Admitted(record_hash, RecordState.PENDING)
            else:
                seen.add(record_hash)
                fresh.append((index, record))
        if sum(weight(record) for _, record in fresh) > self.mempool.room:
            # A resubmission of committed issuances takes no room: report them.
            fresh = [(index, record) for index, record in fresh if not self._committed_already(index, record, results)]
            if sum(weight(record) for _, record in fresh) > self.mempool.room:
                self.metrics.overloaded.inc()
                raise Overloaded()
        hashes = [record.hash for _, record in fresh]
        self.inflight.update(hashes)
        try:
            return await self._submit_fresh(fresh, results, refusals)
        finally:
            self._settle(hashes)

    async def _submit_fresh(
        self, fresh: list[tuple[int, SignedRecord]], results: list[Admitted | None], refusals: list[Refusal]
    ) -> list[Admitted]:
        # Signatures first, on worker threads: the costly check, and one no
        # later state change can alter.
        bad = await self._verify([record for _, record in fresh])
        for position in bad:
            refusals.append(Refusal(fresh[position][0], "bad-signature", "signature does not verify", 400))
        # Rules next, on one scratch delta, so records of one submission may
        # build on each other (register an issuer, then issue).
        scratch = StateDelta(self.mempool.pending_state, self.chain.authority_set)
        skip = set(bad)
        for position, (index, record) in enumerate(fresh):
            if position in skip:
                continue
            if record.hash in self.mempool:  # a peer's gossip admitted it during the await
                skip.add(position)
                continue
            try:
                scratch.apply(record, leaf_index=-1)
            except RuleError as error:
                if self._committed_already(index, record, results):
                    skip.add(position)
                    continue
                status = 403 if error.rule in FORBIDDEN_RULES else 409
                refusals.append(Refusal(index, error.rule, error.detail, status))
        if refusals:
            refusals.sort(key=lambda refusal: refusal.index)
            for refusal in refusals:
                self.metrics.records_refused.labels(refusal.error).inc()
            raise SubmissionRefused(refusals)
        # No await since `scratch` was built: it is still on top of pending.
        admitted = [record for position, (_, record) in enumerate(fresh) if position not in skip]
        self.mempool.admit(admitted, scratch)
        for index, record in fresh:
            if results[index] is None:
                results[index] = Admitted(record.hash, RecordState.PENDING)
        self.metrics.records_admitted.inc(len(admitted))
        self.metrics.mempool_depth.set(len(self.mempool))
        if self.on_admitted is not None and admitted:
            self.on_admitted(admitted)
        return [result for result in results if result is not None]

    def _committed_already(self, index: int, record: SignedRecord, results: list[Admitted | None]) -> bool:
        """If `record` is on the ledger, report it so in `results[index]`."""
        location = self.chain.locate(record.hash) if refused_again_by_rules(record) else None
        if location is None:
            return False
        results[index] = Admitted(record.hash, RecordState.COMMITTED, location)
        return True

    async def admit_each(self, encoded_records: Sequence[bytes]) -> list[SignedRecord]:
        """Admit what is valid of records gossiped by a peer, one by one.

        Returns every record that decoded and whose signature verifies,
        admitted or not (the consensus driver may need one for a proposal
        even when the mempool refuses it). Unlike a client's submission, one
        bad record does not spoil the rest, and a full mempool drops rather
        than refuses: the proposer that has them will still propose them.
        Records already pending, committed or being admitted are not
        verified again.
        """
        fresh: list[SignedRecord] = []
        seen: set[bytes] = set()
        pending, inflight = self.mempool.records, self.inflight
        for data in encoded_records:
            try:
                record = SignedRecord.decode_whole(data)
            except RecordError:
                continue
            record_hash = record.hash
            if record_hash in seen or record_hash in pending or record_hash in inflight:
                continue
            seen.add(record_hash)
            # An issuance on the ledger already is refused by the rules below: no index read.
            if refused_again_by_rules(record) or self.chain.locate(record_hash) is None:
                fresh.append(record)
        hashes = [record.hash for record in fresh]
        inflight.update(hashes)
        try:
            return await self._admit_fresh(fresh)
        finally:
            self._settle(hashes)

    async def _admit_fresh(self, fresh: list[SignedRecord]) -> list[SignedRecord]:
        bad = set(await self._verify(fresh))
        verified = [record for position, record in enumerate(fresh) if position not in bad]
        admitted = []
        pending = self.mempool.records
        scratch = StateDelta(self.mempool.pending_state, self.chain.authority_set)
        for record in verified:
            if record.hash in pending:
                continue
            try:
                scratch.apply(record, leaf_index=-1)
            except RuleError:
                continue
            admitted.append(record)
        if sum(map(weight, admitted)) > self.mempool.room:
            self.metrics.overloaded.inc()
        else:
            self.mempool.admit(admitted, scratch)
            self.metrics.records_admitted.inc(len(admitted))
            self.metrics.mempool_depth.set(len(self.mempool))
        return verified

    async def _verify(self, records: list[SignedRecord]) -> list[int]:
        if not records:
            return []
        if len(records) <= 8:
            return _verify_chunk(records)
        loop = asyncio.get_running_loop()
        chunks = [records[i : i + VERIFY_CHUNK] for i in range(0, len(records), VERIFY_CHUNK)]
        outcomes = await asyncio.gather(
            *(loop.run_in_executor(self._verifier, _verify_chunk, chunk) for chunk in chunks)
        )
        return [c * VERIFY_CHUNK + i for c, bad in enumerate(outcomes) for i in bad]

    async def wait_committed(self, admitted: Sequence[Admitted], timeout_s: float) -> list[RecordLocation | None]:
        """Locations of the submitted records once all are committed; None for any still pending at timeout.

        Pending records learn their location from the commit that takes them
        (`committed`), not from a store read each; the call waits on one
        future, not one a record.
        """
        locations = [entry.location for entry in admitted]
        waiter = _Waiter(locations, asyncio.get_running_loop().create_future())
        for index, entry in enumerate(admitted):
            if entry.location is None:
                self._waiters.setdefault(entry.record_hash, []).append((waiter, index))
                waiter.left += 1
        if waiter.left:
            try:
                await asyncio.wait([waiter.done], timeout=timeout_s)
            finally:  # timed out, or the caller went away
                waiter.done.cancel()
                for index, entry in enumerate(admitted):
                    if locations[index] is None:
                        self._forget(entry.record_hash, waiter)
            for index, entry in enumerate(admitted):
                if locations[index] is None:
                    # Not told (timed out, or dropped from the mempool): ask the chain.
                    locations[index] = self.chain.locate(entry.record_hash)
        return locations

    def _forget(self, record_hash: bytes, waiter: "_Waiter") -> None:
        waiting = self._waiters.get(record_hash)
        if waiting is not None:
            waiting[:] = [pair for pair in waiting if pair[0] is not waiter]
            if not waiting:
                del self._waiters[record_hash]

    def committed(self, header: BlockHeader, records: Sequence[SignedRecord], only_pending: bool = False) -> None:
        """Wake waiters for a newly committed block's records (all of them) and refresh the mempool.

        Waiters get each record's location. `only_pending`: every record of
        the block had been pending here.
        """
        first = header.log_size - len(records)
        waiters = self._waiters
        if waiters:
            for index, record in enumerate(records):
                waiting = waiters.pop(record.hash, None)
                if waiting:
                    location = RecordLocation(first + index, header.height)
                    for waiter, position in waiting:
                        waiter.settle(position, location)
        dropped = self.mempool.after_commit(only_pending)
        for record in dropped:
            log.warning("dropped pending record %s: no longer valid", record.hash.hex())
            for waiter, position in self._waiters.pop(record.hash, ()):
                waiter.settle(position, None)
        self.metrics.mempool_depth.set(len(self.mempool))

    def dropped(self, records: Sequence[SignedRecord]) -> None:
        """Wake waiters of records a block refused; they stay uncommitted."""
        for record in records:
            for waiter, position in self._waiters.pop(record.hash, ()):
                waiter.settle(position, None)

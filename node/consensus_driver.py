"""The shell around `consensus.machine.Machine`: persistence, timers, gossip, blocks.

One task steps the machine, one event at a time, from a queue; everything
else (peer frames, timers, finished validations, catch-up) only posts events.
Actions are performed in list order, and a `PersistSigned` is written to
LevelDB with sync before the next action runs, so nothing the authority
signed can leave the process before it is on disk.

Block bodies travel inside proposals as the canonical map
`{"header": ..., "records": [...]}`; a proposal is valid when its body decodes,
the header hashes to the proposed hash, the checkpoint text is the header's,
and `Chain.validate` accepts it. Record signatures already checked by the
mempool are not checked again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp

from consensus import actions as act
from consensus import events as ev
from consensus.machine import Machine
from consensus.messages import Value
from consensus.signed_state import SignedState, SignedStateError
from ledger import codec, crypto
from ledger.block import BlockError, BlockHeader
from ledger.chain import Chain
from ledger.leveldb_store import LevelDBStore
from ledger.merkle import leaf_hash
from ledger.records import RecordError, SignedRecord
from ledger.state import StateDelta
from ledger.store import WriteBatch
from node.peers import Peers
from node.service import LedgerService
from node.sync import SyncError, catch_up

log = logging.getLogger("lacre.consensus")

KEY_SIGNED = b"c/signed"
EVIDENCE_PREFIX = b"e/"
RECORDS_GOSSIP_MAX = 2_000


def encode_body(header: BlockHeader, records: list[bytes]) -> bytes:
    return codec.encode({"header": header.to_map(), "records": records})


def decode_body(body: bytes) -> tuple[BlockHeader, list[bytes]]:
    mapping = codec.decode(body)
    if type(mapping) is not dict or set(mapping) != {"header", "records"} or type(mapping["records"]) is not list:
        raise BlockError("encoding", "proposal body fields")
    return BlockHeader.from_map(mapping["header"]), mapping["records"]


class ConsensusDriver:
    def __init__(
        self,
        chain: Chain,
        service: LedgerService,
        key: crypto.KeyPair,
        urls: dict[str, str],
        state_store: LevelDBStore,
        block_delay_ms: int,
        idle_block_ms: int = 1_000,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.chain = chain
        self.service = service
        self.key = key
        self.urls = urls
        self.state_store = state_store
        self.block_delay_s = block_delay_ms / 1000
        self.idle_block_s = idle_block_ms / 1000
        self.clock_ms = clock_ms
        self.events: asyncio.Queue = asyncio.Queue()
        self.peers = Peers(key.name, key, chain.authority_set, urls, self._on_frame)
        self.machine: Machine | None = None
        self.evidence_count = 0
        self._validated: dict[bytes, tuple[BlockHeader, tuple[SignedRecord, ...], StateDelta]] = {}
        self._tasks: list[asyncio.Task] = []
        self._syncing: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="consensus")
        self._gossip: list[bytes] = []
        self._gossip_scheduled = False

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        signed = None
        data = self.state_store.get(KEY_SIGNED)
        if data is not None:
            try:
                signed = SignedState.decode(data)
            except SignedStateError:
                # Refuse to run rather than risk signing twice.
                raise RuntimeError("consensus state is corrupt; refusing to sign") from None
        self.machine = Machine(
            authority_set=self.chain.authority_set, chain_id=self.chain.chain_id, signer=self.key,
            height=self.chain.height + 1, signed=signed,
        )
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        await self.peers.start()
        self.service.on_admitted = self._gossip_records
        self._tasks.append(asyncio.create_task(self._run(), name="consensus"))
        self.post(ev.Start())

    async def close(self) -> None:
        for task in self._tasks + ([self._syncing] if self._syncing else []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.peers.close()
        if self._session:
            await self._session.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def post(self, event: ev.Event, relay_from: str | None = None) -> None:
        """Queue an event; `relay_from` names the peer a received message came from."""
        self.events.put_nowait((event, relay_from))

    # -- the stepping task ----------------------------------------------------

    async def _run(self) -> None:
        while True:
            event, relay_from = await self.events.get()
            try:
                actions = self.machine.step(event)  # type: ignore[union-attr]
                self._perform(actions, event, relay_from)
            except Exception:
                log.exception("consensus step failed on %s", type(event).__name__)

    def _perform(self, actions: list[act.Action], event: ev.Event, relay_from: str | None) -> None:
        dropped = False
        for action in actions:
            if isinstance(action, act.PersistSigned):
                batch = WriteBatch()
                batch.put(KEY_SIGNED, action.state.encode())
                self.state_store.write(batch, sync=True)
            elif isinstance(action, act.Broadcast):
                self.peers.send("consensus", action.data)
            elif isinstance(action, act.ScheduleTimeout):
                timeout = ev.TimeoutFired(action.height, action.round, action.kind)
                asyncio.get_running_loop().call_later(action.duration_ms / 1000, self.post, timeout)
            elif isinstance(action, act.BuildProposal):
                self._tasks.append(asyncio.create_task(self._build(action.height, action.round)))
            elif isinstance(action, act.ValidateProposal):
                self._validate(action)
            elif isinstance(action, act.Commit):
                self._commit(action)
            elif isinstance(action, act.RecordEvidence):
                self._record_evidence(action)
            elif isinstance(action, act.CatchUp):
                self._catch_up(action.peer)
            elif isinstance(action, act.Dropped):
                dropped = True
                log.debug("dropped message from %s: %s", action.sender, action.reason)
        if relay_from is not None and not dropped:
            # New and valid: relay once, so one broken link cannot starve a quorum.
            self.peers.send("consensus", event.data, exclude=relay_from)  # type: ignore[union-attr]
        self._tasks = [t for t in self._tasks if not t.done()]

    # -- frames from peers ----------------------------------------------------

    def _on_frame(self, sender: str, kind: str, payload: bytes) -> None:
        if kind == "consensus":
            self.post(ev.MessageReceived(payload), relay_from=sender)
        elif kind == "records":
            # Kept in _tasks: the loop holds only weak references to tasks.
            self._tasks.append(asyncio.create_task(self._admit_gossip(payload)))

    async def _admit_gossip(self, payload: bytes) -> None:
        try:
            records = codec.decode(payload)
            if type(records) is not list or not all(type(r) is bytes for r in records):
                return
        except codec.CodecError:
            return
        await self.service.admit_each(records)

    def _gossip_records(self, records: list[SignedRecord]) -> None:
        """Send newly admitted records on to the other authorities, in small batches."""
        self._gossip.extend(r.encoded for r in records)
        if not self._gossip_scheduled:
            self._gossip_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_gossip)

    def _flush_gossip(self) -> None:
        self._gossip_scheduled = False
        pending, self._gossip = self._gossip, []
        for start in range(0, len(pending), RECORDS_GOSSIP_MAX):
            self.peers.send("records", codec.encode(pending[start : start + RECORDS_GOSSIP_MAX]))

    # -- proposals -----------------------------------------------------------

    async def _build(self, height: int, round: int) -> None:
        mempool = self.service.mempool
        if not len(mempool):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(mempool.wait_nonempty(), self.idle_block_s)
        if len(mempool) and self.block_delay_s:
            await asyncio.sleep(self.block_delay_s)
        if self.chain.height + 1 != height:
            return
        records = mempool.peek(self.chain.genesis.block_records_max)
        proposed = self.chain.propose(records, self.key.name, round, self.clock_ms())
        if proposed.rejected:
            refused = [record for record, _ in proposed.rejected]
            mempool.remove([r.hash for r in refused])
            mempool.rebase()  # their assumed effects leave with them
            self.service.dropped(refused)
        header = proposed.header
        self._validated[header.hash] = (header, proposed.records, proposed.delta)
        value = Value(header.hash, encode_body(header, [r.encoded for r in proposed.records]),
                      header.checkpoint(self.chain.origin).text())
        self.post(ev.ProposalBodyReady(height, round, value))

    def _validate(self, action: act.ValidateProposal) -> None:
        value = action.message.value
        height = action.message.height
        self._tasks.append(asyncio.create_task(self._validate_async(height, value)))

    async def _validate_async(self, height: int, value: Value) -> None:
        valid = False
        try:
            header, encoded = decode_body(value.body)
            if header.hash != value.block_hash or header.checkpoint(self.chain.origin).text() != value.checkpoint_text:
                raise BlockError("proposal-binding", "body does not match the proposed hash")
            # Signatures of records our mempool has not seen, off the loop.
            pending = self.service.mempool.records
            unseen = [data for data in encoded if leaf_hash(data) not in pending]
            if unseen:
                await asyncio.get_running_loop().run_in_executor(self._executor, _verify_records, unseen)
            if self.chain.height + 1 == height:
                # Mempool records were decoded and verified on admission.
                records, delta = self.chain.validate(
                    header, encoded, verify_signatures=False, known=self.service.mempool.records
                )
                self._validated[header.hash] = (header, records, delta)
                valid = True
        except (BlockError, RecordError, crypto.SignatureError, codec.CodecError) as error:
            log.warning("proposal %s at height %d is invalid: %s", value.block_hash.hex()[:16], height, error)
        self.post(ev.ProposalValidated(height, value.block_hash, valid))

    # -- commits ----------------------------------------------------------------

    def _commit(self, action: act.Commit) -> None:
        if action.height != self.chain.height + 1:
            if action.height <= self.chain.height:
                self.post(ev.BlockApplied(action.height))
            return
        cached = self._validated.get(action.value.block_hash)
        if cached is None or cached[0].height != action.height or cached[0].previous_hash != self.chain.head_hash:
            header, encoded = decode_body(action.value.body)
            records, delta = self.chain.validate(header, encoded)
        else:
            header, records, delta = cached
        started = time.perf_counter()
        self.chain.commit(header, records, action.certificate, delta)
        self._validated.clear()
        self._applied(header, records, started)
        self.post(ev.BlockApplied(action.height))

    def _applied(
        self, header: BlockHeader, records: Sequence[SignedRecord], started: float | None = None
    ) -> None:
        mempool = self.service.mempool
        hashes = [r.hash for r in records]
        only_pending = all(h in mempool for h in hashes)
        mempool.remove(hashes)
        self.service.committed(records, only_pending=only_pending)
        metrics = self.service.metrics
        metrics.blocks_committed.inc()
        metrics.records_committed.inc(len(records))
        metrics.height.set(header.height)
        metrics.tree_size.set(header.log_size)
        if started is not None:
            metrics.commit_seconds.observe(time.perf_counter() - started)

    def _catch_up(self, peer: str) -> None:
        if self._syncing is not None and not self._syncing.done():
            return
        url = self.urls.get(peer)
        if url is None or peer in self.peers.blocked:
            return
        self._syncing = asyncio.create_task(self._sync_from(peer, url))

    async def _sync_from(self, peer: str, url: str) -> None:
        def applied(header: BlockHeader, records: tuple[SignedRecord, ...]) -> None:
            self._validated.clear()
            self._applied(header, records)
            self.post(ev.BlockApplied(header.height))

        try:
            count = await catch_up(self.chain, url, self._session, self._executor, applied)  # type: ignore[arg-type]
            if count:
                log.info("caught up %d blocks from %s; height %d", count, peer, self.chain.height)
        except SyncError as error:
            log.warning("catch-up from %s failed: %s", peer, error)

    # -- evidence ---------------------------------------------------------------

    def _record_evidence(self, action: act.RecordEvidence) -> None:
        evidence = action.evidence
        data = evidence.encode()
        batch = WriteBatch()
        batch.put(EVIDENCE_PREFIX + crypto.sha256(data), data)
        self.state_store.write(batch, sync=True)
        self.evidence_count += 1
        log.error(
            "EVIDENCE: authority %s signed conflicting statements at height %d round %d",
            evidence.authority, evidence.height, evidence.round,
        )

    def evidence(self) -> list[bytes]:
        return [value for _, value in self.state_store.iterate(EVIDENCE_PREFIX)]


def _verify_records(encoded: list[bytes]) -> None:
    for data in encoded:
        SignedRecord.decode(data).verify()

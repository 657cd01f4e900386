"""The shell around `consensus.machine.Machine`: persistence, timers, gossip, blocks.

One task steps the machine, one event at a time, from a queue; everything
else (peer frames, timers, finished validations, catch-up) only posts events.
Actions are performed in list order, and a `PersistSigned` is written to
LevelDB with sync before the next action runs, so nothing the authority
signed can leave the process before it is on disk.

Block bodies travel inside proposals in compact form, the header and its
records' hashes (`node.proposal_body`). A receiver takes each record
from its mempool, waits for one still being admitted, and asks the proposer
(then every peer, `kind = "want"`) for the others, which come back as ordinary
`records` frames and are verified once like any gossip. A proposal is valid
when its body decodes, the header hashes to the proposed hash, the checkpoint
text is the header's, and `Chain.validate` accepts the resolved records (the
header's log root binds them to the hashes). Record signatures already checked
on admission are not checked again.

The locked value's records are kept durable beside the signed state
(`KEY_LOCKED_RECORDS`, written once per locked value in the synced write of the
precommit that locks it): a cluster that restarts while locked has no mempools
left, and must still be able to re-propose and validate that value.

Epochs. The authority set changes by governance: a `consortium.change` in
block h makes a new epoch, in force from h + 1. The machine is built for one
set, so before the stepping task steps anything after the chain entered a new
epoch (a commit, or catch-up, appended to `chain.history`), it drops the
machine and builds one for the new set at the chain's next height, from the
signed state on disk: a height is signed at by one machine only (the old one
never passed h, the new one starts at h + 1), and a restart at h + 1 restores
what the new one signed. Messages for h + 1 that reached the old machine
(it buffers them) are kept here too and stepped into the new one, which
checks them again against the new set; otherwise the first height of every
epoch would wait for retransmissions. The peer links follow the same switch
(`Peers.update`): frames are checked against the new set, added authorities
are dialed at the URL of their change record, removed ones dropped.

Following. A node whose key is not in the set in force has no machine: it
signs nothing, fetches committed blocks from the authorities (every
FOLLOW_POLL_S, and at once when an authority's message shows a later height),
and forwards records submitted to it to an authority (`node.forwarder`).
Each block it applies is checked as catch-up always checks (`Chain.validate`,
and `Chain.commit` verifies the certificate against the set in force at that
height), and the first block that makes it an authority switches it to
signing; the one that removes it switches it back. An authority whose chain
has not moved for STALL_CATCH_UP_S fetches blocks the same way: a removed
authority that missed the block removing it hears from no one any more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import aiohttp

from consensus import actions as act
from consensus import events as ev
from consensus.machine import Machine
from consensus.messages import MessageError, Value, decode_message
from consensus.signed_state import SignedState, SignedStateError
from ledger import codec, crypto
from ledger.block import BlockError, BlockHeader
from ledger.chain import Chain
from ledger.leveldb_store import LevelDBStore
from ledger.records import RecordError, SignedRecord
from ledger.state import StateDelta
from ledger.store import WriteBatch
from node.forwarder import Forwarder
from node.peers import Peers
from node.proposal_body import Body, decode_body, encode_body
from node.service import LedgerService
from node.sync import SyncError, catch_up

log = logging.getLogger("lacre.consensus")

KEY_SIGNED = b"c/signed"
KEY_LOCKED_RECORDS = b"c/locked-records"
EVIDENCE_PREFIX = b"e/"
RECORDS_GOSSIP_MAX = 2_000
GOSSIP_FRAME_BYTES = 8 << 20
"""A gossip frame's records, in bytes: a few cohort batches fill one, far below peers.FRAME_BYTES_MAX."""


def gossip_frames(encoded: list[bytes]) -> Iterator[bytes]:
    """`encoded` records as gossip frames of at most RECORDS_GOSSIP_MAX records and about GOSSIP_FRAME_BYTES."""
    frame: list[bytes] = []
    size = 0
    for data in encoded:
        if frame and (len(frame) >= RECORDS_GOSSIP_MAX or size + len(data) > GOSSIP_FRAME_BYTES):
            yield codec.encode(frame)
            frame, size = [], 0
        frame.append(data)
        size += len(data)
    if frame:
        yield codec.encode(frame)
# A proposal's records that are neither pending nor being admitted are asked
# from the proposer at once, then from every peer each period until they come.
FETCH_RETRY_S = 0.5
# How far ahead of this node's clock a proposed block's time may be. A
# proposer stamps its own clock (never below the previous block's); without a
# bound, one Byzantine proposer could push `lacre-time` into the future and
# every later block (times never decrease) with it. Generous, so that honest
# clocks a few seconds apart never refuse each other.
TIMESTAMP_AHEAD_MAX_MS = 10_000
# A follower asks an authority for new blocks this often.
FOLLOW_POLL_S = 0.25
# An authority whose chain has not moved for this long fetches blocks itself
# (blocks come at least every idle_block_ms while the consortium is live).
STALL_CATCH_UP_S = 3.0
# A follower forwards again the records still pending here after this long.
REFORWARD_S = 3.0
# Messages received at the current height, kept undecoded: if the next height
# opens a new epoch, its machine needs those for it (from authorities the old
# machine did not know, too). As many as the machine itself buffers.
KEPT_MESSAGES_MAX = 4_096


class ConsensusDriver:
    """Runs consensus for this node's key while it is an authority of the epoch in force, follows otherwise.

    `urls` are node URLs by name from the configuration (the genesis
    authorities'); an authority added later is found at its change record's
    URL.
    """

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
        self._configured_urls = dict(urls)
        self.urls = self._known_urls()
        self.state_store = state_store
        self.block_delay_s = block_delay_ms / 1000
        self.idle_block_s = idle_block_ms / 1000
        self.clock_ms = clock_ms
        self.events: asyncio.Queue = asyncio.Queue()
        self.peers = Peers(key.name, key, chain.authority_set, {}, self._on_frame)
        self.peers.on_link_up = self._send_pending
        self.forwarder = Forwarder(self._authority_urls)
        # None while following: the node signs nothing.
        self.machine: Machine | None = None
        self._epoch: int | None = None  # the epoch `machine` (or following) was set up for
        self._sync_target = 0  # rotates the authority a follower fetches blocks from
        # Messages for machine.height + 1 as (height, event, sender), for `_enter_epoch`.
        self._kept: list[tuple[ev.MessageReceived, str | None]] = []
        self.evidence_count = 0
        self._validated: dict[bytes, tuple[BlockHeader, tuple[SignedRecord, ...], StateDelta]] = {}
        # Tasks the driver started, until they end (the loop holds only weak
        # references to tasks): a set that each task leaves when done, since
        # thousands of gossip admissions may run at once under load.
        self._tasks: set[asyncio.Task] = set()
        self._syncing: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="consensus")
        self._gossip: list[bytes] = []
        self._gossip_scheduled = False
        # Records of the current height held outside the mempool: fetched for a
        # proposal although the mempool refused them, or the locked value's
        # records read back after a restart. Cleared when the height advances.
        self._held: dict[bytes, SignedRecord] = {}
        self._wants: list[set[bytes]] = []  # hashes each running resolution still misses
        self._locked_block: bytes | None = None  # whose records KEY_LOCKED_RECORDS holds

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start signing (an authority of the epoch in force) or following.

        Raises RuntimeError if the signed state on disk is corrupt: better not
        to run than to risk signing twice."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.forwarder.start(self._session)
        self.service.on_admitted = self._gossip_records
        self._enter_epoch()
        await self.peers.start()
        self._spawn(self._run(), name="consensus")
        self._spawn(self._watch(), name="follow")

    def _spawn(self, coroutine, name: str | None = None) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks) + ([self._syncing] if self._syncing else []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.forwarder.close()
        await self.peers.close()
        if self._session:
            await self._session.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def post(self, event: ev.Event, relay_from: str | None = None) -> None:
        """Queue an event; `relay_from` names the peer a received message came from."""
        self.events.put_nowait((event, relay_from))

    @property
    def following(self) -> bool:
        """True while this node is not an authority of the epoch in force."""
        return self.machine is None

    # -- epochs -----------------------------------------------------------------

    def _known_urls(self) -> dict[str, str]:
        """Node URLs by name: the configuration's, overridden by those of change records."""
        urls = dict(self._configured_urls)
        for entry in self.chain.history.epochs:
            urls.update((a.name, url) for a, url in zip(entry.authorities, entry.urls) if url)
        return urls

    def _authority_urls(self) -> list[str]:
        """URLs of the other authorities in force, in set order, but those cut off for tests."""
        return [
            self.urls[a.name] for a in self.chain.authority_set.authorities
            if a.name != self.key.name and a.name in self.urls and a.name not in self.peers.blocked
        ]

    def _enter_epoch(self) -> None:
        """Set up for the epoch in force at the next height: a machine for its set, or following.

        Runs only between steps (never inside `_perform`), so no statement
        is signed by the old machine after the epoch changed.
        """
        entry = self.chain.history.current
        authorities = entry.authority_set
        was_following = self._epoch is None or self.machine is None
        self._epoch = entry.epoch
        self.machine = None  # until the new one is built: a failure below leaves the node following
        self.urls = self._known_urls()
        me = authorities.by_key(self.key.public_key)
        if me is not None and me.name != self.key.name:
            log.error("key %s is authority %r, not %r; following", self.key.public_key.hex()[:16], me.name, self.key.name)
            me = None
        if me is None:
            self.peers.update(authorities, {})
            log.info("epoch %d (from height %d): %s is not an authority; following",
                     entry.epoch, entry.from_height, self.key.name)
            if not was_following:
                # Pending records were gossiped as an authority; hand them on once more.
                self.forwarder.forward([r.encoded for r in self.service.mempool.records.values()])
            return
        missing = [a.name for a in authorities.authorities if a.name != me.name and a.name not in self.urls]
        if missing:
            log.warning("no URL for authorities %s: they must dial us", ", ".join(missing))
        self.peers.update(authorities, {
            a.name: self.urls[a.name] for a in authorities.authorities if a.name != me.name and a.name in self.urls
        })
        signed = self._load_signed()
        self._load_locked_records(signed)
        self.machine = Machine(
            authority_set=authorities, chain_id=self.chain.chain_id, signer=self.key,
            height=self.chain.height + 1, signed=signed,
        )
        log.info("epoch %d (from height %d): signing as %s, one of %d authorities",
                 entry.epoch, entry.from_height, me.name, len(authorities))
        start = ev.Start()
        self._perform(self.machine.step(start), start, None)
        kept, self._kept = self._kept, []
        for event, sender in kept:
            try:
                _, message = decode_message(event.data)  # type: ignore[attr-defined]
            except MessageError:
                continue
            if message.height == self.machine.height:
                self._perform(self.machine.step(event), event, sender)

    def _load_signed(self) -> SignedState | None:
        data = self.state_store.get(KEY_SIGNED)
        if data is None:
            return None
        try:
            return SignedState.decode(data)
        except SignedStateError:
            # Refuse to sign rather than risk signing twice.
            raise RuntimeError("consensus state is corrupt; refusing to sign") from None

    # -- the stepping task ----------------------------------------------------

    async def _run(self) -> None:
        while True:
            event, relay_from = await self.events.get()
            try:
                if self._epoch != self.chain.history.current.epoch:
                    self._enter_epoch()
                if self.machine is None:
                    continue  # following: blocks arrive by catch-up
                height = self.machine.height
                actions = self.machine.step(event)
                self._perform(actions, event, relay_from)
                if isinstance(event, ev.MessageReceived) and len(self._kept) < KEPT_MESSAGES_MAX:
                    self._kept.append((event, relay_from))
                if self.machine.height != height:
                    self._kept = []
            except Exception:
                log.exception("consensus step failed on %s", type(event).__name__)

    async def _watch(self) -> None:
        """Fetch blocks while following (or stalled), and forward again what stays pending."""
        loop = asyncio.get_running_loop()
        height, moved_at = self.chain.height, loop.time()
        stale: set[bytes] = set()
        reforward_at = loop.time() + REFORWARD_S
        while True:
            await asyncio.sleep(FOLLOW_POLL_S)
            now = loop.time()
            if self.chain.height != height:
                height, moved_at = self.chain.height, now
            if self.machine is None:
                self._catch_up_any()
                if now >= reforward_at:
                    # Pending for a whole period: the authority it went to may have lost it.
                    pending = self.service.mempool.records
                    self.forwarder.forward([pending[h].encoded for h in stale if h in pending])
                    stale = set(pending)
                    reforward_at = now + REFORWARD_S
            elif now - moved_at >= STALL_CATCH_UP_S:
                moved_at = now
                self._catch_up_any()

    def _perform(self, actions: list[act.Action], event: ev.Event, relay_from: str | None) -> None:
        dropped = False
        for action in actions:
            if isinstance(action, act.PersistSigned):
                batch = WriteBatch()
                batch.put(KEY_SIGNED, action.state.encode())
                self._persist_locked_records(action.state, batch)
                self.state_store.write(batch, sync=True)
            elif isinstance(action, act.Broadcast):
                self.peers.send("consensus", action.data)
            elif isinstance(action, act.ScheduleTimeout):
                timeout = ev.TimeoutFired(action.height, action.round, action.kind)
                asyncio.get_running_loop().call_later(action.duration_ms / 1000, self.post, timeout)
            elif isinstance(action, act.BuildProposal):
                self._spawn(self._build(action.height, action.round))
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

    # -- frames from peers ----------------------------------------------------

    def _on_frame(self, sender: str, kind: str, payload: bytes) -> None:
        if kind == "consensus" and self.machine is None:
            self._follow_hint(sender, payload)
        elif kind == "consensus":
            self.post(ev.MessageReceived(payload), relay_from=sender)
        elif kind == "records":
            self._spawn(self._admit_gossip(payload))
        elif kind == "want":
            self._serve_want(sender, payload)

    async def _admit_gossip(self, payload: bytes) -> None:
        try:
            records = codec.decode(payload)
            if type(records) is not list or not all(type(r) is bytes for r in records):
                return
        except codec.CodecError:
            return
        verified = await self.service.admit_each(records)
        if self._wants:
            # A proposal needs these; keep those the mempool refused.
            pending = self.service.mempool.records
            for record in verified:
                if record.hash not in pending and any(record.hash in want for want in self._wants):
                    self._held[record.hash] = record

    def _known(self, record_hash: bytes) -> SignedRecord | None:
        """A decoded, verified record of this height, if this node has it."""
        record = self.service.mempool.records.get(record_hash)
        return record if record is not None else self._held.get(record_hash)

    def _serve_want(self, sender: str, payload: bytes) -> None:
        """Send a peer the records it asks for that this node has (as gossip frames)."""
        try:
            hashes = codec.decode(payload)
        except codec.CodecError:
            return
        if type(hashes) is not list or len(hashes) > self.chain.block_records_max:
            return
        found = [record.encoded for h in hashes if type(h) is bytes and (record := self._known(h)) is not None]
        for frame in gossip_frames(found):
            self.peers.send("records", frame, to=sender)

    def _gossip_records(self, records: list[SignedRecord]) -> None:
        """Send newly admitted records on to the other authorities, in small batches."""
        self._gossip.extend(r.encoded for r in records)
        if not self._gossip_scheduled:
            self._gossip_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_gossip)

    def _send_pending(self, peer: str) -> None:
        """A link to `peer` came up: send it every record pending here.

        Gossip is sent once, so a record admitted while the link was down (a
        partition, a restart) would otherwise reach that peer only in a block
        this node proposes. The peer skips what it already holds unverified.
        """
        pending = [record.encoded for record in self.service.mempool.records.values()]
        for frame in gossip_frames(pending):
            self.peers.send("records", frame, to=peer)

    def _flush_gossip(self) -> None:
        self._gossip_scheduled = False
        pending, self._gossip = self._gossip, []
        if self.following:
            self.forwarder.forward(pending)  # authorities take no envelope from a follower
            return
        for frame in gossip_frames(pending):
            self.peers.send("records", frame)

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
        records = mempool.peek(self.chain.block_records_max)
        proposed = self.chain.propose(records, self.key.name, round, self.clock_ms())
        if proposed.rejected:
            refused = [record for record, _ in proposed.rejected]
            mempool.remove([r.hash for r in refused])
            mempool.rebase()  # their assumed effects leave with them
            self.service.dropped(refused)
        header = proposed.header
        self._validated[header.hash] = (header, proposed.records, proposed.delta)
        value = Value(header.hash, encode_body(header, [r.hash for r in proposed.records]),
                      header.checkpoint(self.chain.origin).text())
        self.post(ev.ProposalBodyReady(height, round, value))

    def _validate(self, action: act.ValidateProposal) -> None:
        value = action.message.value
        height = action.message.height
        self._spawn(self._validate_async(height, value))

    async def _validate_async(self, height: int, value: Value) -> None:
        valid = False
        try:
            body = decode_body(value.body)
            header = body.header
            if header.hash != value.block_hash or header.checkpoint(self.chain.origin).text() != value.checkpoint_text:
                raise BlockError("proposal-binding", "body does not match the proposed hash")
            if len(body.record_hashes) != header.record_count or header.record_count > self.chain.block_records_max:
                raise BlockError("record-count", "record hashes differ from the header's count")
            previous_ms = self.chain.head.timestamp_ms if self.chain.head else 0
            if header.timestamp_ms > max(self.clock_ms() + TIMESTAMP_AHEAD_MAX_MS, previous_ms):
                raise BlockError("timestamp-ahead", f"block time {header.timestamp_ms} is ahead of this node's clock")
            records = await self._resolve(height, body)
            if records is not None and self.chain.height + 1 == height:
                # Every resolved record was decoded and verified once on this node.
                records, delta = self.chain.validate(header, records, verify_signatures=False)
                self._validated[header.hash] = (header, records, delta)
                valid = True
        except (BlockError, RecordError, crypto.SignatureError, codec.CodecError) as error:
            log.warning("proposal %s at height %d is invalid: %s", value.block_hash.hex()[:16], height, error)
        self.post(ev.ProposalValidated(height, value.block_hash, valid))

    async def _resolve(self, height: int, body: Body) -> list[SignedRecord] | None:
        """The records of `body`, in order; None if the chain passed `height` first.

        Records are taken from the mempool or those held for this height;
        one still being admitted is waited for; the rest are asked from the
        proposer at once and from every peer each FETCH_RETRY_S, and arrive
        through `_admit_gossip` (so each is verified once). Raises BlockError
        if a record is already on the ledger. A record nobody has keeps the
        proposal unresolved until the height is decided without it (the
        machine's propose timeout prevotes nil meanwhile).
        """
        if body.records is not None:
            await self._hold_full_body(body)
        found: dict[bytes, SignedRecord] = {}
        missing: set[bytes] = set()
        for record_hash in body.record_hashes:
            record = self._known(record_hash)
            if record is None:
                missing.add(record_hash)
            else:
                found[record_hash] = record
        if missing:
            if any(self.chain.locate(h) is not None for h in missing):
                raise BlockError("record-unique", "a record is already on the ledger")
            loop = asyncio.get_running_loop()
            asked: set[bytes] = set()
            ask_all_at = loop.time() + FETCH_RETRY_S
            self._wants.append(missing)
            try:
                while missing:
                    if self.chain.height + 1 != height:
                        return None
                    absent = [h for h in missing if h not in self.service.inflight]
                    if loop.time() >= ask_all_at:
                        if absent:
                            self.peers.send("want", codec.encode(absent))
                        ask_all_at = loop.time() + FETCH_RETRY_S
                    elif unasked := [h for h in absent if h not in asked]:
                        self.peers.send("want", codec.encode(unasked), to=body.header.proposer)
                        asked.update(unasked)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(
                            asyncio.shield(self.service.settled()), max(0.0, ask_all_at - loop.time())
                        )
                    for record_hash in list(missing):
                        if (record := self._known(record_hash)) is not None:
                            found[record_hash] = record
                            missing.discard(record_hash)
            finally:
                self._wants = [want for want in self._wants if want is not missing]
        return [found[record_hash] for record_hash in body.record_hashes]

    async def _hold_full_body(self, body: Body) -> None:
        """Hold the records of a full body, verifying (off the loop) those this node has not."""
        unseen = [data for data, h in zip(body.records or (), body.record_hashes) if self._known(h) is None]
        if unseen:
            decoded = await asyncio.get_running_loop().run_in_executor(self._executor, _verify_records, unseen)
            self._held.update((record.hash, record) for record in decoded)

    # -- commits ----------------------------------------------------------------

    def _commit(self, action: act.Commit) -> None:
        if action.height != self.chain.height + 1:
            if action.height <= self.chain.height:
                self.post(ev.BlockApplied(action.height))
            return
        cached = self._validated.get(action.value.block_hash)
        if cached is None or cached[0].height != action.height or cached[0].previous_hash != self.chain.head_hash:
            # A value decided without this node validating it (a lock restored
            # after a restart): its records may need fetching first.
            self._spawn(self._commit_unvalidated(action))
            return
        self._commit_validated(action, *cached)

    async def _commit_unvalidated(self, action: act.Commit) -> None:
        try:
            body = decode_body(action.value.body)
            records = await self._resolve(action.height, body)
            if records is None or action.height != self.chain.height + 1:
                return
            validated, delta = self.chain.validate(body.header, records, verify_signatures=False)
            self._commit_validated(action, body.header, validated, delta)
        except Exception:
            log.exception("committing decided block %d failed", action.height)

    def _commit_validated(
        self, action: act.Commit, header: BlockHeader, records: Sequence[SignedRecord], delta: StateDelta
    ) -> None:
        started = time.perf_counter()
        # The machine built the certificate from precommits and cosignatures it verified.
        self.chain.commit(header, records, action.certificate, delta, signatures_checked=True)
        self._validated.clear()
        self._applied(header, records, started)
        self.post(ev.BlockApplied(action.height))

    def _applied(
        self, header: BlockHeader, records: Sequence[SignedRecord], started: float | None = None
    ) -> None:
        self._held.clear()
        mempool = self.service.mempool
        hashes = [r.hash for r in records]
        only_pending = all(h in mempool for h in hashes)
        mempool.remove(hashes)
        self.service.committed(header, records, only_pending=only_pending)
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

    def _catch_up_any(self) -> None:
        """Fetch blocks from a node, the authorities in force first; a failed fetch moves on to the next.

        Any other node this one knows comes after them: a node that was away
        long enough may find every authority of its last epoch gone."""
        in_force = [a.name for a in self.chain.authority_set.authorities]
        others = sorted(set(self.urls) - set(in_force))
        names = [n for n in in_force + others if n != self.key.name and n in self.urls and n not in self.peers.blocked]
        if names:
            self._catch_up(names[self._sync_target % len(names)])

    def _follow_hint(self, sender: str, payload: bytes) -> None:
        """While following: an authority's message for a height past the next means blocks to fetch."""
        try:
            _, message = decode_message(payload)
        except MessageError:
            return
        if message.height > self.chain.height + 1:
            self._catch_up(sender)

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
            self._sync_target += 1
            log.warning("catch-up from %s failed: %s", peer, error)

    # -- the locked value's records ---------------------------------------------

    def _persist_locked_records(self, state: SignedState, batch: WriteBatch) -> None:
        """Add the locked value's records to `batch` once per locked value (delete them once unlocked).

        Runs in the synced write of the precommit that locks, so they are
        durable whenever the lock is. The value was validated (or built) here
        before the machine precommitted it, so its records are at hand.
        """
        value = state.locked_value
        block_hash = None if value is None else value.block_hash
        if block_hash == self._locked_block:
            return
        if value is None:
            batch.delete(KEY_LOCKED_RECORDS)
        else:
            cached = self._validated.get(block_hash)
            if cached is None:  # not reachable: a value is precommitted only once validated here
                log.error("locked value %s has no validated records to persist", block_hash.hex()[:16])
                return
            records = [record.encoded for record in cached[1]]
            batch.put(KEY_LOCKED_RECORDS, codec.encode({"block": block_hash, "records": records}))
        self._locked_block = block_hash

    def _load_locked_records(self, signed: SignedState | None) -> None:
        """Hold the records of the lock `signed` restores (written by `_persist_locked_records`)."""
        value = signed.locked_value if signed is not None and signed.height == self.chain.height + 1 else None
        data = self.state_store.get(KEY_LOCKED_RECORDS)
        stored = None
        if data is not None:
            try:
                mapping = codec.decode(data)
                stored = mapping["block"]
                if value is not None and value.block_hash == stored:
                    # Our own write, verified before we locked: decoded, not verified again.
                    records = (SignedRecord.decode_whole(encoded) for encoded in mapping["records"])
                    self._held = {record.hash: record for record in records}
            except (codec.CodecError, RecordError, KeyError, TypeError) as error:
                raise RuntimeError(f"locked records are corrupt: {error}") from None
        # A restored lock's records are on disk already (or in its body, when
        # an older node persisted a full one); otherwise the next write deletes
        # records left from a lock of an earlier height.
        self._locked_block = value.block_hash if value is not None else stored

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


def _verify_records(encoded: list[bytes]) -> list[SignedRecord]:
    records = [SignedRecord.decode_whole(data) for data in encoded]
    for record in records:
        record.verify()
    return records

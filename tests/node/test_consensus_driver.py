"""The consensus driver: compact proposal bodies (resolving, fetching and keeping
records) and following the authority-set epochs (a new machine per epoch,
peer links, follower mode).

No sockets: the driver's peer links are never started and their sends are
replaced by a recorder; frames from peers are handed to `_on_frame`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest

from consensus import actions as act
from consensus import events as ev
from consensus.messages import Value, Vote, VoteKind, encode_message
from consensus.signed_state import SignedState
from ledger import codec, crypto
from ledger.block import BlockError, CommitCertificate, precommit, vote_message
from ledger.chain import Chain
from ledger.crypto import KeyPair
from ledger.genesis import Authority
from ledger.governance import approve
from ledger.records import ConsortiumChange, CredentialIssuance, SignedRecord
from ledger.store import MemoryStore, WriteBatch
from node import peer_session
from node.consensus_driver import KEY_SIGNED, KEY_LOCKED_RECORDS, ConsensusDriver
from node.proposal_body import decode_body, encode_body
from node.mempool import Mempool
from node.metrics import Metrics
from node.peer_session import SessionError
from node.service import LedgerService
from tests.conftest import make_consortium, seeded_key


class SentFrames(list):
    def __call__(self, kind: str, payload: bytes, to: str | None = None, exclude: str | None = None) -> None:
        self.append((kind, codec.decode(payload), to))


@pytest.fixture
def consortium():
    return make_consortium(4)


def _driver(consortium, chain: Chain, state_store=None, key: KeyPair | None = None, urls=None) -> ConsensusDriver:
    mempool = Mempool(1_000, chain.state, lambda: chain.authority_set)
    service = LedgerService(chain, mempool, Metrics(), verify_threads=1)
    key = key or consortium.authorities[1]
    driver = ConsensusDriver(chain, service, key, urls or {}, state_store or MemoryStore(), block_delay_ms=0)
    driver.peers.send = SentFrames()  # type: ignore[method-assign]
    return driver


@pytest.fixture
def chain(consortium) -> Chain:
    chain = Chain(MemoryStore(), consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    return chain


def _proposal(chain: Chain, records: list[SignedRecord], timestamp_ms: int = 1_700_000_000_000) -> Value:
    proposer = chain.authority_set.proposer(chain.height + 1, 0).name
    header = chain.propose(records, proposer, 0, timestamp_ms).header
    return Value(header.hash, encode_body(header, [r.hash for r in records]), header.checkpoint(chain.origin).text())


def _validated(driver: ConsensusDriver) -> list[bool]:
    results = []
    while not driver.events.empty():
        event, _ = driver.events.get_nowait()
        if isinstance(event, ev.ProposalValidated):
            results.append(event.valid)
    return results


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_body_carries_record_hashes_and_an_older_full_body_still_decodes(consortium, chain):
    records = [consortium.issuance(i) for i in range(3)]
    value = _proposal(chain, records)
    body = decode_body(value.body)
    assert body.record_hashes == [r.hash for r in records] and body.records is None
    full = codec.encode({"header": body.header.to_map(), "records": [r.encoded for r in records]})
    legacy = decode_body(full)
    assert legacy.record_hashes == body.record_hashes and legacy.records == [r.encoded for r in records]


async def test_a_proposal_of_pending_records_is_valid_without_fetching(consortium, chain):
    driver = _driver(consortium, chain)
    records = [consortium.issuance(i) for i in range(3)]
    await driver.service.admit_each([r.encoded for r in records])
    value = _proposal(chain, records)
    await driver._validate_async(chain.height + 1, value)
    assert _validated(driver) == [True] and driver.peers.send == []


@pytest.mark.parametrize("ahead_ms, valid", [(0, True), (9_000, True), (11_000, False), (86_400_000, False)])
async def test_a_block_time_ahead_of_the_clock_is_refused(consortium, chain, ahead_ms, valid):
    driver = _driver(consortium, chain)
    driver.clock_ms = lambda: 1_800_000_000_000
    await driver._validate_async(chain.height + 1, _proposal(chain, [], 1_800_000_000_000 + ahead_ms))
    assert _validated(driver) == [valid]


async def test_a_block_no_later_than_the_previous_one_is_valid_whatever_the_clock(consortium, chain):
    driver = _driver(consortium, chain)
    driver.clock_ms = lambda: chain.head.timestamp_ms - 3_600_000  # this node's clock is an hour behind
    await driver._validate_async(chain.height + 1, _proposal(chain, [], chain.head.timestamp_ms))
    assert _validated(driver) == [True]


async def test_missing_records_are_fetched_from_the_proposer_even_if_the_mempool_refuses_them(consortium, chain):
    driver = _driver(consortium, chain)
    contested = hashlib.sha256(b"contested").digest()
    ours = SignedRecord.sign(CredentialIssuance(contested, 1), consortium.issuer)
    theirs = SignedRecord.sign(CredentialIssuance(contested, 2), consortium.issuer)
    pending = consortium.issuance(1)
    await driver.service.admit_each([ours.encoded, pending.encoded])
    value = _proposal(chain, [pending, theirs])
    proposer = decode_body(value.body).header.proposer
    task = asyncio.create_task(driver._validate_async(chain.height + 1, value))
    await _settle()
    assert driver.peers.send == [("want", [theirs.hash], proposer)]
    assert not task.done()
    driver._on_frame(proposer, "records", codec.encode([theirs.encoded]))
    await asyncio.wait_for(task, 5)
    # Valid on committed state, though it conflicts with what is pending here.
    assert _validated(driver) == [True] and theirs.hash not in driver.service.mempool


async def test_a_record_being_admitted_is_waited_for_not_fetched(consortium, chain):
    driver = _driver(consortium, chain)
    record = consortium.issuance(7)
    driver.service.inflight.add(record.hash)  # as if gossip were verifying it
    task = asyncio.create_task(driver._validate_async(chain.height + 1, _proposal(chain, [record])))
    await _settle()
    assert driver.peers.send == [] and not task.done()
    driver.service.inflight.discard(record.hash)
    await driver.service.admit_each([record.encoded])
    await asyncio.wait_for(task, 5)
    assert _validated(driver) == [True]


async def test_a_proposal_of_a_committed_record_is_invalid_at_once(consortium, chain):
    driver = _driver(consortium, chain)
    record = consortium.issuance(3)
    value = _proposal(chain, [record])
    consortium.commit(chain, [record])  # the proposal's record, committed meanwhile at another height
    body = decode_body(value.body)
    with pytest.raises(BlockError, match="already on the ledger"):
        await driver._resolve(chain.height + 1, body)


async def test_a_want_is_answered_with_the_records_this_node_has(consortium, chain):
    driver = _driver(consortium, chain)
    record = consortium.issuance(4)
    await driver.service.admit_each([record.encoded])
    driver._on_frame("inst-2", "want", codec.encode([record.hash, bytes(32)]))
    assert driver.peers.send == [("records", [record.encoded], "inst-2")]


async def test_a_peer_whose_link_comes_up_is_sent_every_pending_record(consortium, chain):
    driver = _driver(consortium, chain)
    driver.peers.on_link_up("inst-3")  # nothing pending: nothing sent
    records = [consortium.issuance(i) for i in range(3)]
    await driver.service.admit_each([r.encoded for r in records])
    driver.peers.on_link_up("inst-3")  # e.g. a partition healed: gossip sent meanwhile was lost
    assert driver.peers.send == [("records", [r.encoded for r in records], "inst-3")]


async def test_the_locked_value_records_survive_a_restart_once_per_lock(consortium, chain):
    store = MemoryStore()
    driver = _driver(consortium, chain, store)
    records = [consortium.issuance(i) for i in range(3)]
    await driver.service.admit_each([r.encoded for r in records])
    value = _proposal(chain, records)
    await driver._validate_async(chain.height + 1, value)
    height, me = chain.height + 1, driver.key.name
    precommit = Vote(VoteKind.PRECOMMIT, height, 0, value.block_hash, me, bytes(64), bytes(64))
    locked = SignedState(height, (precommit,)).with_lock(value, ())
    batch = WriteBatch()
    driver._persist_locked_records(locked, batch)
    assert len(batch) == 1
    store.write(batch)
    again = WriteBatch()
    driver._persist_locked_records(locked, again)
    assert len(again) == 0  # written once per locked value

    restarted = _driver(consortium, chain, store)  # an empty mempool, as after a restart
    restarted._load_locked_records(locked)
    assert await restarted._resolve(height, decode_body(value.body)) == records

    later = WriteBatch()
    restarted._persist_locked_records(SignedState(height + 1), later)  # next height: no lock
    store.write(later)
    assert store.get(KEY_LOCKED_RECORDS) is None


async def test_gossip_skips_pending_and_inflight_records_and_returns_the_verified(consortium, chain):
    driver = _driver(consortium, chain)
    service = driver.service
    pending, inflight, fresh = consortium.issuance(1), consortium.issuance(2), consortium.issuance(3)
    await service.admit_each([pending.encoded])
    service.inflight.add(inflight.hash)
    forged = SignedRecord(fresh.body, fresh.signer, bytes(64))
    gossip = [pending.encoded, inflight.encoded, fresh.encoded, forged.encoded, b"junk", fresh.encoded]
    verified = await service.admit_each(gossip)
    assert verified == [fresh]
    assert fresh.hash in service.mempool and inflight.hash not in service.mempool


async def test_gossip_of_a_committed_record_admits_nothing(consortium, chain):
    driver = _driver(consortium, chain)
    service = driver.service
    issued = consortium.issuance(7)
    consortium.commit(chain, [issued])  # refused by the credential-unique rule, with no index read
    await service.admit_each([issued.encoded])
    assert issued.hash not in service.mempool and len(service.mempool) == 0


# -- epochs ---------------------------------------------------------------------

NEWCOMER = seeded_key("inst-4")
NEWCOMER_URL = "http://127.0.0.1:7004"
GENESIS_URLS = {f"inst-{i}": f"http://127.0.0.1:700{i}" for i in range(4)}


def _governed(chain: Chain, keys: list[KeyPair], action: str, **fields) -> None:
    """Commit a block holding a quorum-approved change, certified by every authority in force."""
    draft = ConsortiumChange(chain.history.current.epoch, action, **fields)
    in_force = [k for k in keys if chain.authority_set.by_key(k.public_key) is not None]
    approvals = tuple(sorted(approve(k, chain.chain_id, draft) for k in in_force))
    record = SignedRecord.sign(ConsortiumChange(draft.epoch, action, **fields, approvals=approvals), in_force[0])
    _certified(chain, keys, [record])


def _certified(chain: Chain, keys: list[KeyPair], records: list[SignedRecord]) -> None:
    authorities = chain.authority_set
    proposed = chain.propose(records, authorities.proposer(chain.height + 1, 0).name, 0, 1_700_000_000_000)
    assert not proposed.rejected, proposed.rejected
    header = proposed.header
    signers = sorted((k for k in keys if authorities.by_key(k.public_key)), key=lambda k: authorities.index(k.name))
    signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in signers)
    chain.commit(header, proposed.records, CommitCertificate(header.height, 0, header.hash, signatures), proposed.delta)


def _prevote(key: KeyPair, chain: Chain, height: int) -> bytes:
    block_hash = bytes(32)
    signature = key.sign(crypto.VOTE_CONTEXT, vote_message(chain.chain_id, "prevote", height, 0, block_hash))
    return encode_message(chain.chain_id, Vote(VoteKind.PREVOTE, height, 0, block_hash, key.name, signature))


def _dropped(actions: list[act.Action]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, act.Dropped)]


async def _step_once(driver: ConsensusDriver, event: ev.Event) -> None:
    """Let the stepping task take one event, as it does between any two steps."""
    task = asyncio.create_task(driver._run())
    driver.post(event)
    await _settle()
    await _stop(task)


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_committed_change_gives_the_next_height_a_machine_for_the_new_set(consortium, chain):
    keys = consortium.authorities + [NEWCOMER]
    driver = _driver(consortium, chain, urls=GENESIS_URLS)
    try:
        driver._enter_epoch()
        old = driver.machine
        assert old is not None and set(driver.peers.urls) == {"inst-0", "inst-2", "inst-3"}
        _governed(chain, keys, "authority.add", name="inst-4", public_key=NEWCOMER.public_key, url=NEWCOMER_URL)
        height = chain.height
        # Before the switch the newcomer is a stranger: its links are refused and its votes dropped.
        with pytest.raises(SessionError):
            _newcomer_dials(driver)
        assert _dropped(old.step(ev.MessageReceived(_prevote(NEWCOMER, chain, height + 1)))) == ["not an authority"]

        await _step_once(driver, ev.BlockApplied(height))

        machine = driver.machine
        assert machine is not old and machine.height == height + 1
        assert _dropped(machine.step(ev.MessageReceived(_prevote(NEWCOMER, chain, height + 1)))) == []
        # Dialed at the URL its change record carries; its links are now accepted.
        assert driver.peers.urls["inst-4"] == NEWCOMER_URL and len(driver.peers.urls) == 4
        assert _newcomer_dials(driver) == driver.peers.authorities.by_name("inst-4")
    finally:
        await driver.close()


def _newcomer_dials(driver: ConsensusDriver) -> Authority:
    """The newcomer's handshake with the driver's node, checked against its peers' set in force."""
    peers = driver.peers
    dialing = peer_session.dial(NEWCOMER.name, NEWCOMER, Authority(peers.name, peers.key.public_key))
    reply, accepting = peer_session.accept(peers.name, peers.key, peers.authorities, dialing.hello)
    confirm, _ = dialing.finish(reply)
    return accepting.finish(confirm).dialer


async def test_the_new_machine_keeps_what_was_signed_at_its_height_and_ignores_older_state(consortium, chain):
    keys = consortium.authorities + [NEWCOMER]
    _governed(chain, keys, "authority.add", name="inst-4", public_key=NEWCOMER.public_key, url=NEWCOMER_URL)
    height = chain.height + 1
    me = consortium.authorities[1]
    signature = me.sign(crypto.VOTE_CONTEXT, vote_message(chain.chain_id, "prevote", height, 0, bytes(32)))
    signed = SignedState(height, (Vote(VoteKind.PREVOTE, height, 0, bytes(32), me.name, signature),))
    driver = _driver(consortium, chain, _store_with(signed), urls=GENESIS_URLS)  # restarted in the new epoch
    try:
        driver._enter_epoch()
        assert driver.machine.signed_state == signed  # the slot stays taken: never a second prevote
        stale = _driver(consortium, chain, _store_with(SignedState(height - 1)), urls=GENESIS_URLS)
        stale._enter_epoch()
        assert stale.machine.signed_state == SignedState(height)
        await stale.close()
    finally:
        await driver.close()


def _store_with(signed: SignedState) -> MemoryStore:
    store = MemoryStore()
    batch = WriteBatch()
    batch.put(KEY_SIGNED, signed.encode())
    store.write(batch)
    return store


async def test_a_node_not_in_the_set_follows_and_signs_once_added(consortium, chain):
    keys = consortium.authorities + [NEWCOMER]
    driver = _driver(consortium, chain, key=NEWCOMER, urls=GENESIS_URLS)
    fetched = []
    driver._catch_up = fetched.append  # type: ignore[method-assign]
    forwarded = []
    driver.forwarder.forward = forwarded.extend  # type: ignore[method-assign]
    try:
        driver._enter_epoch()
        assert driver.following and driver.peers.urls == {}  # dials no one: its frames would be dropped
        # An authority's message for a later height means blocks to fetch, from it.
        driver._on_frame("inst-2", "consensus", _prevote(consortium.authorities[2], chain, chain.height + 2))
        driver._on_frame("inst-3", "consensus", _prevote(consortium.authorities[3], chain, chain.height + 1))
        assert fetched == ["inst-2"]
        # Records submitted here go to an authority over its API, not as envelopes.
        driver.service.on_admitted = driver._gossip_records  # as start() sets it
        record = consortium.issuance(9)
        await driver.service.submit([record.encoded])
        await _settle()
        assert forwarded == [record.encoded] and driver.peers.send == []

        _governed(chain, keys, "authority.add", name="inst-4", public_key=NEWCOMER.public_key, url=NEWCOMER_URL)
        await _step_once(driver, ev.BlockApplied(chain.height))
        assert not driver.following and driver.machine.height == chain.height + 1
        assert set(driver.peers.urls) == {"inst-0", "inst-1", "inst-2", "inst-3"}
    finally:
        await driver.close()


async def test_a_removed_authority_stops_signing_and_follows(consortium, chain):
    driver = _driver(consortium, chain, urls=GENESIS_URLS)
    forwarded = []
    driver.forwarder.forward = forwarded.extend  # type: ignore[method-assign]
    try:
        driver._enter_epoch()
        record = consortium.issuance(5)
        await driver.service.submit([record.encoded])
        _governed(chain, consortium.authorities, "authority.remove", name="inst-1")
        await _step_once(driver, ev.BlockApplied(chain.height))
        assert driver.following and driver.peers.urls == {}
        assert driver.peers.authorities.by_name("inst-1") is None
        # What it still held goes to the authorities that remain.
        assert forwarded == [record.encoded]
        # The next block, certified by the three that remain, is one it accepts.
        _certified(chain, consortium.authorities, [])
    finally:
        await driver.close()


async def test_messages_for_the_first_height_of_an_epoch_reach_the_new_machine(consortium, chain):
    keys = consortium.authorities + [NEWCOMER]
    driver = _driver(consortium, chain, urls=GENESIS_URLS)
    try:
        driver._enter_epoch()
        height = chain.height + 2  # the first height after the block that will hold the change
        early = [_prevote(NEWCOMER, chain, height), _prevote(consortium.authorities[0], chain, height)]
        for payload, sender in zip(early, ("inst-4", "inst-0")):
            driver.post(ev.MessageReceived(payload), relay_from=sender)
        task = asyncio.create_task(driver._run())
        await _settle()
        relayed = [frame for kind, frame, _ in driver.peers.send if kind == "consensus"]
        assert codec.decode(early[0]) not in relayed  # a stranger to the old set

        _governed(chain, keys, "authority.add", name="inst-4", public_key=NEWCOMER.public_key, url=NEWCOMER_URL)
        driver.post(ev.BlockApplied(chain.height))
        await _settle()
        await _stop(task)
        relayed = [frame for kind, frame, _ in driver.peers.send if kind == "consensus"]
        assert relayed.count(codec.decode(early[0])) == 1  # accepted by the new machine, so relayed once
    finally:
        await driver.close()


def test_gossip_frames_are_bounded_in_records_and_bytes():
    from ledger import codec
    from node.consensus_driver import GOSSIP_FRAME_BYTES, RECORDS_GOSSIP_MAX, gossip_frames

    small = [b"r" * 200] * (RECORDS_GOSSIP_MAX + 5)
    assert [len(codec.decode(f)) for f in gossip_frames(small)] == [RECORDS_GOSSIP_MAX, 5]
    batches = [b"b" * (3 << 20)] * 5  # cohort batches with their ids
    frames = [codec.decode(f) for f in gossip_frames(batches)]
    assert [len(f) for f in frames] == [2, 2, 1] and all(sum(map(len, f)) <= GOSSIP_FRAME_BYTES for f in frames)
    assert [r for f in frames for r in f] == batches

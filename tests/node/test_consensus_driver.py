"""The consensus driver's compact proposal bodies: resolving, fetching and keeping records.

No sockets: the driver is built but not started, and its peer links are
replaced by a recorder; frames from peers are handed to `_on_frame`.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from consensus import events as ev
from consensus.messages import Value, Vote, VoteKind
from consensus.signed_state import SignedState
from ledger import codec
from ledger.block import BlockError
from ledger.chain import Chain
from ledger.records import CredentialIssuance, SignedRecord
from ledger.store import MemoryStore, WriteBatch
from node.consensus_driver import KEY_LOCKED_RECORDS, ConsensusDriver, decode_body, encode_body
from node.mempool import Mempool
from node.metrics import Metrics
from node.service import LedgerService
from tests.conftest import make_consortium


class SentFrames(list):
    def __call__(self, kind: str, payload: bytes, to: str | None = None, exclude: str | None = None) -> None:
        self.append((kind, codec.decode(payload), to))


@pytest.fixture
def consortium():
    return make_consortium(4)


def _driver(consortium, chain: Chain, state_store=None) -> ConsensusDriver:
    mempool = Mempool(1_000, chain.state, chain.authority_set)
    service = LedgerService(chain, mempool, Metrics(), verify_threads=1)
    key = consortium.authorities[1]
    driver = ConsensusDriver(chain, service, key, {}, state_store or MemoryStore(), block_delay_ms=0)
    driver.peers.send = SentFrames()  # type: ignore[method-assign]
    return driver


@pytest.fixture
def chain(consortium) -> Chain:
    chain = Chain(MemoryStore(), consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    return chain


def _proposal(chain: Chain, records: list[SignedRecord]) -> Value:
    proposer = chain.authority_set.proposer(chain.height + 1, 0).name
    header = chain.propose(records, proposer, 0, 1_700_000_000_000).header
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

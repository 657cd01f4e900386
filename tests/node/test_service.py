"""The ledger service's commit waiters: each wait ends with every record's location, or None."""

from __future__ import annotations

import asyncio

import pytest

from ledger.chain import RecordLocation
from node.mempool import Mempool
from node.metrics import Metrics
from node.service import LedgerService, RecordState


@pytest.fixture
async def service(consortium, chain):
    consortium.commit(chain, [consortium.registration()])
    service = LedgerService(chain, Mempool(100, chain.state, chain.authority_set), Metrics(), verify_threads=1)
    yield service
    service.close()


def _commit_pending(consortium, service) -> None:
    """Commit every pending record, as the block producer would."""
    chain = service.chain
    records = service.mempool.take(100)
    consortium.commit(chain, records)
    service.committed(chain.head, records, only_pending=True)


async def test_a_wait_ends_when_its_records_commit(consortium, service):
    admitted = await service.submit([consortium.issuance(n).encoded for n in (1, 2, 1)])
    assert [a.state for a in admitted] == [RecordState.PENDING] * 3
    waiting = asyncio.ensure_future(service.wait_committed(admitted, timeout_s=10))
    await asyncio.sleep(0)
    assert not waiting.done()
    _commit_pending(consortium, service)
    first = service.chain.log_size - 2
    height = service.chain.height
    # The same record twice in one wait: both places learn its location.
    assert await waiting == [RecordLocation(first, height), RecordLocation(first + 1, height),
                             RecordLocation(first, height)]
    assert service._waiters == {}


async def test_two_waits_on_one_record_both_end(consortium, service):
    admitted = await service.submit([consortium.issuance(1).encoded])
    waits = [asyncio.ensure_future(service.wait_committed(admitted, timeout_s=10)) for _ in range(2)]
    await asyncio.sleep(0)
    _commit_pending(consortium, service)
    first, second = await asyncio.gather(*waits)
    assert first == second == [RecordLocation(service.chain.log_size - 1, service.chain.height)]


async def test_a_record_a_block_refuses_ends_its_wait_uncommitted(consortium, service):
    admitted = await service.submit([consortium.issuance(1).encoded, consortium.issuance(2).encoded])
    waiting = asyncio.ensure_future(service.wait_committed(admitted, timeout_s=10))
    await asyncio.sleep(0)
    records = service.mempool.take(100)
    service.dropped(records[:1])
    consortium.commit(service.chain, records[1:])
    service.committed(service.chain.head, records[1:])
    assert await waiting == [None, RecordLocation(service.chain.log_size - 1, service.chain.height)]


async def test_a_wait_that_times_out_leaves_nothing_behind(consortium, service):
    admitted = await service.submit([consortium.issuance(1).encoded])
    assert await service.wait_committed(admitted, timeout_s=0.01) == [None]
    assert service._waiters == {}
    # Committed later: the answer then comes from the chain, with no waiter left to wake.
    _commit_pending(consortium, service)
    assert await service.wait_committed(admitted, timeout_s=0.01) == [
        RecordLocation(service.chain.log_size - 1, service.chain.height)]


async def test_a_cancelled_wait_leaves_nothing_behind(consortium, service):
    admitted = await service.submit([consortium.issuance(1).encoded])
    waiting = asyncio.ensure_future(service.wait_committed(admitted, timeout_s=10))
    await asyncio.sleep(0)
    assert service._waiters
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert service._waiters == {}

"""Block production for a single-authority consortium (n = 1).

With one authority, its own precommit is a quorum: it takes what is pending,
builds the block, signs the precommit and the checkpoint cosignature, and
commits with one synced write. Consortia of several authorities run the
round-robin BFT protocol of `consensus/` instead; this loop is its n = 1 case
with no messages to exchange.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ledger import crypto
from ledger.block import CommitCertificate, precommit
from node.service import LedgerService

log = logging.getLogger("lacre.producer")


class BlockProducer:
    def __init__(
        self,
        service: LedgerService,
        key: crypto.KeyPair,
        block_delay_ms: int,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        chain = service.chain
        if len(chain.authority_set) != 1 or chain.authority_set.authorities[0].public_key != key.public_key:
            raise ValueError("the single-authority producer needs the one authority's key")
        self.service = service
        self.key = key
        self.block_delay_s = block_delay_ms / 1000
        self.clock_ms = clock_ms

    async def run(self) -> None:
        mempool = self.service.mempool
        while True:
            await mempool.wait_nonempty()
            if len(mempool) < self.service.chain.block_records_max and self.block_delay_s:
                # A few milliseconds let a burst of submissions share a block
                # (and its fsync).
                await asyncio.sleep(self.block_delay_s)
            try:
                self.produce()
            except Exception:  # a bug here must not silently stop the chain
                log.exception("block production failed")
                await asyncio.sleep(1)

    def produce(self) -> int:
        """Commit one block from pending records; returns records committed."""
        service = self.service
        chain = service.chain
        started = time.perf_counter()
        records = service.mempool.take(self.service.chain.block_records_max)
        if not records:
            return 0
        proposed = chain.propose(records, self.key.name, 0, self.clock_ms())
        if proposed.rejected:
            for record, error in proposed.rejected:
                log.warning("record %s refused at block time: %s", record.hash.hex(), error)
            service.dropped([record for record, _ in proposed.rejected])
        if not proposed.records:
            return 0
        header = proposed.header
        signature = precommit(self.key, header, 0, chain.chain_id, chain.origin)
        certificate = CommitCertificate(header.height, 0, header.hash, (signature,))
        chain.commit(header, proposed.records, certificate, proposed.delta)
        # Taken from the mempool; a refused one had its effects assumed there.
        service.committed(proposed.records, only_pending=not proposed.rejected)
        metrics = service.metrics
        metrics.blocks_committed.inc()
        metrics.records_committed.inc(len(proposed.records))
        metrics.height.set(header.height)
        metrics.tree_size.set(header.log_size)
        metrics.commit_seconds.observe(time.perf_counter() - started)
        return len(proposed.records)

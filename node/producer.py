"""Block production for a single-authority consortium (n = 1).

With one authority, its own precommit is a quorum: it takes what is pending,
builds the block, signs the precommit and the checkpoint cosignature, and
commits with one synced write. Consortia of several authorities run the
round-robin BFT protocol of `consensus/` instead; this loop is its n = 1 case
with no messages to exchange. When governance adds an authority, `run`
returns after the block that holds the change, and the node hands over to
the consensus driver (`node.app`): the next block needs the new set's quorum.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ledger import crypto
from ledger.block import CommitCertificate, precommit
from ledger.chain import Chain
from node.service import LedgerService

log = logging.getLogger("lacre.producer")


def sole_authority(chain: Chain, key: crypto.KeyPair) -> bool:
    """True when `key` is the only authority in force for the next block."""
    authorities = chain.authority_set.authorities
    return len(authorities) == 1 and authorities[0].public_key == key.public_key


class BlockProducer:
    def __init__(
        self,
        service: LedgerService,
        key: crypto.KeyPair,
        block_delay_ms: int,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if not sole_authority(service.chain, key):
            raise ValueError("the single-authority producer needs the one authority's key")
        self.service = service
        self.key = key
        self.block_delay_s = block_delay_ms / 1000
        self.clock_ms = clock_ms

    async def run(self) -> None:
        """Produce blocks while this key is the only authority in force; return once it is not."""
        mempool = self.service.mempool
        while sole_authority(self.service.chain, self.key):
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
        """Commit one block from pending records; returns records committed.

        Precondition: `sole_authority` still holds (a change in the last block
        may have ended it)."""
        service = self.service
        chain = service.chain
        if not sole_authority(chain, self.key):
            return 0
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
        service.committed(header, proposed.records, only_pending=not proposed.rejected)
        metrics = service.metrics
        metrics.blocks_committed.inc()
        metrics.records_committed.inc(len(proposed.records))
        metrics.height.set(header.height)
        metrics.tree_size.set(header.log_size)
        metrics.commit_seconds.observe(time.perf_counter() - started)
        return len(proposed.records)

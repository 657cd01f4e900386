"""Catch-up: fetch committed blocks from a peer, check them, apply them.

A node that is behind (restarted, partitioned, or new with an empty store)
asks a peer for pages of blocks in canonical form (`GET /v1/blocks` with
`Accept: application/msgpack`). Each block is checked as any block is
(`Chain.apply_block`: links, proposer, every record's signature and rule, log
root, and a quorum certificate of the authority set) before it is committed,
so a lying peer can waste our time but never change our chain. Record
signatures of a page are verified on worker threads first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

import aiohttp

from ledger import codec, crypto
from ledger.block import Block, BlockError, BlockHeader
from ledger.chain import Chain
from ledger.records import RecordError, SignedRecord

log = logging.getLogger("lacre.sync")

PAGE_BLOCKS = 100


class SyncError(Exception):
    """The peer's answer was unusable (unreachable, malformed or invalid blocks)."""


def _verify_page(blocks: list[Block]) -> None:
    """Check every record signature of a page; raises SyncError naming the first bad one."""
    for block in blocks:
        for index, data in enumerate(block.records):
            try:
                SignedRecord.decode_whole(data).verify()
            except (RecordError, crypto.SignatureError) as error:
                raise SyncError(f"block {block.header.height} record {index}: {error}") from None


async def fetch_page(session: aiohttp.ClientSession, url: str, start: int, limit: int = PAGE_BLOCKS) -> tuple[list[Block], int]:
    params = {"from": str(start), "limit": str(limit)}
    try:
        async with session.get(url + "/v1/blocks", params=params, headers={"Accept": "application/msgpack"}) as response:
            if response.status != 200:
                raise SyncError(f"{url}: blocks from {start}: HTTP {response.status}")
            page = codec.decode(await response.read())
        return [Block.decode(data) for data in page["blocks"]], int(page["height"])
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        raise SyncError(f"{url}: {error}") from None
    except (codec.CodecError, BlockError, KeyError, TypeError, ValueError) as error:
        raise SyncError(f"{url}: malformed blocks page: {error}") from None


async def catch_up(
    chain: Chain,
    url: str,
    session: aiohttp.ClientSession,
    executor: concurrent.futures.Executor,
    applied: Callable[[BlockHeader, tuple[SignedRecord, ...]], None],
    target_height: int | None = None,
) -> int:
    """Apply blocks from the peer at `url` until its head (or `target_height`); returns blocks applied.

    `applied(header, records)` runs after each block is durable. Raises SyncError on a
    bad page; blocks applied before it stay applied (each was fully checked).
    """
    loop = asyncio.get_running_loop()
    count = 0
    while target_height is None or chain.height < target_height:
        blocks, peer_height = await fetch_page(session, url, chain.height + 1)
        blocks = [b for b in blocks if b.header.height > chain.height]
        if not blocks:
            break
        # Signatures in parallel off the loop; then the rules, in order, here.
        await loop.run_in_executor(executor, _verify_page, blocks)
        for position, block in enumerate(blocks):
            if block.header.height != chain.height + 1:
                continue  # consensus committed it meanwhile
            try:
                records, delta = chain.validate(block.header, block.records, verify_signatures=False)
                # One fsync per page: a quorum holds these blocks already, and
                # LevelDB loses only a suffix of unsynced writes in a crash.
                last = position == len(blocks) - 1
                chain.commit(block.header, records, block.certificate, delta, sync=last)
            except BlockError as error:
                raise SyncError(f"{url}: block {block.header.height} breaks {error.rule}: {error.detail}") from None
            count += 1
            applied(block.header, records)
        if chain.height >= peer_height:
            break
        await asyncio.sleep(0)  # let the node serve between pages
    return count

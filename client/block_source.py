"""Where a chain's blocks come from: an export file, a node's HTTP API, a data folder.

One interface for all three, so the export, the import and the audit stream
blocks the same way whatever they read:

    with open_source(url="http://127.0.0.1:7700", genesis=genesis) as source:
        for block in source:          # height 1, 2, ... in order, one at a time
            ...

A `BlockSource` knows its genesis before the first block, yields committed
blocks in height order from 1, and holds at most one page of blocks in
memory. Blocks come as the source holds them: nothing is trusted here. Only a
chain file checks its own structure as it is read (see client.chain_file);
signatures and rules are the importer's and the auditor's business.

- `ChainFileReader` (client.chain_file): an export file.
- `NodeBlocks`: `GET /v1/blocks?from=&limit=` in canonical MessagePack,
  up to the node's height when the first page came (a snapshot: the node may
  go on committing meanwhile).
- `DataDirBlocks`: a stopped node's data folder, read-only. LevelDB admits one
  process at a time, so a running node's folder cannot be opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from client.chain_file import ChainFileReader
from client.sdk import ApiError, AsyncClient
from ledger import codec
from ledger.block import Block, BlockError, BlockHeader, CommitCertificate
from ledger.chain import BLOCK_PREFIX, KEY_GENESIS, KEY_HEAD, KEY_MAGIC, MAGIC, RECORD_PREFIX
from ledger.genesis import Genesis, GenesisError
from ledger.leveldb_store import LevelDBStore

PAGE_BLOCKS = 100
# A node's store is read in order, a table at a time: a few open tables
# suffice, and each one open costs memory (its index and Bloom filter).
SOURCE_OPEN_FILES = 64


class SourceError(Exception):
    """A source that cannot be opened or read: unreachable, foreign, malformed."""


class BlockSource(Protocol):
    """Committed blocks of one chain, from height 1, in order, streamed."""

    genesis: Genesis

    def __iter__(self) -> Iterator[Block]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "BlockSource": ...

    def __exit__(self, *exc: object) -> None: ...


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


class _NodeClient(AsyncClient):
    async def genesis_document(self) -> dict:
        return await self._request("GET", "/v1/genesis")


class NodeBlocks:
    """Blocks from a node's HTTP API, page by page.

    The node does not serve its genesis document (only its hash, in
    `/v1/status`), so give `genesis` unless the node answers `GET /v1/genesis`
    with a genesis.json document; either way its hash must be the node's.
    `stop`, the last height yielded, defaults to the node's height when the
    source opens (and may be lowered before iterating); `start`, the first
    (1 unless a resumed audit skips what it checked before), may be set too.
    """

    def __init__(
        self, url: str, genesis: Genesis | None = None, stop: int | None = None,
        page_blocks: int = PAGE_BLOCKS, timeout_s: float = 60.0, start: int = 1,
    ) -> None:
        self.url = url.rstrip("/")
        self.page_blocks = page_blocks
        self.start = max(1, start)
        self._loop = asyncio.new_event_loop()
        self._client = _NodeClient(self.url, timeout_s)
        try:
            status = self._run(self._client.status())
            if genesis is None:
                genesis = self._fetch_genesis()
            if status.get("genesis_hash") != genesis.hash.hex():
                raise SourceError(
                    f"{self.url} serves the chain of genesis {status.get('genesis_hash')}, not {genesis.hash.hex()}"
                )
            self.genesis = genesis
            self.stop = int(status["height"]) if stop is None else stop
        except ApiError as error:
            self.close()
            raise SourceError(f"{self.url}: {error}") from None
        except BaseException:
            self.close()
            raise

    def _run(self, coroutine):
        return self._loop.run_until_complete(coroutine)

    def _fetch_genesis(self) -> Genesis:
        try:
            return Genesis.from_json(self._run(self._client.genesis_document()))
        except (ApiError, GenesisError) as error:
            raise SourceError(
                f"{self.url} does not serve its genesis ({error}); give the consortium's genesis.json (--genesis)"
            ) from None

    def __enter__(self) -> "NodeBlocks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Block]:
        height = self.start
        while height <= self.stop:
            limit = min(self.page_blocks, self.stop - height + 1)
            try:
                page, _ = self._run(self._client.encoded_blocks(height, limit))
            except ApiError as error:
                raise SourceError(f"{self.url}: blocks from {height}: {error}") from None
            if not page:
                raise SourceError(f"{self.url} has no block {height} (it reported height {self.stop})")
            for data in page[:limit]:
                try:
                    block = Block.decode(data)
                except BlockError as error:
                    raise SourceError(f"{self.url}: block {height} is malformed: {error}") from None
                if block.header.height != height:
                    raise SourceError(f"{self.url} sent block {block.header.height} where block {height} belongs")
                yield block
                height += 1

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()


class DataDirBlocks:
    """Blocks read straight from a stopped node's LevelDB store, read-only.

    `path` is a node's data folder (holding chain.ldb) or the chain.ldb
    folder itself. `stop`, the last height yielded, is the store's head
    (and may be lowered before iterating); `start`, the first, is 1 (a
    resumed audit raises it). The store is read by key, not through `ledger.chain.Chain`,
    so an auditor can walk a store that `Chain` would refuse to open.
    """

    start = 1

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if (path / "chain.ldb").is_dir():
            path = path / "chain.ldb"
        if not (path / "CURRENT").exists():
            raise SourceError(f"{path} holds no LevelDB store (no chain.ldb)")
        try:
            self._store: LevelDBStore | None = LevelDBStore(path, create=False, open_files=SOURCE_OPEN_FILES)
        except Exception as error:  # plyvel.Error and OSError: locked, corrupt, unreadable
            raise SourceError(f"{path}: cannot open the store ({error}); is a node running on it?") from None
        self.path = path
        try:
            if self._store.get(KEY_MAGIC) != MAGIC:
                raise SourceError(f"{path} is not a lacre chain store")
            try:
                self.genesis = Genesis.decode(self._store.get(KEY_GENESIS) or b"")
            except GenesisError as error:
                raise SourceError(f"{path}: stored genesis: {error}") from None
            head = self._store.get(KEY_HEAD)
            if head is None or len(head) != 8:
                raise SourceError(f"{path}: the head pointer is missing")
            self.stop = int.from_bytes(head, "big")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "DataDirBlocks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Block]:
        store = self._store
        if store is None:
            raise SourceError("source is closed")
        start = max(1, self.start)
        leaf = self._read(start)[0].first_leaf if start <= self.stop else 0
        records = store.iterate(RECORD_PREFIX, start=RECORD_PREFIX + _u64(leaf))
        for height in range(start, self.stop + 1):
            header, certificate = self._read(height)
            if header.first_leaf != leaf:
                raise SourceError(f"{self.path}: block {height} starts at leaf {header.first_leaf}, expected {leaf}")
            block_records = []
            for _ in range(header.record_count):
                key, value = next(records, (None, None))
                if key != RECORD_PREFIX + _u64(leaf):
                    raise SourceError(f"{self.path}: record {leaf} of block {height} is missing")
                block_records.append(value)
                leaf += 1
            yield Block(header, tuple(block_records), certificate)

    def _read(self, height: int) -> tuple[BlockHeader, CommitCertificate]:
        assert self._store is not None
        data = self._store.get(BLOCK_PREFIX + _u64(height))
        if data is None:
            raise SourceError(f"{self.path}: block {height} is missing")
        try:
            mapping = codec.decode(data)
            return BlockHeader.from_map(mapping["header"]), CommitCertificate.from_map(mapping["certificate"])
        except (codec.CodecError, BlockError, KeyError, TypeError) as error:
            raise SourceError(f"{self.path}: block {height} is malformed: {error}") from None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_source(
    *, file: str | Path | None = None, url: str | None = None, data_dir: str | Path | None = None,
    genesis: Genesis | None = None,
) -> BlockSource:
    """Open exactly one of a chain file, a node URL or a data folder.

    `genesis` is required for a URL (unless the node serves it) and, when
    given for a file or a folder, must be the one they hold.
    """
    if sum(x is not None for x in (file, url, data_dir)) != 1:
        raise ValueError("give exactly one of file, url, data_dir")
    if url is not None:
        return NodeBlocks(url, genesis)
    source: BlockSource = ChainFileReader(file) if file is not None else DataDirBlocks(data_dir)  # type: ignore[arg-type]
    if genesis is not None and source.genesis.hash != genesis.hash:
        source.close()
        raise SourceError(f"{file or data_dir} holds the chain of genesis {source.genesis.hash.hex()}, not {genesis.hash.hex()}")
    return source

"""`lacre chain import`: rebuild a node's store from a chain export file.

Every block is checked as a node checks a block from a peer (`Chain.validate`
and `Chain.commit`: links, proposer, timestamps, every record's signature and
rule, log and state roots, a quorum certificate of the authority set) before
it is written, so an import holds exactly what the consortium committed or
fails naming the block and the rule.

    DATA_DIR/chain.ldb      the store a node opens (node.toml: data_dir = DATA_DIR)
    DATA_DIR/genesis.json   the genesis (node.toml: genesis_file = .../genesis.json)

The store is built in DATA_DIR/chain.ldb.importing and renamed to chain.ldb
only once complete and synced, so a node never starts on half an import, and
a failed import leaves the folder as it was. Blocks are written without
fsync (a quorum holds them already) and one final synced write makes them
durable. Record signatures are checked on worker threads (PyNaCl releases the
GIL), a bounded batch of blocks ahead of the one being applied: memory
stays flat.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from client.chain_file import read_chain, sync_directory
from ledger import crypto
from ledger.block import Block, BlockError
from ledger.chain import Chain, ChainError
from ledger.genesis import Genesis, Trust
from ledger.leveldb_store import LevelDBStore
from ledger.records import RecordError, SignedRecord

STORE_NAME = "chain.ldb"
GENESIS_NAME = "genesis.json"
BATCH_RECORDS = 4096
BATCH_BLOCKS = 256
VERIFY_CHUNK = 256


class ChainImportError(Exception):
    """The import was refused or a block broke a rule; `height` and `rule` say where and which."""

    def __init__(self, message: str, height: int | None = None, rule: str = "") -> None:
        super().__init__(message)
        self.height = height
        self.rule = rule


@dataclass(frozen=True, slots=True)
class ImportSummary:
    data_dir: str
    genesis_hash: bytes
    blocks: int
    log_size: int
    log_root: bytes
    head_hash: bytes
    genesis_file: str

    def to_json(self) -> dict:
        return {
            "data_dir": self.data_dir, "genesis_hash": self.genesis_hash.hex(), "blocks": self.blocks,
            "tree_size": self.log_size, "log_root": self.log_root.hex(), "head_hash": self.head_hash.hex(),
            "genesis_file": self.genesis_file, "store": str(Path(self.data_dir) / STORE_NAME),
        }


def _with_last(blocks: Iterable[Block]) -> Iterator[tuple[Block, bool]]:
    iterator = iter(blocks)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following is None
        current = following


def _batches(blocks: Iterable[Block]) -> Iterator[list[tuple[Block, bool]]]:
    batch: list[tuple[Block, bool]] = []
    records = 0
    for block, last in _with_last(blocks):
        batch.append((block, last))
        records += len(block.records)
        if last or records >= BATCH_RECORDS or len(batch) >= BATCH_BLOCKS:
            yield batch
            batch, records = [], 0


def _verify_chunk(items: list[tuple[int, int, bytes]]) -> list[SignedRecord] | tuple[int, int, str]:
    """Decoded, verified records; or (height, record index, error) of the first bad one."""
    decoded = []
    for height, index, data in items:
        try:
            record = SignedRecord.decode_whole(data)
            record.verify()
        except (RecordError, crypto.SignatureError) as error:
            return height, index, str(error)
        decoded.append(record)
    return decoded


def _start_verifying(
    pool: concurrent.futures.Executor, batch: list[tuple[Block, bool]]
) -> tuple[list[tuple[Block, bool]], list[concurrent.futures.Future]]:
    items = [(block.header.height, i, data) for block, _ in batch for i, data in enumerate(block.records)]
    chunks = [items[i : i + VERIFY_CHUNK] for i in range(0, len(items), VERIFY_CHUNK)]
    return batch, [pool.submit(_verify_chunk, chunk) for chunk in chunks]


def _verified(futures: list[concurrent.futures.Future]) -> dict[bytes, SignedRecord]:
    known: dict[bytes, SignedRecord] = {}
    for future in futures:
        outcome = future.result()
        if isinstance(outcome, tuple):
            height, index, error = outcome
            raise ChainImportError(f"block {height} record {index}: {error}", height, "record")
        for record in outcome:
            known[record.hash] = record
    return known


def _check_destination(data_dir: Path) -> None:
    if data_dir.exists():
        if not data_dir.is_dir():
            raise ChainImportError(f"{data_dir} is not a folder")
        if any(data_dir.iterdir()):
            raise ChainImportError(f"{data_dir} is not empty: import only into an empty (or new) data folder")


def import_chain(
    path: str | Path,
    data_dir: str | Path,
    trust: Trust | None = None,
    progress: Callable[[Block, int], None] | None = None,
    verify_threads: int | None = None,
) -> ImportSummary:
    """Rebuild a node's store in the empty folder `data_dir` from the chain file at `path`.

    With `trust`, the file's genesis must be the one it names. `progress(block,
    offset)` runs after each block is applied, with the file offset reached.
    Raises ChainFileError (a damaged file) or ChainImportError (a refusal or a
    broken rule, naming the block); either way `data_dir` is left as it was.
    """
    data_dir = Path(data_dir)
    _check_destination(data_dir)
    genesis, reader = read_chain(path)
    with reader:
        if trust is not None and (trust.genesis_hash != genesis.hash or trust.origin != genesis.origin):
            raise ChainImportError(
                f"{path} holds the chain of genesis {genesis.hash.hex()} ({genesis.origin}), "
                f"not the trust file's {trust.genesis_hash.hex()} ({trust.origin})"
            )
        created = not data_dir.exists()
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = data_dir / (STORE_NAME + ".importing")
        try:
            chain = _build(genesis, reader, staging, progress, verify_threads)
            summary_fields = (chain.height, chain.log_size, chain.log.root(chain.log_size), chain.head_hash)
            chain.close()
            # Reopen: the store must pass the checks a node makes when it starts.
            store = LevelDBStore(staging, create=False)
            try:
                Chain(store, genesis)
            except ChainError as error:
                raise ChainImportError(f"the imported store does not reopen: {error}") from None
            finally:
                store.close()
            os.replace(staging, data_dir / STORE_NAME)
            genesis_file = data_dir / GENESIS_NAME
            temporary = data_dir / (GENESIS_NAME + ".tmp")
            temporary.write_text(json.dumps(genesis.to_json(), indent=2) + "\n")
            os.replace(temporary, genesis_file)
            sync_directory(data_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for name in (STORE_NAME, GENESIS_NAME, GENESIS_NAME + ".tmp"):
                target = data_dir / name
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
            if created:
                shutil.rmtree(data_dir, ignore_errors=True)
            raise
    height, log_size, log_root, head_hash = summary_fields
    return ImportSummary(str(data_dir), genesis.hash, height, log_size, log_root, head_hash, str(genesis_file))


def _build(
    genesis: Genesis, blocks: Iterable[Block], staging: Path,
    progress: Callable[[Block, int], None] | None, verify_threads: int | None,
) -> Chain:
    store = LevelDBStore(staging)
    try:
        chain = Chain(store, genesis)
    except BaseException:
        store.close()
        raise
    threads = verify_threads or os.cpu_count() or 1

    def apply(batch: list[tuple[Block, bool]], futures: list[concurrent.futures.Future]) -> None:
        known = _verified(futures)
        for block, last in batch:
            header = block.header
            try:
                records, delta = chain.validate(header, block.records, known=known)
                # One fsync, with the last block: LevelDB keeps the order of
                # writes, so a crash loses only a suffix.
                chain.commit(header, records, block.certificate, delta, sync=last)
            except BlockError as error:
                raise ChainImportError(
                    f"block {header.height} breaks {error.rule}: {error.detail}", header.height, error.rule
                ) from None
            if progress is not None:
                progress(block, getattr(blocks, "offset", 0))

    try:
        with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="import-verify") as pool:
            # Signatures of the next batch are checked while this one is applied.
            current = None
            for batch in _batches(blocks):
                following = _start_verifying(pool, batch)
                if current is not None:
                    apply(*current)
                current = following
            if current is not None:
                apply(*current)
    except BaseException:
        chain.close()
        raise
    return chain


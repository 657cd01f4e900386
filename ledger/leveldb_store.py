"""`Store` on LevelDB through plyvel: the only module of `ledger/` with I/O."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from pathlib import Path

import plyvel

from ledger.store import StoreClosedError, WriteBatch


def _open_files_max() -> int:
    """Table files LevelDB may keep open: most of the process's file limit, at most 5,000."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, ValueError, OSError):
        return 500
    return max(64, min(5_000, soft // 2))


TABLE_BYTES = 2 << 20
"""LevelDB's table file size (its `max_file_size`; LevelDB's own default)."""
WRITE_BUFFER_BYTES = 32 << 20
"""LevelDB's memtable: a store's writes collect here before level 0.

A node keeps both defaults. A 64 MB buffer cut its compaction by a quarter
300,000 records in and raised its rate there about 6%, but under load a
node would hold up to 64 MB more (a full memtable and one being written),
against its budget of 150 MB; 32 MB tables alone changed nothing there
(docs/consensus.md). An audit's own store passes its own (client/audit_run.py)."""


class LevelDBStore:
    """A `ledger.store.Store` over one LevelDB directory.

    LevelDB applies a write batch atomically and, with `sync=True`, fsyncs its
    log before returning, which is what a committed block needs to survive
    `kill -9` or power loss.
    """

    def __init__(
        self,
        path: str | Path,
        create: bool = True,
        cache_bytes: int = 16 << 20,
        open_files: int | None = None,
        table_bytes: int = TABLE_BYTES,
        write_buffer_bytes: int = WRITE_BUFFER_BYTES,
    ) -> None:
        """`open_files`: table files kept open (default: most of `ulimit -n`, at most 5,000).

        Each open table holds its index and Bloom filter in memory (tens of
        KB per 2 MB of table), so a process whose memory must not grow with
        the store (an audit) passes a bound, at the price of re-reading them
        on a reopen. `table_bytes` and `write_buffer_bytes`: see TABLE_BYTES
        and WRITE_BUFFER_BYTES.
        """
        self.path = Path(path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ranges: plyvel.Iterator | None = None  # see range()
        self._db: plyvel.DB | None = plyvel.DB(
            str(self.path),
            create_if_missing=create,
            # Subtree hashes and records are random-looking: compression only
            # costs CPU.
            compression=None,
            # Block cache: hot tiles and index entries. Kept small because
            # LevelDB also maps table files, and the OS page cache serves
            # misses; a node's resident size stays well under its budget.
            lru_cache_size=cache_bytes,
            # Point reads (Merkle nodes, the record index) otherwise probe
            # every level of the LSM tree.
            bloom_filter_bits=10,
            write_buffer_size=write_buffer_bytes,
            max_file_size=table_bytes,
            # With too few handles LevelDB reopens table files (index and
            # filter re-read): with 2 MB tables at 10M credentials (~1,000
            # files) status proofs ran at half speed. Bounded by `ulimit -n`.
            max_open_files=open_files or _open_files_max(),
        )

    @property
    def db(self) -> plyvel.DB:
        if self._db is None:
            raise StoreClosedError("store is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        self._drop_ranges()
        wb = self.db.write_batch(sync=sync)
        put, delete = wb.put, wb.delete
        if not batch.deletes:
            # A block of a cohort is ~50,000 puts: no Python-level loop for them.
            collections.deque(itertools.starmap(put, batch.ops), maxlen=0)
        else:
            for key, value in batch.ops:
                if value is None:
                    delete(key)
                else:
                    put(key, value)
        wb.write()

    def iterate(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        db = self.db
        if start is None:
            it = db.iterator(prefix=prefix, reverse=reverse)
        elif not reverse:
            it = db.iterator(start=max(start, prefix), stop=_prefix_end(prefix))
        else:
            end = _prefix_end(prefix)
            if end is not None and start >= end:
                it = db.iterator(prefix=prefix, reverse=True)
            else:
                it = db.iterator(start=prefix, stop=start, include_stop=True, reverse=True)
        with it:
            yield from it

    def range(self, start: bytes, stop: bytes) -> list[tuple[bytes, bytes]]:
        # One iterator serves every range until the next write (an iterator
        # sees the store as it was made): thousands of short ranges a block,
        # and a seek costs less than making an iterator over every level.
        ranges = self._ranges
        if ranges is None:
            ranges = self._ranges = self.db.iterator()
        ranges.seek(start)
        found = []
        for key, value in ranges:
            if key >= stop:
                break
            found.append((key, value))
        return found

    def _drop_ranges(self) -> None:
        if self._ranges is not None:
            self._ranges.close()
            self._ranges = None

    def compact(self) -> None:
        """Compact the whole store now (LevelDB otherwise does it in the background)."""
        # plyvel passes an omitted bound as the empty key, not as "no bound":
        # compact_range() alone asks LevelDB for the range ['', ''], nothing.
        with self.db.iterator(reverse=True, include_value=False) as keys:
            last = next(keys, None)
        if last is not None:
            self.db.compact_range(stop=last)

    def close(self) -> None:
        if self._db is not None:
            self._drop_ranges()
            self._db.close()
            self._db = None


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])

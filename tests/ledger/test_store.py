"""The `Store` contract (ledger.store), run against every implementation."""

from __future__ import annotations

import hashlib

import pytest

from ledger.leveldb_store import LevelDBStore
from ledger.store import MemoryStore, StoreClosedError, WriteBatch


@pytest.fixture(params=["memory", "leveldb"])
def store(request, tmp_path):
    opened = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
    yield opened
    opened.close()


def write(store, *ops, sync=True):
    batch = WriteBatch()
    for key, value in ops:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    store.write(batch, sync=sync)


def test_get_put_delete(store):
    assert store.get(b"k") is None
    write(store, (b"k", b"v"))
    assert store.get(b"k") == b"v"
    write(store, (b"k", b"w"), sync=False)
    assert store.get(b"k") == b"w"
    write(store, (b"k", None))
    assert store.get(b"k") is None
    write(store, (b"absent", None))  # deleting a missing key is fine
    write(store, (b"empty", b""))
    assert store.get(b"empty") == b""


def test_later_operation_on_a_key_wins_within_a_batch(store):
    write(store, (b"a", b"1"), (b"a", b"2"), (b"b", b"1"), (b"b", None), (b"c", None), (b"c", b"3"))
    assert (store.get(b"a"), store.get(b"b"), store.get(b"c")) == (b"2", None, b"3")


def test_put_all_is_puts_in_order_among_other_operations(store):
    batch = WriteBatch()
    batch.put(b"a", b"0")
    batch.put_all([(b"a", b"1"), (b"b", b"1")])
    batch.delete(b"b")
    batch.put_all(iter([(b"c", b"1"), (b"c", b"2")]))
    store.write(batch)
    assert (store.get(b"a"), store.get(b"b"), store.get(b"c")) == (b"1", None, b"2")


def test_a_batch_applies_whole(store):
    write(store, *[(b"n%03d" % i, b"%d" % i) for i in range(100)])
    assert [store.get(b"n%03d" % i) for i in range(100)] == [b"%d" % i for i in range(100)]


def test_a_batch_is_not_applied_until_written(store):
    batch = WriteBatch()
    batch.put(b"x", b"1")
    assert len(batch) == 1 and store.get(b"x") is None


KEYS = [b"a\x00", b"p", b"p\x00", b"p\x01", b"p\x01\xff", b"p\xff", b"q", b"q\x00"]


@pytest.fixture
def filled(store):
    write(store, *[(key, key.hex().encode()) for key in KEYS])
    return store


def keys(items):
    return [key for key, _ in items]


def test_iterate_a_prefix_in_key_order(filled):
    assert keys(filled.iterate(b"p")) == [b"p", b"p\x00", b"p\x01", b"p\x01\xff", b"p\xff"]
    assert list(filled.iterate(b"q\x00")) == [(b"q\x00", b"7100")]
    assert keys(filled.iterate(b"")) == KEYS
    assert list(filled.iterate(b"z")) == []


def test_iterate_from_a_start_key(filled):
    assert keys(filled.iterate(b"p", start=b"p\x01")) == [b"p\x01", b"p\x01\xff", b"p\xff"]
    assert keys(filled.iterate(b"p", start=b"p\x00\x05")) == [b"p\x01", b"p\x01\xff", b"p\xff"]
    assert keys(filled.iterate(b"p", start=b"a")) == keys(filled.iterate(b"p"))  # before the range
    assert keys(filled.iterate(b"p", start=b"q")) == []  # beyond the range


def test_iterate_in_reverse(filled):
    assert keys(filled.iterate(b"p", reverse=True)) == [b"p\xff", b"p\x01\xff", b"p\x01", b"p\x00", b"p"]
    assert keys(filled.iterate(b"p", start=b"p\x01", reverse=True)) == [b"p\x01", b"p\x00", b"p"]
    assert keys(filled.iterate(b"p", start=b"p\x01\x05", reverse=True)) == [b"p\x01", b"p\x00", b"p"]
    assert keys(filled.iterate(b"p", start=b"a", reverse=True)) == []  # before the range


def test_reverse_iteration_from_beyond_the_prefix_range_stays_in_it(filled):
    assert keys(filled.iterate(b"p", start=b"z", reverse=True)) == [b"p\xff", b"p\x01\xff", b"p\x01", b"p\x00", b"p"]
    assert keys(filled.iterate(b"p", start=b"q", reverse=True))[0] == b"p\xff"


def test_a_range_is_every_key_from_start_to_before_stop(filled):
    assert keys(filled.range(b"p\x00", b"p\x01\xff")) == [b"p\x00", b"p\x01"]
    assert keys(filled.range(b"p\x00\x05", b"p\x02")) == [b"p\x01", b"p\x01\xff"]
    assert filled.range(b"p\x02", b"p\xff") == []
    assert filled.range(b"p\x01", b"p\x01") == []
    assert filled.range(b"", b"\xff" * 8) == list(filled.iterate(b""))


def test_a_range_sees_every_write_before_it(filled):
    assert keys(filled.range(b"p", b"q")) == [b"p", b"p\x00", b"p\x01", b"p\x01\xff", b"p\xff"]
    write(filled, (b"p\x02", b"new"), (b"p\x00", b"changed"))
    batch = WriteBatch()
    batch.delete(b"p\x01")
    filled.write(batch)
    assert filled.range(b"p\x00", b"p\x03") == [(b"p\x00", b"changed"), (b"p\x01\xff", b"7001ff"), (b"p\x02", b"new")]


def test_iterating_an_all_ff_prefix(store):
    write(store, (b"\xff", b"1"), (b"\xff\xff", b"2"), (b"\xfe", b"0"))
    assert keys(store.iterate(b"\xff")) == [b"\xff", b"\xff\xff"]


def test_use_after_close_raises(store):
    write(store, (b"k", b"v"))
    store.close()
    with pytest.raises(StoreClosedError):
        store.get(b"k")
    with pytest.raises(StoreClosedError):
        write(store, (b"k", b"w"))
    with pytest.raises(StoreClosedError):
        list(store.iterate(b""))


def test_leveldb_data_survives_reopening(tmp_path):
    path = tmp_path / "db"
    first = LevelDBStore(path)
    write(first, (b"k", b"v"), (b"gone", b"x"))
    write(first, (b"gone", None))
    first.close()
    second = LevelDBStore(path)
    try:
        assert second.get(b"k") == b"v" and second.get(b"gone") is None
        assert keys(second.iterate(b"")) == [b"k"]
    finally:
        second.close()


def test_leveldb_refuses_a_missing_directory_without_create(tmp_path):
    with pytest.raises(Exception):
        LevelDBStore(tmp_path / "nothing", create=False)


def _compacted_tables(path, table_bytes: int, chunks: int, chunk_keys: int) -> tuple[list[int], int]:
    """Write `chunks` batches of `chunk_keys` random keys (68-byte values, as the map and the indexes
    write them) through a 1 MB memtable, then compact; the sizes of the table files, smallest first,
    and how many keys the store holds."""
    store = LevelDBStore(path, table_bytes=table_bytes, write_buffer_bytes=1 << 20)
    try:
        for chunk in range(chunks):
            batch = WriteBatch()
            batch.put_all([(hashlib.sha256(b"%d" % (chunk * chunk_keys + i)).digest(), bytes(68))
                           for i in range(chunk_keys)])
            store.write(batch, sync=False)
        store.compact()
        held = len(keys(store.iterate(b"")))
    finally:
        store.close()
    # Listed with no store open: a compaction's inputs may still be on disk
    # (or vanish) while it runs; opening the store deletes those that remain.
    LevelDBStore(path, create=False).close()
    return sorted(table.stat().st_size for table in path.glob("*.ldb")), held


@pytest.mark.parametrize("table_bytes", [1 << 20, 32 << 20])
def test_leveldb_compacts_into_tables_of_table_bytes(tmp_path, table_bytes):
    tables, held = _compacted_tables(tmp_path / "db", table_bytes, chunks=6, chunk_keys=10_000)  # 6 MB
    assert held == 60_000 and sum(tables) > 6_000_000
    if table_bytes < 6_000_000:
        # LevelDB closes a table once it passes the size, then adds its index and filter.
        assert len(tables) >= 5 and tables[-1] < table_bytes * 9 // 8
    else:
        assert tables[-1] > 4 << 20  # LevelDB's own default would have cut it at 2 MB


def test_compact_merges_the_whole_store(tmp_path):
    # Three memtables' worth of random keys: three level-0 tables, one short
    # of the count at which LevelDB would merge them by itself.
    tables, held = _compacted_tables(tmp_path / "db", 32 << 20, chunks=3, chunk_keys=12_000)
    assert held == 36_000
    assert len(tables) == 1

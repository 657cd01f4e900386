"""The key-value store the ledger persists into.

Everything durable in lacre (blocks, records, Merkle subtree hashes,
credential state) lives in one ordered byte-keyed store. The ledger talks to
it only through the small `Store` protocol below, so the same logic runs over
LevelDB in a node (`ledger.leveldb_store`) and over `MemoryStore` in tests and
simulations. One contract test suite runs against both.

Atomicity is the store's one promise that the rest of the design leans on:
`write(batch)` applies every operation of the batch or none of them, and with
`sync=True` it returns only once the batch is on stable storage.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Protocol


class WriteBatch:
    """Puts and deletes to be applied together by `Store.write`.

    Later operations on the same key win, as in LevelDB.
    """

    __slots__ = ("ops", "deletes")

    def __init__(self) -> None:
        self.ops: list[tuple[bytes, bytes | None]] = []
        self.deletes = False
        """Whether any op is a delete (value None); a batch of puts only is applied in one C loop."""

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def put_all(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        """`put` each (key, value) of `pairs`, in order: one call for a block's thousands."""
        self.ops.extend(pairs)

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))
        self.deletes = True

    def __len__(self) -> int:
        return len(self.ops)


class Store(Protocol):
    def get(self, key: bytes) -> bytes | None:
        """The value under `key`, or None."""

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        """Apply all of `batch` atomically; with `sync`, durably before returning."""

    def iterate(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order.

        `start`, if given, is a full key: iteration begins at the first key
        >= start (or, with `reverse`, at the last key <= start).
        """

    def range(self, start: bytes, stop: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair with start <= key < stop, in key order: one
        call for a short range read often (the leaves under a map position)."""

    def close(self) -> None:
        """Release the store. Using it afterwards is an error."""


class StoreClosedError(RuntimeError):
    """The store was used after `close()`."""


class MemoryStore:
    """An in-memory `Store`: a sorted key list beside a dict.

    It keeps only what was written, so a test can "crash" a node by dropping
    every object except the store and reopening the ledger over it.
    """

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._data.get(key)

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        self._check_open()
        for key, value in batch.ops:
            if value is None:
                if key in self._data:
                    del self._data[key]
                    self._keys.pop(bisect.bisect_left(self._keys, key))
            else:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = value

    def iterate(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        keys = self._keys
        if not reverse:
            low = max(prefix, start) if start is not None else prefix
            i = bisect.bisect_left(keys, low)
            # Snapshot the matching keys so writes during iteration are safe.
            selected = []
            while i < len(keys) and keys[i].startswith(prefix):
                selected.append(keys[i])
                i += 1
        else:
            i = bisect.bisect_left(keys, prefix)
            j = i
            while j < len(keys) and keys[j].startswith(prefix):
                j += 1
            selected = [k for k in keys[i:j] if start is None or k <= start]
            selected.reverse()
        for key in selected:
            value = self._data.get(key)
            if value is not None:
                yield key, value

    def range(self, start: bytes, stop: bytes) -> list[tuple[bytes, bytes]]:
        self._check_open()
        keys, data = self._keys, self._data
        return [(key, data[key]) for key in keys[bisect.bisect_left(keys, start):bisect.bisect_left(keys, stop)]]

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")

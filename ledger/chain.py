"""The block store: committed blocks, their records, the Merkle log and state.

Theory of operation. The chain lives in one `Store`. Committing a block is a
single synced write batch holding the block (header and certificate), its
records, the record-hash index, every Merkle node the new leaves complete,
the state changes and the new head pointer. LevelDB applies a batch entirely
or not at all, so after a crash the store holds exactly the blocks whose
commit returned, never part of one. Reopening reads the head pointer and the
O(log n) right border of the Merkle tree, then checks that they agree with
the head header: no replay, and a store that does not hold a whole chain of
this genesis is refused.

Key layout (heights and leaf indexes are 8-byte big-endian):

    m/magic               MAGIC
    m/genesis             canonical genesis bytes
    m/head                height of the last committed block
    b + height            {"header", "certificate"} of a block
    r + leaf index        record bytes (the leaf data; a batch's with its ids)
    x + record hash       leaf index + block height
    t + ...               Merkle tiles (ledger.merkle_log, ledger.merkle_tiles)
    si / sc + key         state entries (ledger.state)
    zc / zr + ...         the state's authenticated maps (ledger.smt)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from ledger import codec, crypto
from ledger.block import Block, BlockError, BlockHeader, CommitCertificate
from ledger.compact_range import CompactRange, subtree_ids
from ledger.genesis import AuthoritySet, Genesis
from ledger.governance import ConsortiumEntry, ConsortiumHistory
from ledger.merkle import leaf_hash
from ledger.merkle_log import MerkleLog, MerkleLogError, MissingNodeError
from ledger.records import CredentialBatch, CredentialIssuance, RecordError, SignedRecord, leaf_data
from ledger.state import RuleError, StateDelta, StoreStateView
from ledger.store import Store, WriteBatch

MAGIC = b"lacre-chain/v1"
KEY_MAGIC = b"m/magic"
KEY_GENESIS = b"m/genesis"
KEY_HEAD = b"m/head"
BLOCK_PREFIX = b"b"
RECORD_PREFIX = b"r"
INDEX_PREFIX = b"x"
MERKLE_PREFIX = b"t"
BLOCK_BATCHED_MAX = 262_144
"""Credentials in the batches of one block (8 MiB of ids): bounds a block whatever the policy."""


_ISSUANCES = (CredentialIssuance, CredentialBatch)
# An issuance already on the ledger repeats its credential (or batch) id, so
# the rules refuse it anyway: the record index is read only then, which
# saves a store read for most records.
_UNIQUE_BY_RULE = {"credential-unique", "batch-unique"}


def refused_again_by_rules(record: SignedRecord) -> bool:
    """Whether the rules refuse `record` once it is on the ledger (an issuance: its id is taken),
    so that admission need not read the record index to keep it out."""
    return type(record.body) in _ISSUANCES


def batched(record: SignedRecord) -> int:
    """How many credentials a record issues in a batch (0 for any other record)."""
    return record.body.count if type(record.body) is CredentialBatch else 0


class ChainError(Exception):
    """The store cannot serve as this chain."""


class ForeignStoreError(ChainError):
    """The store belongs to another chain, or is not a lacre store at all."""


class CorruptStoreError(ChainError):
    """The store's head, blocks and Merkle log disagree."""


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class RecordLocation:
    leaf_index: int
    height: int


@dataclass(frozen=True, slots=True)
class ProposedBlock:
    """A block assembled from pending records, awaiting its certificate."""

    header: BlockHeader
    records: tuple[SignedRecord, ...]
    rejected: tuple[tuple[SignedRecord, RuleError], ...]
    delta: StateDelta


class Chain:
    """Committed chain state over a `Store`; the only writer of that store."""

    def __init__(self, store: Store, genesis: Genesis) -> None:
        self.store = store
        self.genesis = genesis
        self.chain_id = genesis.hash
        self.origin = genesis.origin
        self._open()

    # -- opening ---------------------------------------------------------

    def _open(self) -> None:
        store = self.store
        magic = store.get(KEY_MAGIC)
        if magic is None:
            if next(iter(store.iterate(b"")), None) is not None:
                raise ForeignStoreError("store is not empty and is not a lacre chain (or its creation was interrupted)")
            batch = WriteBatch()
            batch.put(KEY_MAGIC, MAGIC)
            batch.put(KEY_GENESIS, self.genesis.encode())
            batch.put(KEY_HEAD, _u64(0))
            # Epoch 0 (the genesis authority set and policy) is state from
            # the start, so governance and verifiers read every epoch alike.
            delta = StateDelta(StoreStateView(store), self.genesis.authority_set)
            delta.consortium_change = ConsortiumEntry.from_genesis(self.genesis)
            delta.seal()
            for key, value in delta.puts():
                batch.put(key, value)
            store.write(batch, sync=True)
        elif magic != MAGIC:
            raise ForeignStoreError(f"store magic {magic!r} is not {MAGIC!r}")
        stored_genesis = store.get(KEY_GENESIS)
        if stored_genesis != self.genesis.encode():
            raise ForeignStoreError("store belongs to a different genesis")
        head = store.get(KEY_HEAD)
        if head is None or len(head) != 8:
            raise CorruptStoreError("head pointer missing")
        height = int.from_bytes(head, "big")
        self.head: BlockHeader | None = None
        if height:
            self.head = self._header(height)
            if self.head is None:
                raise CorruptStoreError(f"head block {height} missing")
            if store.get(BLOCK_PREFIX + _u64(height + 1)) is not None:
                raise CorruptStoreError(f"block {height + 1} stored beyond the head")
        size = self.head.log_size if self.head else 0
        try:
            self.log = MerkleLog(self.store, size, prefix=MERKLE_PREFIX)
            root = self.log.root()
        except (MerkleLogError, MissingNodeError) as error:
            raise CorruptStoreError(f"Merkle log: {error}") from None
        if self.head and root != self.head.log_root:
            raise CorruptStoreError("Merkle log root differs from the head header")
        if size and store.get(RECORD_PREFIX + _u64(size - 1)) is None:
            raise CorruptStoreError("last record missing")
        nodes = [self.log_node(level, index) for level, index in subtree_ids(size)]
        self._range = CompactRange(size, tuple(nodes))
        self.state = StoreStateView(store)
        if self.head and self.state.root() != self.head.state_root:
            raise CorruptStoreError("state root differs from the head header")
        try:
            self.history = ConsortiumHistory(self.state.epochs())
        except ValueError as error:
            raise CorruptStoreError(f"consortium history: {error}") from None

    def log_node(self, level: int, index: int) -> bytes:
        try:
            return self.log.node(level, index)
        except (MerkleLogError, MissingNodeError) as error:
            raise CorruptStoreError(f"Merkle node {level}/{index}: {error}") from None

    # -- reading ---------------------------------------------------------

    @property
    def height(self) -> int:
        return self.head.height if self.head else 0

    @property
    def authority_set(self) -> AuthoritySet:
        """The authorities in force for the next block."""
        return self.history.current.authority_set

    @property
    def block_records_max(self) -> int:
        """The policy in force for the next block."""
        return self.history.current.block_records_max

    def authority_set_at(self, height: int) -> AuthoritySet:
        """The authorities that certify block `height`."""
        return self.history.at(height).authority_set

    @property
    def head_hash(self) -> bytes:
        return self.head.hash if self.head else self.chain_id

    @property
    def log_size(self) -> int:
        return self._range.size

    def _header(self, height: int) -> BlockHeader | None:
        data = self.store.get(BLOCK_PREFIX + _u64(height))
        if data is None:
            return None
        return BlockHeader.from_map(codec.decode(data)["header"])

    def header(self, height: int) -> BlockHeader | None:
        if not 1 <= height <= self.height:
            return None
        return self._header(height)

    def certificate(self, height: int) -> CommitCertificate | None:
        if not 1 <= height <= self.height:
            return None
        data = self.store.get(BLOCK_PREFIX + _u64(height))
        return CommitCertificate.from_map(codec.decode(data)["certificate"]) if data else None

    def block(self, height: int) -> Block | None:
        if not 1 <= height <= self.height:
            return None
        data = self.store.get(BLOCK_PREFIX + _u64(height))
        if data is None:
            raise CorruptStoreError(f"block {height} missing")
        mapping = codec.decode(data)
        header = BlockHeader.from_map(mapping["header"])
        records = tuple(self.records(header.first_leaf, header.log_size))
        return Block(header, records, CommitCertificate.from_map(mapping["certificate"]))

    def records(self, start: int, stop: int) -> Iterator[bytes]:
        """Record bytes of leaves [start, stop)."""
        if start >= stop:
            return
        for _, value in self.store.iterate(RECORD_PREFIX, start=RECORD_PREFIX + _u64(start)):
            yield value
            start += 1
            if start >= stop:
                return
        raise CorruptStoreError("records missing")

    def record_at(self, leaf_index: int) -> bytes | None:
        if not 0 <= leaf_index < self.log_size:
            return None
        return self.store.get(RECORD_PREFIX + _u64(leaf_index))

    def locate(self, record_hash: bytes) -> RecordLocation | None:
        value = self.store.get(INDEX_PREFIX + record_hash)
        if value is None:
            return None
        return RecordLocation(int.from_bytes(value[:8], "big"), int.from_bytes(value[8:], "big"))

    def checkpoint_note(self, height: int | None = None) -> str | None:
        """The quorum-cosigned checkpoint of block `height` (default: the head)."""
        height = self.height if height is None else height
        header, certificate = self.header(height), self.certificate(height)
        if header is None or certificate is None:
            return None
        return certificate.checkpoint_note(header, self.origin, self.authority_set_at(height))

    # -- building and committing -----------------------------------------

    def propose(
        self, records: Sequence[SignedRecord], proposer: str, round: int, timestamp_ms: int
    ) -> ProposedBlock:
        """Assemble the next block from verified `records`, dropping those the rules refuse.

        Changes nothing: the block is committed only by `commit` with its
        certificate. Precondition: every record's signature was verified.
        """
        delta = StateDelta(self.state, self.authority_set, self.height + 1)
        accepted: list[SignedRecord] = []
        rejected: list[tuple[SignedRecord, RuleError]] = []
        leaf = self.log_size
        seen: set[bytes] = set()
        in_batches = 0
        for record in records:
            if len(accepted) >= self.block_records_max:
                break
            count = batched(record)
            if count and in_batches + count > BLOCK_BATCHED_MAX:
                continue  # it waits for a later block
            record_hash = record.hash
            if record_hash in seen or (not refused_again_by_rules(record) and self.locate(record_hash) is not None):
                rejected.append((record, RuleError("record-unique", "record already on the ledger")))
                continue
            try:
                delta.apply(record, leaf)
            except RuleError as error:
                if error.rule in _UNIQUE_BY_RULE and self.locate(record_hash) is not None:
                    error = RuleError("record-unique", "record already on the ledger")
                rejected.append((record, error))
                continue
            seen.add(record_hash)
            accepted.append(record)
            in_batches += count
            leaf += 1
        extended = self._range.extend(r.hash for r in accepted)
        sealed = delta.seal()
        previous_ms = self.head.timestamp_ms if self.head else 0
        header = BlockHeader(
            height=self.height + 1,
            previous_hash=self.head_hash,
            proposer=proposer,
            round=round,
            timestamp_ms=max(timestamp_ms, previous_ms),
            record_count=len(accepted),
            log_size=extended.size,
            log_root=extended.root(),
            state_root=sealed.root,
        )
        return ProposedBlock(header, tuple(accepted), tuple(rejected), delta)

    def validate(
        self,
        header: BlockHeader,
        records: Sequence[bytes | SignedRecord],
        verify_signatures: bool = True,
        known: Mapping[bytes, SignedRecord] | None = None,
    ) -> tuple[tuple[SignedRecord, ...], StateDelta]:
        """Check a block from elsewhere against every rule; change nothing.

        `records` are record bytes, or records the caller already decoded and
        verified (a consensus proposal resolved from its mempool); `known`
        maps record hashes to such records for bytes that may repeat them.
        Neither is decoded nor verified again. Raises BlockError naming the
        rule broken.
        """
        if header.height != self.height + 1:
            raise BlockError("height", f"expected height {self.height + 1}, got {header.height}")
        if header.previous_hash != self.head_hash:
            raise BlockError("previous-hash", "does not link to the head")
        if header.proposer != self.authority_set.proposer(header.height, header.round).name:
            raise BlockError("proposer", f"{header.proposer!r} is not the proposer of round {header.round}")
        if self.head and header.timestamp_ms < self.head.timestamp_ms:
            raise BlockError("timestamp", "earlier than the previous block")
        if len(records) != header.record_count or header.log_size != self.log_size + len(records):
            raise BlockError("record-count", "records differ from the header's counts")
        if len(records) > self.block_records_max:
            raise BlockError("block-records-max", f"{len(records)} records; the policy allows {self.block_records_max}")
        decoded: list[SignedRecord] = []
        delta = StateDelta(self.state, self.authority_set, header.height)
        seen: set[bytes] = set()
        in_batches = 0
        for i, data in enumerate(records):
            try:
                if type(data) is SignedRecord:
                    record = data
                else:
                    record = known.get(leaf_hash(leaf_data(data))) if known is not None else None
                if record is None:
                    record = SignedRecord.decode_whole(data)
                    if verify_signatures:
                        record.verify()
            except (RecordError, crypto.SignatureError) as error:
                raise BlockError("record", f"record {i}: {error}") from None
            in_batches += batched(record)
            if in_batches > BLOCK_BATCHED_MAX:
                raise BlockError("block-batched-max", f"more than {BLOCK_BATCHED_MAX} credentials in batches")
            if record.hash in seen or (not refused_again_by_rules(record) and self.locate(record.hash) is not None):
                raise BlockError("record-unique", f"record {i} is already on the ledger")
            seen.add(record.hash)
            try:
                delta.apply(record, self.log_size + i)
            except RuleError as error:
                if error.rule in _UNIQUE_BY_RULE and self.locate(record.hash) is not None:
                    raise BlockError("record-unique", f"record {i} is already on the ledger") from None
                raise BlockError(error.rule, f"record {i}: {error.detail}") from None
            decoded.append(record)
        extended = self._range.extend(r.hash for r in decoded)
        if extended.root() != header.log_root:
            raise BlockError("log-root", "log root differs from the records")
        if delta.seal().root != header.state_root:
            raise BlockError("state-root", "state root differs from the state")
        return tuple(decoded), delta

    def commit(
        self,
        header: BlockHeader,
        records: Sequence[SignedRecord],
        certificate: CommitCertificate,
        delta: StateDelta,
        sync: bool = True,
        signatures_checked: bool = False,
    ) -> None:
        """Durably append a validated block; returns once it is on disk.

        With `sync=False` (bulk catch-up and import of blocks that a quorum
        already holds) the write may be lost in a crash, but only together
        with every later one: LevelDB keeps the order of writes.

        Preconditions: `header`, `records` and `delta` come from `propose` or
        `validate` at the current head. The certificate is checked here: no
        block reaches the store without a quorum. `signatures_checked`: the
        caller verified each of its signatures (see CommitCertificate.verify).
        """
        if header.height != self.height + 1 or header.previous_hash != self.head_hash:
            raise BlockError("height", "block does not extend the head")
        certificate.verify(header, self.authority_set, self.chain_id, self.origin, signatures_checked)
        batch = WriteBatch()
        height_key = _u64(header.height)
        batch.put(
            BLOCK_PREFIX + height_key,
            codec.encode({"certificate": certificate.to_map(), "header": header.to_map()}),
        )
        first = self.log_size
        leaf_hashes = [record.hash for record in records]
        batch.put_all([(RECORD_PREFIX + _u64(first + i), record.encoded)
                       for i, record in enumerate(records)])
        batch.put_all([(INDEX_PREFIX + record_hash, _u64(first + i) + height_key)
                       for i, record_hash in enumerate(leaf_hashes)])
        root = self.log.append(leaf_hashes, batch)
        if root != header.log_root or self.log.size != header.log_size:
            # Unreachable for a validated block; refuse rather than corrupt.
            self.log = MerkleLog(self.store, self.log_size, prefix=MERKLE_PREFIX)
            raise BlockError("log-root", "log root differs from the header")
        sealed = delta.seal()
        if sealed.root != header.state_root:
            raise BlockError("state-root", "state root differs from the header")
        batch.put_all(delta.puts())
        batch.put(KEY_HEAD, height_key)
        try:
            self.store.write(batch, sync=sync)
        except BaseException:
            # The log already staged the leaves in memory: forget them.
            self.log = MerkleLog(self.store, self.log_size, prefix=MERKLE_PREFIX)
            raise
        self.log.flushed()
        self.state.committed(delta, sealed)
        if delta.consortium_change is not None:
            self.history.append(delta.consortium_change)
        self._range = self._range.extend(leaf_hashes)
        self.head = header

    def apply_block(self, block: Block) -> None:
        """Validate and commit a block fetched from a peer or an export."""
        records, delta = self.validate(block.header, block.records)
        self.commit(block.header, records, block.certificate, delta)

    def close(self) -> None:
        self.store.close()

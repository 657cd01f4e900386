"""The block store: atomic commits, instant reopen, and refusal of foreign or broken stores."""

from __future__ import annotations

import dataclasses

import pytest

from ledger import codec, merkle
from ledger.block import BlockError, CommitCertificate, precommit
from ledger.chain import BLOCK_PREFIX, KEY_HEAD, Chain, CorruptStoreError, ForeignStoreError
from ledger.leveldb_store import LevelDBStore
from ledger.merkle_tiles import TILE_HEIGHT
from ledger.store import MemoryStore, WriteBatch
from tests.conftest import make_consortium, seeded_key


def test_commit_appends_records_and_links_blocks(consortium, chain):
    consortium.commit(chain, [consortium.registration()])
    consortium.commit(chain, [consortium.issuance(i) for i in range(5)])
    assert (chain.height, chain.log_size) == (2, 6)
    first, second = chain.block(1), chain.block(2)
    assert second.header.previous_hash == first.header.hash
    assert first.header.previous_hash == consortium.genesis.hash
    leaves = [merkle.leaf_hash(r) for r in first.records + second.records]
    assert chain.log.root(6) == merkle.root(leaves) == second.header.log_root
    for i, leaf in enumerate(leaves):
        location = chain.locate(leaf)
        assert (location.leaf_index, location.height) == (i, 1 if i == 0 else 2)


def test_checkpoint_is_cosigned_for_the_head(consortium, chain):
    from ledger.checkpoint import verify_checkpoint

    consortium.commit(chain, [consortium.registration()])
    checkpoint, signatures = verify_checkpoint(
        chain.checkpoint_note(), chain.authority_set.verifiers, 1, origin=chain.origin
    )
    assert (checkpoint.tree_size, checkpoint.root_hash) == (1, chain.head.log_root)
    assert [s.name for s in signatures] == ["inst-0"]


def test_reopen_resumes_from_metadata(tmp_path, consortium):
    store = LevelDBStore(tmp_path / "db")
    chain = Chain(store, consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    consortium.commit(chain, [consortium.issuance(i) for i in range(3)])
    head = chain.head
    chain.close()
    reopened = Chain(LevelDBStore(tmp_path / "db"), consortium.genesis)
    assert reopened.head == head and reopened.log_size == 4
    consortium.commit(reopened, [consortium.issuance(9)])
    assert reopened.height == 3
    reopened.close()


def test_foreign_genesis_is_refused(tmp_path, consortium):
    Chain(LevelDBStore(tmp_path / "db"), consortium.genesis).close()
    other = dataclasses.replace(consortium.genesis, origin="other.example/log")
    with pytest.raises(ForeignStoreError, match="different genesis"):
        Chain(LevelDBStore(tmp_path / "db"), other)


def test_non_lacre_store_is_refused(consortium):
    store = MemoryStore()
    batch = WriteBatch()
    batch.put(b"some", b"thing")
    store.write(batch)
    with pytest.raises(ForeignStoreError):
        Chain(store, consortium.genesis)


def _broken(consortium, damage) -> MemoryStore:
    store = MemoryStore()
    chain = Chain(store, consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    consortium.commit(chain, [consortium.issuance(1), consortium.issuance(2)])
    batch = WriteBatch()
    damage(batch)
    store.write(batch)
    return store


DAMAGE = {
    "head block missing": lambda b: b.delete(BLOCK_PREFIX + (2).to_bytes(8, "big")),
    "head points past the chain": lambda b: b.put(KEY_HEAD, (7).to_bytes(8, "big")),
    "head pointer truncated": lambda b: b.put(KEY_HEAD, b"\x00"),
    "block beyond the head": lambda b: b.put(KEY_HEAD, (1).to_bytes(8, "big")),
    "merkle tile missing": lambda b: b.delete(b"t" + bytes([TILE_HEIGHT, 0]) + (0).to_bytes(8, "big")),
    "last record missing": lambda b: b.delete(b"r" + (2).to_bytes(8, "big")),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_half_written_store_is_refused(consortium, damage):
    store = _broken(consortium, damage)
    with pytest.raises((CorruptStoreError, ForeignStoreError)):
        Chain(store, consortium.genesis)


def test_propose_drops_records_the_rules_refuse(consortium, chain):
    stranger = seeded_key("stranger")
    proposed = chain.propose(
        [consortium.registration(), consortium.issuance(1), consortium.issuance(1), consortium.issuance(2, issuer=stranger)],
        "inst-0", 0, 1,
    )
    assert [r.hash for r in proposed.records] == [consortium.registration().hash, consortium.issuance(1).hash]
    assert [e.rule for _, e in proposed.rejected] == ["record-unique", "issuer-registered"]
    assert chain.height == 0 and chain.log_size == 0, "propose must not change the chain"


def _proposal(consortium, chain, records):
    proposed = chain.propose(records, "inst-0", 0, 5)
    return proposed.header, [r.encoded for r in proposed.records]


def test_validate_accepts_a_good_block_and_apply_block_commits(consortium):
    source, replica = Chain(MemoryStore(), consortium.genesis), Chain(MemoryStore(), consortium.genesis)
    consortium.commit(source, [consortium.registration(), consortium.issuance(1)])
    replica.apply_block(source.block(1))
    assert replica.head == source.head


BLOCK_TAMPERING = {
    "wrong height": (lambda h, r: (dataclasses.replace(h, height=5), r), "height"),
    "wrong previous hash": (lambda h, r: (dataclasses.replace(h, previous_hash=bytes(32)), r), "previous-hash"),
    "wrong proposer": (lambda h, r: (dataclasses.replace(h, proposer="inst-9"), r), "proposer"),
    "wrong log root": (lambda h, r: (dataclasses.replace(h, log_root=bytes(32)), r), "log-root"),
    "dropped record": (lambda h, r: (h, r[:-1]), "record-count"),
    "reordered records": (lambda h, r: (h, r[::-1]), "issuer-registered"),
    "flipped byte": (lambda h, r: (h, [r[0][:-1] + bytes([r[0][-1] ^ 1])] + r[1:]), "record"),
    "state root": (lambda h, r: (dataclasses.replace(h, state_root=b"\x01" * 32), r), "state-root"),
}


@pytest.mark.parametrize("tamper,rule", BLOCK_TAMPERING.values(), ids=BLOCK_TAMPERING.keys())
def test_validate_names_the_rule_a_block_breaks(consortium, chain, tamper, rule):
    header, records = _proposal(consortium, chain, [consortium.registration(), consortium.issuance(1)])
    header, records = tamper(header, records)
    with pytest.raises(BlockError) as caught:
        chain.validate(header, records)
    assert caught.value.rule == rule


def test_commit_refuses_a_block_without_quorum():
    consortium = make_consortium(4)
    chain = Chain(MemoryStore(), consortium.genesis)
    proposed = chain.propose([consortium.registration()], chain.authority_set.proposer(1, 0).name, 0, 1)
    header = proposed.header
    signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in consortium.authorities[:2])
    with pytest.raises(BlockError, match="quorum is 3"):
        chain.commit(header, proposed.records, CommitCertificate(1, 0, header.hash, signatures), proposed.delta)
    assert chain.height == 0
    three = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in consortium.authorities[:3])
    chain.commit(header, proposed.records, CommitCertificate(1, 0, header.hash, three), proposed.delta)
    assert chain.height == 1


def test_block_encoding_round_trips(consortium, chain):
    from ledger.block import Block

    consortium.commit(chain, [consortium.registration(), consortium.issuance(1)])
    block = chain.block(1)
    assert Block.decode(block.encode()) == block
    assert codec.decode(block.encode())["header"]["height"] == 1


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key):
        self.reads += 1
        return super().get(key)

    def iterate(self, prefix, start=None, reverse=False):
        for item in super().iterate(prefix, start, reverse):
            self.reads += 1
            yield item


def test_reopen_reads_a_handful_of_keys_not_the_chain(consortium):
    store = CountingStore()
    chain = Chain(store, consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    for block in range(20):
        consortium.commit(chain, [consortium.issuance(block * 50 + i) for i in range(50)])
    store.reads = 0
    reopened = Chain(store, consortium.genesis)
    assert reopened.log_size == 1001
    # head pointer, head block, genesis, magic, O(log n) frontier nodes
    assert store.reads <= 40, store.reads


class FailingStore(MemoryStore):
    fail = False

    def write(self, batch, sync=True):
        if self.fail:
            raise OSError("disk full")
        super().write(batch, sync)


def test_a_failed_write_leaves_the_chain_at_its_head(consortium):
    store = FailingStore()
    chain = Chain(store, consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    store.fail = True
    with pytest.raises(OSError):
        consortium.commit(chain, [consortium.issuance(1)])
    store.fail = False
    assert (chain.height, chain.log_size) == (1, 1)
    consortium.commit(chain, [consortium.issuance(2)])
    assert chain.log.root(2) == merkle.root([merkle.leaf_hash(r) for r in chain.records(0, 2)])


def test_validate_reuses_records_it_is_told_are_known(consortium, chain):
    records = [consortium.registration(), consortium.issuance(1)]
    header, encoded = _proposal(consortium, chain, records)
    known = {records[1].hash: records[1]}
    validated, _ = chain.validate(header, encoded, known=known)
    assert validated[1] is records[1] and validated[0] is not records[0]
    assert [r.encoded for r in validated] == encoded


def test_validate_takes_records_already_decoded_as_they_are(consortium, chain):
    records = [consortium.registration(), consortium.issuance(1)]
    header, encoded = _proposal(consortium, chain, records)
    validated, _ = chain.validate(header, records, verify_signatures=False)
    assert all(v is r for v, r in zip(validated, records))
    swapped = [records[1], records[0]]
    with pytest.raises(BlockError):
        chain.validate(header, swapped, verify_signatures=False)

"""`lacre chain import`: a store rebuilt from an export, checked block by block; and the block sources."""

from __future__ import annotations

import dataclasses
import json

import pytest

from client.block_source import DataDirBlocks, SourceError, open_source
from client.chain_file import ChainFileError, ChainFileWriter, export_chain
from client.chain_import import ChainImportError, import_chain
from ledger.chain import Chain
from ledger.checkpoint import verify_checkpoint
from ledger.genesis import Genesis, Trust
from ledger.leveldb_store import LevelDBStore
from ledger.merkle import leaf_hash, verify_inclusion
from ledger.store import MemoryStore
from tests.client.lacre_cli import lacre
from tests.conftest import make_consortium


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    consortium = make_consortium(4)
    chain = Chain(MemoryStore(), consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    for block in range(3):
        consortium.commit(chain, [consortium.issuance(10 * block + i) for i in range(4)])
    blocks = [chain.block(h) for h in range(1, chain.height + 1)]
    path = tmp_path_factory.mktemp("export") / "chain.lacre"
    export_chain(blocks, consortium.genesis, path)
    return consortium, chain, blocks, path


def _tampered(tmp_path, consortium, blocks, height, block):
    path = tmp_path / "tampered.lacre"
    with ChainFileWriter(path, consortium.genesis, check_links=False) as writer:
        for b in blocks:
            writer.write_block(block if b.header.height == height else b)
        writer.finish()
    return path


def test_import_rebuilds_a_store_that_serves_proofs(tmp_path, exported):
    consortium, chain, blocks, path = exported
    applied = []
    summary = import_chain(path, tmp_path / "data", progress=lambda block, offset: applied.append(block.header.height))
    assert applied == [1, 2, 3, 4]
    assert (summary.blocks, summary.log_size, summary.head_hash) == (4, chain.log_size, chain.head_hash)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["chain.ldb", "genesis.json"]
    assert Genesis.load(tmp_path / "data" / "genesis.json") == consortium.genesis
    imported = Chain(LevelDBStore(tmp_path / "data" / "chain.ldb", create=False), consortium.genesis)
    try:
        assert (imported.height, imported.head_hash, imported.log_size) == (4, chain.head_hash, chain.log_size)
        assert imported.checkpoint_note() == chain.checkpoint_note()
        checkpoint, _ = verify_checkpoint(imported.checkpoint_note(), consortium.genesis.authority_set.verifiers, 3)
        record = blocks[2].records[1]
        location = imported.locate(leaf_hash(record))
        path_ = imported.log.inclusion_proof(location.leaf_index, checkpoint.tree_size)
        verify_inclusion(leaf_hash(record), location.leaf_index, checkpoint.tree_size, path_, checkpoint.root_hash)
    finally:
        imported.close()


def test_a_data_folder_streams_back_the_same_blocks(tmp_path, exported):
    consortium, _, blocks, path = exported
    import_chain(path, tmp_path / "data")
    with DataDirBlocks(tmp_path / "data") as source:
        assert source.genesis == consortium.genesis and source.stop == 4
        assert list(source) == blocks
    with open_source(file=path, genesis=consortium.genesis) as source:
        assert list(source) == blocks
    with pytest.raises(SourceError, match="holds the chain of genesis"):
        open_source(data_dir=tmp_path / "data", genesis=make_consortium(1).genesis)
    # The same chain exported again from the folder is the same file, byte for byte.
    assert lacre("chain", "export", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "again.lacre"),
                 "--no-progress") == 0
    assert (tmp_path / "again.lacre").read_bytes() == path.read_bytes()


def test_import_refuses_a_folder_that_is_not_empty(tmp_path, exported, capsys):
    _, _, _, path = exported
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(ChainImportError, match="not empty"):
        import_chain(path, tmp_path / "data")
    assert lacre("chain", "import", str(path), "--data-dir", str(tmp_path / "data"), "--no-progress") == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["notes.txt"]


def test_a_certificate_below_quorum_is_refused_and_leaves_nothing(tmp_path, exported):
    consortium, _, blocks, _ = exported
    certificate = blocks[2].certificate
    weak = dataclasses.replace(blocks[2], certificate=dataclasses.replace(certificate, signatures=certificate.signatures[:2]))
    path = _tampered(tmp_path, consortium, blocks, 3, weak)
    with pytest.raises(ChainImportError) as caught:
        import_chain(path, tmp_path / "data")
    assert (caught.value.height, caught.value.rule) == (3, "certificate")
    assert "block 3 breaks certificate: 2 signatures, quorum is 3" in str(caught.value)
    assert not (tmp_path / "data").exists()


def test_a_damaged_file_is_refused_naming_the_place(tmp_path, exported, capsys):
    _, _, _, path = exported
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "damaged.lacre").write_bytes(bytes(data))
    (tmp_path / "data").mkdir()
    with pytest.raises(ChainFileError):
        import_chain(tmp_path / "damaged.lacre", tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []
    assert lacre("chain", "import", str(tmp_path / "damaged.lacre"), "--data-dir", str(tmp_path / "data"),
                 "--no-progress", "--json") == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False and "offset" in answer["error"]


def test_import_checks_the_genesis_against_the_trust_file(tmp_path, exported, capsys):
    consortium, _, _, path = exported
    other = make_consortium(1).genesis
    trust_file = tmp_path / "consortium.json"
    trust_file.write_text(json.dumps(Trust.from_genesis(other, {}).to_json()))
    assert lacre("chain", "import", str(path), "--data-dir", str(tmp_path / "data"), "--trust", str(trust_file),
                 "--no-progress") == 2
    assert "not the trust file's" in capsys.readouterr().err
    trust_file.write_text(json.dumps(Trust.from_genesis(consortium.genesis, {}).to_json()))
    assert lacre("chain", "import", str(path), "--data-dir", str(tmp_path / "data"), "--trust", str(trust_file),
                 "--no-progress", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] and answer["blocks"] == 4 and answer["genesis_hash"] == consortium.genesis.hash.hex()


def test_a_chain_that_changed_its_authority_set_imports(tmp_path):
    """Block 2 adds inst-4; from block 3 the new set of five (quorum 4) certifies."""
    from ledger.block import CommitCertificate, precommit
    from ledger.governance import approve
    from ledger.records import ConsortiumChange, SignedRecord
    from tests.conftest import seeded_key

    consortium = make_consortium(4)
    newcomer = seeded_key("inst-4")
    draft = ConsortiumChange(0, "authority.add", name="inst-4", public_key=newcomer.public_key, url="http://127.0.0.1:7004")
    approvals = tuple(sorted(approve(key, consortium.genesis.hash, draft) for key in consortium.authorities[:3]))
    change = SignedRecord.sign(
        ConsortiumChange(0, "authority.add", name="inst-4", public_key=newcomer.public_key,
                         url="http://127.0.0.1:7004", approvals=approvals),
        consortium.authority,
    )
    chain = Chain(MemoryStore(), consortium.genesis)

    def commit(records, signers):
        proposed = chain.propose(records, chain.authority_set.proposer(chain.height + 1, 0).name, 0,
                                 1_700_000_000_000 + chain.height)
        assert not proposed.rejected, proposed.rejected
        header = proposed.header
        signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in signers)
        chain.commit(header, proposed.records, CommitCertificate(header.height, 0, header.hash, signatures), proposed.delta)

    commit([consortium.registration()], consortium.authorities)
    commit([change], consortium.authorities)
    commit([consortium.issuance(1)], [*consortium.authorities[1:], newcomer])
    blocks = [chain.block(h) for h in range(1, chain.height + 1)]
    export_chain(blocks, consortium.genesis, tmp_path / "governed.lacre")
    summary = import_chain(tmp_path / "governed.lacre", tmp_path / "data")
    assert (summary.blocks, summary.head_hash) == (3, chain.head_hash)
    # Block 3 certified by three of the old set: enough under genesis, not under the new set.
    weak = dataclasses.replace(blocks[2], certificate=dataclasses.replace(
        blocks[2].certificate,
        signatures=tuple(s for s in blocks[2].certificate.signatures if s.authority in ("inst-1", "inst-2", "inst-3")),
    ))
    path = _tampered(tmp_path, consortium, blocks, 3, weak)
    with pytest.raises(ChainImportError) as caught:
        import_chain(path, tmp_path / "again")
    assert (caught.value.height, caught.value.rule) == (3, "certificate") and "quorum is 4" in str(caught.value)

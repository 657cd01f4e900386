"""`lacre audit`: a real chain passes; every tampering is caught, naming the block and the rule.

The chain (four authorities, then five) has registrations, issuances,
a suspension and reinstatement, a revocation, a rotation, endorsements by an
authority and by an issuer, and a governance change that adds an authority
with quorum approvals. Each tampering below is written back as a valid chain
file (frames and trailer re-sealed), and most are re-certified by the whole
authority set, as a malicious quorum would: the audit must find the chain
rule that breaks, not a checksum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import threading
import zlib

import pytest

from client import audit_run
from client.audit import Auditor, AuditStoreError
from client.audit_evidence import check_evidence
from client.audit_run import AuditInputError, AuditOptions, audit_chain
from client.chain_file import MAGIC_LINE, ChainFileWriter, Trailer
from client.chain_import import import_chain
from ledger.block import Block, CommitCertificate, precommit
from ledger.chain import Chain
from ledger.compact_range import CompactRange
from ledger.genesis import Trust, TrustedAuthority, TrustedEpoch
from ledger.governance import approve
from ledger.merkle import leaf_hash
from ledger.note import NoteVerifier
from ledger.batch import batch_root
from ledger.records import (
    BatchRevocation,
    ConsortiumChange,
    CredentialBatch,
    CredentialIssuance,
    CredentialReinstatement,
    CredentialRevocation,
    CredentialSuspension,
    IssuerEndorsement,
    IssuerRegistration,
    IssuerRotation,
    SignedRecord,
    leaf_data,
)
from ledger.leveldb_store import LevelDBStore
from ledger.state import CREDENTIAL_MAP_PREFIX, StoreStateView
from ledger.store import MemoryStore
from tests.client.lacre_cli import lacre
from tests.conftest import make_consortium, seeded_key

C = make_consortium(4)
KEYS = {k.name: k for k in C.authorities}
NEWCOMER = seeded_key("inst-4")
ISSUER_A, ISSUER_A2, ISSUER_B = seeded_key("issuer-a"), seeded_key("issuer-a2"), seeded_key("issuer-b")
CHANGE_HEIGHT = 5  # the block holding the governance change; the new set certifies from block 6


def cid(n: int) -> bytes:
    return hashlib.sha256(b"audited credential %d" % n).digest()


def issue(n: int, key) -> SignedRecord:
    return SignedRecord.sign(CredentialIssuance(cid(n), 1_700_000_000 + n), key)


def governance_change(approvers) -> ConsortiumChange:
    fields = {"name": "inst-4", "public_key": NEWCOMER.public_key, "url": "http://127.0.0.1:7004"}
    draft = ConsortiumChange(0, "authority.add", **fields)
    approvals = tuple(sorted(approve(KEYS[name], C.genesis.hash, draft) for name in approvers))
    return ConsortiumChange(0, "authority.add", **fields, approvals=approvals)


BLOCKS = [
    [SignedRecord.sign(IssuerRegistration(ISSUER_A.public_key, "Facultad A", "UY"), KEYS["inst-0"]),
     SignedRecord.sign(IssuerRegistration(ISSUER_B.public_key, "Instituto B", "AR"), KEYS["inst-1"])],
    [issue(1, ISSUER_A), issue(2, ISSUER_A), issue(3, ISSUER_A), issue(4, ISSUER_A), issue(5, ISSUER_B)],
    [SignedRecord.sign(CredentialSuspension(cid(1), 1_700_000_100), ISSUER_A),
     SignedRecord.sign(CredentialRevocation(cid(2), "fraud", 1_700_000_100), ISSUER_A),
     SignedRecord.sign(IssuerEndorsement(ISSUER_B.public_key), KEYS["inst-0"])],
    [SignedRecord.sign(CredentialReinstatement(cid(1), 1_700_000_200), ISSUER_A),
     SignedRecord.sign(IssuerRotation(ISSUER_A.public_key, ISSUER_A2.public_key), ISSUER_A)],
    [SignedRecord.sign(governance_change(("inst-0", "inst-1", "inst-2")), KEYS["inst-0"]), issue(6, ISSUER_A2)],
    [issue(7, ISSUER_A2), issue(8, ISSUER_B),
     SignedRecord.sign(IssuerEndorsement(ISSUER_A2.public_key, "Course"), ISSUER_B)],
    [SignedRecord.sign(CredentialRevocation(cid(3), "withdrawn", 1_700_000_300), ISSUER_A2), issue(9, ISSUER_B)],
]


def signers_at(height: int):
    return [*C.authorities, NEWCOMER] if height > CHANGE_HEIGHT else list(C.authorities)


def certify(header, signers=None) -> CommitCertificate:
    keys = signers if signers is not None else signers_at(header.height)
    signatures = tuple(precommit(k, header, 0, C.genesis.hash, C.genesis.origin) for k in keys)
    return CommitCertificate(header.height, 0, header.hash, signatures)


def committed_blocks(blocks: list[list[SignedRecord]]) -> list:
    """The certified blocks of a chain that commits `blocks` of records, each in full."""
    chain = Chain(MemoryStore(), C.genesis)
    for records in blocks:
        proposed = chain.propose(records, chain.authority_set.proposer(chain.height + 1, 0).name, 0,
                                 1_700_000_000_000 + 1000 * chain.height)
        assert not proposed.rejected, proposed.rejected
        chain.commit(proposed.header, proposed.records, certify(proposed.header), proposed.delta)
    return [chain.block(h) for h in range(1, chain.height + 1)]


@pytest.fixture(scope="module")
def chain_blocks():
    return committed_blocks(BLOCKS)


def audit(**arguments):
    """An audit on threads: quicker to start than the default process pool (tested on its own below)."""
    return audit_chain(options=AuditOptions(pool="thread", workers=2), **arguments)


def write(path, blocks) -> None:
    with ChainFileWriter(path, C.genesis, check_links=False) as writer:
        for block in blocks:
            writer.write_block(block)
        writer.finish()


def reseal(data: bytes) -> bytes:
    """A chain file's bytes with every frame's CRC-32 and the trailer's SHA-256 made right again."""
    out, offset = bytearray(data[:len(MAGIC_LINE)]), len(MAGIC_LINE)
    while offset < len(data):
        kind, length = struct.unpack_from(">BI", data, offset)
        head, payload = data[offset:offset + 5], data[offset + 5:offset + 5 + length]
        if kind == ord("T"):
            trailer = dataclasses.replace(Trailer.decode(payload), sha256=hashlib.sha256(bytes(out)).digest())
            payload = trailer.encode()
            head = struct.pack(">BI", kind, len(payload))
        out += head + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head)))
        offset += 5 + length + 4
    return bytes(out)


# -- tamperings: each takes the good blocks and returns the bad ones (or file bytes) -----

def rebuilt(blocks, height, records=None, recertify=True, **header_fields) -> list[Block]:
    """Block `height` with other record bytes and header fields; counts and log root made to match
    the new records; re-certified by the whole set in force unless `recertify` is False."""
    blocks = list(blocks)
    block = blocks[height - 1]
    header = block.header
    if records is not None:
        before = CompactRange.empty().extend(leaf_hash(leaf_data(r)) for b in blocks[:height - 1] for r in b.records)
        after = before.extend(leaf_hash(leaf_data(r)) for r in records)
        header = dataclasses.replace(header, record_count=len(records), log_size=after.size, log_root=after.root())
    header = dataclasses.replace(header, **header_fields)
    certificate = certify(header) if recertify else block.certificate
    blocks[height - 1] = Block(header, tuple(records if records is not None else block.records), certificate)
    return blocks


def with_certificate(blocks, height, signatures) -> list[Block]:
    blocks = list(blocks)
    block = blocks[height - 1]
    blocks[height - 1] = dataclasses.replace(block, certificate=dataclasses.replace(block.certificate, signatures=tuple(signatures)))
    return blocks


def records_of(blocks, height) -> list[bytes]:
    return list(blocks[height - 1].records)


def swapped(records, i, j):
    records = list(records)
    records[i], records[j] = records[j], records[i]
    return records


def flipped_in_file(tmp_path, blocks):
    """One byte of block 2's record 0 (inside its credential id) flipped in the file itself, then re-sealed."""
    write(tmp_path / "good.lacre", blocks)
    data = bytearray((tmp_path / "good.lacre").read_bytes())
    record = blocks[1].records[0]
    at = data.find(record) + record.find(cid(1)) + 5
    data[at] ^= 0x01
    return reseal(bytes(data))


def forged_signature(blocks):
    """Issuer A's signature over another credential, put on block 2's record 1."""
    original = SignedRecord.decode(blocks[1].records[1])
    forged = SignedRecord(original.body, original.signer, issue(99, ISSUER_A).signature)
    records = records_of(blocks, 2)
    records[1] = forged.encoded
    return rebuilt(blocks, 2, records)


def governance_without_quorum(blocks):
    weak = SignedRecord.sign(governance_change(("inst-0", "inst-1")), KEYS["inst-0"])
    return rebuilt(blocks, CHANGE_HEIGHT, [weak.encoded] + records_of(blocks, CHANGE_HEIGHT)[1:])


def cosignature_of_another_block(blocks):
    signatures = list(blocks[3].certificate.signatures)
    signatures[0] = dataclasses.replace(signatures[0], checkpoint_signature=blocks[2].certificate.signatures[0].checkpoint_signature)
    return with_certificate(blocks, 4, signatures)


TAMPERINGS = [
    # (name, tampering, (height, record index, rule), words the detail holds)
    ("a flipped byte in a record", "file", flipped_in_file, (2, 0, "record"), "does not verify"),
    ("two records swapped", "blocks", lambda b: rebuilt(b, 2, swapped(records_of(b, 2), 0, 1), recertify=False,
                                                          log_root=b[1].header.log_root), (2, None, "log-root"), ""),
    ("two records swapped, header recomputed and re-certified", "blocks",
     lambda b: rebuilt(b, 2, swapped(records_of(b, 2), 0, 1)), (2, None, "state-root"), ""),
    ("a revocation put before its credential's issuance", "blocks",
     lambda b: rebuilt(b, 2, [b[2].records[1]] + records_of(b, 2)), (2, 0, "credential-exists"), ""),
    ("a dropped record, header untouched", "blocks",
     lambda b: [*b[:2], dataclasses.replace(b[2], records=b[2].records[:1] + b[2].records[2:]), *b[3:]],
     (3, None, "record-count"), ""),
    ("a dropped revocation, header recomputed and re-certified", "blocks",
     lambda b: rebuilt(b, 3, records_of(b, 3)[:1] + records_of(b, 3)[2:]), (3, None, "state-root"), ""),
    ("a forged record signature", "blocks", forged_signature, (2, 1, "record"), "signature"),
    ("a certificate with a signature removed", "blocks",
     lambda b: with_certificate(b, 4, b[3].certificate.signatures[:2]), (4, None, "certificate"), "quorum is 3"),
    ("a certificate with a signature duplicated", "blocks",
     lambda b: with_certificate(b, 4, b[3].certificate.signatures[:2] + b[3].certificate.signatures[:1]),
     (4, None, "certificate"), "signed twice"),
    ("a checkpoint cosignature of another block", "blocks", cosignature_of_another_block,
     (4, None, "certificate"), "cosignature"),
    ("three of the old set certify after the change", "blocks",
     lambda b: [*b[:5], dataclasses.replace(b[5], certificate=certify(b[5].header, C.authorities[1:])), *b[6:]],
     (6, None, "certificate"), "quorum is 4"),
    ("an earlier timestamp, re-certified", "blocks",
     lambda b: rebuilt(b, 4, timestamp_ms=b[2].header.timestamp_ms - 1), (4, None, "timestamp"), ""),
    ("a later timestamp, not re-certified", "blocks",
     lambda b: rebuilt(b, 4, recertify=False, timestamp_ms=b[3].header.timestamp_ms + 1),
     (4, None, "certificate"), "another header"),
    ("a state root that does not match, re-certified", "blocks",
     lambda b: rebuilt(b, 3, state_root=bytes(32)), (3, None, "state-root"), ""),
    ("a header that does not link, re-certified", "blocks",
     lambda b: rebuilt(b, 3, previous_hash=bytes(32)), (3, None, "previous-hash"), ""),
    ("a proposer out of turn, re-certified", "blocks",
     lambda b: rebuilt(b, 2, proposer="inst-0"), (2, None, "proposer"), ""),
    ("a governance change without quorum", "blocks", governance_without_quorum,
     (CHANGE_HEIGHT, 0, "governance-quorum"), "2 approvals"),
    ("a registration replayed", "blocks", lambda b: rebuilt(b, 7, records_of(b, 7) + [b[0].records[1]]),
     (7, 2, "record-unique"), ""),
    ("an issuance replayed", "blocks", lambda b: rebuilt(b, 7, records_of(b, 7) + [b[1].records[4]]),
     (7, 2, "record-unique"), ""),
    ("an issuance by a rotated-out key", "blocks", lambda b: rebuilt(b, 7, records_of(b, 7) + [issue(50, ISSUER_A).encoded]),
     (7, 2, "issuer-active"), ""),
]


@pytest.mark.parametrize("name, kind, tamper, expected, words", TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_each_tampering_is_caught_at_its_block_and_rule(tmp_path, chain_blocks, name, kind, tamper, expected, words):
    path = tmp_path / "tampered.lacre"
    if kind == "file":
        path.write_bytes(tamper(tmp_path, chain_blocks))
    else:
        write(path, tamper(chain_blocks))
    report = audit(file=path)
    violation = report.violation
    assert violation is not None, report.render()
    assert (violation.height, violation.record_index, violation.rule) == expected, report.render()
    assert words in violation.detail
    assert not report.ok and report.height == expected[0] - 1
    if violation.record_index is not None:
        assert "record" in violation.data and len(violation.data["record"]) <= 2 * 96 + 20


def test_the_untampered_chain_passes_with_a_full_report(tmp_path, chain_blocks):
    write(tmp_path / "chain.lacre", chain_blocks)
    report = audit(file=tmp_path / "chain.lacre")
    assert report.ok and report.violation is None, report.render()
    document = report.to_json()
    assert document["blocks"] == 7 and document["records"] == sum(len(b) for b in BLOCKS)
    assert document["records_by_kind"] == {
        "consortium.change": 1, "credential.issue": 9, "credential.reinstate": 1, "credential.revoke": 2,
        "credential.suspend": 1, "issuer.endorse": 2, "issuer.register": 2, "issuer.rotate": 1,
    }
    by_key = {row["key"]: row for row in document["records_by_issuer"]}
    assert by_key[ISSUER_A.public_key.hex()]["name"] == "Facultad A" and by_key[ISSUER_A.public_key.hex()]["records"] == 8
    assert by_key[KEYS["inst-0"].public_key.hex()]["role"] == "authority"
    signatures = document["signatures_verified"]
    assert signatures == {"records": 19, "precommits": 5 * 4 + 2 * 5, "cosignatures": 30, "approvals": 3}
    assert [(e["epoch"], e["from_height"], e["quorum"], len(e["authorities"])) for e in document["epochs"]] == [
        (0, 1, 3, 4), (1, 6, 4, 5)]
    assert document["head"]["hash"] == chain_blocks[-1].header.hash.hex()
    assert document["checkpoint"].startswith(C.genesis.origin + "\n19\n") and document["checkpoint"].count("\u2014 ") == 5
    assert "audit OK: every rule holds in blocks 1-7" in report.render()


def test_a_damaged_frame_is_reported_as_the_file_rule_it_breaks(tmp_path, chain_blocks):
    write(tmp_path / "chain.lacre", chain_blocks)
    data = bytearray((tmp_path / "chain.lacre").read_bytes())
    data[len(data) // 2] ^= 0x01  # not re-sealed
    (tmp_path / "damaged.lacre").write_bytes(bytes(data))
    violation = audit(file=tmp_path / "damaged.lacre").violation
    assert violation.rule == "checksum" and violation.offset is not None


def _trust(history_epochs: int) -> Trust:
    def authorities(keys):
        return tuple(TrustedAuthority(k.name, NoteVerifier.from_key(k.name, k.public_key), "") for k in keys)

    epochs = [TrustedEpoch(0, 1, 3, authorities(C.authorities))]
    if history_epochs > 1:
        epochs.append(TrustedEpoch(1, CHANGE_HEIGHT + 1, 4, authorities([*C.authorities, NEWCOMER])))
    last = epochs[-1]
    return Trust(C.genesis.origin, C.genesis.hash, last.quorum, last.authorities, tuple(epochs))


def test_the_trust_file_must_tell_the_chain_s_epochs(tmp_path, chain_blocks):
    write(tmp_path / "chain.lacre", chain_blocks)
    agreeing = audit(file=tmp_path / "chain.lacre", trust=_trust(2))
    assert agreeing.ok and "agrees with the chain's 2 epochs" in agreeing.trust
    stale = audit(file=tmp_path / "chain.lacre", trust=_trust(1)).violation
    assert (stale.height, stale.rule) == (CHANGE_HEIGHT, "trust-history") and "does not list" in stale.detail
    other = dataclasses.replace(_trust(2), genesis_hash=bytes(32))
    with pytest.raises(AuditInputError, match="not the trust file's"):
        audit(file=tmp_path / "chain.lacre", trust=other)


def test_a_data_folder_audits_like_its_export(tmp_path, chain_blocks):
    write(tmp_path / "chain.lacre", chain_blocks)
    import_chain(tmp_path / "chain.lacre", tmp_path / "data")
    from_folder = audit_chain(data_dir=tmp_path / "data", options=AuditOptions(pool="process", workers=2))
    from_file = audit(file=tmp_path / "chain.lacre")
    assert from_folder.ok and from_folder.to_json()["head"] == from_file.to_json()["head"]
    assert from_folder.counts == from_file.counts


def test_an_audit_that_cannot_be_resumed_keeps_the_upper_map_tiles_in_memory(chain_blocks):
    """Without a saved state the store is never reopened, so the credentials map's
    tiles above StoreStateView.EPHEMERAL_MAP_MEMORY_DEPTH are not written: the same roots, fewer writes."""
    outcome = {}
    for resumable in (True, False):
        store = MemoryStore()
        auditor = Auditor(C.genesis, store, resumable=resumable)
        for block in chain_blocks:
            auditor.commit(auditor.check(auditor.prepare(block)))
        outcome[resumable] = (auditor.state.root(), [key for key, _ in store.iterate(CREDENTIAL_MAP_PREFIX)])
    assert outcome[True][0] == outcome[False][0] == chain_blocks[-1].header.state_root
    assert outcome[True][1] and not outcome[False][1]  # a small map: every tile is above depth 20
    with pytest.raises(AuditStoreError):
        Auditor(C.genesis, store, resumable=False)  # it holds an audit's progress


def deep_id(n: int) -> bytes:
    """Ids that share their first 16 bits, then part: subtrees below depth 8 with many leaves."""
    return b"\xd7\x00" + hashlib.sha256(b"deep %d" % n).digest()[2:]


def replay_in_ephemeral_audit(tmp_path, monkeypatch, memory_depth: int, blocks: list[list[SignedRecord]]) -> list[int]:
    """Audit the chain that commits BLOCKS[0] (the issuers' registrations) and
    `blocks` with an auditor whose memory-only bands end at `memory_depth`;
    its root must be each header's. Returns the depths of the subtrees it derived."""
    monkeypatch.setattr(StoreStateView, "EPHEMERAL_MAP_MEMORY_DEPTH", memory_depth)
    derived: list[int] = []
    leaves = StoreStateView._credential_leaves
    monkeypatch.setattr(StoreStateView, "_credential_leaves",
                        lambda view, depth, path: derived.append(depth) or leaves(view, depth, path))
    store = LevelDBStore(str(tmp_path / "state"))
    auditor = Auditor(C.genesis, store, resumable=False)
    try:
        for block in committed_blocks([BLOCKS[0], *blocks]):
            auditor.commit(auditor.check(auditor.prepare(block)))
            assert auditor.state.root() == block.header.state_root
        assert next(iter(store.iterate(CREDENTIAL_MAP_PREFIX)), None) is None  # no tile stored
    finally:
        store.close()
    return derived


@pytest.mark.parametrize("memory_depth", [4, 8])  # derived prefixes that end inside a byte, and on one
def test_an_audit_that_cannot_be_resumed_derives_the_deep_map_tiles_from_the_entries(
        tmp_path, monkeypatch, memory_depth):
    """The map's tiles below the memory-only bands are never written: the
    subtrees there are rebuilt from the credential entries in the auditor's
    LevelDB store (batch markers are no leaves; a member's own entry is), and
    give every root."""
    one, two = ISSUER_A, ISSUER_B
    at = 1_700_000_000
    ids = [deep_id(n) if n % 2 else cid(n) for n in range(40)]
    batch_id = hashlib.sha256(b"deep batch").digest()
    members = ids[10:14]
    blocks = [
        [SignedRecord.sign(CredentialIssuance(i, at), one) for i in ids[:10]],
        [SignedRecord.sign(CredentialBatch(batch_id, batch_root(members), len(members), at), two, ids=b"".join(members)),
         *[SignedRecord.sign(CredentialIssuance(i, at), two) for i in ids[14:20]]],
        [SignedRecord.sign(CredentialRevocation(ids[1], "fraud", at + 1), one),
         SignedRecord.sign(CredentialSuspension(ids[3], at + 1), one),
         SignedRecord.sign(CredentialRevocation(ids[11], "withdrawn", at + 1), two),
         *[SignedRecord.sign(CredentialIssuance(i, at), one) for i in ids[20:30]]],
        [SignedRecord.sign(CredentialReinstatement(ids[3], at + 2), one),
         SignedRecord.sign(BatchRevocation(batch_id, "key_compromise", at + 2), two),
         *[SignedRecord.sign(CredentialIssuance(i, at), two) for i in ids[30:40]]],
    ]
    derived = replay_in_ephemeral_audit(tmp_path, monkeypatch, memory_depth, blocks)
    assert set(derived) == {memory_depth}  # each changed subtree at the top of the derived bands


def test_stop_and_resume_from_the_saved_state(tmp_path, chain_blocks):
    write(tmp_path / "short.lacre", chain_blocks[:5])
    write(tmp_path / "chain.lacre", chain_blocks)
    state = tmp_path / "audit.json"
    stop = threading.Event()

    def progress(auditor, offset):
        if auditor.height == 3:
            stop.set()

    first = audit(file=tmp_path / "short.lacre", state_path=state, stop=stop, progress=progress)
    assert first.interrupted and first.height == 3 and not first.ok
    saved = json.loads(state.read_text())
    assert saved["height"] == 3 and saved["store"].endswith("audit.json.ldb") and saved["log_size"] == 10
    with pytest.raises(AuditInputError, match="exists"):
        audit(file=tmp_path / "short.lacre", state_path=state)
    resumed = audit(file=tmp_path / "short.lacre", state_path=state, resume=True)
    assert resumed.ok and resumed.first_height == 4 and resumed.height == 5 and resumed.counts.blocks == 5
    # A finished audit resumes too: only the blocks committed since are replayed.
    later = audit(file=tmp_path / "chain.lacre", state_path=state, resume=True)
    assert later.ok and later.first_height == 6 and later.records_this_run == 5
    assert later.counts == audit(file=tmp_path / "chain.lacre").counts
    # A source whose block 7 is not the one audited is refused.
    other = rebuilt(chain_blocks, 7, state_root=bytes(32))
    write(tmp_path / "other.lacre", other)
    refused = audit(file=tmp_path / "other.lacre", state_path=state, resume=True)
    assert refused.violation.rule == "resume-head" and refused.violation.height == 7


def test_the_audit_s_own_store_takes_big_tables_and_a_big_memtable(tmp_path, chain_blocks, monkeypatch):
    """Thousands of LevelDB's default 2 MB tables slowed an audit of 5M records (docs/audit.md)."""
    opened = []

    class Recording(audit_run.LevelDBStore):
        def __init__(self, path, **options):
            opened.append(options)
            super().__init__(path, **options)

    monkeypatch.setattr(audit_run, "LevelDBStore", Recording)
    write(tmp_path / "chain.lacre", chain_blocks)
    assert audit(file=tmp_path / "chain.lacre", state_path=tmp_path / "audit.json").ok
    assert [(o["table_bytes"], o["write_buffer_bytes"]) for o in opened] == [(32 << 20, 64 << 20)]


@pytest.mark.parametrize("stop_at", [None, 2, 6])
def test_a_batch_a_block_flows_through_the_pipeline_in_order(tmp_path, chain_blocks, monkeypatch, stop_at):
    """With one block a batch, several batches are being verified while one is judged:
    blocks are still judged in order, a stop ends the audit at its block, and a resumed
    audit ends where a single run does."""
    monkeypatch.setattr(audit_run, "BATCH_BLOCKS", 1)
    write(tmp_path / "chain.lacre", chain_blocks)
    whole = audit(file=tmp_path / "chain.lacre")
    stop = threading.Event()
    judged = []

    def progress(auditor, offset):
        judged.append(auditor.height)
        if auditor.height == stop_at:
            stop.set()

    state = tmp_path / "audit.json"
    first = audit(file=tmp_path / "chain.lacre", state_path=state, stop=stop, progress=progress)
    assert judged == list(range(1, (stop_at or len(chain_blocks)) + 1))
    if stop_at is None:
        assert first.ok and first.counts == whole.counts
        return
    assert first.interrupted and first.height == stop_at
    resumed = audit(file=tmp_path / "chain.lacre", state_path=state, resume=True)
    assert resumed.ok and resumed.first_height == stop_at + 1 and resumed.counts == whole.counts


def test_a_fault_in_the_source_comes_after_the_violations_before_it(tmp_path, chain_blocks, monkeypatch):
    monkeypatch.setattr(audit_run, "BATCH_BLOCKS", 1)
    write(tmp_path / "chain.lacre", rebuilt(chain_blocks, 2, state_root=bytes(32)))
    data = bytearray((tmp_path / "chain.lacre").read_bytes())
    data[len(data) * 3 // 4] ^= 0x01  # a damaged frame well after block 2, not re-sealed
    (tmp_path / "damaged.lacre").write_bytes(bytes(data))
    violation = audit(file=tmp_path / "damaged.lacre").violation
    assert (violation.height, violation.rule) == (2, "state-root")


def test_verification_workers_yield_the_cpu_to_the_main_thread():
    with audit_run._executor(AuditOptions(pool="process", workers=1)) as pool:
        assert pool.submit(os.nice, 0).result() == min(19, os.nice(0) + audit_run.WORKER_NICENESS)


def test_the_command_line(tmp_path, chain_blocks, capsys):
    write(tmp_path / "chain.lacre", chain_blocks)
    assert lacre("audit", "--file", str(tmp_path / "chain.lacre"), "--no-progress") == 0
    assert "audit OK" in capsys.readouterr().out
    write(tmp_path / "bad.lacre", governance_without_quorum(chain_blocks))
    assert lacre("audit", "--file", str(tmp_path / "bad.lacre"), "--no-progress", "--json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["violation"]["rule"] == "governance-quorum"
    assert document["violation"]["height"] == CHANGE_HEIGHT and document["violation"]["record_index"] == 0
    assert lacre("audit", "--file", str(tmp_path / "chain.lacre"), "--resume", "--no-progress") == 2
    assert "--resume needs --state" in capsys.readouterr().err
    (tmp_path / "not-a-chain").write_text("hello")
    assert lacre("audit", "--file", str(tmp_path / "not-a-chain"), "--no-progress") == 2


def test_evidence_of_equivocation_is_verified_with_ledger_crypto():
    """The node's evidence bytes (made here by the consensus code) prove an equivocation to the client."""
    import base64

    from consensus.evidence import Evidence
    from consensus.messages import Vote, VoteKind
    from ledger.block import vote_message
    from ledger.crypto import VOTE_CONTEXT
    from ledger.governance import ConsortiumEntry, ConsortiumHistory

    key = KEYS["inst-2"]

    def vote(block_hash: bytes) -> Vote:
        signature = key.sign(VOTE_CONTEXT, vote_message(C.genesis.hash, "prevote", 3, 1, block_hash))
        return Vote(VoteKind.PREVOTE, 3, 1, block_hash, "inst-2", signature)

    history = ConsortiumHistory([ConsortiumEntry.from_genesis(C.genesis)])
    encoded = Evidence(vote(b"\x01" * 32), vote(b"\x02" * 32)).encode()
    item = {"authority": "inst-2", "height": 3, "round": 1, "encoded": base64.b64encode(encoded).decode()}
    proven = check_evidence(item, history, C.genesis.hash)
    assert proven["verified"] and proven["kind"] == "prevote"
    forged = Evidence(vote(b"\x01" * 32), dataclasses.replace(vote(b"\x02" * 32), signature=bytes(64))).encode()
    claim = check_evidence({**item, "encoded": base64.b64encode(forged).decode()}, history, C.genesis.hash)
    assert not claim["verified"] and "not signed" in claim["detail"]


# -- cohort batches ------------------------------------------------------------

def _batch(members, key, name: bytes):
    from client.batch_receipts import sign_batch

    return sign_batch(key, [cid(n) for n in members], hashlib.sha256(name).digest(), 1_700_000_000)


def _batch_chain():
    """Registration; a batch of 3; a member revoked; the batch revoked."""
    from ledger.records import BatchRevocation

    batch = _batch([101, 102, 103], ISSUER_B, b"cohort")
    blocks = [
        [SignedRecord.sign(IssuerRegistration(ISSUER_B.public_key, "Instituto B", "AR"), KEYS["inst-1"]), issue(100, ISSUER_B)],
        [batch],
        [SignedRecord.sign(CredentialRevocation(cid(102), "fraud", 1_700_000_100), ISSUER_B)],
        [SignedRecord.sign(BatchRevocation(batch.body.batch_id, "key_compromise", 1_700_000_200), ISSUER_B)],
    ]
    return committed_blocks(blocks)


def _other_ids(blocks):
    """Block 2's batch with one id changed: the leaf data (and so every root) is unchanged."""
    from ledger import codec

    mapping = codec.decode(blocks[1].records[0])
    mapping["ids"] = mapping["ids"][:-1] + bytes([mapping["ids"][-1] ^ 1])
    return [blocks[0], dataclasses.replace(blocks[1], records=(codec.encode(mapping),)), *blocks[2:]]


BATCH_TAMPERINGS = [
    ("a batch's ids changed under its signed root", _other_ids, (2, 0, "record")),
    ("a batch repeating an id issued alone", lambda b: rebuilt(b, 2, [_batch([100, 104], ISSUER_B, b"again").encoded]),
     (2, 0, "credential-unique")),
    ("a batch revoked twice", lambda b: rebuilt(b, 4, records_of(b, 4) * 2), (4, 1, "record-unique")),
    ("an issuance repeating a batch member's id", lambda b: rebuilt(b, 3, [issue(103, ISSUER_B).encoded]),
     (3, 0, "credential-unique")),
]


def test_a_chain_of_batches_audits_and_its_tamperings_are_caught(tmp_path):
    blocks = _batch_chain()
    write(tmp_path / "batches.lacre", blocks)
    report = audit(file=tmp_path / "batches.lacre")
    assert report.ok, report.render()
    assert report.to_json()["records"] == 5
    for name, tamper, expected in BATCH_TAMPERINGS:
        write(tmp_path / "tampered.lacre", tamper(blocks))
        violation = audit(file=tmp_path / "tampered.lacre").violation
        assert violation is not None, name
        assert (violation.height, violation.record_index, violation.rule) == expected, (name, violation)

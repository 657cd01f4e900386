"""The auditor: replay a chain from genesis over its own state and check every rule.

Theory of operation. An `Auditor` keeps its own copy of the chain's state in
its own `Store` (a temporary LevelDB, or a MemoryStore in tests), never the
node's: the two authenticated maps of `ledger.state`, the consortium epochs,
an index of the record hashes seen, and its progress (an audit that cannot
be resumed keeps the credentials map's upper tiles and a filter of the ids
in memory instead: an ephemeral `StoreStateView`). It trusts nothing it is
given but the genesis. Each block goes through two steps:

    prepare(block)   decode every record; list the signatures to verify:
                     each record's, and each precommit's vote and checkpoint
                     cosignature (under the keys of the set known so far)
                     -> the caller verifies that list on every core
    check(prepared)  the rules, in this order, stopping at the first broken:

        height           the block is the next one
        previous-hash    it links to the previous header (block 1: the genesis hash)
        proposer         authorities[(height + round) mod n] of the set in force
        timestamp        not earlier than the previous block
        record-count     as many records as the header says
        log-size         the block's first leaf is the log size so far
        block-records-max  no more records than the policy in force allows
        per record i:    record (decodes, canonical; its signature verifies),
                         record-unique (never seen before: an index of record
                     hashes in the store), then the state
                         rules by name (issuer-registered, governance-quorum,
                         ...: `ledger.state.StateDelta.apply`, the rules the
                         nodes run, over the auditor's own state)
        log-root         RFC 9162 root recomputed with an independent compact
                         range (ledger.compact_range), not the node's tiles
        state-root       recomputed from the auditor's own maps
        certificate      for this header; distinct authorities of the set in
                         force at this height, at least a quorum, each vote
                         signature and each checkpoint cosignature (over the
                         block's C2SP checkpoint text) valid
        trust-history    with a trust file: its epochs are the ones the chain made

    commit(checked)  one write batch: the state changes, the record hashes,
                     and the progress (height, head, compact range, counts)

The set in force at height h is the one the chain's own `consortium.change`
records made (a change in block h applies from h + 1). Signatures listed in
`prepare` under a key that is no longer the one in force when the block is
checked (a governance change inside the batch being prepared) are verified
again, inline: the pool's work is a cache, never the judgement. Governance
approvals are verified by the rules themselves (`ledger.governance`), at
most 64 per change and one change per block.

Memory is flat in chain length: blocks stream through, and everything that
grows with the chain lives in the store.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from client.audit_report import AuditCounts, Violation, hex_bytes
from client.audit_trust import epoch_differs, trust_history_violation
from ledger import codec, crypto
from ledger.block import Block, vote_message
from ledger.chain import BLOCK_BATCHED_MAX, batched
from ledger.compact_range import CompactRange
from ledger.genesis import Genesis, Trust
from ledger.governance import ConsortiumEntry, ConsortiumHistory
from ledger.records import ConsortiumChange, CredentialIssuance, RecordError, SignedRecord
from ledger.state import RuleError, StateDelta, StateUpdate, StoreStateView
from ledger.store import Store, WriteBatch

PROGRESS_KEY = b"a/progress"
SIGNER_PREFIX = b"a/s"
"""+ signing key: that key's record counts by kind (JSON), rewritten when a block has its records."""
INDEX_PREFIX = b"a/x"
PROGRESS_VERSION = 1

Job = tuple[bytes, bytes, bytes]
"""(public key, message, signature): one Ed25519 verification (contexts already prefixed)."""


class AuditViolation(Exception):
    def __init__(self, violation: Violation) -> None:
        super().__init__(f"{violation.where()}: {violation.rule}: {violation.detail}")
        self.violation = violation


class AuditStoreError(Exception):
    """An auditor store that is not empty and not an audit of this genesis."""


def verify_jobs(jobs: Sequence[Job]) -> bytes:
    """One flag per job: 1 if the signature verifies. Runs on pool workers (PyNaCl releases the GIL)."""
    flags = bytearray(len(jobs))
    for i, (key, message, signature) in enumerate(jobs):
        try:
            crypto.verify(key, b"", message, signature)
            flags[i] = 1
        except Exception:  # SignatureError, or whatever a malformed point raises
            pass
    return bytes(flags)


def _shown(value: bytes | str | int) -> str:
    return hex_bytes(value) if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class PreparedBlock:
    """A block with its records decoded (or the decoding error) and its signatures listed."""

    block: Block
    records: list[SignedRecord | str]
    jobs: list[Job]
    record_jobs: list[int]
    certificate_jobs: dict[int, tuple[bytes, int]]
    """Certificate signature index -> (key it was listed under, its vote job; the cosignature job follows)."""
    vote_message: bytes
    checkpoint_text: bytes
    verified: bytes | None = None

    def job_ok(self, index: int) -> bool:
        if self.verified is not None:
            return self.verified[index] == 1
        return verify_jobs([self.jobs[index]]) == b"\x01"


@dataclass(slots=True)
class CheckedBlock:
    prepared: PreparedBlock
    delta: StateDelta
    sealed: StateUpdate
    range: CompactRange
    hashes: list[bytes]


@dataclass
class _Head:
    height: int = 0
    hash: bytes = b""
    timestamp_ms: int | None = None
    block: bytes = b""  # canonical {"certificate", "header"} of the head block


class Auditor:
    """Replays blocks over its own store (see the module docstring).

    On an empty store it starts at the genesis; on a store it wrote before,
    it resumes where that store's progress says (same genesis required).
    """

    def __init__(self, genesis: Genesis, store: Store, trust: Trust | None = None, resumable: bool = True) -> None:
        """`resumable=False` (an audit without a saved state, on a store nobody reopens):
        the state view is ephemeral (`ledger.state.StoreStateView`), which spares the store
        most of its writes and reads; `store` must then be empty."""
        self.genesis = genesis
        self.chain_id = genesis.hash
        self.origin = genesis.origin
        self.store = store
        self.trust = trust
        saved = store.get(PROGRESS_KEY)
        if not resumable and next(iter(store.iterate(b"")), None) is not None:
            raise AuditStoreError("an audit that cannot be resumed starts on an empty store")
        self.state = StoreStateView(store, ephemeral=not resumable)
        if saved is None:
            self._start()
        else:
            self._resume(saved)
        self.history = ConsortiumHistory(self.state.epochs())
        self.started_height = self.head.height

    # -- opening ---------------------------------------------------------

    def _start(self) -> None:
        if next(iter(self.store.iterate(b"")), None) is not None:
            raise AuditStoreError("the auditor's store is not empty and holds no audit")
        self.head = _Head(0, self.chain_id)
        self.range = CompactRange.empty()
        self.counts = AuditCounts()
        # As a node's store does, the state holds epoch 0 from the start.
        delta = StateDelta(self.state, self.genesis.authority_set)
        delta.consortium_change = ConsortiumEntry.from_genesis(self.genesis)
        sealed = delta.seal()
        batch = WriteBatch()
        for key, value in delta.puts():
            batch.put(key, value)
        batch.put(PROGRESS_KEY, self.progress_bytes())
        self.store.write(batch, sync=True)
        self.state.committed(delta, sealed)

    def _resume(self, saved: bytes) -> None:
        try:
            progress = json.loads(saved)
            if progress.get("version") != PROGRESS_VERSION or progress["genesis_hash"] != self.chain_id.hex():
                raise AuditStoreError("the auditor's store holds the audit of another chain")
            frontier = tuple(bytes.fromhex(h) for h in progress["frontier"])
            self.range = CompactRange(int(progress["log_size"]), frontier)
            self.head = _Head(int(progress["height"]), bytes.fromhex(progress["head_hash"]),
                              progress["timestamp_ms"], bytes.fromhex(progress["head_block"]))
            counts = progress["counts"]
            counts["by_signer"] = {key[len(SIGNER_PREFIX):].hex(): json.loads(value)
                                   for key, value in self.store.iterate(SIGNER_PREFIX)}
            self.counts = AuditCounts.from_json(counts)
        except (ValueError, KeyError, TypeError) as error:
            raise AuditStoreError(f"the auditor's store holds an unreadable progress record ({error})") from None

    def progress(self, by_signer: bool = True) -> dict:
        """What the audit knows so far (a saved audit state copies it). The store keeps it
        without the counts by signer, which have a key each (SIGNER_PREFIX)."""
        counts = self.counts.to_json()
        if not by_signer:
            del counts["by_signer"]
        return {
            "version": PROGRESS_VERSION, "genesis_hash": self.chain_id.hex(), "origin": self.origin,
            "height": self.head.height, "head_hash": self.head.hash.hex(), "timestamp_ms": self.head.timestamp_ms,
            "log_size": self.range.size, "frontier": [h.hex() for h in self.range.hashes],
            "counts": counts, "head_block": self.head.block.hex(),
        }

    def progress_bytes(self) -> bytes:
        return json.dumps(self.progress(by_signer=False), separators=(",", ":")).encode()

    @property
    def height(self) -> int:
        return self.head.height

    # -- trust file --------------------------------------------------------

    def check_trust_genesis(self) -> Violation | None:
        """With a trust file: its epoch 0 must be the genesis set (call before the first block)."""
        return None if self.trust is None else epoch_differs(0, self.trust.history[0], self.history.epochs[0])

    # -- one block ---------------------------------------------------------

    def prepare(self, block: Block) -> PreparedBlock:
        """Decode `block`'s records and list its signatures; changes nothing, checks nothing."""
        records: list[SignedRecord | str] = []
        jobs: list[Job] = []
        record_jobs: list[int] = []
        for data in block.records:
            try:
                record = SignedRecord.decode_whole(data)
            except RecordError as error:
                records.append(str(error))
                record_jobs.append(-1)
                continue
            records.append(record)
            record_jobs.append(len(jobs))
            jobs.append((record.signer, crypto.RECORD_CONTEXT + record.unsigned, record.signature))
        certificate = block.certificate
        vote = crypto.VOTE_CONTEXT + vote_message(
            self.chain_id, "precommit", certificate.height, certificate.round, certificate.block_hash)
        text = block.header.checkpoint(self.origin).text().encode()
        known = self.history.current.authority_set
        certificate_jobs = {}
        for i, signature in enumerate(certificate.signatures):
            authority = known.by_name(signature.authority)
            if authority is not None:
                certificate_jobs[i] = (authority.public_key, len(jobs))
                jobs.append((authority.public_key, vote, signature.vote_signature))
                jobs.append((authority.public_key, text, signature.checkpoint_signature))
        return PreparedBlock(block, records, jobs, record_jobs, certificate_jobs, vote, text)

    def check(self, prepared: PreparedBlock) -> CheckedBlock:
        """Judge the prepared block against every rule (module docstring); raise AuditViolation at the first broken."""
        block = prepared.block
        header = block.header

        def fail(rule: str, detail: str, index: int | None = None, **data: bytes | str | int) -> AuditViolation:
            return AuditViolation(Violation(header.height, rule, detail, index,
                                            {name: _shown(value) for name, value in data.items()}))

        if header.height != self.head.height + 1:
            raise fail("height", f"expected block {self.head.height + 1}, found block {header.height}")
        if header.previous_hash != self.head.hash:
            raise fail("previous-hash", f"does not link to block {self.head.height}",
                       expected=self.head.hash, found=header.previous_hash, header=header.encode())
        epoch = self.history.at(header.height)
        authorities = epoch.authority_set
        proposer = authorities.proposer(header.height, header.round).name
        if header.proposer != proposer:
            raise fail("proposer", f"{header.proposer!r} is not the proposer of round {header.round}; {proposer!r} is",
                       header=header.encode())
        if self.head.timestamp_ms is not None and header.timestamp_ms < self.head.timestamp_ms:
            raise fail("timestamp", f"{header.timestamp_ms} ms is earlier than block {self.head.height}'s "
                                    f"{self.head.timestamp_ms} ms", header=header.encode())
        records = block.records
        if len(records) != header.record_count:
            raise fail("record-count", f"{len(records)} records, the header says {header.record_count}")
        if header.first_leaf != self.range.size:
            raise fail("log-size", f"the block starts at leaf {header.first_leaf}, the log holds {self.range.size}",
                       header=header.encode())
        if len(records) > epoch.block_records_max:
            raise fail("block-records-max", f"{len(records)} records; the policy allows {epoch.block_records_max}")

        in_batches = sum(batched(r) for r in prepared.records if not isinstance(r, str))
        if in_batches > BLOCK_BATCHED_MAX:
            raise fail("block-batched-max", f"{in_batches} credentials in batches; a block holds at most {BLOCK_BATCHED_MAX}")

        delta = StateDelta(self.state, authorities, header.height)
        seen: set[bytes] = set()
        hashes: list[bytes] = []
        leaf = self.range.size
        # The pool's flags, all set: no record's own flag needs a look.
        verified = prepared.verified
        all_verified = verified is not None and 0 not in verified
        for i, record in enumerate(prepared.records):
            if isinstance(record, str):
                raise fail("record", f"does not decode: {record}", i, record=records[i])
            if not all_verified and not prepared.job_ok(prepared.record_jobs[i]):
                raise fail("record", f"the signature of this {record.kind} does not verify", i, record=records[i],
                           record_hash=record.hash, signer=record.signer, signature=record.signature)
            # An issuance seen before repeats its credential id, so the state
            # lookup the rules make finds it: the index is read only then.
            issuance = isinstance(record.body, CredentialIssuance)
            if record.hash in seen or (not issuance and self._indexed(record.hash)):
                raise fail("record-unique", "this record is already on the ledger", i,
                           record=records[i], record_hash=record.hash)
            seen.add(record.hash)
            try:
                delta.apply(record, leaf + i)
            except RuleError as error:
                if error.rule == "credential-unique" and self._indexed(record.hash):
                    raise fail("record-unique", "this record is already on the ledger", i,
                               record=records[i], record_hash=record.hash) from None
                raise fail(error.rule, error.detail, i, record=records[i], record_hash=record.hash,
                           signer=record.signer) from None
            hashes.append(record.hash)

        extended = self.range.extend(hashes)
        if extended.root() != header.log_root:
            raise fail("log-root", "the header's log root is not the RFC 9162 root of the records",
                       expected=extended.root(), found=header.log_root)
        sealed = delta.seal()
        if sealed.root != header.state_root:
            raise fail("state-root", "the header's state root is not the root of the state the records make",
                       expected=sealed.root, found=header.state_root)
        self._check_certificate(prepared, epoch, fail)
        if self.trust is not None:
            trust_violation = trust_history_violation(self.trust, self.history, header.height, delta.consortium_change)
            if trust_violation is not None:
                raise AuditViolation(trust_violation)
        return CheckedBlock(prepared, delta, sealed, extended, hashes)

    def _indexed(self, record_hash: bytes) -> bool:
        return self.store.get(INDEX_PREFIX + record_hash) is not None

    def _check_certificate(self, prepared: PreparedBlock, epoch: ConsortiumEntry, fail) -> None:
        header, certificate = prepared.block.header, prepared.block.certificate
        if certificate.height != header.height or certificate.block_hash != header.hash:
            raise fail("certificate", "the certificate is for another header",
                       header_hash=header.hash, certified=certificate.block_hash)
        authorities = epoch.authority_set
        signers: set[str] = set()
        for i, signature in enumerate(certificate.signatures):
            name = signature.authority
            authority = authorities.by_name(name)
            if authority is None:
                raise fail("certificate", f"{name!r} is not an authority of epoch {epoch.epoch}")
            if name in signers:
                raise fail("certificate", f"{name!r} signed twice", vote_signature=signature.vote_signature)
            signers.add(name)
            listed = prepared.certificate_jobs.get(i)
            if listed is not None and listed[0] == authority.public_key:
                vote_ok, note_ok = prepared.job_ok(listed[1]), prepared.job_ok(listed[1] + 1)
            else:  # the set changed inside the prepared batch: judge with the key in force
                flags = verify_jobs([(authority.public_key, prepared.vote_message, signature.vote_signature),
                                     (authority.public_key, prepared.checkpoint_text, signature.checkpoint_signature)])
                vote_ok, note_ok = flags[0] == 1, flags[1] == 1
            if not vote_ok:
                raise fail("certificate", f"bad precommit signature by {name}",
                           vote_signature=signature.vote_signature, key=authority.public_key)
            if not note_ok:
                raise fail("certificate", f"bad checkpoint cosignature by {name}",
                           checkpoint_signature=signature.checkpoint_signature, key=authority.public_key,
                           checkpoint=prepared.checkpoint_text.decode())
        if len(signers) < authorities.quorum:
            raise fail("certificate", f"{len(signers)} signatures, quorum is {authorities.quorum}",
                       signers=", ".join(sorted(signers)) or "none")

    def commit(self, checked: CheckedBlock) -> None:
        """Make the checked block part of the auditor's state, in one write."""
        block = checked.prepared.block
        header, delta = block.header, checked.delta
        counts = self.counts
        signatures = counts.signatures
        records: list[SignedRecord] = checked.prepared.records  # type: ignore[assignment]  # checked: all decoded
        # Counted a block at a time: a Counter counts the block's pairs in C.
        counts.count_records(Counter([(record.signer, record.body.KIND) for record in records]))
        if delta.consortium_change is not None:  # at most one a block
            for record in records:
                if isinstance(record.body, ConsortiumChange):
                    signatures["approvals"] += len(record.body.approvals)
        signatures["records"] += len(checked.hashes)
        signatures["precommits"] += len(block.certificate.signatures)
        signatures["cosignatures"] += len(block.certificate.signatures)
        counts.blocks += 1
        self.range = checked.range
        self.head = _Head(header.height, header.hash, header.timestamp_ms,
                          codec.encode({"certificate": block.certificate.to_map(), "header": header.to_map()}))
        batch = WriteBatch()
        batch.put_all(delta.puts())
        batch.put_all([(INDEX_PREFIX + record_hash, b"") for record_hash in checked.hashes])
        for signer in {record.signer for record in records}:
            batch.put(SIGNER_PREFIX + signer, json.dumps(counts.by_signer[signer]).encode())
        batch.put(PROGRESS_KEY, self.progress_bytes())
        self.store.write(batch, sync=False)
        self.state.committed(delta, checked.sealed)
        if delta.consortium_change is not None:
            self.history.append(delta.consortium_change)

    def sync(self) -> None:
        """Make everything committed so far durable (before a saved audit state points at it)."""
        batch = WriteBatch()
        batch.put(PROGRESS_KEY, self.progress_bytes())
        self.store.write(batch, sync=True)

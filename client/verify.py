"""Offline verification of a credential and its receipt, against the trust file alone.

A receipt (JSON) proves, under one quorum-cosigned checkpoint:

    credential --SHA-256(RFC 8785)--> credential_id
    record     credential.issue of credential_id, signed by the issuer key
    checkpoint C2SP signed note: origin, tree size, root, state root, time;
               >= quorum cosignatures of the trust file's authorities
    inclusion  the record is a leaf of that tree (RFC 9162 audit path)
    issuer     the registry entry of the signing key, proven against the
               checkpoint's state root: registered by an authority, in force
               when the record was logged, who endorses it
    status     the credential's entry, proven against the same state root:
               issued, suspended or revoked (and expired, by the clock)

Every check is named in the result, so a person reads exactly what held and
what did not. Nothing here does I/O: `client.online` adds the network checks.

Receipt fields (version 2):

    version           2
    credential_id     hex SHA-256 of the credential's RFC 8785 canonical form
    record            base64 canonical MessagePack of the signed issuance record
    leaf_index        its index in the log
    tree_size         size of the tree the proofs are for (= checkpoint size)
    inclusion_path    hex RFC 9162 audit path of the record
    checkpoint        C2SP tlog-checkpoint signed note, cosigned by authorities;
                      extension lines "lacre-block <height> <b64 header hash>",
                      "lacre-state <b64 state root>", "lacre-time <unix ms>"
    status_proof      {credential_id, entry, proof, registry_root}: see
                      ledger/status_proof.py and docs/state.md
    issuer_proof      {issuer_key, entry, proof, credentials_root}

A batch member's receipt (docs/batch.md) has the same fields, where
`record` is the credential.issue_batch record's leaf data, plus

    batch             {index, path}: hex RFC 9162 audit path of the
                      credential id (leaf data = the 32-byte id) in the
                      batch tree of `count` ids whose root the record signs
    batch_proof       {batch_id, entry, proof, credentials_root}
    status_proof      the member's own entry (or its absence), or null: then
                      the status is the batch's alone
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass, field

from ledger import crypto
from ledger.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from ledger.genesis import Trust
from ledger.batch import verify_batch_path
from ledger.merkle import ProofError, leaf_hash, verify_inclusion
from ledger.note import NoteError
from ledger.records import CredentialBatch, CredentialIssuance, RecordError, SignedRecord
from ledger.entries import BatchEntry, CredentialEntry, CredentialStatus, IssuerEntry
from ledger.status_proof import (
    BatchStatusProof,
    CredentialStatusProof,
    IssuerStatusProof,
    StatusProofError,
    checkpoint_height,
    checkpoint_state_root,
    checkpoint_time_ms,
    member_status,
)

RECEIPT_VERSION = 2


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verification:
    """The outcome: every check made, and what the receipt says once they hold."""

    checks: list[Check] = field(default_factory=list)
    credential_id: str = ""
    issuer: dict = field(default_factory=dict)
    issued_at: int = 0
    expires_at: int = 0
    checkpoint: Checkpoint | None = None
    cosigners: list[str] = field(default_factory=list)
    status: str = ""
    status_detail: str = ""
    endorsements: list[str] = field(default_factory=list)
    batch_id: bytes = b""
    """For a batch member: its batch (from the receipt's signed record) and position."""
    batch_index: int = -1

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "credential_id": self.credential_id,
            "issuer": self.issuer,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "tree_size": self.checkpoint.tree_size if self.checkpoint else None,
            "cosigners": self.cosigners,
            "status": self.status,
            "status_detail": self.status_detail,
            "endorsements": self.endorsements,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


class _Stop(Exception):
    """A check failed and later checks depend on it."""


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError(f"{what} must be 64 hex characters")
    return bytes.fromhex(value)


def _path(value: object) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise ValueError("inclusion_path must be a list of at most 64 hashes")
    if not all(isinstance(item, str) and len(item) == 64 for item in value):
        raise ValueError("path entries must be 64 hex characters")
    joined = bytes.fromhex("".join(value))  # one call, not one per hash
    return [joined[i : i + 32] for i in range(0, len(joined), 32)]


def _note_height(note: object) -> int | None:
    """The "lacre-block <height>" a note's text claims, before any signature is checked."""
    if not isinstance(note, str):
        return None
    for line in note.partition("\n\n")[0].splitlines()[3:]:
        if line.startswith("lacre-block "):
            height = line.split(" ")[1] if line.count(" ") >= 1 else ""
            return int(height) if height.isdigit() and len(height) < 20 else None
    return None


def _utc(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


class ReceiptVerifier:
    """Verifies many receipts against one trust file, remembering what it proved.

    Receipts of one cohort share a checkpoint and an issuer registration:
    once a checkpoint note verified with a quorum, or a record's signature
    verified, the identical bytes need not be checked again. Only successes
    are remembered, keyed by the exact bytes, so a cache hit proves as much
    as the check it replaces. Memory is bounded by `remembered_max`.
    """

    def __init__(self, trust: Trust, now_s: int | None = None, remembered_max: int = 100_000) -> None:
        self.trust = trust
        self.now_s = now_s
        self._remembered_max = remembered_max
        self._checkpoints: dict[str, tuple[Checkpoint, tuple]] = {}
        self._signed: set[bytes] = set()
        self._decoded: dict[bytes, SignedRecord] = {}
        self._issuers: dict[tuple, tuple[IssuerEntry | None]] = {}
        self._batches: dict[tuple, tuple[BatchEntry | None]] = {}

    def verify(self, receipt: dict, credential_id: bytes | None = None) -> Verification:
        """Check one receipt; never raises on bad input (every problem is a failed check)."""
        result = Verification()
        try:
            _verify(receipt, self.trust, credential_id, self.now_s, result, self)
        except _Stop:
            pass
        return result

    def checkpoint(self, note: str) -> tuple[Checkpoint, tuple]:
        known = self._checkpoints.get(note)
        if known is None:
            trust = self.trust
            # The set that must cosign is the one in force at the block the
            # note names; the name itself is only trusted once that set's
            # quorum has signed the text that carries it.
            epoch = trust.at(_note_height(note))
            known = verify_checkpoint(note, epoch.verifiers, epoch.quorum, origin=trust.origin)
            if len(self._checkpoints) >= self._remembered_max:
                self._checkpoints.clear()
            self._checkpoints[note] = known
        return known

    def decode(self, data: bytes) -> SignedRecord:
        """Decode a record, remembering shared ones (an issuer's registration)."""
        record = self._decoded.get(data)
        if record is None:
            record = SignedRecord.decode(data)
            if len(self._decoded) >= self._remembered_max:
                self._decoded.clear()
            self._decoded[data] = record
        return record

    def issuer(self, proof: IssuerStatusProof, state_root: bytes) -> IssuerEntry | None:
        """proof.verify(state_root), remembering successes (a cohort shares one); raises StatusProofError."""
        key = (proof, state_root)
        known = self._issuers.get(key)
        if known is None:
            known = (proof.verify(state_root),)
            if len(self._issuers) >= self._remembered_max:
                self._issuers.clear()
            self._issuers[key] = known
        return known[0]

    def batch(self, proof: BatchStatusProof, state_root: bytes) -> BatchEntry | None:
        """proof.verify(state_root), remembering successes (a cohort shares one); raises StatusProofError."""
        key = (proof, state_root)
        known = self._batches.get(key)
        if known is None:
            known = (proof.verify(state_root),)
            if len(self._batches) >= self._remembered_max:
                self._batches.clear()
            self._batches[key] = known
        return known[0]

    def signed(self, record: SignedRecord) -> bool:
        if record.encoded in self._signed:
            return True
        try:
            record.verify()
        except crypto.SignatureError:
            return False
        if len(self._signed) >= self._remembered_max:
            self._signed.clear()
        self._signed.add(record.encoded)
        return True


def verify_receipt(
    receipt: dict, trust: Trust, credential_id: bytes | None = None, now_s: int | None = None
) -> Verification:
    """Check `receipt` against `trust`; with `credential_id`, also that it is this credential's.

    With `now_s` (unix seconds), an expiring credential is also checked for expiry.
    Never raises on bad input: every problem becomes a failed check.
    """
    return ReceiptVerifier(trust, now_s).verify(receipt, credential_id)


def _need(result: Verification, name: str, ok: bool, detail_ok: str, detail_bad: str) -> None:
    if not result.add(name, ok, detail_ok if ok else detail_bad):
        raise _Stop()


def _verify(
    receipt: dict, trust: Trust, credential_id: bytes | None, now_s: int | None, result: Verification,
    verifier: ReceiptVerifier,
) -> None:
    # 1. The receipt parses.
    try:
        if not isinstance(receipt, dict) or receipt.get("version") != RECEIPT_VERSION:
            raise ValueError(f"not a version {RECEIPT_VERSION} receipt")
        claimed_id = _hex32(receipt["credential_id"], "credential_id")
        record_bytes = base64.b64decode(receipt["record"], validate=True)
        leaf_index, tree_size = receipt["leaf_index"], receipt["tree_size"]
        if type(leaf_index) is not int or type(tree_size) is not int or not 0 <= leaf_index < tree_size:
            raise ValueError("leaf_index and tree_size must be integers with 0 <= leaf_index < tree_size")
        path = _path(receipt["inclusion_path"])
        note = receipt["checkpoint"]
        if not isinstance(note, str):
            raise ValueError("checkpoint must be a signed note")
        batched = "batch" in receipt
        if batched:
            member = receipt["batch"]
            if not isinstance(member, dict) or set(member) != {"index", "path"} or type(member["index"]) is not int:
                raise ValueError("batch must be {index, path}")
            batch_index, batch_path = member["index"], _path(member["path"])
            batch_proof = BatchStatusProof.from_json(receipt["batch_proof"])
        status_document = receipt["status_proof"]
        status_proof = None if batched and status_document is None else CredentialStatusProof.from_json(status_document)
        issuer_proof = IssuerStatusProof.from_json(receipt["issuer_proof"])
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        _need(result, "receipt-format", False, "", f"malformed receipt: {error}")
        return
    result.credential_id = claimed_id.hex()
    result.add("receipt-format", True, f"version {RECEIPT_VERSION} receipt")

    # 2. It is this credential's receipt.
    if credential_id is not None:
        _need(
            result, "credential-id", credential_id == claimed_id,
            f"SHA-256 of the RFC 8785 form is {credential_id.hex()}",
            f"credential hashes to {credential_id.hex()}, the receipt is for {claimed_id.hex()}",
        )

    # 3. The issuance record: canonical, about this credential, signed by its signer.
    try:
        record = verifier.decode(record_bytes)
    except RecordError as error:
        _need(result, "issuance-record", False, "", f"record does not decode: {error}")
        return
    body = record.body
    if batched:
        _need(
            result, "issuance-record", isinstance(body, CredentialBatch),
            f"credential.issue_batch record of {getattr(body, 'count', 0):,} credentials",
            f"record is {record.kind}, not a batch issuance",
        )
        assert isinstance(body, CredentialBatch)
        try:
            verify_batch_path(claimed_id, batch_index, body.count, batch_path, body.root)
            member, why = True, ""
        except ProofError as error:
            member, why = False, str(error)
        result.batch_id, result.batch_index = body.batch_id, batch_index
        _need(
            result, "batch-member", member,
            f"credential {batch_index} of the {body.count:,} in batch {body.batch_id.hex()[:16]} (RFC 9162 audit path)",
            f"the credential id is not proven in the signed batch: {why}",
        )
    else:
        _need(
            result, "issuance-record",
            isinstance(body, CredentialIssuance) and body.credential_id == claimed_id,
            "credential.issue record for this credential id",
            f"record is {record.kind}, not the issuance of {claimed_id.hex()}",
        )
        assert isinstance(body, CredentialIssuance)
    result.issued_at, result.expires_at = body.issued_at, body.expires_at
    signed = verifier.signed(record)
    _need(result, "issuance-signature", signed, f"signed by issuer key {record.signer.hex()}", "issuer signature does not verify")

    # 4. The checkpoint: origin, quorum of cosignatures from the trust file.
    checkpoint = check_checkpoint(note, trust, result, verifier, "checkpoint-cosigned")
    _need(
        result, "checkpoint-size", checkpoint.tree_size == tree_size,
        f"proofs are for tree size {tree_size}", f"receipt tree size {tree_size} is not the checkpoint's {checkpoint.tree_size}",
    )

    # 5. The record is in that tree.
    try:
        verify_inclusion(leaf_hash(record_bytes), leaf_index, tree_size, path, checkpoint.root_hash)
        included, why = True, ""
    except ProofError as error:
        included, why = False, str(error)
    _need(result, "issuance-included", included, f"leaf {leaf_index} of {tree_size} (RFC 9162 audit path)", f"inclusion proof fails: {why}")

    # 6. The signing key was registered by an authority and in force at that leaf.
    check_issuer(issuer_proof, record.signer, leaf_index, checkpoint, trust, result, verifier)

    # 7. The credential's status at the checkpoint (and expiry by the clock).
    if batched:
        check_member_status(
            batch_proof, status_proof, claimed_id, batch_index, record, leaf_index, checkpoint, now_s, result,
            verifier, "status",
        )
    else:
        check_status(status_proof, claimed_id, record, leaf_index, checkpoint, now_s, result, "status")


def check_member_status_document(
    document: dict, own_proof: CredentialStatusProof, credential_id: bytes, checkpoint: Checkpoint,
    now_s: int | None, result: Verification, verifier: ReceiptVerifier, name: str,
) -> CredentialEntry:
    """A node's status document for a batch member: its path in the batch, the batch's and its own proofs."""
    root = _state_root(checkpoint, result, name)
    try:
        member = document["batch"]
        index, path = member["index"], _path(member["path"])
        if type(index) is not int:
            raise ValueError("batch index must be an integer")
        batch = verifier.batch(BatchStatusProof.from_json(document["batch_proof"]), root)
        if batch is None:
            raise StatusProofError("the batch is not on the ledger under this checkpoint")
        verify_batch_path(credential_id, index, batch.count, path, batch.root)
        if own_proof.credential_id != credential_id:
            raise StatusProofError("status proof is for another credential")
        entry = member_status(credential_id, index, own_proof.verify(root), batch)
    except (KeyError, TypeError, ValueError, ProofError, StatusProofError) as error:
        _need(result, name, False, "", f"batch member status fails: {error}")
        raise AssertionError("unreachable")
    report_status(entry, checkpoint, now_s, result, name, f"; credential {index} of batch {batch.batch_id.hex()[:16]}")
    return entry


def check_member_status(
    batch_proof: BatchStatusProof, own_proof: CredentialStatusProof | None, credential_id: bytes, index: int,
    record: SignedRecord, leaf_index: int, checkpoint: Checkpoint, now_s: int | None, result: Verification,
    verifier: ReceiptVerifier, name: str,
) -> CredentialEntry:
    """A batch member's status: its batch's entry, and its own if the proof carries one."""
    root = _state_root(checkpoint, result, name)
    body = record.body
    assert isinstance(body, CredentialBatch)
    try:
        batch = verifier.batch(batch_proof, root)
        if batch is None or batch_proof.batch_id != body.batch_id:
            raise StatusProofError("the batch is not on the ledger under this checkpoint")
        if (batch.leaf_index, batch.issuer_key, batch.root, batch.count) != (leaf_index, record.signer, body.root, body.count):
            raise StatusProofError("the batch entry does not match the batch record")
        own = None
        if own_proof is not None:
            if own_proof.credential_id != credential_id:
                raise StatusProofError("status proof is for another credential")
            own = own_proof.verify(root)
        entry = member_status(credential_id, index, own, batch)
    except StatusProofError as error:
        _need(result, name, False, "", f"status proof fails: {error}")
        raise AssertionError("unreachable")
    note = "" if own_proof is not None else "; the batch's status: this receipt has no status of the credential's own"
    report_status(entry, checkpoint, now_s, result, name, note)
    return entry


def check_checkpoint(
    note: str, trust: Trust, result: Verification, verifier: ReceiptVerifier, name: str
) -> Checkpoint:
    """Verify a cosigned checkpoint note; record it in `result` (stops on failure)."""
    if not isinstance(note, str):
        _need(result, name, False, "", "no checkpoint note")
    try:
        checkpoint, signatures = verifier.checkpoint(note)
    except (NoteError, CheckpointError) as error:
        _need(result, name, False, "", str(error))
        raise AssertionError("unreachable")
    result.checkpoint = checkpoint
    result.cosigners = sorted({s.name for s in signatures})
    moment = checkpoint_time_ms(checkpoint)
    at = f" at {_utc(moment // 1000)}" if moment is not None else ""
    _need(
        result, name, True,
        f"{checkpoint.origin} tree size {checkpoint.tree_size}{at}, cosigned by {', '.join(result.cosigners)} "
        f"(quorum {trust.at(checkpoint_height(checkpoint)).quorum} of {len(trust.at(checkpoint_height(checkpoint)).authorities)})", "",
    )
    return checkpoint


def _state_root(checkpoint: Checkpoint, result: Verification, name: str) -> bytes:
    try:
        return checkpoint_state_root(checkpoint)
    except StatusProofError as error:
        _need(result, name, False, "", str(error))
        raise AssertionError("unreachable")


def check_issuer(
    proof: IssuerStatusProof, signer: bytes, leaf_index: int, checkpoint: Checkpoint, trust: Trust,
    result: Verification, verifier: ReceiptVerifier, name: str = "issuer-registered",
) -> IssuerEntry:
    """The signer's registry entry, proven under `checkpoint`; fills `result.issuer`."""
    root = _state_root(checkpoint, result, name)
    try:
        entry = verifier.issuer(proof, root)
    except StatusProofError as error:
        _need(result, name, False, "", f"issuer proof fails: {error}")
        raise AssertionError("unreachable")
    authorities = {a.verifier.public_key: a.name for e in trust.history for a in e.authorities}
    if proof.issuer_key != signer or entry is None:
        _need(result, name, False, "", "issuance signer is not a registered issuer key")
    assert entry is not None
    registered_by = authorities.get(entry.registered_by)
    result.issuer = {
        "key": entry.issuer_key.hex(), "name": entry.name, "country": entry.country,
        "web_origin": entry.web_origin, "registered_by": registered_by or entry.registered_by.hex(),
        "status": entry.status.value,
        "endorsements": [
            {"by": authorities.get(e.endorser_key, e.endorser_key.hex()), "achievement_type": e.achievement_type}
            for e in entry.endorsements
        ],
    }
    result.endorsements = [
        authorities.get(e.endorser_key, e.endorser_key.hex()) + (f" ({e.achievement_type})" if e.achievement_type else "")
        for e in entry.endorsements
    ]
    if registered_by is None:
        _need(result, name, False, "", "issuer was not registered by an authority of the trust file")
    if not entry.in_force_at(leaf_index):
        _need(result, name, False, "", f"issuer key was not in force at leaf {leaf_index}")
    standing = "" if entry.active else f"; key now {entry.status.value} (leaf {entry.changed_leaf})"
    result.add(
        name, True,
        f"{entry.name} ({entry.country}) registered by authority {registered_by}, key in force at leaf {leaf_index}{standing}",
    )
    return entry


def check_status(
    proof: CredentialStatusProof, credential_id: bytes, record: SignedRecord | None, leaf_index: int | None,
    checkpoint: Checkpoint, now_s: int | None, result: Verification, name: str,
) -> CredentialEntry | None:
    """The credential's entry, proven under `checkpoint`; a check that holds only while it is valid."""
    root = _state_root(checkpoint, result, name)
    try:
        if proof.credential_id != credential_id:
            raise StatusProofError("status proof is for another credential")
        entry = proof.verify(root)
    except StatusProofError as error:
        _need(result, name, False, "", f"status proof fails: {error}")
        raise AssertionError("unreachable")
    if entry is not None and record is not None and (entry.issuance_leaf != leaf_index or entry.issuer_key != record.signer):
        _need(result, name, False, "", "status entry does not match the issuance record")
    report_status(entry, checkpoint, now_s, result, name)
    return entry


def report_status(
    entry: CredentialEntry | None, checkpoint: Checkpoint, now_s: int | None, result: Verification, name: str,
    note: str = "",
) -> None:
    """Add the check `name`: holds only for an issued, unexpired credential; the detail says why not."""
    as_of = f"as of tree size {checkpoint.tree_size}{note}"
    if entry is None:
        result.status = CredentialStatus.UNKNOWN.value
        result.add(name, False, f"never issued (proven absent, {as_of})")
        return
    status = entry.status_at(now_s) if now_s is not None else entry.status
    result.status = status.value
    if status is CredentialStatus.ISSUED:
        detail = f"issued, not suspended or revoked ({as_of})"
        if entry.expires_at:
            detail += f"; valid until {_utc(entry.expires_at)}"
    elif status is CredentialStatus.EXPIRED:
        detail = f"EXPIRED at {_utc(entry.expires_at)} ({as_of})"
    elif status is CredentialStatus.SUSPENDED:
        detail = f"SUSPENDED since {_utc(entry.changed_at)} (leaf {entry.changed_leaf}, {as_of})"
    else:
        detail = f"REVOKED ({entry.reason}) at {_utc(entry.changed_at)} (leaf {entry.changed_leaf}, {as_of})"
    result.status_detail = detail
    result.add(name, status is CredentialStatus.ISSUED, detail)

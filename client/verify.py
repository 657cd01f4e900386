"""Offline verification of a credential and its receipt, against the trust file alone.

A receipt (JSON) proves three things under one quorum-cosigned checkpoint:

    credential --SHA-256(RFC 8785)--> credential_id
    record     credential.issue of credential_id, signed by the issuer key
    issuer     issuer.register of that key, signed by a consortium authority
    checkpoint C2SP signed note: origin, tree size, root; >= quorum cosignatures
    inclusion  both records are leaves of that tree (RFC 9162 audit paths)

Every check is named in the result, so a person reads exactly what held and
what did not. Nothing here does I/O: `client.online` adds the network checks.

Receipt fields (version 1):

    version           1
    credential_id     hex SHA-256 of the credential's RFC 8785 canonical form
    record            base64 canonical MessagePack of the signed issuance record
    leaf_index        its index in the log
    tree_size         size of the tree the proofs are for (= checkpoint size)
    inclusion_path    hex RFC 9162 audit path of the record
    checkpoint        C2SP tlog-checkpoint signed note, cosigned by authorities
    issuer            {record, leaf_index, inclusion_path} of the issuer's
                      registration, under the same checkpoint
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass, field

from ledger import crypto
from ledger.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from ledger.genesis import Trust
from ledger.merkle import ProofError, leaf_hash, verify_inclusion
from ledger.note import NoteError
from ledger.records import CredentialIssuance, IssuerRegistration, RecordError, SignedRecord

RECEIPT_VERSION = 1


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
        self._included: set[tuple] = set()

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
            known = verify_checkpoint(note, trust.verifiers, trust.quorum, origin=trust.origin)
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

    def included(self, data: bytes, index: int, tree_size: int, path: list[bytes], root: bytes) -> None:
        """verify_inclusion of record `data`, remembering successes; raises ProofError."""
        key = (data, index, tree_size, b"".join(path), root)
        if key in self._included:
            return
        verify_inclusion(leaf_hash(data), index, tree_size, path, root)
        if len(self._included) >= self._remembered_max:
            self._included.clear()
        self._included.add(key)

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
        issuer_part = receipt["issuer"]
        issuer_bytes = base64.b64decode(issuer_part["record"], validate=True)
        issuer_index = issuer_part["leaf_index"]
        if type(issuer_index) is not int or not 0 <= issuer_index < tree_size:
            raise ValueError("issuer leaf_index out of range")
        issuer_path = _path(issuer_part["inclusion_path"])
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
        record = SignedRecord.decode(record_bytes)
    except RecordError as error:
        _need(result, "issuance-record", False, "", f"record does not decode: {error}")
        return
    body = record.body
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
    try:
        checkpoint, signatures = verifier.checkpoint(note)
    except (NoteError, CheckpointError) as error:
        _need(result, "checkpoint-cosigned", False, "", str(error))
        return
    result.checkpoint = checkpoint
    result.cosigners = sorted({s.name for s in signatures})
    _need(
        result, "checkpoint-cosigned", True,
        f"{checkpoint.origin} tree size {checkpoint.tree_size}, cosigned by {', '.join(result.cosigners)} "
        f"(quorum {trust.quorum} of {len(trust.authorities)})", "",
    )
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

    # 6. The issuer key was registered by an authority, in the same tree, earlier.
    try:
        registration = verifier.decode(issuer_bytes)
    except RecordError as error:
        _need(result, "issuer-registered", False, "", f"issuer record does not decode: {error}")
        return
    reg = registration.body
    authority = next((a for a in trust.authorities if a.verifier.public_key == registration.signer), None)
    reg_signed = verifier.signed(registration)
    try:
        verifier.included(issuer_bytes, issuer_index, tree_size, issuer_path, checkpoint.root_hash)
        reg_included = True
    except ProofError:
        reg_included = False
    ok = (
        isinstance(reg, IssuerRegistration) and reg.issuer_key == record.signer and authority is not None
        and reg_signed and reg_included and issuer_index < leaf_index
    )
    if isinstance(reg, IssuerRegistration):
        result.issuer = {
            "key": reg.issuer_key.hex(), "name": reg.name, "country": reg.country,
            "web_origin": reg.web_origin, "registered_by": authority.name if authority else "",
        }
    if not ok:
        if not isinstance(reg, IssuerRegistration) or reg.issuer_key != record.signer:
            why = "issuer record does not register the issuance signer"
        elif authority is None:
            why = "issuer was not registered by an authority of the trust file"
        elif not reg_signed:
            why = "registration signature does not verify"
        elif not reg_included:
            why = "registration inclusion proof fails"
        else:
            why = "issuer registered after the issuance"
        _need(result, "issuer-registered", False, "", why)
    assert isinstance(reg, IssuerRegistration) and authority is not None
    result.add(
        "issuer-registered", True,
        f"{reg.name} ({reg.country}) registered by authority {authority.name} at leaf {issuer_index}",
    )
    if body.expires_at and now_s is not None:
        result.add(
            "not-expired", now_s < body.expires_at,
            f"valid until {_utc(body.expires_at)}" if now_s < body.expires_at else f"expired at {_utc(body.expires_at)}",
        )

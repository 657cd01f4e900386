"""Fresh status: online from any node (`lacre verify --online URL`), or stapled by the holder.

The node is not trusted: what it says counts only when proven. A status
document is the answer of `GET /v1/credentials/{id}`: a cosigned checkpoint,
the credential's status proof and its issuer's registry proof under that
checkpoint's state root. It is checked the same way whether a verifier
fetched it (online) or the holder handed it over (stapled, so the node never
learns who is verifying); for a stapled one the verifier adds a freshness
policy on the checkpoint's cosigned time. When the receipt's checkpoint is
known, the fresh one must extend it (RFC 9162 consistency), and the result
says what changed since the receipt.
"""

from __future__ import annotations

from client.sdk import ApiError, AsyncClient
from client.verify import (
    ReceiptVerifier,
    Verification,
    _Stop,
    _utc,
    check_checkpoint,
    check_issuer,
    check_member_status_document,
    check_status,
    report_status,
)
from ledger.checkpoint import Checkpoint
from ledger.genesis import Trust
from ledger.merkle import ProofError, verify_consistency
from ledger.status_proof import (
    BatchStatusProof,
    CredentialStatusProof,
    IssuerStatusProof,
    PrefixStatusProof,
    StatusProofError,
    checkpoint_state_root,
    checkpoint_time_ms,
    member_status,
)


def check_status_document(
    document: dict, trust: Trust, credential_id: bytes, result: Verification, now_s: int,
    max_age_s: int | None = None, consistency_path: list[bytes] | None = None, prefix: str = "online",
) -> None:
    """Append the checks of a status document to `result` (never raises on bad input).

    `result.checkpoint`, if set, is the receipt's checkpoint: the fresh one
    must be consistent with it, through `consistency_path`.
    """
    old = result.checkpoint
    old_status = result.status
    try:
        _check_document(document, trust, credential_id, result, now_s, max_age_s, consistency_path, old, old_status, prefix)
    except _Stop:
        pass


def _check_document(
    document: dict, trust: Trust, credential_id: bytes, result: Verification, now_s: int,
    max_age_s: int | None, consistency_path: list[bytes] | None, old: Checkpoint | None, old_status: str, prefix: str,
) -> None:
    verifier = ReceiptVerifier(trust, now_s)
    try:
        note = document["checkpoint"]
        if not isinstance(note, str):
            raise TypeError("checkpoint must be a signed note")
        status_proof = CredentialStatusProof.from_json(document["status_proof"])
        issuer_proof = IssuerStatusProof.from_json(document["issuer_proof"]) if "issuer_proof" in document else None
    except (KeyError, TypeError, StatusProofError) as error:
        result.add(f"{prefix}-format", False, f"malformed status document: {error}")
        return
    fresh = check_checkpoint(note, trust, result, verifier, f"{prefix}-checkpoint")
    moment_ms = checkpoint_time_ms(fresh)
    if max_age_s is not None:
        age_s = None if moment_ms is None else now_s - moment_ms // 1000
        fresh_enough = age_s is not None and age_s <= max_age_s
        result.add(
            f"{prefix}-fresh", fresh_enough,
            f"checkpoint is {age_s} s old (policy: at most {max_age_s} s)" if age_s is not None
            else "checkpoint carries no time",
        )
        if not fresh_enough:
            return
    if old is not None and consistency_path is not None:
        try:
            verify_consistency(old.tree_size, fresh.tree_size, old.root_hash, fresh.root_hash, consistency_path)
        except ProofError as error:
            result.add(f"{prefix}-consistency", False, f"fresh checkpoint does not extend the receipt's: {error}")
            return
        result.add(f"{prefix}-consistency", True, f"tree {old.tree_size} is a prefix of tree {fresh.tree_size}")
    if "batch_proof" in document:
        entry = check_member_status_document(document, status_proof, credential_id, fresh, now_s, result, verifier,
                                             f"{prefix}-status")
    else:
        entry = check_status(status_proof, credential_id, None, None, fresh, now_s, result, f"{prefix}-status")
    if entry is None:
        return
    if issuer_proof is not None:
        check_issuer(issuer_proof, entry.issuer_key, entry.issuance_leaf, fresh, trust, result, verifier, f"{prefix}-issuer")
    _report_change(entry, old_status, result, prefix)


async def fetch_status_document(url: str, credential_id: bytes, since_size: int | None) -> tuple[dict, list[bytes] | None]:
    """The node's status document and, if `since_size`, a consistency path from it to the document's tree."""
    async with AsyncClient(url) as node:
        document = await node.credential(credential_id)
        path = None
        if since_size is not None and isinstance(document.get("tree_size"), int):
            proof = await node.consistency_proof(since_size, document["tree_size"])
            path = [bytes.fromhex(h) for h in proof["consistency_path"]]
    return document, path


async def _check_private(
    url: str, trust: Trust, credential_id: bytes, result: Verification, now_s: int, bits: int, since: int | None,
) -> None:
    """k-anonymous online status: the node is asked for every credential under
    the first `bits` bits of the id and proves the set complete; which one is
    ours is decided here. A node cannot hide our entry among the others, nor
    claim it absent, without breaking the cosigned state root."""
    old, old_status = result.checkpoint, result.status
    try:
        async with AsyncClient(url) as node:
            answer = await node.credentials_by_prefix(credential_id, bits)
            path = None
            if since is not None:
                proof = await node.consistency_proof(since, answer["tree_size"])
                path = [bytes.fromhex(h) for h in proof["consistency_path"]]
    except (ApiError, OSError, KeyError, TypeError, ValueError) as error:
        result.add("private-reachable", False, f"{url}: {error}")
        return
    try:
        try:
            prefix_proof = PrefixStatusProof.from_json(answer.get("prefix_proof"))
        except StatusProofError as error:
            result.add("private-format", False, f"malformed prefix answer: {error}")
            return
        fresh = check_checkpoint(answer.get("checkpoint"), trust, result, ReceiptVerifier(trust, now_s), "private-checkpoint")
        if old is not None:
            try:
                verify_consistency(old.tree_size, fresh.tree_size, old.root_hash, fresh.root_hash, path or [])
            except ProofError as error:
                result.add("private-consistency", False, f"fresh checkpoint does not extend the receipt's: {error}")
                return
            result.add("private-consistency", True, f"tree {old.tree_size} is a prefix of tree {fresh.tree_size}")
        try:
            entries = prefix_proof.verify(checkpoint_state_root(fresh))
        except StatusProofError as error:
            result.add("private-status", False, f"prefix proof fails: {error}")
            return
        entry = next((e for e in entries if e.credential_id == credential_id), None)
        note = f"; asked for {bits} bits of the id, {len(entries)} credentials under that prefix"
        if entry is None and result.batch_id:
            # A batch member without an entry of its own has its batch's
            # status: ask for the batch (which names the cohort, not the holder).
            entry = await _batch_status(url, trust, result, now_s, credential_id)
            note += "; no entry of its own: the batch's status"
            if entry is None:
                return
        report_status(entry, fresh, now_s, result, "private-status", note)
        _report_change(entry, old_status, result, "private")
    except _Stop:
        pass


async def _batch_status(url: str, trust: Trust, result: Verification, now_s: int, credential_id: bytes):
    """The member's status by its batch's current entry (None, with a failed check, if unproven)."""
    try:
        async with AsyncClient(url) as node:
            document = await node.batch(result.batch_id)
        checkpoint = check_checkpoint(document.get("checkpoint"), trust, result, ReceiptVerifier(trust, now_s),
                                      "private-batch-checkpoint")
        batch = BatchStatusProof.from_json(document.get("batch_proof")).verify(checkpoint_state_root(checkpoint))
        if batch is None:
            raise StatusProofError("the batch is not on the ledger")
        return member_status(credential_id, result.batch_index, None, batch)
    except (ApiError, OSError, KeyError, TypeError, ValueError, StatusProofError) as error:
        result.add("private-batch", False, f"batch status not proven: {error}")
        return None


def _report_change(entry, old_status: str, result: Verification, prefix: str) -> None:
    if entry is not None and old_status and old_status != result.status:
        result.add(
            f"{prefix}-changed", True,
            f"status changed from {old_status} to {result.status} since the receipt"
            + (f" (at {_utc(entry.changed_at)})" if entry.changed_at else ""),
        )


async def check_online(
    url: str, trust: Trust, credential_id: bytes, result: Verification, now_s: int, private_bits: int | None = None,
) -> None:
    """Append online checks to `result` (which holds the receipt's verified checkpoint, if any).

    With `private_bits`, the node is asked only for a prefix of the id (k-anonymous).
    """
    since = result.checkpoint.tree_size if result.checkpoint is not None else None
    if private_bits is not None:
        await _check_private(url, trust, credential_id, result, now_s, private_bits, since)
        return
    try:
        document, path = await fetch_status_document(url, credential_id, since)
    except (ApiError, OSError, KeyError, TypeError, ValueError) as error:
        result.add("online-reachable", False, f"{url}: {error}")
        return
    if since is not None and path is None:
        result.add("online-consistency", False, "node gave no consistency proof")
        return
    check_status_document(document, trust, credential_id, result, now_s, consistency_path=path)

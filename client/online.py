"""Online checks added to an offline verification (`lacre verify --online URL`).

The node is not trusted: what it says counts only when proven. A fresh
checkpoint must carry a quorum of cosignatures, be consistent (RFC 9162) with
the receipt's checkpoint, and a revocation must be a record included under
it. Until status proofs exist (non-membership, issue 4), "still issued" is
reported as the node's claim, not as proven.
"""

from __future__ import annotations

import base64

from client.sdk import ApiError, AsyncClient
from client.verify import Verification
from ledger.checkpoint import CheckpointError, verify_checkpoint
from ledger.genesis import Trust
from ledger.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from ledger.note import NoteError
from ledger.records import CredentialRevocation, RecordError, SignedRecord


async def check_online(url: str, trust: Trust, credential_id: bytes, result: Verification) -> None:
    """Append online checks to `result` (which must hold a verified checkpoint)."""
    async with AsyncClient(url) as node:
        try:
            answer = await node.credential(credential_id)
        except ApiError as error:
            result.add("online-reachable", False, str(error))
            return
    if answer.get("status") == "unknown":
        result.add("online-status", False, f"{url} knows no credential {credential_id.hex()}")
        return
    try:
        fresh, _ = verify_checkpoint(answer["checkpoint"], trust.verifiers, trust.quorum, origin=trust.origin)
    except (KeyError, TypeError, NoteError, CheckpointError) as error:
        result.add("online-checkpoint", False, f"fresh checkpoint does not verify: {error}")
        return
    result.add("online-checkpoint", True, f"fresh checkpoint at tree size {fresh.tree_size}, quorum-cosigned")
    old = result.checkpoint
    if old is not None:
        async with AsyncClient(url) as node:
            try:
                proof = await node.consistency_proof(old.tree_size, fresh.tree_size)
                path = [bytes.fromhex(h) for h in proof["consistency_path"]]
                verify_consistency(old.tree_size, fresh.tree_size, old.root_hash, fresh.root_hash, path)
                result.add("online-consistency", True, f"tree {old.tree_size} is a prefix of tree {fresh.tree_size}")
            except (ApiError, KeyError, ValueError, TypeError) as error:
                result.add("online-consistency", False, f"no valid consistency proof: {error}")
                return
    if answer.get("status") == "revoked":
        revocation = next((r for r in answer.get("records", []) if r.get("kind") == "credential.revoke"), None)
        try:
            data = base64.b64decode(revocation["record"], validate=True)
            record = SignedRecord.decode(data)
            record.verify()
            if not isinstance(record.body, CredentialRevocation) or record.body.credential_id != credential_id:
                raise RecordError("not a revocation of this credential")
            path = [bytes.fromhex(h) for h in revocation["inclusion_path"]]
            verify_inclusion(leaf_hash(data), revocation["leaf_index"], fresh.tree_size, path, fresh.root_hash)
        except (TypeError, KeyError, ValueError, ProofError) as error:
            result.add("online-status", False, f"node says revoked but its proof fails: {error}")
            return
        result.add(
            "not-revoked", False,
            f"REVOKED ({record.body.reason.value}) by {record.signer.hex()[:16]}..., proven at leaf {revocation['leaf_index']}",
        )
        return
    result.add("not-revoked", True, f"{url} reports status {answer.get('status')} (node's claim; no status proof yet)")

"""JSON views of ledger objects, as the HTTP API shows them.

Hashes, ids and keys are lowercase hex; raw record bytes are base64; the
checkpoint stays a C2SP note. The same shapes are parsed by `client/`.
"""

from __future__ import annotations

import base64

from ledger.block import Block, BlockHeader, CommitCertificate
from ledger.records import SignedRecord
from ledger.entries import CredentialEntry, IssuerEntry


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def header_view(header: BlockHeader) -> dict:
    return {
        "height": header.height,
        "hash": header.hash.hex(),
        "previous_hash": header.previous_hash.hex(),
        "proposer": header.proposer,
        "round": header.round,
        "timestamp_ms": header.timestamp_ms,
        "record_count": header.record_count,
        "log_size": header.log_size,
        "log_root": header.log_root.hex(),
        "state_root": header.state_root.hex(),
    }


def certificate_view(certificate: CommitCertificate) -> dict:
    return {
        "height": certificate.height,
        "round": certificate.round,
        "block_hash": certificate.block_hash.hex(),
        "signatures": [
            {
                "authority": s.authority,
                "vote_signature": s.vote_signature.hex(),
                "checkpoint_signature": s.checkpoint_signature.hex(),
            }
            for s in certificate.signatures
        ],
    }


def block_view(block: Block) -> dict:
    return {
        "header": header_view(block.header),
        "certificate": certificate_view(block.certificate),
        "records": [b64(r) for r in block.records],
        # The canonical bytes, so a syncing peer or auditor checks exactly
        # what was signed rather than a JSON rendering of it.
        "encoded": b64(block.encode()),
    }


def body_view(record: SignedRecord) -> dict:
    """A record body as JSON: bytes fields in hex, enums as their values."""
    fields = {}
    for name, value in record.body.to_map().items():
        fields[name] = value.hex() if isinstance(value, bytes) else value
    return {"kind": record.kind, "signer": record.signer.hex(), "body": fields}


def issuer_view(entry: IssuerEntry) -> dict:
    return {
        "key": entry.issuer_key.hex(),
        "issuer_id": entry.issuer_id.hex(),
        "name": entry.name,
        "country": entry.country,
        "web_origin": entry.web_origin,
        "registered_by": entry.registered_by.hex(),
        "status": entry.status.value,
        "leaf_index": entry.leaf_index,
        "changed_leaf": entry.changed_leaf,
        "successor": entry.successor.hex(),
        "endorsements": [
            {"endorser": e.endorser_key.hex(), "achievement_type": e.achievement_type, "leaf_index": e.leaf_index}
            for e in entry.endorsements
        ],
    }


def credential_view(entry: CredentialEntry, now_s: int) -> dict:
    view = {
        "credential_id": entry.credential_id.hex(),
        "status": entry.status_at(now_s).value,
        "issuer_key": entry.issuer_key.hex(),
        "issued_at": entry.issued_at,
        "expires_at": entry.expires_at,
        "issuance_leaf": entry.issuance_leaf,
    }
    if entry.changed_leaf >= 0:
        view.update(changed_leaf=entry.changed_leaf, changed_at=entry.changed_at)
    if entry.reason:
        view["reason"] = entry.reason
    if entry.batch_id:
        view.update(batch_id=entry.batch_id.hex(), batch_index=entry.batch_index)
    return view

"""Cohort issuance on the client: sign a batch, and make every member's receipt offline.

An issuer holding the ids of a cohort needs from a node only what all of
its receipts share (`GET /v1/batches/{id}`: the batch record's inclusion
proof, the cosigned checkpoint, the batch's and the issuer's registry
proofs). Each member's receipt adds its own RFC 9162 path in the batch
tree, computed here from the ids the issuer already has: one request per
batch, not one per credential. Receipt fields: `docs/batch.md`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from ledger import crypto
from ledger.batch import BatchTree
from ledger.records import CredentialBatch, SignedRecord

RECEIPT_VERSION = 2
BATCH_ID_TAG = b"lacre/batch-id\x00"


def batch_id_for(issuer_key: bytes, name: str) -> bytes:
    """A batch id derived from the issuer and a name it chooses (e.g. "2026-cohort-3/chunk-7").

    Derived, not random, so an interrupted issuance that resumes signs the
    same batch id and the ledger refuses it twice rather than issuing twice.
    """
    return hashlib.sha256(BATCH_ID_TAG + issuer_key + name.encode()).digest()


def sign_batch(
    key: crypto.KeyPair, ids: Sequence[bytes], batch_id: bytes, issued_at: int, expires_at: int = 0,
    achievement_type: str = "",
) -> SignedRecord:
    """The issuer's one signature over a cohort; the record carries `ids` in this order."""
    tree = BatchTree(ids)
    body = CredentialBatch(batch_id, tree.root, len(ids), issued_at, expires_at, achievement_type)
    return SignedRecord.sign(body, key, ids=b"".join(ids))


def batch_receipts(document: dict, ids: Sequence[bytes], tree: BatchTree | None = None) -> Iterator[dict]:
    """One receipt per id of the batch `document` describes, in the batch's order.

    `document` is a node's answer to `GET /v1/batches/{id}`; `ids` the
    batch's ids as signed. The receipts carry no status proof of their own
    (`status_proof` is null): at issuance a member's status is its batch's,
    which `batch_proof` proves; a holder fetches a fresh one from any node
    (`lacre receipt`, `GET /v1/credentials/{id}`).
    """
    tree = tree or BatchTree(ids)
    shared = {
        "version": RECEIPT_VERSION,
        "record": document["record"],
        "leaf_index": document["leaf_index"],
        "tree_size": document["tree_size"],
        "inclusion_path": document["inclusion_path"],
        "checkpoint": document["checkpoint"],
        "batch_proof": document["batch_proof"],
        "status_proof": None,
        "issuer_proof": document["issuer_proof"],
    }
    for index, credential_id in enumerate(ids):
        yield {
            **shared,
            "credential_id": credential_id.hex(),
            "batch": {"index": index, "path": [node.hex() for node in tree.path(index)]},
        }

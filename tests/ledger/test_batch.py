"""Cohort batches: an RFC 9162 tree of credential ids under one signature, carried with the record."""

from __future__ import annotations

import hashlib

import pytest

from ledger import codec, crypto
from ledger.batch import BatchTree, batch_root, split_ids, verify_batch_path
from ledger.merkle import ProofError, inclusion_proof, leaf_hash, root
from ledger.records import (
    BATCH_RECORD_BYTES_MAX,
    CredentialBatch,
    CredentialIssuance,
    RecordError,
    SignedRecord,
    leaf_data,
)
from tests.conftest import seeded_key

KEY = seeded_key("issuer")


def ids(count: int, tag: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(tag + i.to_bytes(4, "big")).digest() for i in range(count)]


def batch(count: int, **fields) -> SignedRecord:
    listed = ids(count)
    body = CredentialBatch(b"\x01" * 32, batch_root(listed), count, 1_700_000_000, **fields)
    return SignedRecord.sign(body, KEY, ids=b"".join(listed))


@pytest.mark.parametrize("size", [*range(1, 40), 64, 65, 127, 1000])
def test_the_tree_is_rfc_9162_and_every_path_verifies(size):
    listed = ids(size)
    tree = BatchTree(listed)
    assert tree.root == batch_root(listed) == root([leaf_hash(i) for i in listed])
    for index in {0, size // 2, size - 1}:
        path = tree.path(index)
        assert path == inclusion_proof(index, [leaf_hash(i) for i in listed])
        verify_batch_path(listed[index], index, size, path, tree.root)


def test_a_path_proves_only_its_own_id_and_index():
    # (The size is not bound by a path alone, as in RFC 9162; the record signs it.)
    listed = ids(10)
    tree = BatchTree(listed)
    path = tree.path(3)
    for arguments in [(listed[4], 3, 10), (listed[3], 4, 10), (listed[3], 3, 40)]:
        with pytest.raises(ProofError):
            verify_batch_path(*arguments, path, tree.root)


def test_wire_form_carries_the_ids_and_leaf_data_leaves_them_out():
    record = batch(1000)
    assert len(record.encoded) > 32_000 > len(record.leaf)
    assert record.hash == leaf_hash(record.leaf)
    assert leaf_data(record.encoded) == record.leaf and leaf_data(record.leaf) == record.leaf
    whole = SignedRecord.decode_whole(record.encoded)
    assert whole == record and whole.ids == record.ids and whole.hash == record.hash
    whole.verify()
    # The leaf data alone (what a receipt carries) decodes and verifies, without ids.
    alone = SignedRecord.decode(record.leaf)
    alone.verify()
    assert alone.hash == record.hash and alone.ids == b""
    with pytest.raises(RecordError, match="travels with its ids"):
        SignedRecord.decode_whole(record.leaf)
    assert split_ids(record.ids) == ids(1000)


def test_ids_are_bound_by_the_signed_root():
    record = batch(8)
    mapping = codec.decode(record.encoded)
    swapped = ids(8)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    cases = {
        "reordered": b"".join(swapped),
        "one changed": record.ids[:-1] + b"\x00",
        "one missing": record.ids[:-32],
        "one extra": record.ids + bytes(32),
        "repeated": record.ids[:32] * 8,
    }
    for name, value in cases.items():
        with pytest.raises(RecordError):
            SignedRecord.decode(codec.encode({**mapping, "ids": value}))
    with pytest.raises(RecordError, match="only a batch"):
        issuance = SignedRecord.sign(CredentialIssuance(bytes(32), 1), KEY)
        SignedRecord.decode(codec.encode({**codec.decode(issuance.encoded), "ids": bytes(32)}))


def test_a_batch_repeating_an_id_is_refused_even_with_a_matching_root():
    listed = ids(3)
    listed[2] = listed[0]
    body = CredentialBatch(b"\x01" * 32, batch_root(listed), 3, 1)
    with pytest.raises(RecordError, match="once"):
        SignedRecord.sign(body, KEY, ids=b"".join(listed))


def test_the_largest_batch_fits_its_bounds():
    record = batch(65_536)
    assert len(record.encoded) <= BATCH_RECORD_BYTES_MAX
    assert SignedRecord.decode_whole(record.encoded).hash == record.hash


def test_signature_covers_the_root_not_the_transport():
    record = batch(4)
    forged = SignedRecord(record.body, seeded_key("mallory").public_key, record.signature, ids=record.ids)
    with pytest.raises(crypto.SignatureError):
        forged.verify()

"""Records: signed by their author, one canonical encoding, strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import codec, crypto
from ledger.merkle import leaf_hash
from ledger.records import (
    BODY_TYPES,
    BatchRevocation,
    CredentialBatch,
    ConsortiumChange,
    CredentialIssuance,
    CredentialReinstatement,
    CredentialRevocation,
    CredentialSuspension,
    IssuerEndorsement,
    IssuerRegistration,
    IssuerRetirement,
    IssuerRotation,
    RecordError,
    RevocationReason,
    TIMESTAMP_MAX,
    SignedRecord,
    _decode_issuance,
)
from tests.conftest import seeded_key

KEY = seeded_key("issuer")
CID = bytes(range(32))

BODIES = [
    IssuerRegistration(KEY.public_key, "Facultad de Ciencias", "MX", "https://fc.example.mx"),
    CredentialIssuance(CID, 1_700_000_000, 1_800_000_000),
    CredentialRevocation(CID, RevocationReason.KEY_COMPROMISE, 1_700_000_100),
    CredentialSuspension(CID, 1_700_000_050),
    CredentialReinstatement(CID, 1_700_000_060),
    IssuerRotation(KEY.public_key, seeded_key("issuer-2").public_key),
    IssuerRetirement(KEY.public_key),
    IssuerEndorsement(KEY.public_key, "Certificate"),
    CredentialBatch(b"\x07" * 32, b"\x09" * 32, 5_000, 1_700_000_000, 1_800_000_000, "Course"),
    BatchRevocation(b"\x07" * 32, RevocationReason.KEY_COMPROMISE, 1_700_000_200),
    ConsortiumChange(
        3, "authority.add", "inst-9", seeded_key("inst-9").public_key, "http://127.0.0.1:7009",
        approvals=((bytes(32), bytes(64)), (b"\x01" * 32, b"\x02" * 64)),
    ),
]


def test_every_record_kind_is_exercised():
    assert {type(body) for body in BODIES} == set(BODY_TYPES.values())


@pytest.mark.parametrize("make", [
    lambda: IssuerRotation(KEY.public_key, KEY.public_key),
    lambda: IssuerRotation(KEY.public_key, b"short"),
    lambda: IssuerRetirement(b"\x00" * 31),
    lambda: IssuerEndorsement(KEY.public_key, "x" * 101),
    lambda: IssuerEndorsement(KEY.public_key, "tab\there"),
    lambda: CredentialSuspension(CID[:31], 1),
    lambda: CredentialReinstatement(CID, -1),
    lambda: CredentialBatch(CID, CID, 0, 1),
    lambda: CredentialBatch(CID, CID, 65_537, 1),
    lambda: CredentialBatch(CID, CID[:31], 1, 1),
    lambda: CredentialBatch(CID, CID, 1, 10, 5),
    lambda: BatchRevocation(CID, "bored", 1),
    lambda: ConsortiumChange(0, "authority.promote", "x"),
    lambda: ConsortiumChange(0, "authority.add", "inst-9"),
    lambda: ConsortiumChange(0, "authority.remove", "inst-1", KEY.public_key),
    lambda: ConsortiumChange(0, "policy.set", block_records_max=0),
    lambda: ConsortiumChange(0, "policy.set", block_records_max=10, approvals=((b"\x01" * 32, bytes(64)), (bytes(32), bytes(64)))),
    lambda: ConsortiumChange(0, "policy.set", block_records_max=10, approvals=((bytes(32), bytes(64)),) * 2),
], ids=["rotate-to-itself", "short-new-key", "short-key", "long-type", "control-chars", "short-id", "negative-time",
        "empty-batch", "batch-too-big", "short-root", "batch-expiry-first", "batch-bad-reason",
        "unknown-action", "add-without-key", "remove-with-key", "empty-policy", "unsorted-approvals", "repeated-approver"])
def test_bad_fields_are_refused(make):
    with pytest.raises(RecordError):
        make()


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.KIND)
def test_sign_encode_decode_verify(body):
    record = SignedRecord.sign(body, KEY)
    record.verify()
    decoded = SignedRecord.decode(record.encoded)
    assert decoded == record
    assert decoded.encoded == record.encoded
    assert decoded.hash == leaf_hash(record.encoded)
    decoded.verify()


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.KIND)
def test_any_flipped_byte_breaks_the_record(body):
    encoded = SignedRecord.sign(body, KEY).encoded
    for i in range(len(encoded)):
        tampered = bytearray(encoded)
        tampered[i] ^= 0x01
        try:
            SignedRecord.decode(bytes(tampered)).verify()
        except (RecordError, crypto.SignatureError):
            continue
        pytest.fail(f"flipping byte {i} went unnoticed")


def _remap(record: SignedRecord, **changes) -> bytes:
    mapping = codec.decode(record.encoded)
    mapping.update(changes)
    return codec.encode(mapping)


RECORD = SignedRecord.sign(BODIES[1], KEY)
MALFORMED = {
    "unknown kind": _remap(RECORD, kind="credential.burn"),
    "wrong version": _remap(RECORD, v=2),
    "extra field": _remap(RECORD, extra=1),
    "body extra field": _remap(RECORD, body={**codec.decode(RECORD.encoded)["body"], "x": 1}),
    "short credential id": _remap(RECORD, body={"credential_id": b"x", "expires_at": 0, "issued_at": 1}),
    "short signature": _remap(RECORD, sig=b"\x00" * 63),
    "text signer": _remap(RECORD, signer="abc"),
    "negative time": _remap(RECORD, body={"credential_id": CID, "expires_at": 0, "issued_at": -1}),
    "expiry before issue": _remap(RECORD, body={"credential_id": CID, "expires_at": 5, "issued_at": 10}),
    "not a map": codec.encode([1, 2]),
    "unsorted map": b"\x82\xa1v\x01\xa4kind\xa1x",
    "oversized": b"\x00" * 20000,
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_records_are_refused(data):
    with pytest.raises(RecordError):
        SignedRecord.decode(data)


def test_unknown_revocation_reason_is_refused():
    with pytest.raises(RecordError, match="unknown revocation reason"):
        CredentialRevocation(CID, "bored", 1)


def test_signature_by_another_key_fails():
    other = seeded_key("mallory")
    record = SignedRecord.sign(BODIES[1], other)
    forged = SignedRecord(record.body, KEY.public_key, record.signature)
    with pytest.raises(crypto.SignatureError):
        forged.verify()


def test_signature_is_bound_to_the_record_context():
    # A vote-context signature over the same bytes must not pass as a record.
    unsigned = SignedRecord.sign(BODIES[1], KEY).signed_message()
    wrong_context = KEY.sign(crypto.VOTE_CONTEXT, unsigned)
    with pytest.raises(crypto.SignatureError):
        SignedRecord(BODIES[1], KEY.public_key, wrong_context).verify()


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.KIND)
def test_decoded_bytes_are_exactly_what_the_fields_rebuild(body):
    # decode keeps the input bytes; they must be the bytes a fresh record
    # with the same fields encodes to, or two encodings would mean one record.
    record = SignedRecord.decode(SignedRecord.sign(body, KEY).encoded)
    rebuilt = SignedRecord(record.body, record.signer, record.signature)
    assert rebuilt.encoded == record.encoded and rebuilt.unsigned == record.unsigned


# -- the fast path of a single issuance -----------------------------------------
# `decode` reads a single issuance with a pattern instead of the generic
# decoder. The two must agree on every input: same record, or both refuse.

def _outcome(decode, data: bytes):
    try:
        record = decode(data)
    except RecordError:
        return "refused"
    return tuple(getattr(record, name) for name in SignedRecord.__slots__)


def _same_on_both_paths(data: bytes) -> None:
    assert _outcome(SignedRecord.decode, data) == _outcome(SignedRecord._decode_map, data)


# Every edge of MessagePack's unsigned forms: fixint, uint8, 16, 32, 64.
EDGES = [0, 1, 127, 128, 255, 256, 65_535, 65_536, (1 << 32) - 1, 1 << 32, TIMESTAMP_MAX - 1]


@pytest.mark.parametrize("issued_at", EDGES)
def test_an_issuance_takes_the_fast_path_at_every_integer_edge(issued_at):
    for expires_at in [0] + [edge for edge in EDGES if edge > issued_at]:
        data = SignedRecord.sign(CredentialIssuance(CID, issued_at, expires_at), KEY).encoded
        assert _decode_issuance(SignedRecord, data) is not None
        _same_on_both_paths(data)


def test_an_integer_in_a_longer_form_than_needed_is_refused():
    canonical = SignedRecord.sign(CredentialIssuance(CID, 5, 0), KEY).encoded
    for longer in (b"\xcc\x05", b"\xcd\x00\x05", b"\xce\x00\x00\x00\x05", b"\xcf" + (5).to_bytes(8, "big")):
        data = canonical.replace(b"issued_at\x05", b"issued_at" + longer)
        assert _decode_issuance(SignedRecord, data) is None
        with pytest.raises(RecordError, match="canonical"):
            SignedRecord.decode(data)


def test_an_issuance_breaking_a_rule_is_refused_alike():
    data = _remap(RECORD, body={"credential_id": CID, "expires_at": 5, "issued_at": 10})
    with pytest.raises(RecordError, match="expires_at must be after issued_at"):
        _decode_issuance(SignedRecord, data)
    _same_on_both_paths(data)


def test_every_flipped_cut_or_grown_issuance_decodes_alike():
    encoded = SignedRecord.sign(CredentialIssuance(CID, 1_700_000_000, 0), KEY).encoded
    variants = [encoded[:cut] for cut in range(len(encoded))] + [encoded + b"\x00", encoded + b"\xc0"]
    for i in range(len(encoded)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(encoded)
            tampered[i] ^= mask
            variants.append(bytes(tampered))
    for data in variants:
        _same_on_both_paths(data)


@given(st.integers(0, TIMESTAMP_MAX - 1), st.integers(0, TIMESTAMP_MAX - 1), st.binary(min_size=32, max_size=32))
def test_any_issuance_decodes_alike_on_both_paths(issued_at, expires_at, credential_id):
    try:
        body = CredentialIssuance(credential_id, issued_at, expires_at)
    except RecordError:
        return
    _same_on_both_paths(SignedRecord.sign(body, KEY).encoded)

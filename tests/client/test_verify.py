"""The offline verifier: a good receipt passes every named check; each tampering fails the right one."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from client.verify import verify_receipt
from ledger.chain import Chain
from ledger.genesis import Trust
from ledger.records import (
    CredentialIssuance,
    CredentialReinstatement,
    CredentialRevocation,
    CredentialSuspension,
    IssuerEndorsement,
    IssuerRotation,
    SignedRecord,
)
from ledger.entries import CredentialStatus, IssuerEntry
from ledger.store import MemoryStore
from node.api import build_receipt
from tests.conftest import make_consortium, seeded_key

C = make_consortium(4)


def _chain() -> Chain:
    chain = Chain(MemoryStore(), C.genesis)
    C.commit(chain, [C.registration()])
    C.commit(chain, [C.issuance(i) for i in range(9)])
    return chain


CHAIN = _chain()
CREDENTIAL_ID = C.issuance(4).body.credential_id
RECEIPT = json.loads(json.dumps(build_receipt(CHAIN, CREDENTIAL_ID)))
TRUST = Trust.from_genesis(C.genesis, {})


def test_a_good_receipt_passes_every_check():
    result = verify_receipt(RECEIPT, TRUST, CREDENTIAL_ID)
    assert result.ok, result.checks
    assert [c.name for c in result.checks] == [
        "receipt-format", "credential-id", "issuance-record", "issuance-signature",
        "checkpoint-cosigned", "checkpoint-size", "issuance-included", "issuer-registered", "status",
    ]
    assert result.status == "issued"
    assert result.issuer["name"] == "Issuer issuer" and result.issuer["registered_by"] == "inst-0"
    assert result.cosigners == ["inst-0", "inst-1", "inst-2", "inst-3"]


def _flip_b64(text: str, at: int = -5) -> str:
    data = bytearray(base64.b64decode(text))
    data[at] ^= 1
    return base64.b64encode(bytes(data)).decode()


def _set(path, value):
    def tamper(receipt):
        target = receipt
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return tamper


def _drop_cosignatures(keep: int):
    def tamper(receipt):
        text, _, signatures = receipt["checkpoint"].partition("\n\n")
        receipt["checkpoint"] = text + "\n\n" + "".join(signatures.splitlines(keepends=True)[:keep])
    return tamper


def _flip_signature(receipt):
    data = base64.b64decode(receipt["record"])
    at = data.index(SignedRecord.decode(data).signature) + 10
    receipt["record"] = _flip_b64(receipt["record"], at)


def _forged_issuer_entry(receipt):
    # The same issuer key, claimed as "registered" by someone outside the consortium.
    fake = IssuerEntry(C.issuer.public_key, "Fake U", "XX", "", seeded_key("outsider").public_key, 0)
    receipt["issuer_proof"]["entry"] = base64.b64encode(fake.encode()).decode()


def _flip_sibling(part):
    def tamper(receipt):
        siblings = receipt[part]["proof"]["siblings"]
        i = next(i for i, h in enumerate(siblings) if h)
        siblings[i] = ("1" if siblings[i][0] != "1" else "2") + siblings[i][1:]
    return tamper


def _status_of_another_credential(receipt):
    other = json.loads(json.dumps(build_receipt(CHAIN, C.issuance(5).body.credential_id)))
    receipt["status_proof"] = other["status_proof"]


def _claim_revoked(receipt):
    from ledger.entries import CredentialEntry

    entry = CredentialEntry.decode(base64.b64decode(receipt["status_proof"]["entry"]))
    forged = CredentialEntry(entry.credential_id, CredentialStatus.REVOKED, entry.issuer_key, entry.issued_at,
                             entry.expires_at, entry.issuance_leaf, 99, 5, "fraud")
    receipt["status_proof"]["entry"] = base64.b64encode(forged.encode()).decode()


def _other_credential_record(receipt):
    other = SignedRecord.sign(CredentialIssuance(bytes(32), 5), C.issuer)
    receipt["record"] = base64.b64encode(other.encoded).decode()


TAMPERING = {
    "not a receipt": (lambda r: r.clear(), "receipt-format"),
    "wrong version": (_set(["version"], 1), "receipt-format"),
    "status proof missing": (lambda r: r.pop("status_proof"), "receipt-format"),
    "leaf index beyond size": (_set(["leaf_index"], 10_000), "receipt-format"),
    "path entry not hex": (_set(["inclusion_path"], lambda p: ["zz" * 32] + p[1:]), "receipt-format"),
    "record of another credential": (_other_credential_record, "issuance-record"),
    "record signature flipped": (_flip_signature, "issuance-signature"),
    "record body flipped": (_set(["record"], lambda r: _flip_b64(r, 30)), "issuance-record"),
    "checkpoint below quorum": (_drop_cosignatures(2), "checkpoint-cosigned"),
    "checkpoint root altered": (_set(["checkpoint"], lambda t: t.replace(t.splitlines()[2], "A" * 43 + "="), ), "checkpoint-cosigned"),
    "checkpoint of another origin": (_set(["checkpoint"], lambda t: "evil.example/log" + t[t.index("\n"):]), "checkpoint-cosigned"),
    "tree size differs": (_set(["tree_size"], lambda s: s + 1), "checkpoint-size"),
    "wrong leaf index": (_set(["leaf_index"], lambda i: i - 1), "issuance-included"),
    "path hash flipped": (_set(["inclusion_path"], lambda p: [("1" if p[0][0] != "1" else "2") + p[0][1:]] + p[1:]), "issuance-included"),
    "path truncated": (_set(["inclusion_path"], lambda p: p[:-1]), "issuance-included"),
    "issuer entry forged": (_forged_issuer_entry, "issuer-registered"),
    "issuer proof sibling flipped": (_flip_sibling("issuer_proof"), "issuer-registered"),
    "issuer proof of another key": (_set(["issuer_proof", "issuer_key"], "ab" * 32), "issuer-registered"),
    "status proof sibling flipped": (_flip_sibling("status_proof"), "status"),
    "status proof of another credential": (_status_of_another_credential, "status"),
    "status entry altered": (_claim_revoked, "status"),
    "status entry dropped (claims never issued)": (_set(["status_proof", "entry"], None), "status"),
}


@pytest.mark.parametrize("tamper,failing_check", TAMPERING.values(), ids=TAMPERING.keys())
def test_each_tampering_fails_its_check(tamper, failing_check):
    receipt = copy.deepcopy(RECEIPT)
    tamper(receipt)
    result = verify_receipt(receipt, TRUST, CREDENTIAL_ID)
    assert not result.ok
    failed = [c.name for c in result.checks if not c.ok]
    assert failed == [failing_check], result.checks


def test_receipt_for_another_credential_fails_credential_id():
    result = verify_receipt(RECEIPT, TRUST, C.issuance(5).body.credential_id)
    assert [c.name for c in result.checks if not c.ok] == ["credential-id"]


def test_a_trust_file_of_another_consortium_refuses_the_checkpoint():
    from ledger.genesis import Authority, AuthoritySet, Genesis

    keys = [seeded_key(f"other-{i}") for i in range(4)]
    genesis = Genesis(C.genesis.origin, AuthoritySet(tuple(Authority(k.name, k.public_key) for k in keys)), 1)
    other = Trust.from_genesis(genesis, {})
    result = verify_receipt(RECEIPT, other, CREDENTIAL_ID)
    assert [c.name for c in result.checks if not c.ok] == ["checkpoint-cosigned"]


def test_expired_credential_fails_when_a_clock_is_given():
    chain = Chain(MemoryStore(), C.genesis)
    expiring = SignedRecord.sign(CredentialIssuance(b"\x09" * 32, 100, 200), C.issuer)
    C.commit(chain, [C.registration(), expiring])
    receipt = json.loads(json.dumps(build_receipt(chain, b"\x09" * 32)))
    assert verify_receipt(receipt, TRUST, now_s=150).ok
    late = verify_receipt(receipt, TRUST, now_s=250)
    assert [c.name for c in late.checks if not c.ok] == ["status"]
    assert late.status == "expired"


STATUS_CHANGES = [
    ("suspended", [lambda cid: CredentialSuspension(cid, 1_700_000_500)], "suspended"),
    ("revoked", [lambda cid: CredentialRevocation(cid, "fraud", 1_700_000_500)], "revoked"),
    ("suspended then reinstated", [lambda cid: CredentialSuspension(cid, 1), lambda cid: CredentialReinstatement(cid, 2)],
     "issued"),
]


@pytest.mark.parametrize("changes, status", [(c, s) for _, c, s in STATUS_CHANGES], ids=[n for n, _, _ in STATUS_CHANGES])
def test_a_receipt_made_after_a_status_change_proves_that_status(changes, status):
    chain = Chain(MemoryStore(), C.genesis)
    C.commit(chain, [C.registration(), C.issuance(1)])
    cid = C.issuance(1).body.credential_id
    old = json.loads(json.dumps(build_receipt(chain, cid)))
    for make in changes:
        C.commit(chain, [SignedRecord.sign(make(cid), C.issuer)])
    fresh = json.loads(json.dumps(build_receipt(chain, cid)))
    result = verify_receipt(fresh, TRUST, cid)
    assert result.status == status
    assert result.ok == (status == "issued")
    assert [c.name for c in result.checks if not c.ok] == ([] if status == "issued" else ["status"])
    assert verify_receipt(old, TRUST, cid).ok, "the old receipt still proves the issuance"


def test_a_credential_of_a_rotated_and_endorsed_issuer_still_verifies():
    chain = Chain(MemoryStore(), C.genesis)
    new_key = seeded_key("issuer-next")
    C.commit(chain, [C.registration(), C.issuance(1)])
    C.commit(chain, [
        SignedRecord.sign(IssuerEndorsement(C.issuer.public_key, "Certificate"), C.authorities[2]),
        SignedRecord.sign(IssuerRotation(C.issuer.public_key, new_key.public_key), C.issuer),
    ])
    C.commit(chain, [C.issuance(2, issuer=new_key)])
    details = {}
    for n in (1, 2):
        cid = C.issuance(n).body.credential_id
        result = verify_receipt(json.loads(json.dumps(build_receipt(chain, cid))), TRUST, cid)
        assert result.ok, result.checks
        assert result.endorsements == ["inst-2 (Certificate)"]
        details[n] = next(c.detail for c in result.checks if c.name == "issuer-registered")
    assert "key now rotated" in details[1] and "rotated" not in details[2]


def test_a_verifier_that_remembers_still_fails_every_tampering():
    from client.verify import ReceiptVerifier

    verifier = ReceiptVerifier(TRUST)
    assert verifier.verify(RECEIPT, CREDENTIAL_ID).ok
    for tamper, failing_check in TAMPERING.values():
        receipt = copy.deepcopy(RECEIPT)
        tamper(receipt)
        result = verifier.verify(receipt, CREDENTIAL_ID)
        assert [c.name for c in result.checks if not c.ok] == [failing_check]
    # and the good receipt, and its cohort, still pass afterwards
    assert verifier.verify(RECEIPT, CREDENTIAL_ID).ok
    other = json.loads(json.dumps(build_receipt(CHAIN, C.issuance(7).body.credential_id)))
    assert verifier.verify(other, C.issuance(7).body.credential_id).ok

"""The public HTTP API on a real server: the happy path, then every kind of bad input."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ledger import merkle
from ledger.checkpoint import verify_checkpoint
from ledger.records import CredentialIssuance, SignedRecord
from tests.conftest import seeded_key


def b64(record) -> str:
    return base64.b64encode(record.encoded).decode()


async def submit(client, records, wait=True, expect=200):
    response = await client.post(
        "/v1/records" + ("?wait=commit" if wait else ""), json={"records": [b64(r) for r in records]}
    )
    body = await response.json()
    assert response.status == expect, body
    return body


async def test_status_of_an_empty_node(client, consortium):
    response = await client.get("/v1/status")
    status = await response.json()
    assert status["height"] == 0 and status["tree_size"] == 0
    assert status["origin"] == consortium.genesis.origin
    assert status["genesis_hash"] == consortium.genesis.hash.hex()
    response = await client.get("/v1/checkpoint")
    assert response.status == 404


async def test_submit_commit_and_prove(client, consortium):
    records = [consortium.registration()] + [consortium.issuance(i) for i in range(10)]
    answer = await submit(client, records)
    assert [r["leaf_index"] for r in answer["records"]] == list(range(11))
    assert all(r["status"] == "committed" for r in answer["records"])

    response = await client.get("/v1/checkpoint")
    assert response.content_type == "text/plain"
    checkpoint, _ = verify_checkpoint(await response.text(), consortium.genesis.authority_set.verifiers, 1)
    assert checkpoint.tree_size == 11

    leaves = [merkle.leaf_hash(r.encoded) for r in records]
    for index in (0, 5, 10):
        response = await client.get(f"/v1/proofs/inclusion?hash={leaves[index].hex()}")
        proof = await response.json()
        assert proof["leaf_index"] == index
        merkle.verify_inclusion(leaves[index], index, 11, [bytes.fromhex(h) for h in proof["inclusion_path"]], checkpoint.root_hash)

    response = await client.get(f"/v1/proofs/inclusion?hash={leaves[3].hex()}&tree_size=7")
    proof = await response.json()
    merkle.verify_inclusion(leaves[3], 3, 7, [bytes.fromhex(h) for h in proof["inclusion_path"]], merkle.root(leaves[:7]))

    response = await client.get("/v1/proofs/consistency?from=4&to=11")
    proof = await response.json()
    merkle.verify_consistency(4, 11, merkle.root(leaves[:4]), checkpoint.root_hash,
                              [bytes.fromhex(h) for h in proof["consistency_path"]])

    response = await client.get(f"/v1/records/{leaves[2].hex()}")
    record = await response.json()
    assert record["kind"] == "credential.issue" and record["leaf_index"] == 2
    assert base64.b64decode(record["record"]) == records[2].encoded


async def test_credential_status_receipt_and_revocation(client, consortium):
    from ledger.records import CredentialRevocation

    issuance = consortium.issuance(1)
    await submit(client, [consortium.registration(), issuance])
    cid = issuance.body.credential_id.hex()
    status = await (await client.get(f"/v1/credentials/{cid}")).json()
    assert status["status"] == "issued" and status["issuer"]["name"] == "Issuer issuer"

    receipt = await (await client.get(f"/v1/receipts/{cid}")).json()
    assert receipt["credential_id"] == cid and receipt["leaf_index"] == 1
    assert base64.b64decode(receipt["record"]) == issuance.encoded

    revocation = SignedRecord.sign(CredentialRevocation(issuance.body.credential_id, "fraud", 1_800_000_000), consortium.issuer)
    await submit(client, [revocation])
    status = await (await client.get(f"/v1/credentials/{cid}")).json()
    assert status["status"] == "revoked" and status["reason"] == "fraud"
    assert [r["kind"] for r in status["records"]] == ["credential.issue", "credential.revoke"]

    unknown = await (await client.get(f"/v1/credentials/{'00' * 32}")).json()
    assert unknown["status"] == "unknown"


async def test_resubmission_is_idempotent(client, consortium):
    records = [consortium.registration(), consortium.issuance(1)]
    first = await submit(client, records)
    again = await submit(client, records)
    assert [r["leaf_index"] for r in again["records"]] == [r["leaf_index"] for r in first["records"]]
    assert (await (await client.get("/v1/status")).json())["tree_size"] == 2


async def test_resubmitted_issuances_are_reported_committed_beside_new_ones(client, consortium):
    first = await submit(client, [consortium.registration(), consortium.issuance(1)])
    again = await submit(client, [consortium.issuance(1), consortium.issuance(2)])
    assert [r["status"] for r in again["records"]] == ["committed", "committed"]
    assert [r["leaf_index"] for r in again["records"]] == [first["records"][1]["leaf_index"], 2]


async def test_resubmitting_more_committed_issuances_than_the_mempool_holds_is_not_overload(make_client, consortium):
    client = await make_client(mempool_records_max=3)
    await submit(client, [consortium.registration()])
    issuances = [consortium.issuance(i) for i in range(6)]
    await submit(client, issuances[:3])
    await submit(client, issuances[3:])
    again = await submit(client, issuances)
    assert [r["status"] for r in again["records"]] == ["committed"] * 6
    assert [r["leaf_index"] for r in again["records"]] == list(range(1, 7))


async def test_submit_without_wait_is_accepted_then_committed(client, consortium):
    answer = await submit(client, [consortium.registration()], wait=False, expect=202)
    assert answer["records"][0]["status"] in ("pending", "committed")
    again = await submit(client, [consortium.registration()], wait=True)
    assert again["records"][0]["status"] == "committed"


async def test_blocks_carry_certificates(client, consortium):
    await submit(client, [consortium.registration()])
    await submit(client, [consortium.issuance(1)])
    block = await (await client.get("/v1/blocks/2")).json()
    assert block["header"]["height"] == 2 and len(block["certificate"]["signatures"]) == 1
    page = await (await client.get("/v1/blocks?from=1&limit=10")).json()
    assert [b["header"]["height"] for b in page["blocks"]] == [1, 2]
    assert (await client.get("/v1/blocks/3")).status == 404


async def test_blocks_in_canonical_form_replay_into_a_fresh_chain(client, consortium):
    from ledger import codec
    from ledger.block import Block
    from ledger.chain import Chain
    from ledger.store import MemoryStore

    await submit(client, [consortium.registration()])
    await submit(client, [consortium.issuance(i) for i in range(3)])
    response = await client.get("/v1/blocks?from=1", headers={"Accept": "application/msgpack"})
    page = codec.decode(await response.read())
    replica = Chain(MemoryStore(), consortium.genesis)
    for data in page["blocks"]:
        replica.apply_block(Block.decode(data))
    status = await (await client.get("/v1/status")).json()
    assert (replica.height, replica.head_hash.hex()) == (page["height"], status["head_hash"])


async def _error(response, status, error):
    body = await response.json()
    assert response.status == status, body
    assert body["error"] == error, body
    assert body["detail"]
    return body


async def test_every_refusal_is_a_json_4xx_and_changes_nothing(client, consortium):
    await submit(client, [consortium.registration()])
    good = consortium.issuance(1)
    stranger = seeded_key("stranger")
    forged = SignedRecord(good.body, consortium.issuer.public_key, stranger.sign(b"x", b"y"))
    unknown_issuer = SignedRecord.sign(CredentialIssuance(hashlib.sha256(b"z").digest(), 5), stranger)
    cases = [
        (lambda: client.post("/v1/records", data=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400, "malformed-json"),
        (lambda: client.post("/v1/records", json={"nope": 1}), 400, "malformed-request"),
        (lambda: client.post("/v1/records", json={"records": []}), 400, "malformed-request"),
        (lambda: client.post("/v1/records", json={"records": ["***"]}), 400, "malformed-request"),
        (lambda: client.post("/v1/records", json={"records": [base64.b64encode(b"\x81\xa1a\x01").decode()]}), 400, "malformed-record"),
        (lambda: client.post("/v1/records", json={"record": b64(forged)}), 400, "bad-signature"),
        (lambda: client.post("/v1/records", json={"record": b64(unknown_issuer)}), 403, "issuer-registered"),
        (lambda: client.post("/v1/records", json={"records": [b64(good), b64(forged)]}), 400, "bad-signature"),
        (lambda: client.post("/v1/records?wait=later", json={"record": b64(good)}), 400, "bad-parameter"),
        (lambda: client.get("/v1/records/xyz"), 400, "bad-parameter"),
        (lambda: client.get(f"/v1/records/{'AB' * 32}"), 400, "bad-parameter"),
        (lambda: client.get(f"/v1/records/{'ab' * 32}"), 404, "unknown-record"),
        (lambda: client.get("/v1/proofs/inclusion"), 400, "bad-parameter"),
        (lambda: client.get(f"/v1/proofs/inclusion?hash={'ab' * 32}&tree_size=99"), 400, "bad-parameter"),
        (lambda: client.get("/v1/proofs/inclusion?hash=00&tree_size=-1"), 400, "bad-parameter"),
        (lambda: client.get("/v1/proofs/consistency?from=2&to=1"), 400, "bad-parameter"),
        (lambda: client.get("/v1/proofs/consistency?from=abc"), 400, "bad-parameter"),
        (lambda: client.get("/v1/blocks/zero"), 400, "bad-parameter"),
        (lambda: client.get("/v1/blocks?from=0"), 400, "bad-parameter"),
        (lambda: client.get(f"/v1/receipts/{'ab' * 32}"), 404, "unknown-credential"),
        (lambda: client.get("/v1/nowhere"), 404, "not-found"),
        (lambda: client.delete("/v1/status"), 405, "method-not-allowed"),
    ]
    for request, status, error in cases:
        await _error(await request(), status, error)
    after = await (await client.get("/v1/status")).json()
    assert (after["tree_size"], after["mempool_depth"]) == (1, 0)


async def test_a_batch_with_one_bad_record_admits_none(client, consortium):
    await submit(client, [consortium.registration()])
    duplicate_cid = consortium.issuance(1)
    conflicting = SignedRecord.sign(CredentialIssuance(duplicate_cid.body.credential_id, 999), consortium.issuer)
    response = await client.post(
        "/v1/records", json={"records": [b64(consortium.issuance(2)), b64(duplicate_cid), b64(conflicting)]}
    )
    body = await _error(response, 409, "credential-unique")
    assert [r["index"] for r in body["refused"]] == [2]
    status = await (await client.get("/v1/status")).json()
    assert (status["tree_size"], status["mempool_depth"]) == (1, 0)


async def test_body_over_the_limit_is_413(make_client, consortium):
    client = await make_client(body_bytes_max=4096)
    response = await client.post("/v1/records", data=b"x" * 10_000, headers={"Content-Type": "application/json"})
    await _error(response, 413, "body-too-large")


async def test_full_mempool_answers_503_with_retry_after(make_client, consortium):
    client = await make_client(mempool_records_max=3, block_delay_ms=60_000)
    await submit(client, [consortium.registration()], wait=False, expect=202)
    response = await client.post("/v1/records", json={"records": [b64(consortium.issuance(i)) for i in range(5)]})
    await _error(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"


async def test_metrics_are_prometheus_text(client, consortium):
    await submit(client, [consortium.registration()])
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert "lacre_records_committed_total 1.0" in text
    assert "lacre_height 1.0" in text

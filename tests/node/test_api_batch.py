"""Cohort batches through a real node: one signature, every member provable, revocable alone or together."""

from __future__ import annotations

import base64
import hashlib

from client.batch_receipts import batch_id_for, batch_receipts, sign_batch
from client.verify import ReceiptVerifier, verify_receipt
from ledger.genesis import Trust
from ledger.records import BatchRevocation, CredentialRevocation, CredentialSuspension, SignedRecord
from tests.node.test_api import submit

COHORT = [hashlib.sha256(b"graduate %d" % i).digest() for i in range(300)]


def trust_of(consortium) -> Trust:
    return Trust.from_genesis(consortium.genesis, {})


async def issue_cohort(client, consortium, ids=COHORT, name="2026/cohort-1"):
    record = sign_batch(consortium.issuer, ids, batch_id_for(consortium.issuer.public_key, name), 1_700_000_000,
                        1_900_000_000, "Course")
    answer = await submit(client, [consortium.registration(), record])
    assert [r["status"] for r in answer["records"]] == ["committed", "committed"]
    return record


async def test_a_cohort_is_issued_by_one_record_and_every_receipt_verifies(client, consortium):
    record = await issue_cohort(client, consortium)
    assert (await (await client.get("/v1/status")).json())["tree_size"] == 2, "one leaf for the whole cohort"
    document = await (await client.get(f"/v1/batches/{record.body.batch_id.hex()}")).json()
    assert document["count"] == 300 and document["status"] == "issued" and document["leaf_index"] == 1
    assert base64.b64decode(document["record"]) == record.leaf, "receipts carry the leaf data, not the ids"
    verifier = ReceiptVerifier(trust_of(consortium), now_s=1_800_000_000)
    receipts = list(batch_receipts(document, COHORT))
    results = [verifier.verify(receipt, credential_id) for receipt, credential_id in zip(receipts, COHORT)]
    assert all(r.ok for r in results), [c for c in results[0].checks if not c.ok]
    assert results[7].status == "issued" and "batch-member" in [c.name for c in results[7].checks]
    # A receipt for one id does not pass for another, nor with another position.
    assert not verifier.verify(receipts[0], COHORT[1]).ok
    moved = {**receipts[0], "batch": {**receipts[0]["batch"], "index": 1}}
    assert not verify_receipt(moved, trust_of(consortium), now_s=1_800_000_000).ok
    # After the validity window the same receipt says expired.
    assert verify_receipt(receipts[0], trust_of(consortium), COHORT[0], now_s=2_000_000_000).status == "expired"


async def test_members_change_alone_and_the_batch_revokes_them_all(client, consortium):
    record = await issue_cohort(client, consortium)
    issuer = consortium.issuer
    await submit(client, [SignedRecord.sign(CredentialRevocation(COHORT[5], "issued_in_error", 1_700_000_100), issuer),
                          SignedRecord.sign(CredentialSuspension(COHORT[6], 1_700_000_100), issuer)])
    trust = trust_of(consortium)

    async def status(credential_id):
        return await (await client.get(f"/v1/credentials/{credential_id.hex()}")).json()

    assert [(await status(COHORT[i]))["status"] for i in (4, 5, 6)] == ["issued", "revoked", "suspended"]
    assert (await status(COHORT[5]))["reason"] == "issued_in_error"
    # The node's receipt of a member carries its own status proof.
    for index, expected in [(4, "issued"), (5, "revoked"), (6, "suspended")]:
        receipt = await (await client.get(f"/v1/receipts/{COHORT[index].hex()}")).json()
        result = verify_receipt(receipt, trust, COHORT[index], now_s=1_800_000_000)
        assert result.status == expected and result.ok == (expected == "issued"), result.to_json()

    await submit(client, [SignedRecord.sign(BatchRevocation(record.body.batch_id, "key_compromise", 1_700_000_200), issuer)])
    for index in (4, 5, 6, 299):
        answer = await status(COHORT[index])
        assert answer["status"] == "revoked", answer
        receipt = await (await client.get(f"/v1/receipts/{COHORT[index].hex()}")).json()
        assert verify_receipt(receipt, trust, COHORT[index], now_s=1_800_000_000).status == "revoked"
    assert (await status(COHORT[4]))["reason"] == "key_compromise"
    assert (await status(COHORT[5]))["reason"] == "issued_in_error", "a revocation is final: its reason stays"


async def test_an_id_is_issued_once_and_a_batch_without_its_ids_is_refused(client, consortium):
    await issue_cohort(client, consortium)
    again = sign_batch(consortium.issuer, COHORT[:10] + [hashlib.sha256(b"new").digest()],
                       batch_id_for(consortium.issuer.public_key, "other"), 1_700_000_000)
    refused = await submit(client, [again], expect=409)
    assert refused["error"] == "credential-unique"
    leaf_only = SignedRecord.decode(again.leaf)
    response = await client.post("/v1/records", data=leaf_only.encoded, headers={"Content-Type": "application/octet-stream"})
    assert response.status == 400 and (await response.json())["error"] == "malformed-record"
    assert (await client.get(f"/v1/batches/{'00' * 32}")).status == 404


async def test_blocks_carry_the_ids_and_a_replica_rebuilds_the_members(client, consortium):
    from ledger import codec
    from ledger.block import Block
    from ledger.chain import Chain
    from ledger.store import MemoryStore

    record = await issue_cohort(client, consortium)
    response = await client.get("/v1/blocks?from=1", headers={"Accept": "application/msgpack"})
    page = codec.decode(await response.read())
    replica = Chain(MemoryStore(), consortium.genesis)
    for data in page["blocks"]:
        replica.apply_block(Block.decode(data))
    assert replica.state.root() == bytes.fromhex((await (await client.get("/v1/status")).json())["state_root"])
    member = replica.state.credential(COHORT[123])
    assert (member.batch_id, member.batch_index, member.status.value) == (record.body.batch_id, 123, "issued")
    # The record's own page shows the leaf data (no ids), like every record.
    shown = await (await client.get(f"/v1/records/{record.hash.hex()}")).json()
    assert base64.b64decode(shown["record"]) == record.leaf and shown["body"]["count"] == 300


async def test_a_private_status_check_of_a_member_falls_back_to_its_batch(client, consortium):
    from client.online import check_online
    from ledger.records import BatchRevocation

    record = await issue_cohort(client, consortium)
    document = await (await client.get(f"/v1/batches/{record.body.batch_id.hex()}")).json()
    receipt = next(iter(batch_receipts(document, COHORT)))
    url = str(client.make_url("")).rstrip("/")

    async def private_status() -> tuple[str, list]:
        result = verify_receipt(receipt, trust_of(consortium), COHORT[0], now_s=1_800_000_000)
        await check_online(url, trust_of(consortium), COHORT[0], result, 1_800_000_000, private_bits=8)
        return result.status, [c for c in result.checks if c.name.startswith("private")]

    status, checks = await private_status()
    assert status == "issued" and all(c.ok for c in checks), checks
    assert any("the batch's status" in c.detail for c in checks)
    await submit(client, [SignedRecord.sign(BatchRevocation(record.body.batch_id, "fraud", 1_700_000_300), consortium.issuer)])
    status, checks = await private_status()
    verdict = next(c for c in checks if c.name == "private-status")
    assert status == "revoked" and not verdict.ok and "fraud" in verdict.detail, checks

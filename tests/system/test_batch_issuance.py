"""Cohort issuance on a live consortium: four real node processes on 127.0.0.1, the CLI as its own process.

A cohort of 3,000 is issued with `lacre issue` (batches by default at that
size, 1,000 a batch); every receipt verifies offline against the trust file
alone, and a sample of members has status "issued" on another node. Then one
member is revoked alone, then its whole batch, and statuses are checked
after each, while the old receipts still prove issuance. Last, a second
cohort's run is killed (SIGKILL) once its first batch is written and run
again: every credential is issued exactly once and has exactly one receipt.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from client import devnet
from client.credential import credential_id, sample_open_badge
from client.verify import ReceiptVerifier
from ledger.crypto import KeyPair
from ledger.genesis import Trust
from ledger.records import IssuerRegistration, SignedRecord
from tests.system.conftest import NodeProcess, lacre

pytestmark = pytest.mark.system

COHORT = 3_000
SAMPLE = 40
KILL_DEADLINE_S = 120.0


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _submit(url: str, record: SignedRecord) -> dict:
    body = json.dumps({"records": [base64.b64encode(record.encoded).decode()]}).encode()
    request = urllib.request.Request(url + "/v1/records?wait=commit", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert answer["records"][0]["status"] == "committed", answer
    return answer


def _cohort(path: Path, start: int, count: int) -> list[dict]:
    """`count` Open Badges in a JSON-lines file; every fourth without an "id" (the issuer gives it one)."""
    documents = []
    for i in range(start, start + count):
        document = sample_open_badge("Instituto Lacre", f"did:example:learner-{i}", "Bases de Datos",
                                     valid_from="2026-07-01T00:00:00Z")
        if i % 4:
            document = {"id": f"urn:example:lacre:{i}", **document}
        documents.append(document)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents))
    return documents


def _issued_ids(documents: list[dict], given_path: Path) -> list[bytes]:
    """Ids of the cohort: from the input where it had an "id", else from the documents the issuer wrote back."""
    given = [json.loads(line) for line in given_path.read_text().splitlines()] if given_path.exists() else []
    assert len(given) == sum("id" not in d for d in documents)
    return [credential_id(d) for d in documents if "id" in d] + [credential_id(d) for d in given]


def _receipts(path: Path) -> dict[str, dict]:
    lines = path.read_text().splitlines()
    receipts = {json.loads(line)["credential_id"]: json.loads(line) for line in lines}
    assert len(receipts) == len(lines), "a credential has two receipts"
    return receipts


def _verify_offline(trust: Trust, receipts: dict[str, dict], ids: list[bytes]) -> None:
    assert set(receipts) == {cid.hex() for cid in ids}
    verifier = ReceiptVerifier(trust)
    for cid in ids:
        result = verifier.verify(receipts[cid.hex()], cid)
        assert result.ok, (cid.hex(), [c for c in result.checks if not c.ok])


def _status(url: str, cid: bytes) -> dict:
    return _get(f"{url}/v1/credentials/{cid.hex()}")


@pytest.fixture
def consortium(tmp_path, node_processes):
    root = tmp_path / "consortium"
    devnet.create(root, 4)
    trust = json.loads((root / "consortium.json").read_text())
    urls = []
    for authority in trust["authorities"]:
        node = NodeProcess(root / "nodes" / authority["name"] / "node.toml", root / "nodes" / authority["name"] / "data")
        node_processes.append(node)
        urls.append(node.start())
    issuer = KeyPair.load(root / "issuer.key")
    authority = KeyPair.load(root / "authorities" / "inst-0.key")
    _submit(urls[0], SignedRecord.sign(IssuerRegistration(issuer.public_key, "Instituto Lacre", "UY"), authority))
    return root, urls, issuer


def test_issue_a_cohort_revoke_one_then_the_batch(tmp_path, consortium):
    root, urls, issuer = consortium
    source = tmp_path / "cohort.jsonl"
    documents = _cohort(source, 0, COHORT)
    out = tmp_path / "cohort.receipts.jsonl"
    size_before = _get(urls[0] + "/v1/status")["tree_size"]
    result = lacre("issue", str(source), "--key", str(root / "issuer.key"), "--node", urls[0],
                   "--batch-size", "1000", "--out", str(out), "--json")
    summary = json.loads(result.stdout)
    assert summary["mode"] == "batch" and summary["credentials"] == COHORT
    assert [b["count"] for b in summary["batches"]] == [1_000] * 3
    assert summary["receipts_written"] == COHORT

    trust = Trust.load(root / "consortium.json")
    ids = _issued_ids(documents, tmp_path / "cohort.receipts.credentials.jsonl")
    receipts = _receipts(out)
    _verify_offline(trust, receipts, ids)
    assert _get(urls[0] + "/v1/status")["tree_size"] == size_before + 3  # one leaf per batch

    # The CLI verifier agrees, for a credential given its id by the issuer.
    given = json.loads((tmp_path / "cohort.receipts.credentials.jsonl").read_text().splitlines()[0])
    given_id = credential_id(given).hex()
    (tmp_path / "given.json").write_text(json.dumps(given))
    (tmp_path / "given.receipt.json").write_text(json.dumps(receipts[given_id]))
    lacre("verify", str(tmp_path / "given.json"), "--receipt", str(tmp_path / "given.receipt.json"),
          "--trust", str(root / "consortium.json"))

    rng = random.Random(6)
    sample = rng.sample(ids, SAMPLE)
    for cid in sample:
        status = _status(urls[2], cid)
        assert status["status"] == "issued", status
        assert status["batch"]["batch_id"] == receipts[cid.hex()]["batch_proof"]["batch_id"]

    # One member revoked alone: it shows revoked with its reason; its batch-mates stay issued.
    victim = sample[0]
    batch_id = receipts[victim.hex()]["batch_proof"]["batch_id"]
    lacre("revoke", victim.hex(), "--key", str(root / "issuer.key"), "--node", urls[1], "--reason", "issued_in_error")
    status = _status(urls[3], victim)
    assert status["status"] == "revoked" and status["reason"] == "issued_in_error"
    mates = [cid for cid in sample[1:] if receipts[cid.hex()]["batch_proof"]["batch_id"] == batch_id]
    others = [cid for cid in sample[1:] if receipts[cid.hex()]["batch_proof"]["batch_id"] != batch_id]
    assert mates and others
    assert all(_status(urls[0], cid)["status"] == "issued" for cid in mates + others)

    # The whole batch revoked in one record: every member revoked, the lone revocation keeps its reason.
    revoked = json.loads(lacre("revoke", "--batch", batch_id, "--key", str(root / "issuer.key"), "--node", urls[2],
                               "--reason", "key_compromise", "--json").stdout)
    assert revoked["batch_id"] == batch_id and revoked["status"] == "committed"
    status = _status(urls[0], victim)
    assert status["status"] == "revoked" and status["reason"] == "issued_in_error"
    for cid in mates:
        status = _status(urls[1], cid)
        assert status["status"] == "revoked" and status["reason"] == "key_compromise", status
    assert all(_status(urls[3], cid)["status"] == "issued" for cid in others)
    batch = _get(f"{urls[0]}/v1/batches/{batch_id}")
    assert batch["status"] == "revoked"

    # The old receipts still prove issuance, offline; online, the revocation shows.
    _verify_offline(trust, receipts, ids)
    verdict = lacre("verify", str(tmp_path / "given.json"), "--receipt", str(tmp_path / "given.receipt.json"),
                    "--trust", str(root / "consortium.json"), "--online", urls[3], check=False)
    revoked_given = receipts[given_id]["batch_proof"]["batch_id"] == batch_id or bytes.fromhex(given_id) == victim
    assert verdict.returncode == (1 if revoked_given else 0), verdict.stdout


def test_a_killed_run_resumes_without_issuing_twice(tmp_path, consortium):
    root, urls, issuer = consortium
    source = tmp_path / "second.jsonl"
    documents = _cohort(source, 10_000, COHORT)
    out = tmp_path / "second.jsonl.receipts.jsonl"
    state = Path(str(out) + ".issue-state.json")
    argv = ["issue", str(source), "--key", str(root / "issuer.key"), "--node", urls[1],
            "--batch-size", "500", "--in-flight", "1", "--out", str(out), "--json"]
    size_before = _get(urls[0] + "/v1/status")["tree_size"]

    process = subprocess.Popen([sys.executable, "-m", "client.cli", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + KILL_DEADLINE_S
        written: list[int] = []
        while not written and time.monotonic() < deadline and process.poll() is None:
            try:
                written = json.loads(state.read_text())["written"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be interrupted:\n" + process.stderr.read().decode()
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert written and len(written) < 6

    summary = json.loads(lacre(*argv).stdout)
    assert summary["resumed"] and summary["chunks_already_written"] >= 1
    assert summary["credentials"] == COHORT and not state.exists()
    ids = _issued_ids(documents, tmp_path / "second.jsonl.receipts.credentials.jsonl")
    receipts = _receipts(out)
    _verify_offline(Trust.load(root / "consortium.json"), receipts, ids)
    # Six batches of 500 and nothing more: no credential was issued twice.
    assert _get(urls[0] + "/v1/status")["tree_size"] == size_before + 6
    batch_ids = {r["batch_proof"]["batch_id"] for r in receipts.values()}
    assert len(batch_ids) == 6
    assert sum(_get(f"{urls[2]}/v1/batches/{b}")["count"] for b in batch_ids) == COHORT

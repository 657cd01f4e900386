"""End to end: the CLI against a real node process, through SIGKILL and restart."""

from __future__ import annotations

import json

import pytest

from client.credential import sample_open_badge
from tests.system.conftest import NodeProcess, lacre

pytestmark = pytest.mark.system


def _consortium(tmp_path):
    lacre("keygen", "--out", str(tmp_path / "authority.key"), "--name", "inst-0")
    lacre("keygen", "--out", str(tmp_path / "issuer.key"), "--name", "faculty")
    lacre("genesis", "--origin", "e2e.lacre.local/log", "--authority", str(tmp_path / "authority.key"), "--out-dir", str(tmp_path))
    config = tmp_path / "node.toml"
    config.write_text(
        'name = "inst-0"\nkey_file = "authority.key"\ngenesis_file = "genesis.json"\n'
        'data_dir = "data"\nhost = "127.0.0.1"\nport = 0\n'
    )
    return config


def test_issue_kill_restart_prove_verify(tmp_path, node_processes):
    node = NodeProcess(_consortium(tmp_path), tmp_path / "data")
    node_processes.append(node)
    url = node.start()
    lacre("issuer", "register", "--key", str(tmp_path / "authority.key"), "--issuer-key", str(tmp_path / "issuer.key"),
          "--name", "Facultad de Ingeniería", "--country", "CO", "--node", url)

    credential = tmp_path / "badge.json"
    credential.write_text(json.dumps(sample_open_badge("Facultad de Ingeniería", "did:example:ana", "Redes I")))
    result = lacre("issue", str(credential), "--key", str(tmp_path / "issuer.key"), "--node", url, "--json")
    issued = json.loads(result.stdout)["issued"][0]
    # The committed write was acknowledged: now the node dies without warning.
    node.kill()

    url = node.start()
    status = node.get("/v1/status")
    assert status["tree_size"] == 2 and status["height"] == 2
    credential_id = issued["credential_id"]
    record = node.get(f"/v1/credentials/{credential_id}")
    assert record["status"] == "issued"
    issuance_hash = json.loads(lacre("status", credential_id, "--node", url, "--json").stdout)
    assert issuance_hash["status"] == "issued"

    # The receipt written before the kill, and a fresh one, both verify offline.
    issued_doc = issued.get("credential", str(credential))
    trust = str(tmp_path / "consortium.json")
    lacre("verify", issued_doc, "--receipt", issued["receipt"], "--trust", trust)
    lacre("receipt", credential_id, "--node", url, "--out", str(tmp_path / "fresh.receipt.json"))
    verdict = json.loads(lacre("verify", issued_doc, "--receipt", str(tmp_path / "fresh.receipt.json"),
                               "--trust", trust, "--online", url, "--json").stdout)
    assert verdict["ok"] and verdict["issuer"]["name"] == "Facultad de Ingeniería"
    assert {c["name"] for c in verdict["checks"]} >= {
        "credential-id", "issuance-signature", "checkpoint-cosigned", "issuance-included", "issuer-registered",
        "status", "online-checkpoint", "online-consistency", "online-status", "online-issuer",
    }

    # The holder staples a fresh status proof; the verifier checks it offline with a freshness policy.
    staple = tmp_path / "status.json"
    lacre("status", credential_id, "--node", url, "--out", str(staple), "--receipt", issued["receipt"])
    stapled = lacre("verify", issued_doc, "--receipt", issued["receipt"], "--trust", trust,
                    "--status", str(staple), "--max-age", "1h")
    assert "stapled-status" in stapled.stdout and "VERIFIED" in stapled.stdout

    # Suspension shows online and in a new staple, and is undone by reinstatement.
    lacre("suspend", credential_id, "--key", str(tmp_path / "issuer.key"), "--node", url)
    suspended = lacre("verify", issued_doc, "--receipt", issued["receipt"], "--trust", trust, "--online", url, check=False)
    assert suspended.returncode == 1 and "SUSPENDED" in suspended.stdout
    lacre("reinstate", credential_id, "--key", str(tmp_path / "issuer.key"), "--node", url)
    lacre("verify", issued_doc, "--receipt", issued["receipt"], "--trust", trust, "--online", url)

    # A k-anonymous query: every credential under a 8-bit prefix, proven complete.
    prefix = node.get(f"/v1/credentials?prefix={credential_id[:2]}&bits=8")
    assert prefix["prefix_proof"]["bits"] == 8 and len(prefix["prefix_proof"]["entries"]) == 1

    lacre("revoke", credential_id, "--key", str(tmp_path / "issuer.key"), "--node", url, "--reason", "fraud")
    node.kill()
    url = node.start()
    online = lacre("verify", issued_doc, "--receipt", issued["receipt"], "--trust", trust, "--online", url, check=False)
    assert online.returncode == 1 and "REVOKED (fraud)" in online.stdout
    assert "status changed from issued to revoked" in online.stdout
    private = lacre("verify", issued_doc, "--receipt", issued["receipt"], "--trust", trust, "--online", url,
                    "--private-bits", "8", check=False)
    assert private.returncode == 1 and "private-status" in private.stdout and "REVOKED (fraud)" in private.stdout
    offline = lacre("verify", issued_doc, "--receipt", issued["receipt"], "--trust", trust)
    assert "VERIFIED" in offline.stdout
    node.stop()


def test_verify_fails_on_a_tampered_credential(tmp_path, node_processes):
    node = NodeProcess(_consortium(tmp_path), tmp_path / "data")
    node_processes.append(node)
    url = node.start()
    lacre("issuer", "register", "--key", str(tmp_path / "authority.key"), "--issuer-key", str(tmp_path / "issuer.key"),
          "--name", "Unidad de Extensión", "--country", "PE", "--node", url)
    credential = tmp_path / "badge.json"
    credential.write_text(json.dumps(sample_open_badge("Unidad de Extensión", "did:example:luis", "Python")))
    issued = json.loads(lacre("issue", str(credential), "--key", str(tmp_path / "issuer.key"), "--node", url, "--json").stdout)["issued"][0]
    document = json.loads((tmp_path / "badge.issued.json").read_text())
    document["credentialSubject"]["achievement"]["name"] = "Python Avanzado"
    (tmp_path / "forged.json").write_text(json.dumps(document))
    result = lacre("verify", str(tmp_path / "forged.json"), "--receipt", issued["receipt"],
                   "--trust", str(tmp_path / "consortium.json"), check=False)
    assert result.returncode == 1
    assert "FAIL credential-id" in result.stdout
    node.stop()


def test_devnet_demo_runs_end_to_end(tmp_path):
    result = lacre("devnet", "--dir", str(tmp_path / "devnet"), "--exit-after-demo")
    assert "demo succeeded" in result.stdout, result.stdout
    assert "VERIFIED" in result.stdout and "REVOKED" in result.stdout
    assert "signed once as a batch" in result.stdout and "credential 0 of the batch" in result.stdout
    assert "audit OK: every rule holds in blocks 1-" in result.stdout, result.stdout
    assert "http://127.0.0.1:" in result.stdout
    assert (tmp_path / "devnet" / "consortium.json").exists() and (tmp_path / "devnet" / "issuer.key").exists()
    # A second run reuses the consortium and its chain.
    again = lacre("devnet", "--dir", str(tmp_path / "devnet"), "--exit-after-demo")
    assert "reusing" in again.stdout and "demo succeeded" in again.stdout


def test_the_sync_sdk_submits_and_reads_against_a_real_node(tmp_path, node_processes):
    from client.sdk import ApiError, Client
    from ledger.crypto import KeyPair
    from ledger.records import CredentialIssuance, IssuerRegistration, SignedRecord

    node = NodeProcess(_consortium(tmp_path), tmp_path / "data")
    node_processes.append(node)
    url = node.start()
    authority, issuer = KeyPair.load(tmp_path / "authority.key"), KeyPair.load(tmp_path / "issuer.key")
    registration = SignedRecord.sign(IssuerRegistration(issuer.public_key, "Instituto", "CL"), authority)
    issuance = SignedRecord.sign(CredentialIssuance(b"\x11" * 32, 1_800_000_000), issuer)
    with Client(url) as sdk:
        answer = sdk.submit([registration, issuance], wait=True)
        assert [r["leaf_index"] for r in answer["records"]] == [0, 1]
        assert sdk.status()["tree_size"] == 2
        assert sdk.credential(b"\x11" * 32)["status"] == "issued"
        assert sdk.receipt(b"\x11" * 32)["leaf_index"] == 1
        assert sdk.checkpoint().startswith("e2e.lacre.local/log\n2\n")
        blocks, height = sdk.encoded_blocks(1)
        assert height == 1 and len(blocks) == 1
        with pytest.raises(ApiError) as refused:
            sdk.submit([SignedRecord.sign(CredentialIssuance(b"\x11" * 32, 5), issuer)])
        assert (refused.value.status, refused.value.error) == (409, "credential-unique")
    node.stop()

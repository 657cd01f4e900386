"""Export a live consortium's chain over HTTP, import it into an empty folder, and serve proofs from it.

A real devnet (four node processes) issues credentials; `lacre chain export`
streams the chain from one node's API; `lacre chain import` rebuilds a store
from the file alone; a node started on that folder (as authority inst-0, with
no peers, so it only serves) proves inclusion of an issued credential under a
checkpoint a quorum of the trust file cosigned. `lacre monitor` watches the
devnet meanwhile and finds nothing wrong.
"""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest

from client import devnet
from client.credential import sample_open_badge
from ledger.checkpoint import verify_checkpoint
from ledger.genesis import Trust
from ledger.merkle import leaf_hash, verify_inclusion
from tests.client.lacre_cli import lacre as lacre_in_process
from tests.system.conftest import NodeProcess, lacre

pytestmark = pytest.mark.system

CREDENTIALS = 6


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _issue(root, url) -> list[dict]:
    lacre("issuer", "register", "--key", str(root / "authorities" / "inst-0.key"), "--issuer-key", str(root / "issuer.key"),
          "--name", "Facultad de Ciencias", "--country", "UY", "--node", url)
    folder = root / "badges"
    folder.mkdir()
    for i in range(CREDENTIALS):
        badge = sample_open_badge("Facultad de Ciencias", f"did:example:learner-{i}", f"Curso {i}")
        (folder / f"badge-{i}.json").write_text(json.dumps(badge))
    lacre("issue", str(folder), "--key", str(root / "issuer.key"), "--node", url, "--out", str(root / "receipts"),
          "--no-progress")
    receipts = [json.loads(p.read_text()) for p in sorted((root / "receipts").glob("*.receipt.json"))]
    assert len(receipts) == CREDENTIALS
    return receipts


def test_export_import_serve(tmp_path, node_processes, capsys):
    root = tmp_path / "devnet"
    devnet.create(root, 4)
    trust_file = root / "consortium.json"
    trust = Trust.load(trust_file)
    started = devnet.start(root)
    try:
        url = started[1][1]
        receipts = _issue(root, url)
        export = tmp_path / "chain.lacre"
        # genesis.json is found beside the trust file: nodes serve only its hash.
        assert lacre_in_process("chain", "export", "--node", url, "--out", str(export), "--trust", str(trust_file),
                                "--no-progress", "--json") == 0
        exported = json.loads(capsys.readouterr().out)
        assert exported["ok"] and exported["tree_size"] >= 1 + CREDENTIALS
        assert lacre_in_process("monitor", "--trust", str(trust_file), "--once", "--state", str(tmp_path / "monitor.json")) == 0
        assert "no alarms" in capsys.readouterr().out
    finally:
        devnet.stop(started)

    data = tmp_path / "restored"
    assert lacre_in_process("chain", "import", str(export), "--data-dir", str(data), "--trust", str(trust_file),
                            "--no-progress", "--json") == 0
    imported = json.loads(capsys.readouterr().out)
    assert (imported["blocks"], imported["tree_size"], imported["head_hash"]) == (
        exported["blocks"], exported["tree_size"], exported["head_hash"],
    )
    config = data / "node.toml"
    config.write_text(
        f'name = "inst-0"\nkey_file = "{root / "authorities" / "inst-0.key"}"\n'
        'genesis_file = "genesis.json"\ndata_dir = "."\nhost = "127.0.0.1"\nport = 0\n'
    )
    node = NodeProcess(config, data)
    node_processes.append(node)
    served = node.start()
    status = _get(served + "/v1/status")
    assert (status["height"], status["tree_size"], status["head_hash"]) == (
        exported["blocks"], exported["tree_size"], exported["head_hash"],
    )
    record = base64.b64decode(receipts[3]["record"])
    proof = _get(f"{served}/v1/proofs/inclusion?hash={leaf_hash(record).hex()}")
    checkpoint, signatures = verify_checkpoint(proof["checkpoint"], trust.verifiers, trust.quorum, origin=trust.origin)
    assert len(signatures) >= trust.quorum and checkpoint.tree_size == exported["tree_size"]
    path = [bytes.fromhex(h) for h in proof["inclusion_path"]]
    verify_inclusion(leaf_hash(record), proof["leaf_index"], checkpoint.tree_size, path, checkpoint.root_hash)
    # And the holder's receipt, as the restored node builds it, verifies offline.
    receipt = _get(f"{served}/v1/receipts/{receipts[3]['credential_id']}")
    assert receipt["record"] == receipts[3]["record"] and receipt["tree_size"] == exported["tree_size"]
    node.stop()

"""Audit a live consortium over HTTP, then from a stopped node's data folder.

A real devnet (four node processes) registers an issuer, issues and revokes;
`lacre audit --node` replays its chain over the HTTP API with a saved state;
once the nodes are stopped, the same audit resumes from inst-2's data folder
(the block audited last must be the folder's), and a fresh audit of the
folder reaches the same head.
"""

from __future__ import annotations

import json

import pytest

from client import devnet
from client.credential import ensure_id, sample_open_badge
from tests.client.lacre_cli import lacre as lacre_in_process
from tests.system.conftest import lacre

pytestmark = pytest.mark.system


def test_audit_a_devnet_over_http_and_from_a_data_folder(tmp_path, capsys):
    root = tmp_path / "devnet"
    devnet.create(root, 4)
    trust = str(root / "consortium.json")
    state = tmp_path / "audit.json"
    started = devnet.start(root)
    try:
        url = started[2][1]
        lacre("issuer", "register", "--key", str(root / "authorities" / "inst-0.key"), "--issuer-key",
              str(root / "issuer.key"), "--name", "Escuela de Posgrado", "--country", "CL", "--node", url)
        badges = tmp_path / "badges"
        badges.mkdir()
        for i in range(3):
            badge, _ = ensure_id(sample_open_badge("Escuela de Posgrado", f"did:example:learner-{i}", f"Seminario {i}"))
            (badges / f"badge-{i}.json").write_text(json.dumps(badge))
        lacre("issue", str(badges), "--key", str(root / "issuer.key"), "--node", url, "--out", str(tmp_path / "receipts"),
              "--no-progress")
        lacre("revoke", str(badges / "badge-1.json"), "--key", str(root / "issuer.key"), "--node", url,
              "--reason", "withdrawn")
        assert lacre_in_process("audit", "--node", url, "--trust", trust, "--state", str(state), "--json",
                                "--no-progress") == 0
        online = json.loads(capsys.readouterr().out)
    finally:
        devnet.stop(started)
    assert online["ok"] and online["evidence"] == [] and online["trust"].startswith("agrees")
    assert online["records_by_kind"] == {"credential.issue": 3, "credential.revoke": 1, "issuer.register": 1}
    assert online["signatures_verified"]["precommits"] >= 3 * online["blocks"]
    issuer = next(row for row in online["records_by_issuer"] if row["role"] == "issuer")
    assert issuer["name"] == "Escuela de Posgrado" and issuer["records"] == 4

    data = root / "nodes" / "inst-2" / "data"
    assert lacre_in_process("audit", "--data-dir", str(data), "--trust", trust, "--state", str(state), "--resume",
                            "--json", "--no-progress") == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["ok"] and resumed["first_height"] == online["head"]["height"] + 1
    assert resumed["head"]["height"] >= online["head"]["height"] and resumed["records"] == online["records"]
    assert lacre_in_process("audit", "--data-dir", str(data), "--json", "--no-progress") == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["ok"] and fresh["head"] == resumed["head"] and fresh["records_by_kind"] == online["records_by_kind"]

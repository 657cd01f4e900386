"""`lacre monitor` against small fake nodes on 127.0.0.1 serving crafted checkpoints.

Each fake node holds a list of leaves and serves, as a node does, a
checkpoint cosigned by the authorities it is told to use, RFC 9162
consistency proofs of its own tree, and an evidence list. Histories that
agree, fork, shrink or lack a quorum are then a matter of which leaves and
signers each node is given.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from ledger import merkle
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.genesis import Trust, TrustedAuthority, TrustedEpoch
from ledger.note import NoteSigner, NoteVerifier
from tests.client.lacre_cli import lacre
from tests.conftest import make_consortium

CONSORTIUM = make_consortium(4)  # quorum 3
ORIGIN = CONSORTIUM.genesis.origin


def leaves(count: int, fork: int | None = None) -> list[bytes]:
    """Leaf hashes 0..count; from index `fork` on, a different history."""
    return [
        merkle.leaf_hash(b"record %d%s" % (i, b" (fork)" if fork is not None and i >= fork else b""))
        for i in range(count)
    ]


class FakeNode:
    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.signers = CONSORTIUM.authorities[:3]
        self.height = 1
        self.evidence: list[dict] = []
        self.requests: list[str] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                node.requests.append(url.path)
                status, body, kind = node.answer(url.path, query)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, path: str, query: dict) -> tuple[int, str, str]:
        if path == "/v1/checkpoint":
            if not self.leaves:
                return 404, json.dumps({"error": "no-checkpoint", "detail": "no block yet"}), "application/json"
            checkpoint = Checkpoint(ORIGIN, len(self.leaves), merkle.root(self.leaves), (f"lacre-block {self.height} AAAA",))
            return 200, sign_checkpoint(checkpoint, [NoteSigner(k.name, k.seed) for k in self.signers]), "text/plain"
        if path == "/v1/proofs/consistency":
            old, new = int(query["from"]), int(query["to"])
            if not 0 < old <= new <= len(self.leaves):
                return 400, json.dumps({"error": "bad-parameter", "detail": "sizes"}), "application/json"
            proof = merkle.consistency_proof(old, self.leaves[:new])
            return 200, json.dumps({"from": old, "to": new, "consistency_path": [h.hex() for h in proof]}), "application/json"
        if path == "/v1/evidence":
            return 200, json.dumps({"evidence": self.evidence}), "application/json"
        return 404, json.dumps({"error": "not-found", "detail": path}), "application/json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def nodes(tmp_path):
    started = [FakeNode() for _ in range(3)]
    trust = Trust.from_genesis(CONSORTIUM.genesis, {a.name: n.url for a, n in zip(CONSORTIUM.authorities, started)})
    (tmp_path / "consortium.json").write_text(json.dumps(trust.to_json()))
    yield started
    for node in started:
        node.close()


def monitor(tmp_path, *extra: str) -> int:
    return lacre("monitor", "--trust", str(tmp_path / "consortium.json"), "--state", str(tmp_path / "state.json"),
                 "--timeout", "5", *extra)


def grow(nodes, *sizes: int, fork_at: dict[int, int] | None = None) -> None:
    for i, (node, size) in enumerate(zip(nodes, sizes)):
        node.leaves = leaves(size, (fork_at or {}).get(i))


def webhook_alarms(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_consistent_growth_passes_and_is_remembered(tmp_path, nodes, capsys):
    grow(nodes, 5, 7, 7)
    assert monitor(tmp_path, "--once") == 0
    out = capsys.readouterr().out
    assert "round 1: 3/3 checkpoints verified" in out and "no alarms" in out
    grow(nodes, 9, 12, 16)
    assert monitor(tmp_path, "--once", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["latest"]["tree_size"] == 16
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["latest"]["tree_size"] == 16 and state["latest"]["node"] == nodes[2].url
    assert {url: n["tree_size"] for url, n in state["nodes"].items()} == {nodes[0].url: 9, nodes[1].url: 12, nodes[2].url: 16}
    assert "/v1/proofs/consistency" in nodes[2].requests


def test_same_size_different_roots_is_a_split_view(tmp_path, nodes, capsys):
    grow(nodes, 8, 8, 8, fork_at={1: 3})
    assert monitor(tmp_path, "--once") == 1
    out = capsys.readouterr().out
    assert "ALARM split-view" in out and "two cosigned checkpoints of size 8 with different roots" in out


def test_a_fork_at_a_larger_size_is_a_split_view(tmp_path, nodes, capsys):
    grow(nodes, 6, 6, 6)
    assert monitor(tmp_path, "--once") == 0
    capsys.readouterr()
    grow(nodes, 10, 6, 12, fork_at={2: 4})
    assert monitor(tmp_path, "--once", "--webhook-lines") == 1
    alarms = webhook_alarms(capsys)
    assert {a["alarm"] for a in alarms} >= {"split-view"}
    split = next(a for a in alarms if a["alarm"] == "split-view")
    assert split["node"] == nodes[2].url and split["tree_size"] == 12 and "consistency proof" in split["detail"]
    assert split["origin"] == ORIGIN and split["other_tree_size"] in (6, 10)
    # The forked node also rewrote the history it showed the monitor before.
    assert any(a["alarm"] == "rollback" and a["node"] == nodes[2].url for a in alarms)
    # Nothing unverified was adopted.
    assert json.loads((tmp_path / "state.json").read_text())["latest"]["tree_size"] == 10


def test_a_rollback_across_a_monitor_restart(tmp_path, nodes, capsys):
    grow(nodes, 10, 10, 10)
    assert monitor(tmp_path, "--once") == 0
    capsys.readouterr()
    # The monitor is down; node 0 comes back from an old backup.
    nodes[0].leaves = leaves(6)
    assert monitor(tmp_path, "--once", "--webhook-lines") == 1
    (alarm,) = webhook_alarms(capsys)
    assert (alarm["alarm"], alarm["node"], alarm["tree_size"], alarm["other_tree_size"]) == ("rollback", nodes[0].url, 6, 10)
    assert "went back from 10 to 6" in alarm["detail"]
    # The state keeps the larger verified checkpoint: the next restart still sees it.
    assert monitor(tmp_path, "--once") == 1
    assert "ALARM rollback" in capsys.readouterr().out


def test_a_rewritten_history_of_the_same_size_is_a_rollback(tmp_path, nodes, capsys):
    grow(nodes, 10, 10, 10)
    assert monitor(tmp_path, "--once") == 0
    capsys.readouterr()
    grow(nodes, 12, 10, 10, fork_at={0: 2})
    assert monitor(tmp_path, "--once", "--webhook-lines") == 1
    kinds = {(a["alarm"], a["node"]) for a in webhook_alarms(capsys)}
    assert ("rollback", nodes[0].url) in kinds and ("split-view", nodes[0].url) in kinds


def test_a_checkpoint_below_quorum_alarms(tmp_path, nodes, capsys):
    grow(nodes, 4, 4, 4)
    nodes[1].signers = CONSORTIUM.authorities[2:]  # two of four; quorum is three
    assert monitor(tmp_path, "--once", "--webhook-lines") == 1
    (alarm,) = webhook_alarms(capsys)
    assert (alarm["alarm"], alarm["node"]) == ("no-quorum", nodes[1].url)
    assert "2 verified signatures" in alarm["detail"] and "quorum is 3" in alarm["detail"]
    assert alarm["checkpoint"].startswith(ORIGIN + "\n4\n")  # the offending note, as served


def test_a_checkpoint_signed_by_strangers_alarms(tmp_path, nodes, capsys):
    grow(nodes, 4, 4, 4)
    nodes[0].signers = make_consortium(5).authorities[4:]  # inst-4: not in this consortium
    assert monitor(tmp_path, "--once") == 1
    assert f"ALARM no-quorum {nodes[0].url}" in capsys.readouterr().out


def test_new_evidence_alarms_once(tmp_path, nodes, capsys):
    grow(nodes, 3, 3, 3)
    item = {"authority": "inst-2", "height": 7, "round": 0, "encoded": "ZXZpZGVuY2U="}
    nodes[1].evidence = [item]
    assert monitor(tmp_path, "--iterations", "2", "--interval", "0", "--webhook-lines") == 1
    (alarm,) = webhook_alarms(capsys)  # once, not once per round
    assert (alarm["alarm"], alarm["node"], alarm["evidence"]["authority"], alarm["evidence"]["height"]) == (
        "evidence", nodes[1].url, "inst-2", 7,
    )
    assert nodes[1].requests.count("/v1/evidence") == 2  # it kept going after the alarm
    nodes[2].evidence = [item]  # the same evidence elsewhere is not new
    assert monitor(tmp_path, "--once") == 0
    nodes[2].evidence = [item, {**item, "height": 8, "encoded": "b3RoZXI="}]
    assert monitor(tmp_path, "--once") == 1


def test_without_webhook_lines_the_first_alarm_ends_the_run(tmp_path, nodes, capsys):
    grow(nodes, 3, 3, 3)
    nodes[0].evidence = [{"authority": "inst-1", "height": 2, "round": 1, "encoded": "eA=="}]
    assert monitor(tmp_path, "--iterations", "5", "--interval", "0") == 1
    assert nodes[0].requests.count("/v1/checkpoint") == 1


def test_unreachable_nodes_and_empty_logs_are_warnings(tmp_path, nodes, capsys):
    grow(nodes, 5, 5, 0)
    nodes[0].close()
    assert monitor(tmp_path, "--once", "--url", nodes[1].url + "/") == 0
    captured = capsys.readouterr()
    assert f"warning unreachable {nodes[0].url}" in captured.err
    assert f"warning no-checkpoint {nodes[2].url}" in captured.err
    assert "round 1: 1/3 checkpoints verified" in captured.out


def test_a_lagging_node_is_checked_against_the_latest(tmp_path, nodes, capsys):
    grow(nodes, 12, 12, 12)
    assert monitor(tmp_path, "--once") == 0
    capsys.readouterr()
    grow(nodes, 12, 12, 7)  # node 2 restarted from an honest old copy: a rollback, not a split view
    assert monitor(tmp_path, "--once", "--webhook-lines") == 1
    assert [(a["alarm"], a["node"]) for a in webhook_alarms(capsys)] == [("rollback", nodes[2].url)]
    (tmp_path / "state.json").unlink()
    grow(nodes, 12, 12, 7, fork_at={2: 5})  # a fresh monitor, a lagging node on a fork
    assert monitor(tmp_path, "--once", "--webhook-lines") == 1
    (alarm,) = webhook_alarms(capsys)
    assert (alarm["alarm"], alarm["node"], alarm["other_tree_size"]) == ("split-view", nodes[2].url, 12)


def test_a_state_file_for_another_consortium_is_refused(tmp_path, nodes, capsys):
    grow(nodes, 3, 3, 3)
    assert monitor(tmp_path, "--once") == 0
    state = json.loads((tmp_path / "state.json").read_text())
    state["latest"]["root_hash"] = hashlib.sha256(b"forged").hexdigest()
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert monitor(tmp_path, "--once") == 2
    assert "differs from its recorded size and root" in capsys.readouterr().err
    state["origin"] = "elsewhere.example/log"
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert monitor(tmp_path, "--once") == 2


def test_checkpoints_are_checked_against_the_set_in_force_at_their_block(tmp_path, nodes, capsys):
    # Epoch 1, from block 10: inst-0 leaves, inst-4 joins.
    trust = Trust.load(tmp_path / "consortium.json")
    joining = make_consortium(5).authorities[4]
    epoch_1 = (*trust.authorities[1:], TrustedAuthority(joining.name, NoteVerifier.from_key(joining.name, joining.public_key), ""))
    governed = Trust(trust.origin, trust.genesis_hash, 3, epoch_1,
                     (TrustedEpoch(0, 1, 3, trust.authorities), TrustedEpoch(1, 10, 3, epoch_1)))
    (tmp_path / "consortium.json").write_text(json.dumps(governed.to_json()))
    grow(nodes, 4, 0, 0)
    nodes[0].height = 5  # the old set signs a block of epoch 0
    assert monitor(tmp_path, "--once", "--url", nodes[0].url) == 0
    grow(nodes, 6, 6, 0)
    nodes[1].height = 12
    nodes[1].signers = [CONSORTIUM.authorities[2], CONSORTIUM.authorities[3], joining]
    assert monitor(tmp_path, "--once", "--url", nodes[0].url) == 0  # (node 0 is only an extra URL now)
    capsys.readouterr()
    nodes[0].height = 12  # the old set's quorum cannot sign a block of epoch 1
    assert monitor(tmp_path, "--once", "--url", nodes[0].url, "--webhook-lines") == 1
    (alarm,) = webhook_alarms(capsys)
    assert (alarm["alarm"], alarm["node"]) == ("no-quorum", nodes[0].url)

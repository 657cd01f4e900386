"""Governance on a live consortium: add a fifth authority, then remove one of the first four, under load.

Five real node processes on 127.0.0.1: four genesis authorities and one
follower (`devnet.create(..., followers=1)`). The changes go through the
`lacre governance` commands (propose, approve by a quorum, submit), run
in-process as a user would type them. Checked, as issue 4 and DESIGN.md put it:

- the follower becomes an authority from the block after the change: its
  precommits appear in certificates;
- the removed authority stops certifying and keeps following;
- commits never pause beyond a few rounds (every block across the changes
  is decided by round ROUNDS_MAX; counted in rounds, not seconds, so a slow
  machine does not make it flaky);
- every record acknowledged as committed is provable on every node, and all
  nodes end on the same cosigned checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from client import devnet
from client.cli import main as lacre_main
from ledger.crypto import KeyPair
from ledger.merkle import leaf_hash, verify_inclusion
from ledger.records import CredentialIssuance, IssuerRegistration, SignedRecord

pytestmark = pytest.mark.system

DEADLINE_S = 30.0
# A round whose proposer has not switched yet times out once; more than a
# few rounds at one height means consensus stalled across the change.
ROUNDS_MAX = 3


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _lacre(*argv: str) -> None:
    """One CLI command, in-process (no interpreter start-up per call)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = lacre_main(list(argv))
    assert status == 0, f"lacre {' '.join(argv)} exited {status}:\n{out.getvalue()}"


def _poll(what: str, check, timeout_s: float = DEADLINE_S):
    """`check()` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if result := check():
                return result
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


class Devnet:
    def __init__(self, root: Path, authorities: int) -> None:
        devnet.create(root, authorities, followers=1)
        self.root = root
        self.follower = devnet.followers(root)[0]
        self.started = devnet.start(root)
        self.urls = {name: url for name, url, _ in self.started}

    def key(self, name: str) -> Path:
        folder = "followers" if name == self.follower["name"] else "authorities"
        return self.root / folder / f"{name}.key"

    def height(self, name: str) -> int:
        return _get(self.urls[name] + "/v1/status")["height"]

    def blocks(self, name: str, start: int = 1) -> list[dict]:
        found = []
        while True:
            page = _get(f"{self.urls[name]}/v1/blocks?from={start + len(found)}&limit=100", timeout=10)
            found += page["blocks"]
            if not page["blocks"]:
                return found

    def govern(self, submitter: str, approvers: list[str], *change: str) -> int:
        """Draft, approve and submit a change; returns the height of the block that holds it."""
        path = self.root / f"change-{time.monotonic_ns()}.json"
        _lacre("governance", "propose", "--node", self.urls[submitter], *change, "--out", str(path))
        for name in approvers:
            _lacre("governance", "approve", str(path), "--key", str(self.key(name)))
        _lacre("governance", "submit", str(path), "--key", str(self.key(submitter)), "--node", self.urls[submitter])
        consortium = _get(self.urls[submitter] + "/v1/consortium")["trust"]["history"]
        return consortium[-1]["from_height"] - 1

    def stop(self) -> None:
        devnet.stop(self.started)


class Load:
    """Issues credentials to random nodes until stopped (a bounded loop); remembers what was acknowledged."""

    def __init__(self, net: Devnet, issuer: KeyPair) -> None:
        self.net = net
        self.issuer = issuer
        self.acknowledged: list[str] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = random.Random(4)
        names = sorted(self.net.urls)
        deadline = time.monotonic() + 120
        batch = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            records = [
                SignedRecord.sign(CredentialIssuance(b"\x04" * 24 + (batch * 10 + i).to_bytes(8, "big"), 1_800_000_000),
                                  self.issuer)
                for i in range(10)
            ]
            batch += 1
            body = {"records": [base64.b64encode(r.encoded).decode() for r in records]}
            try:
                answer = _post(self.net.urls[rng.choice(names)] + "/v1/records?wait=commit", body, timeout=20)
                self.acknowledged += [r["hash"] for r in answer["records"] if r["status"] == "committed"]
            except (OSError, ValueError):
                self.failures += 1  # not acknowledged: nothing to check


def _register_issuer(net: Devnet) -> KeyPair:
    issuer = KeyPair.load(net.root / "issuer.key")
    registration = SignedRecord.sign(IssuerRegistration(issuer.public_key, "Facultad", "AR"), KeyPair.load(net.key("inst-0")))
    _post(net.urls["inst-0"] + "/v1/records?wait=commit", {"records": [base64.b64encode(registration.encoded).decode()]}, 20)
    return issuer


def test_a_fifth_authority_joins_and_an_original_one_leaves_under_load(tmp_path):
    net = Devnet(tmp_path / "devnet", 4)
    try:
        newcomer, leaving = net.follower["name"], "inst-1"
        issuer = _register_issuer(net)
        # The follower serves the chain before it is an authority.
        _poll("the follower catches up", lambda: net.height(newcomer) >= net.height("inst-0") >= 1)
        with Load(net, issuer) as load:
            _poll("load commits", lambda: len(load.acknowledged) >= 20)
            added_at = net.govern(
                "inst-0", ["inst-0", "inst-1", "inst-2"],  # 3 of 4
                "--action", "authority.add", "--name", newcomer,
                "--authority-key", str(net.key(newcomer)), "--url", net.follower["url"],
            )

            def newcomer_certifies() -> bool:
                blocks = net.blocks(newcomer, added_at + 1)
                return any(s["authority"] == newcomer for b in blocks for s in b["certificate"]["signatures"])

            _poll(f"{newcomer} precommits in a certificate", newcomer_certifies)
            removed_at = net.govern(
                "inst-2", ["inst-0", "inst-2", "inst-3", newcomer],  # 4 of 5
                "--action", "authority.remove", "--name", leaving,
            )
            _poll("commits go on without it", lambda: min(net.height(n) for n in net.urls) >= removed_at + 5)
            acknowledged_before_stop = len(load.acknowledged)
            _poll("load is still acknowledged", lambda: len(load.acknowledged) > acknowledged_before_stop)
        assert load.acknowledged

        # Everyone, the removed authority included, ends on one chain and one checkpoint.
        def converged() -> str | None:
            heads = {_get(url + "/v1/status")["head_hash"] for url in net.urls.values()}
            if len(heads) != 1:
                return None
            notes = {urllib.request.urlopen(url + "/v1/checkpoint", timeout=5).read().decode().partition("\n\n")[0]
                     for url in net.urls.values()}
            return notes.pop() if len(notes) == 1 else None

        _poll("all nodes converge", converged)
        blocks = net.blocks("inst-0")
        signers = [{s["authority"] for s in b["certificate"]["signatures"]} for b in blocks]
        assert all(newcomer not in s for s in signers[:added_at]), "no precommit before its epoch"
        assert all(leaving not in s for s in signers[removed_at:]), "no precommit after its removal"
        assert any(newcomer in s for s in signers[added_at:])
        rounds = {b["header"]["height"]: b["header"]["round"] for b in blocks[added_at - 1:]}
        assert max(rounds.values()) <= ROUNDS_MAX, f"a height took more than {ROUNDS_MAX} rounds: {rounds}"
        # Every acknowledged record is in every node's log; a sample is proved
        # against each node's checkpoint root (one request per record is too slow
        # for all of them on two cores).
        sample = random.Random(9).sample(load.acknowledged, min(20, len(load.acknowledged)))
        for name, url in net.urls.items():
            leaves = {
                leaf_hash(base64.b64decode(r)).hex() for b in net.blocks(name) for r in b["records"]
            }
            assert set(load.acknowledged) <= leaves, f"{name} lacks acknowledged records"
            status = _get(url + "/v1/status")
            for record_hash in sample:
                proof = _get(f"{url}/v1/proofs/inclusion?hash={record_hash}&tree_size={status['tree_size']}")
                verify_inclusion(
                    bytes.fromhex(record_hash), proof["leaf_index"], status["tree_size"],
                    [bytes.fromhex(h) for h in proof["inclusion_path"]], bytes.fromhex(status["log_root"]),
                )
    finally:
        net.stop()


def test_a_sole_authority_hands_over_to_consensus_when_a_second_joins(tmp_path):
    net = Devnet(tmp_path / "devnet", 1)
    try:
        newcomer = net.follower["name"]
        issuer = _register_issuer(net)
        added_at = net.govern(
            "inst-0", ["inst-0"], "--action", "authority.add", "--name", newcomer,
            "--authority-key", str(net.key(newcomer)), "--url", net.follower["url"],
        )
        # From now on a block needs both (quorum 2 of 2): each record committed proves the handover.
        for i in range(3):
            record = SignedRecord.sign(CredentialIssuance(bytes([9, i]) * 16, 1_800_000_000), issuer)
            target = net.urls[("inst-0", newcomer)[i % 2]]
            answer = _post(target + "/v1/records?wait=commit", {"records": [base64.b64encode(record.encoded).decode()]}, 30)
            assert answer["records"][0]["status"] == "committed", answer
        blocks = net.blocks("inst-0", added_at + 1)
        assert blocks and all(
            {s["authority"] for s in b["certificate"]["signatures"]} == {"inst-0", newcomer} for b in blocks
        )
    finally:
        net.stop()

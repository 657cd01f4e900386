"""A consortium of four real node processes on 127.0.0.1: crashes, partitions, agreement.

Properties checked, as DESIGN.md states them:
- liveness: with at most f = 1 authority down or cut off, the rest keep committing;
- durability: every record acknowledged as committed is provable on every node;
- safety: after healing, every node holds the same chain (same checkpoint).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from client import devnet
from ledger.crypto import KeyPair
from ledger.records import CredentialIssuance, IssuerRegistration, SignedRecord
from tests.system.conftest import NodeProcess

pytestmark = pytest.mark.system

CONVERGE_TIMEOUT_S = 60.0


def _request(url: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _submit(url: str, records: list[SignedRecord], timeout: float = 30.0) -> dict:
    import base64

    body = {"records": [base64.b64encode(r.encoded).decode() for r in records]}
    return _request(url + "/v1/records?wait=commit", body, timeout)


class Cluster:
    def __init__(self, root: Path, n: int) -> None:
        devnet.create(root, n, fault_injection=True)
        trust = json.loads((root / "consortium.json").read_text())
        self.root = root
        self.names = [a["name"] for a in trust["authorities"]]
        self.nodes = {
            name: NodeProcess(root / "nodes" / name / "node.toml", root / "nodes" / name / "data") for name in self.names
        }
        self.issuer = KeyPair.load(root / "issuer.key")
        self.authority = KeyPair.load(root / "authorities" / f"{self.names[0]}.key")

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    def url(self, name: str) -> str:
        return self.nodes[name].url

    def status(self, name: str) -> dict | None:
        try:
            return _request(self.url(name) + "/v1/status", timeout=2)
        except (OSError, ValueError):
            return None

    def partition(self, name: str, blocked: list[str]) -> None:
        _request(self.url(name) + "/v1/admin/partition", {"blocked": blocked})

    def wait_converged(self, names: list[str]) -> str:
        """Wait until every named node has the same head; returns that checkpoint."""
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while time.monotonic() < deadline:
            heads = [self.status(name) for name in names]
            if all(heads) and len({h["head_hash"] for h in heads}) == 1 and heads[0]["height"] > 0:
                notes = [urllib.request.urlopen(self.url(n) + "/v1/checkpoint", timeout=5).read().decode() for n in names]
                # Each node may hold a different quorum of cosignatures; the
                # signed checkpoint text must be the same everywhere.
                if len({note.partition("\n\n")[0] for note in notes}) == 1:
                    return notes[0]
            time.sleep(0.2)
        raise AssertionError(f"nodes did not converge: {[self.status(n) for n in names]}")

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.process and node.process.poll() is None:
                node.kill()


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path / "consortium", 4)
    try:
        cluster.start()
        _submit(cluster.url(cluster.names[0]), [
            SignedRecord.sign(IssuerRegistration(cluster.issuer.public_key, "Facultad", "AR"), cluster.authority)
        ])
        yield cluster
    finally:
        cluster.stop()


class Load:
    """Submits issuances to live nodes until stopped; remembers what was acknowledged as committed."""

    def __init__(self, cluster: Cluster, alive: set[str]) -> None:
        self.cluster = cluster
        self.alive = alive
        self.acknowledged: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = 0

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        rng = random.Random(5)
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            target = rng.choice(sorted(self.alive))
            records = [
                SignedRecord.sign(CredentialIssuance(bytes([7]) * 24 + (self._next + i).to_bytes(8, "big"), 1_800_000_000), self.cluster.issuer)
                for i in range(20)
            ]
            self._next += 20
            try:
                answer = _submit(self.cluster.url(target), records, timeout=15)
                self.acknowledged += [r["hash"] for r in answer["records"] if r["status"] == "committed"]
            except (OSError, ValueError):
                self.errors += 1  # the target died under us: not acknowledged
                time.sleep(0.1)


def _height(cluster: Cluster, name: str) -> int:
    status = cluster.status(name)
    return status["height"] if status else -1


def _wait_height(cluster: Cluster, names: list[str], height: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_height(cluster, n) >= height for n in names):
            return
        time.sleep(0.1)
    raise AssertionError(f"{names} did not reach height {height}: {[_height(cluster, n) for n in names]}")


def _assert_provable_everywhere(cluster: Cluster, hashes: list[str]) -> None:
    for name in cluster.names:
        for record_hash in hashes:
            proof = _request(f"{cluster.url(name)}/v1/proofs/inclusion?hash={record_hash}")
            assert proof["leaf_index"] >= 0


def _wait_provable_everywhere(cluster: Cluster, hashes: list[str], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _assert_provable_everywhere(cluster, hashes)
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_kill_nine_under_load_others_keep_committing_and_the_victim_catches_up(cluster):
    rng = random.Random(11)
    alive = set(cluster.names)
    with Load(cluster, alive) as load:
        for _ in range(3):
            victim = rng.choice(cluster.names)
            alive.discard(victim)
            cluster.nodes[victim].kill()
            survivors = sorted(alive)
            before = max(_height(cluster, n) for n in survivors)
            _wait_height(cluster, survivors, before + 3)  # f = 1 down: the rest commit
            cluster.nodes[victim].start()
            alive.add(victim)
            _wait_height(cluster, [victim], before + 1)  # it catches up
    assert len(load.acknowledged) > 0
    cluster.wait_converged(cluster.names)
    _assert_provable_everywhere(cluster, load.acknowledged)


def test_a_partition_stops_the_minority_not_the_majority_and_heals(cluster):
    majority, minority = cluster.names[:3], cluster.names[3]
    cluster.wait_converged(cluster.names)
    for name in majority:
        cluster.partition(name, [minority])
    cluster.partition(minority, majority)
    stalled = _height(cluster, minority)
    alive = set(majority)
    with Load(cluster, alive) as load:
        _wait_height(cluster, majority, stalled + 3)
    assert _height(cluster, minority) == stalled, "a cut-off minority must not commit"
    # The minority accepts records but cannot commit them on its own.
    lonely = SignedRecord.sign(CredentialIssuance(b"\x05" * 32, 1_800_000_000), cluster.issuer)
    answer = _request(cluster.url(minority) + "/v1/records", {"records": [__import__("base64").b64encode(lonely.encoded).decode()]})
    assert answer["records"][0]["status"] == "pending"
    time.sleep(1.0)
    assert _height(cluster, minority) == stalled
    for name in cluster.names:
        cluster.partition(name, [])
    checkpoint = cluster.wait_converged(cluster.names)
    assert checkpoint.count("\u2014 ") >= 3, checkpoint
    _assert_provable_everywhere(cluster, load.acknowledged)


def test_an_even_split_commits_nothing_until_healed(cluster):
    left, right = cluster.names[:2], cluster.names[2:]
    cluster.wait_converged(cluster.names)
    for name in left:
        cluster.partition(name, right)
    for name in right:
        cluster.partition(name, left)
    heights = {name: _height(cluster, name) for name in cluster.names}
    record = SignedRecord.sign(CredentialIssuance(b"\x06" * 32, 1_800_000_000), cluster.issuer)
    _request(cluster.url(left[0]) + "/v1/records", {"records": [__import__("base64").b64encode(record.encoded).decode()]})
    time.sleep(3.0)
    assert {name: _height(cluster, name) for name in cluster.names} == heights, "no side has a quorum"
    for name in cluster.names:
        cluster.partition(name, [])
    _wait_height(cluster, cluster.names, max(heights.values()) + 1)
    cluster.wait_converged(cluster.names)
    # Healed links resend what is pending, so the record no longer waits for a
    # block of the side that admitted it; but the first block after the heal may
    # be one proposed before it.
    _wait_provable_everywhere(cluster, [record.hash.hex()])


def test_equivocation_is_kept_as_evidence_and_garbage_is_dropped(cluster):
    import asyncio
    import os

    import aiohttp

    from consensus.messages import Vote, VoteKind, encode_message
    from ledger import crypto
    from ledger.block import vote_message
    from ledger.genesis import Genesis
    from node.peer_session import SessionError
    from node.peers import PEER_PATH, dial

    byzantine = cluster.names[3]
    cluster.nodes[byzantine].kill()  # its key is now the test's to misuse
    key = KeyPair.load(cluster.root / "authorities" / f"{byzantine}.key")
    outsider = KeyPair.generate("outsider")
    genesis = Genesis.load(cluster.root / "genesis.json")
    chain = genesis.hash
    target = cluster.url(cluster.names[0])
    acceptor = genesis.authority_set.by_name(cluster.names[0])

    def prevote(height: int, block_hash: bytes) -> bytes:
        signature = key.sign(crypto.VOTE_CONTEXT, vote_message(chain, "prevote", height, 0, block_hash))
        return encode_message(chain, Vote(VoteKind.PREVOTE, height, 0, block_hash, byzantine, signature))

    async def attack() -> None:
        async with aiohttp.ClientSession() as session:
            for garbage in (os.urandom(100), "hello"):  # garbage, then not binary: the link is closed
                async with session.ws_connect(target + PEER_PATH) as ws:
                    await (ws.send_str(garbage) if isinstance(garbage, str) else ws.send_bytes(garbage))
                    assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            with pytest.raises(SessionError):  # not an authority: refused at its hello
                async with dial(session, target, outsider.name, outsider, acceptor):
                    pass
            async with dial(session, target, byzantine, key, acceptor) as link:  # the Byzantine authority
                height = _height(cluster, cluster.names[0]) + 1
                for h in range(height, height + 3):
                    for block_hash in (os.urandom(32), os.urandom(32)):
                        await link.send("consensus", prevote(h, block_hash))

    asyncio.run(attack())
    deadline = time.monotonic() + 10
    evidence = []
    while time.monotonic() < deadline and not evidence:
        evidence = _request(target + "/v1/evidence")["evidence"]
        time.sleep(0.1)
    assert evidence and {item["authority"] for item in evidence} == {byzantine}
    # The others keep committing with f = 1 misbehaving.
    before = _height(cluster, cluster.names[0])
    _wait_height(cluster, cluster.names[:3], before + 2)


def test_a_node_with_an_empty_store_catches_up_while_the_others_commit(cluster):
    import shutil

    newcomer = cluster.names[2]
    alive = set(cluster.names) - {newcomer}
    with Load(cluster, alive) as load:
        _wait_height(cluster, sorted(alive), 5)
        cluster.nodes[newcomer].kill()
        shutil.rmtree(cluster.nodes[newcomer].data_dir)
        cluster.nodes[newcomer].data_dir.mkdir()
        cluster.nodes[newcomer].start()
        target = max(_height(cluster, n) for n in alive)
        _wait_height(cluster, [newcomer], target)
    cluster.wait_converged(cluster.names)
    _assert_provable_everywhere(cluster, load.acknowledged)

"""`scripts/bench`: lacre's figures, each beside the limit it is judged against.

Every target is a ratio to something measured in the same run on the same
machine (one core's Ed25519 verifications/s, the same server's trivial GET/s)
or an absolute figure the issue fixes. Nodes are real processes on 127.0.0.1
over real LevelDB; loads are bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nacl.signing

import ledger
from client import devnet
from client.verify import ReceiptVerifier, verify_receipt
from ledger.block import CommitCertificate, precommit
from ledger.chain import Chain
from ledger.crypto import KeyPair
from ledger.genesis import Authority, AuthoritySet, Genesis, Trust
from ledger.leveldb_store import LevelDBStore
from ledger.merkle import leaf_hash
from ledger.merkle_log import MerkleLog
from ledger.store import Store, WriteBatch
from ledger.records import CredentialIssuance, IssuerRegistration, SignedRecord

STARTUP_TIMEOUT_S = 60.0
SUSTAINED_FACTOR = 3
"""The sustained consortium figure submits this many times the saturation run's records."""


@dataclass
class Row:
    figure: str
    measured: str
    reference: str
    target: str
    ok: bool | None


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def ed25519_verifications_per_s(seconds: float = 1.0) -> float:
    """One core's Ed25519 verifications/s through PyNaCl, on 200-byte messages."""
    key = nacl.signing.SigningKey(b"\x01" * 32)
    message = b"m" * 200
    signature = key.sign(message).signature
    verify = key.verify_key.verify
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            verify(message, signature)
        count += 200
    return _rate(count, time.perf_counter() - started)


# -- Merkle log on LevelDB ---------------------------------------------------


def _bench_leaves(start: int, count: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(start, start + count)]


def bench_append(store: Store, leaves: int, batch_size: int, sync: bool = True) -> float:
    """Append `leaves` leaves to an empty log in `store`, `batch_size` at a time,
    writing each batch as a block commit would; returns leaves per second.

    Only `append` + `store.write` + `flushed` are timed, not making the leaves.
    Leaves the store holding a log of `leaves` leaves: reopen it with
    `MerkleLog(store, leaves)` to benchmark proofs.
    """
    log = MerkleLog(store, 0)
    elapsed = 0.0
    for start in range(0, leaves, batch_size):
        hashes = _bench_leaves(start, min(batch_size, leaves - start))
        began = time.perf_counter()
        batch = WriteBatch()
        log.append(hashes, batch)
        store.write(batch, sync=sync)
        log.flushed()
        elapsed += time.perf_counter() - began
    return leaves / elapsed


def bench_inclusion(log: MerkleLog, count: int, seed: int) -> float:
    """Build `count` inclusion proofs for random leaves at the full size; returns
    proofs per second. Warms the cache first (untimed), as a running node is."""
    log.warm_cache()
    rng = random.Random(seed)
    size = log.size
    indexes = [rng.randrange(size) for _ in range(count)]
    began = time.perf_counter()
    for index in indexes:
        log.inclusion_proof(index, size)
    return count / (time.perf_counter() - began)


# -- signing many records fast: a process pool over all cores ----------------

def _sign_range(args: tuple[bytes, int, int, int]) -> list[bytes]:
    seed, start, stop, issued_at = args
    key = KeyPair("bench-issuer", seed)
    return [
        SignedRecord.sign(CredentialIssuance(hashlib.sha256(b"bench %d" % i).digest(), issued_at), key).encoded
        for i in range(start, stop)
    ]


def sign_issuances(key: KeyPair, start: int, count: int, issued_at: int = 1_700_000_000) -> list[bytes]:
    chunk = 20_000
    jobs = [(key.seed, i, min(i + chunk, start + count), issued_at) for i in range(start, start + count, chunk)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        return [record for part in pool.map(_sign_range, jobs) for record in part]


# -- a one-authority consortium on disk ---------------------------------------

@dataclass
class Site:
    root: Path
    authority: KeyPair
    issuer: KeyPair
    genesis: Genesis

    @property
    def config(self) -> Path:
        return self.root / "node.toml"

    @property
    def data(self) -> Path:
        return self.root / "data"


def make_site(root: Path, block_delay_ms: int = 5) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    authority, issuer = KeyPair.generate("inst-0"), KeyPair.generate("bench-issuer")
    authority.save(root / "authority.key")
    genesis = Genesis("bench.lacre.local/log", AuthoritySet((Authority(authority.name, authority.public_key),)), int(time.time()))
    (root / "genesis.json").write_text(json.dumps(genesis.to_json()))
    (root / "node.toml").write_text(
        'name = "inst-0"\nkey_file = "authority.key"\ngenesis_file = "genesis.json"\ndata_dir = "data"\n'
        f'host = "127.0.0.1"\nport = 0\n[limits]\nblock_delay_ms = {block_delay_ms}\nmempool_records_max = 200000\n'
    )
    return Site(root, authority, issuer, genesis)


def prefill(site: Site, count: int, block_records: int = 10_000) -> None:
    """Commit `count` signed issuance records straight into the site's store."""
    chain = Chain(LevelDBStore(site.data / "chain.ldb"), site.genesis)
    registration = SignedRecord.sign(IssuerRegistration(site.issuer.public_key, "Bench", "MX"), site.authority)
    pending = [registration]
    made = 0
    while made < count:
        batch = min(200_000, count - made)
        pending += [SignedRecord.decode(r) for r in sign_issuances(site.issuer, made, batch)]
        made += batch
        while pending:
            block, pending = pending[:block_records], pending[block_records:]
            proposed = chain.propose(block, "inst-0", 0, int(time.time() * 1000))
            header = proposed.header
            signature = precommit(site.authority, header, 0, chain.chain_id, chain.origin)
            chain.commit(header, proposed.records, CommitCertificate(header.height, 0, header.hash, (signature,)), proposed.delta)
    # Settle the bulk load as a long-running node's store would be; otherwise
    # the node spends its first minutes compacting (and mapping) every table.
    chain.store.compact()
    chain.close()


class NodeRun:
    def __init__(self, site: Site) -> None:
        self.site = site
        (site.data).mkdir(parents=True, exist_ok=True)
        url_file = site.data / "url"
        url_file.unlink(missing_ok=True)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--config", str(site.config)],
            stdout=subprocess.DEVNULL, stderr=open(site.root / "node.log", "ab"),
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("node did not start: " + (site.root / "node.log").read_text()[-2000:])
            if url_file.exists():
                self.url = url_file.read_text().strip()
                break
            time.sleep(0.01)
        self.ready_s = time.perf_counter() - self.started

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident MB; field "RssAnon" leaves out file pages (LevelDB maps its tables)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _get_rate(url: str, paths: list[str], seconds: float, concurrency: int = 32) -> float:
    count = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(offset: int) -> None:
            nonlocal count
            i = offset
            while time.perf_counter() < deadline:
                async with session.get(url + paths[i % len(paths)]) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{paths[i % len(paths)]}: {response.status}")
                count += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return _rate(count, time.perf_counter() - started)


async def _submit_all(url: str | list[str], records: list[bytes], batch: int, concurrency: int) -> float:
    bodies = [
        json.dumps({"records": [base64.b64encode(r).decode() for r in records[i : i + batch]]})
        for i in range(0, len(records), batch)
    ]
    queue = list(reversed(bodies))
    urls = [url] if isinstance(url, str) else url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        async def worker(worker_index: int) -> None:
            target = urls[worker_index % len(urls)]
            while queue:
                body = queue.pop()
                while True:
                    async with session.post(target + "/v1/records?wait=commit", data=body,
                                            headers={"Content-Type": "application/json"}) as response:
                        answer = await response.read()
                        if response.status == 503:
                            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                            continue
                        if response.status != 200:
                            raise RuntimeError(f"submit: {response.status} {answer[:300]!r}")
                        break

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return _rate(len(records), time.perf_counter() - started)


# -- the figures ----------------------------------------------------------------

def bench_merkle(rows: list[Row], work: Path, leaves: int, big_leaves: int) -> None:
    store = LevelDBStore(work / "merkle.ldb")
    appends = bench_append(store, leaves, 10_000)
    # Proofs are measured on a settled store, as a running node's is, not
    # while the bulk load's background compaction competes for the cores.
    store.compact()
    rows.append(Row(f"Merkle log appends/s on LevelDB, to {leaves:,} leaves", f"{appends:,.0f}", "absolute", ">= 300,000", appends >= 300_000))
    proofs_small = bench_inclusion(MerkleLog(store, leaves), 20_000, seed=1)
    store.close()
    rows.append(Row(f"inclusion proofs built/s from the store at {leaves:,}", f"{proofs_small:,.0f}", "absolute", ">= 20,000", proofs_small >= 20_000))
    if big_leaves:
        store = LevelDBStore(work / "merkle-big.ldb")
        bench_append(store, big_leaves, 10_000)
        store.compact()
        proofs_big = bench_inclusion(MerkleLog(store, big_leaves), 20_000, seed=2)
        store.close()
        ratio = proofs_small / proofs_big
        rows.append(Row(f"inclusion proofs built/s from the store at {big_leaves:,}", f"{proofs_big:,.0f}",
                        f"{ratio:.2f}x slower than at {leaves:,}", ">= 20,000 and <= 1.5x",
                        proofs_big >= 20_000 and ratio <= 1.5))
    shutil.rmtree(work / "merkle.ldb", ignore_errors=True)
    shutil.rmtree(work / "merkle-big.ldb", ignore_errors=True)


def bench_submit(rows: list[Row], work: Path, verify_rate: float, count: int) -> None:
    site = make_site(work / "submit", block_delay_ms=5)
    registration = SignedRecord.sign(IssuerRegistration(site.issuer.public_key, "Bench", "MX"), site.authority)
    records = sign_issuances(site.issuer, 0, count)
    node = NodeRun(site)
    try:
        asyncio.run(_submit_all(node.url, [registration.encoded], 1, 1))
        rate = asyncio.run(_submit_all(node.url, records, 2_000, 4))
    finally:
        node.stop()
    target = 0.5 * verify_rate
    rows.append(Row(f"committed records/s, HTTP batch submit, one node ({count:,})", f"{rate:,.0f}",
                    f"{verify_rate:,.0f} verifications/s (one core)", ">= 50%", rate >= target))


def bench_serving(rows: list[Row], work: Path, verify_rate: float, records: int, seconds: float) -> None:
    site = make_site(work / "serve")
    prefill(site, records)
    hashes = _sample_hashes(site, 2000)  # before the node holds the LevelDB lock
    node = NodeRun(site)
    try:
        trivial = asyncio.run(_get_rate(node.url, ["/healthz"], seconds))
        proofs = asyncio.run(_get_rate(node.url, [f"/v1/proofs/inclusion?hash={h}" for h in hashes], seconds))
        rss, anonymous = node.rss_mb(), node.rss_mb("RssAnon")
        cold_rate, cohort_rate, sigs = _receipt_rate(node.url, site, verify_rate)
    finally:
        node.stop()
    rows.append(Row(f"inclusion proofs served/s over HTTP, {records:,} records", f"{proofs:,.0f}",
                    f"{trivial:,.0f} trivial GET/s", ">= 25%", proofs >= 0.25 * trivial))
    reference = verify_rate / sigs
    rows.append(Row("receipts verified offline/s, one at a time from scratch", f"{cold_rate:,.0f}",
                    f"{reference:,.0f} = verifications/s / {sigs} signatures", ">= 80%", cold_rate >= 0.8 * reference))
    rows.append(Row("receipts verified offline/s, a cohort under one checkpoint", f"{cohort_rate:,.0f}",
                    f"{reference:,.0f} = verifications/s / {sigs} signatures", ">= 80%", cohort_rate >= 0.8 * reference))
    restart = NodeRun(site)
    restart_s = restart.ready_s
    restart_rss = restart.rss_mb()
    restart.stop()
    rows.append(Row(f"node RSS with {records:,} records (after serving)", f"{rss:,.0f} MB",
                    f"{anonymous:,.0f} MB of it anonymous (the rest: mapped LevelDB tables); "
                    f"{restart_rss:,.0f} MB just after restart", "<= 150 MB", rss <= 150))
    rows.append(Row(f"node restart time with {records:,} records", f"{restart_s:.2f} s", "spawn to serving", "<= 1 s", restart_s <= 1.0))


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _sample_hashes(site: Site, count: int) -> list[str]:
    store = LevelDBStore(site.data / "chain.ldb")
    chain = Chain(store, site.genesis)
    rng = random.Random(11)
    hashes = [leaf_hash(chain.record_at(i)).hex() for i in rng.sample(range(chain.log_size), count)]
    chain.close()
    return hashes


def _receipt_rate(url: str, site: Site, verify_rate: float) -> tuple[float, float, int]:
    """(cold receipts/s, cohort receipts/s, signatures per receipt).

    Cold: each receipt checked from scratch, every signature verified.
    Cohort: distinct receipts under one checkpoint and one issuer, checked by
    one ReceiptVerifier, as a verifier checking a graduating class does.
    """
    ids = [hashlib.sha256(b"bench %d" % i).digest() for i in range(0, 20_000, 10)]
    receipts = [json.loads(_http_get(f"{url}/v1/receipts/{cid.hex()}")) for cid in ids]
    trust = Trust.from_genesis(site.genesis, {})
    assert all(verify_receipt(r, trust, cid).ok for r, cid in zip(receipts, ids))
    # issuance record + issuer registration + one cosignature per authority
    signatures = 2 + len(site.genesis.authorities)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 2.0:
        for receipt, cid in zip(receipts[:50], ids[:50]):
            verify_receipt(receipt, trust, cid)
        count += 50
    cold = _rate(count, time.perf_counter() - started)
    verifier = ReceiptVerifier(trust)
    started = time.perf_counter()
    for receipt, cid in zip(receipts, ids):
        assert verifier.verify(receipt, cid).ok
    cohort = _rate(len(receipts), time.perf_counter() - started)
    return cold, cohort, signatures


def ed25519_verifications_per_s_all_cores(seconds: float = 1.0) -> float:
    """Ed25519 verifications/s with every core verifying at once."""
    cores = os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        return sum(pool.map(ed25519_verifications_per_s, [seconds] * cores))


async def _latencies(urls: list[str], records: list[bytes], rate_per_s: float) -> list[float]:
    """Submit one record at a time at `rate_per_s`, round robin; each one's time to commit."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one(i: int, data: bytes) -> None:
            body = json.dumps({"record": base64.b64encode(data).decode()})
            started = time.perf_counter()
            async with session.post(urls[i % len(urls)] + "/v1/records?wait=commit", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                await response.read()
                if response.status == 200:
                    latencies.append(time.perf_counter() - started)

        tasks = []
        for i, data in enumerate(records):
            tasks.append(asyncio.create_task(one(i, data)))
            await asyncio.sleep(1 / rate_per_s)
        await asyncio.gather(*tasks)
    return sorted(latencies)


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


def bench_consortium(rows: list[Row], work: Path, count: int, latency_s: float) -> None:
    root = work / "consortium"
    devnet.create(root, 4)
    started = devnet.start(root)
    try:
        urls = [url for _, url, _ in started]
        issuer = KeyPair.load(root / "issuer.key")
        authority = KeyPair.load(sorted((root / "authorities").glob("*.key"))[0])
        registration = SignedRecord.sign(IssuerRegistration(issuer.public_key, "Bench", "MX"), authority)
        asyncio.run(_submit_all(urls[0], [registration.encoded], 1, 1))
        records = sign_issuances(issuer, 0, count)
        # The host's speed drifts within minutes: the limit is the mean of a
        # measure just before and one just after (the nodes idle meanwhile).
        before = ed25519_verifications_per_s_all_cores()
        rate = asyncio.run(_submit_all(urls, records, 2_000, 8))
        after = ed25519_verifications_per_s_all_cores()
        all_cores = (before + after) / 2
        reference = all_cores / 4
        rows.append(Row(f"committed records/s at saturation, 4 authorities ({count:,})", f"{rate:,.0f}",
                        f"{all_cores:,.0f} verifications/s all cores (mean of {before:,.0f} before, "
                        f"{after:,.0f} after) / 4 = {reference:,.0f}", ">= 50%", rate >= 0.5 * reference))
        light = max(1.0, 0.1 * rate)
        singles = sign_issuances(issuer, count, int(light * latency_s))
        latencies = asyncio.run(_latencies(urls, singles, light))
        p50, p99 = _percentile(latencies, 0.5) * 1000, _percentile(latencies, 0.99) * 1000
        rows.append(Row(f"commit latency at 10% of saturation ({light:,.0f} records/s), p50 / p99",
                        f"{p50:,.0f} / {p99:,.0f} ms", f"{len(latencies)} single-record submissions",
                        "<= 50 / <= 250 ms", p50 <= 50 and p99 <= 250))
        # The saturation figure covers a few seconds; a longer run shows what
        # a growing store (LevelDB compaction, a deeper map) takes off it.
        more = SUSTAINED_FACTOR * count
        records = sign_issuances(issuer, count + len(singles), more)
        sustained = asyncio.run(_submit_all(urls, records, 2_000, 8))
        rows.append(Row(f"committed records/s sustained over {more:,} more records ({count + len(singles) + more:,} on the chain)",
                        f"{sustained:,.0f}", f"{sustained / reference:.0%} of all-core verifications / 4 = {reference:,.0f}",
                        "reported", None))
    finally:
        devnet.stop(started)


def prefill_consortium(root: Path, blocks: int) -> None:
    """Commit `blocks` blocks of one issuance each into inst-0's store, certified by a quorum."""
    genesis = Genesis.load(root / "genesis.json")
    keys = {k.name: k for k in (KeyPair.load(p) for p in (root / "authorities").glob("*.key"))}
    issuer = KeyPair.load(root / "issuer.key")
    chain = Chain(LevelDBStore(root / "nodes" / "inst-0" / "data" / "chain.ldb"), genesis)
    records = [SignedRecord.sign(IssuerRegistration(issuer.public_key, "Bench", "MX"), keys["inst-0"])]
    records += [SignedRecord.decode(r) for r in sign_issuances(issuer, 0, blocks - 1)]
    signers = [keys[a.name] for a in genesis.authorities[: genesis.authority_set.quorum]]
    now_ms = int(time.time() * 1000)
    for record in records:
        proposer = chain.authority_set.proposer(chain.height + 1, 0).name
        proposed = chain.propose([record], proposer, 0, now_ms)
        header = proposed.header
        signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in signers)
        chain.commit(header, proposed.records, CommitCertificate(header.height, 0, header.hash, signatures),
                     proposed.delta, sync=False)
    chain.close()


def bench_catch_up(rows: list[Row], work: Path, blocks: int) -> None:
    root = work / "catch-up"
    devnet.create(root, 4)
    prefill_consortium(root, blocks)
    for name in ("inst-1", "inst-2"):
        shutil.copytree(root / "nodes" / "inst-0" / "data", root / "nodes" / name / "data")
    started = devnet.start(root)
    try:
        began = time.perf_counter()
        url = dict((name, url) for name, url, _ in started)["inst-3"]
        deadline = time.monotonic() + 1800
        height = 0
        while height < blocks and time.monotonic() < deadline:
            time.sleep(0.5)
            height = json.loads(_http_get(url + "/v1/status"))["height"]
        elapsed = time.perf_counter() - began
    finally:
        devnet.stop(started)
    rows.append(Row(f"catch-up of a node {blocks:,} blocks behind", f"{elapsed:,.1f} s",
                    f"{height / elapsed:,.0f} blocks/s, while the others commit", "reported", height >= blocks))


def bench_simulation(rows: list[Row], seeds: int) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "simulate"
    if not script.exists():
        return
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(script), "--seeds", str(seeds)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    ok = result.returncode == 0
    rows.append(Row(f"simulated seeds/s ({seeds} seeds, all cores)", f"{seeds / elapsed:,.1f}",
                    "deterministic cluster simulation", "reported", ok))


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def bench_state(rows: list[Row], quick: bool) -> None:
    """Status proofs over the authenticated credential map (issue 4)."""
    from client.bench_state import bench_status_proofs

    for row in bench_status_proofs(quick=quick):
        rows.append(Row(row["figure"], _format(row["measured"]), "absolute", row["target"], row["ok"]))


def bench_audit_section(rows: list[Row], quick: bool) -> None:
    """Full-verification replay from genesis (issue 5)."""
    from client.bench_audit import bench_audit

    for row in bench_audit(quick=quick):
        rows.append(Row(row["figure"], _format(row["measured"]), _format(row.get("limit") or "absolute"),
                        row.get("target", "report"), row.get("ok")))


def bench_batch_section(rows: list[Row], quick: bool) -> None:
    """Cohort issuance in batches on a 4-authority devnet (issue 6)."""
    from client.bench_batch import bench_batch

    for row in bench_batch(quick=quick):
        rows.append(Row(row["figure"], _format(row["measured"]), _format(row.get("limit") or "absolute"),
                        row.get("target", "report"), row.get("ok")))


def render(rows: list[Row]) -> str:
    headers = ("figure", "measured", "measured against", "target", "ok")
    table = [headers] + [(r.figure, r.measured, r.reference, r.target, {True: "yes", False: "NO", None: "-"}[r.ok]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the harness (figures not comparable)")
    sections = ["merkle", "submit", "serve", "consortium", "catch-up", "simulation", "state", "audit", "batch"]
    parser.add_argument("--only", choices=sections, action="append")
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    leaves, big, records, submit_count, seconds, consortium_count, seeds, behind = (
        (50_000, 0, 20_000, 5_000, 1.0, 4_000, 20, 2_000) if args.quick
        else (1_000_000, 10_000_000, 1_000_000, 100_000, 5.0, 40_000, 200, 100_000)
    )
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lacre-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only or sections)
    rows: list[Row] = []
    try:
        verify_rate = ed25519_verifications_per_s()
        rows.append(Row("Ed25519 verifications/s, one core (PyNaCl)", f"{verify_rate:,.0f}", "limit", "-", None))
        rows.append(Row("ledger modules running compiled by mypyc (docs/native.md)",
                        ", ".join(ledger.COMPILED) or "none: pure Python", "-", "-", None))
        if "merkle" in only:
            bench_merkle(rows, work, leaves, big)
        if "submit" in only:
            bench_submit(rows, work, verify_rate, submit_count)
        if "serve" in only:
            bench_serving(rows, work, verify_rate, records, seconds)
        if "consortium" in only:
            bench_consortium(rows, work, consortium_count, 5.0 if args.quick else 10.0)
        if "catch-up" in only:
            bench_catch_up(rows, work, behind)
        if "simulation" in only:
            bench_simulation(rows, seeds)
        if "state" in only:
            bench_state(rows, args.quick)
        if "audit" in only:
            bench_audit_section(rows, args.quick)
        if "batch" in only:
            bench_batch_section(rows, args.quick)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print(render(rows))
    return 0 if all(r.ok is not False for r in rows) else 1

"""The audit at scale: records audited per second, and memory flat in chain length.

One chain is built in a temporary data folder: four authorities (blocks
certified by three), four issuers, then blocks of 10,000 issuance records
signed on every core (the largest size is signed once; smaller sizes audit a
prefix of the same chain), then compacted, as a node's store settles. For
each size, `lacre audit --data-dir` runs on the blocks holding that many
records in a fresh process (so its peak RSS is its own), with full
verification: every record, vote and checkpoint cosignature, the rules over
the auditor's own state, both roots. Its rate is set beside the Ed25519
verifications/s of all cores measured just before, in the same run; VmRSS,
the peak (VmHWM) and the peak RssAnon at each size show the audit's memory
does not grow with the chain.

`bench_audit(quick)` returns rows for `client.bench`'s table and prints nothing.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nacl.signing

from ledger import codec, crypto
from ledger.block import CommitCertificate, precommit
from ledger.chain import Chain
from ledger.crypto import KeyPair
from ledger.genesis import Authority, AuthoritySet, Genesis
from ledger.leveldb_store import LevelDBStore
from ledger.records import RECORD_VERSION, CredentialIssuance, IssuerRegistration, SignedRecord
from ledger.store import WriteBatch

BLOCK_RECORDS = 10_000
ISSUERS = 4
SIGN_WINDOW = 4
RATIO_MIN = 0.5
PEAK_GROWTH_MAX = 1.25


def _key(name: str) -> KeyPair:
    return KeyPair(name, hashlib.sha256(b"bench-audit " + name.encode()).digest())


def _sign_block(args: tuple[int, int, int]) -> list[SignedRecord]:
    """Records [start, stop) signed by one issuer (in a worker; they come back pickled,
    which costs the builder a third of decoding them)."""
    issuer, start, stop = args
    key = _key(f"issuer-{issuer}")
    # SignedRecord.sign with one parsed key: KeyPair.sign derives it from the seed every time.
    signing_key, public_key = nacl.signing.SigningKey(key.seed), key.public_key
    records = []
    for i in range(start, stop):
        body = CredentialIssuance(hashlib.sha256(b"bench-audit %d" % i).digest(), 1_700_000_000)
        unsigned = codec.encode({"body": body.to_map(), "kind": body.KIND, "signer": public_key, "v": RECORD_VERSION})
        signature = signing_key.sign(crypto.RECORD_CONTEXT + unsigned).signature
        records.append(SignedRecord(body, public_key, signature, unsigned=unsigned))
    return records


def build_chain(data_dir: Path, records: int) -> tuple[Genesis, dict[int, int], float]:
    """A chain of 1 + `records` records in `data_dir`; its genesis, {records: height} at each block, seconds."""
    authorities = [_key(f"inst-{i}") for i in range(4)]
    genesis = Genesis("bench-audit.lacre.local/log",
                      AuthoritySet(tuple(Authority(k.name, k.public_key) for k in authorities)), 1_700_000_000)
    began = time.perf_counter()
    chain = Chain(LevelDBStore(data_dir / "chain.ldb"), genesis)
    heights: dict[int, int] = {}

    def commit(block: list[SignedRecord]) -> None:
        proposed = chain.propose(block, chain.authority_set.proposer(chain.height + 1, 0).name, 0,
                                 1_700_000_000_000 + chain.height)
        assert not proposed.rejected, proposed.rejected[:1]
        header = proposed.header
        signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in authorities[:3])
        chain.commit(header, proposed.records, CommitCertificate(header.height, 0, header.hash, signatures),
                     proposed.delta, sync=False)

    try:
        commit([SignedRecord.sign(IssuerRegistration(_key(f"issuer-{i}").public_key, f"Bench issuer {i}", "MX"),
                                  authorities[0]) for i in range(ISSUERS)])
        jobs = [(n % ISSUERS, start, min(start + BLOCK_RECORDS, records))
                for n, start in enumerate(range(0, records, BLOCK_RECORDS))]
        made = 0
        with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
            pending: collections.deque = collections.deque()
            for job in jobs:
                pending.append(pool.apply_async(_sign_block, (job,)))
                if len(pending) >= SIGN_WINDOW:
                    block = pending.popleft().get()
                    commit(block)
                    made += len(block)
                    heights[made] = chain.height
            while pending:
                block = pending.popleft().get()
                commit(block)
                made += len(block)
                heights[made] = chain.height
        chain.store.write(WriteBatch(), sync=True)
        # Settled as a node's store is (LevelDB compacts it in the background
        # as it grows): a bulk build leaves minutes of compaction pending,
        # which LevelDB would otherwise run during the audits, and for
        # which an auditor of a live node's folder does not pay.
        chain.store.compact()
    finally:
        chain.close()
    return genesis, heights, time.perf_counter() - began


def verifications_per_s_all_cores(seconds: float = 2.0) -> float:
    """Ed25519 verifications/s (PyNaCl, 200-byte messages) with every core verifying at once."""
    from client.bench import ed25519_verifications_per_s_all_cores

    return ed25519_verifications_per_s_all_cores(seconds)


def _status_mb(field: str, pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for child in children.read_text().split():
                found += [int(child), *_descendants(int(child))]
        except OSError:
            pass
    return found


def _anon_mb_with_workers() -> float:
    """RssAnon of this process and every process it started (the verification workers)."""
    pid = os.getpid()
    return sum(_status_mb("RssAnon", p) for p in [pid, *_descendants(pid)])


def _audit_child(data_dir: str, to: int, pool: str) -> None:
    """In the child interpreter: audit, then print the figures as one JSON line.

    VmRSS and VmHWM (this process) count the pages of LevelDB's table files it
    maps (bounded by its table caches, and the kernel's to reclaim); RssAnon is
    the processes' own memory, this one's and its workers', sampled every 0.1 s
    for its peak.
    """
    from client.audit_run import AuditOptions, audit_chain

    anon_peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            anon_peak[0] = max(anon_peak[0], _anon_mb_with_workers())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    report = audit_chain(data_dir=data_dir, to=to, options=AuditOptions(pool=pool))
    done.set()
    sampler.join()
    print(json.dumps({"ok": report.ok, "height": report.height, "records": report.counts.records,
                      "elapsed_s": report.elapsed_s, "rss_mb": _status_mb("VmRSS"), "peak_mb": _status_mb("VmHWM"),
                      "anon_mb": _status_mb("RssAnon"), "anon_peak_mb": max(anon_peak[0], _status_mb("RssAnon")),
                      "violation": report.violation.to_json() if report.violation else report.error}))


def audit_in_child(data_dir: Path, to: int, pool: str = "process") -> dict:
    """Run one audit of blocks 1..`to` in a fresh interpreter (its own peak RSS); its figures."""
    code = f"from client.bench_audit import _audit_child; _audit_child({str(data_dir)!r}, {to}, {pool!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    if result.returncode != 0:
        raise RuntimeError(f"the audit process failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def bench_audit(quick: bool = False) -> list[dict]:
    """Rows: records audited/s against all-core Ed25519 verifications/s, and RSS per size."""
    sizes = [50_000] if quick else [1_000_000, 5_000_000]
    work = Path(tempfile.mkdtemp(prefix="lacre-bench-audit-"))
    rows: list[dict] = []
    try:
        genesis, heights, build_s = build_chain(work / "data", max(sizes))
        # The build leaves gigabytes of dirty pages; their writeback would
        # otherwise run during the first audit and be counted against it.
        os.sync()
        rows.append({"figure": f"chain built for the audit ({max(sizes):,} records, blocks of {BLOCK_RECORDS:,})",
                     "measured": round(build_s, 1), "limit": None, "target": "reported (s)", "ok": None})
        peaks: dict[int, float] = {}
        pools = ["process", "thread"]  # the default first; threads for comparison at the first size
        for size in sizes:
            for pool in pools if size == sizes[0] else pools[:1]:
                # This host's speed drifts by several percent within minutes:
                # the limit is the mean of one measure before and one after.
                before = verifications_per_s_all_cores()
                result = audit_in_child(work / "data", heights[size], pool)
                after = verifications_per_s_all_cores()
                limit = (before + after) / 2
                rate = result["records"] / result["elapsed_s"]
                rows.append({
                    "figure": f"records audited/s with full verification, {size:,} records ({pool} pool)",
                    "measured": round(rate), "limit": round(limit), "target": f">= {RATIO_MIN:.0%} of the limit",
                    "ok": bool(result["ok"]) and rate >= RATIO_MIN * limit,
                    "detail": f"{rate / limit:.0%} of all-core Ed25519 verifications/s (mean of {before:,.0f} "
                              f"before and {after:,.0f} after); audit ok: {result['ok']}"
                              + (f" ({result['violation']})" if not result["ok"] else ""),
                })
                if pool == "process":
                    peaks[size] = result["anon_peak_mb"]
                    first = peaks[sizes[0]]
                    rows.append({
                        "figure": f"audit memory at {size:,} records, VmRSS / VmHWM / peak RssAnon with workers (MB)",
                        "measured": f"{result['rss_mb']:,.0f} / {result['peak_mb']:,.0f} / {result['anon_peak_mb']:,.0f}",
                        "limit": None if size == sizes[0] else round(first),
                        "target": "flat" if size == sizes[0]
                                  else f"peak RssAnon <= {PEAK_GROWTH_MAX}x the {sizes[0]:,}-record one",
                        "ok": None if size == sizes[0] else result["anon_peak_mb"] <= PEAK_GROWTH_MAX * first,
                        "detail": "VmRSS and VmHWM include LevelDB's mapped table pages (file-backed, bounded by its table cache)",
                    })
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows

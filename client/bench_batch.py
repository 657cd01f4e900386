"""Cohort issuance at scale (issue 6): a 4-authority devnet on this machine, real processes on 127.0.0.1.

Measured in one run, in this order, on one devnet:

- Ed25519 verifications/s with every core verifying (the context: with one
  signature per credential, a 4-node consortium on this machine caps near a
  quarter of it, since every node verifies every record);
- single-credential throughput: committed credential.issue records/s,
  pre-signed, submitted 2,000 a request to all four nodes (the
  `consortium` section's load), for "no lower than before";
- batched throughput: committed credentials/s in pre-signed batches of
  10,000 (one credential.issue_batch record each), submitted a batch a
  request to all four nodes, several in flight;
- a cohort end to end: `lacre issue cohort.jsonl --out receipts.jsonl` in its
  own process (read, hash, sign, submit, commit, every receipt written), on
  a JSON-lines file of Open Badges 3.0 credentials made beforehand;
- receipts verified offline/s, batched (from that cohort's output) against
  single-credential ones (from the node), each checked from scratch and as
  a cohort under one checkpoint (`ReceiptVerifier`).

`bench_batch(quick)` returns rows for `client.bench`'s table and prints nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


from client import devnet
from client.batch_receipts import batch_id_for, sign_batch
from client.credential import sample_open_badge
from client.verify import ReceiptVerifier, verify_receipt
from ledger.crypto import KeyPair
from ledger.genesis import Trust
from ledger.records import IssuerRegistration, SignedRecord

BATCH_RATE_MIN = 50_000
COHORT_S_MAX = 10.0
RECEIPT_RATIO_MIN = 0.8
VERIFY_SAMPLE = 2_000
COLD_SECONDS = 2.0


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


async def _submit_batches(urls: list[str], records: list[SignedRecord], in_flight: int) -> float:
    """Submit each batch in its own request, `in_flight` at a time over all nodes; committed credentials/s."""
    from client.bench import _submit_all

    batches_per_s = await _submit_all(urls, [r.encoded for r in records], 1, in_flight)
    return batches_per_s * sum(r.body.count for r in records) / len(records)


def _signed_batches(issuer: KeyPair, batches: int, size: int) -> list[SignedRecord]:
    issued_at = int(time.time())
    return [
        sign_batch(
            issuer, [hashlib.sha256(b"bench batch %d %d" % (b, i)).digest() for i in range(size)],
            batch_id_for(issuer.public_key, f"bench/{b}"), issued_at,
        )
        for b in range(batches)
    ]


def write_cohort(path: Path, count: int) -> None:
    """`count` Open Badges 3.0 credentials, one a line, each with its own "id"."""
    with path.open("w") as handle:
        for i in range(count):
            document = sample_open_badge("Programa Nacional de Formación", f"did:example:cohort-{i}",
                                         "Ciencia de Datos Aplicada", valid_from="2026-09-01T00:00:00Z")
            handle.write(json.dumps({"id": f"urn:example:cohort:{i}", **document}, ensure_ascii=False) + "\n")


def wait_idle(processes: list, timeout_s: float = 30.0, busy_max: float = 0.05) -> float:
    """Wait until the nodes are idle (at most `busy_max` of a core each over 0.5 s), at most
    `timeout_s`; seconds waited. One figure's background work (LevelDB compacting what
    it wrote) then does not run into the next figure's clock."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu_s(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick

    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        before = [cpu_s(p.pid) for p in processes]
        time.sleep(0.5)
        if all(cpu_s(p.pid) - b <= busy_max * 0.5 for p, b in zip(processes, before)):
            break
    return time.perf_counter() - started


def issue_cohort(root: Path, url: str, source: Path, out: Path, batch_size: int) -> tuple[float, dict]:
    """Run `lacre issue` on `source` in its own process; (wall seconds, its --json summary)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "client.cli", "issue", str(source), "--key", str(root / "issuer.key"), "--node", url,
         "--batch", "--batch-size", str(batch_size), "--out", str(out), "--json", "--no-progress"],
        capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"lacre issue exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed, json.loads(result.stdout)


def receipt_rates(trust: Trust, receipts: list[dict], ids: list[bytes]) -> tuple[float, float]:
    """(receipts/s each checked from scratch, receipts/s checked as a cohort by one ReceiptVerifier)."""
    assert all(verify_receipt(r, trust, cid).ok for r, cid in zip(receipts[:20], ids[:20]))
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < COLD_SECONDS:
        for receipt, cid in zip(receipts[:50], ids[:50]):
            verify_receipt(receipt, trust, cid)
        count += 50
    cold = _rate(count, time.perf_counter() - started)
    verifier = ReceiptVerifier(trust)
    started = time.perf_counter()
    for receipt, cid in zip(receipts, ids):
        if not verifier.verify(receipt, cid).ok:
            raise RuntimeError(f"receipt of {cid.hex()} does not verify")
    return cold, _rate(len(receipts), time.perf_counter() - started)


def bench_batch(quick: bool = False, work: Path | None = None) -> list[dict]:
    from client.bench import _submit_all, ed25519_verifications_per_s_all_cores, sign_issuances

    singles, batches, batch_size, cohort, cohort_batch = (
        (4_000, 4, 2_000, 10_000, 2_000) if quick else (40_000, 30, 10_000, 100_000, 10_000)
    )
    temporary = work is None
    work = Path(tempfile.mkdtemp(prefix="lacre-bench-batch-")) if work is None else work
    rows: list[dict] = []
    try:
        root = work / "devnet"
        devnet.create(root, 4)
        source = work / "cohort.jsonl"
        write_cohort(source, cohort)  # before the nodes run: not part of any figure
        all_cores = ed25519_verifications_per_s_all_cores()
        started = devnet.start(root)
        try:
            urls = [url for _, url, _ in started]
            issuer = KeyPair.load(root / "issuer.key")
            authority = KeyPair.load(root / "authorities" / "inst-0.key")
            registration = SignedRecord.sign(IssuerRegistration(issuer.public_key, "Bench", "MX"), authority)
            asyncio.run(_submit_all(urls[0], [registration.encoded], 1, 1))
            rows.append({"figure": "Ed25519 verifications/s, all cores (PyNaCl)", "measured": all_cores,
                         "limit": "limit", "target": "-", "ok": None})

            records = sign_issuances(issuer, 0, singles)
            single_rate = asyncio.run(_submit_all(urls, records, 2_000, 8))
            cap = all_cores / 4
            rows.append({"figure": f"single-credential throughput: committed records/s, 4 authorities ({singles:,})",
                         "measured": single_rate,
                         "limit": f"verifications/s all cores / 4 = {cap:,.0f}", "target": "reported", "ok": None})

            signed = _signed_batches(issuer, batches, batch_size)
            processes = [process for _, _, process in started]
            wait_idle(processes)
            batch_rate = asyncio.run(_submit_batches(urls, signed, 8))
            rows.append({"figure": f"credentials/s committed in batches of {batch_size:,} ({batches * batch_size:,})",
                         "measured": batch_rate,
                         "limit": f"{batch_rate / single_rate:.1f}x single; {batch_rate / cap:.1f}x the per-signature cap",
                         "target": f">= {BATCH_RATE_MIN:,}", "ok": batch_rate >= BATCH_RATE_MIN})

            out = work / "cohort.receipts.jsonl"
            wait_idle(processes)
            elapsed, summary = issue_cohort(root, urls[0], source, out, cohort_batch)
            lines = out.read_text().splitlines()
            ok = len(lines) == cohort == summary["receipts_written"]
            rows.append({"figure": f"a {cohort:,}-credential cohort end to end (lacre issue: hash, sign, submit, "
                                   "commit, all receipts written)",
                         "measured": f"{elapsed:.2f} s",
                         "limit": f"{_rate(cohort, elapsed):,.0f} credentials/s; {len(summary['batches'])} batches; "
                                  + "busy, summed over batches: " + ", ".join(
                                      f"{step} {seconds:.1f} s" for step, seconds in summary["busy_s"].items()),
                         "target": f"<= {COHORT_S_MAX:.0f} s", "ok": ok and elapsed <= COHORT_S_MAX})

            trust = Trust.load(root / "consortium.json")
            step = max(1, len(lines) // VERIFY_SAMPLE)
            batched = [json.loads(line) for line in lines[::step][:VERIFY_SAMPLE]]
            batched_ids = [bytes.fromhex(r["credential_id"]) for r in batched]
            single_ids = [hashlib.sha256(b"bench %d" % i).digest() for i in range(0, singles, max(1, singles // VERIFY_SAMPLE))]
            singles_receipts = [_get(f"{urls[1]}/v1/receipts/{cid.hex()}") for cid in single_ids]
            batched_cold, batched_cohort = receipt_rates(trust, batched, batched_ids)
            single_cold, single_cohort = receipt_rates(trust, singles_receipts, single_ids)
            for how, batched_rate, single in (("each from scratch", batched_cold, single_cold),
                                              ("as a cohort under one checkpoint", batched_cohort, single_cohort)):
                ratio = batched_rate / single
                rows.append({"figure": f"batched receipts verified offline/s, {how}", "measured": batched_rate,
                             "limit": f"{ratio:.0%} of {single:,.0f} single-credential receipts/s",
                             "target": f">= {RECEIPT_RATIO_MIN:.0%}", "ok": ratio >= RECEIPT_RATIO_MIN})
        finally:
            devnet.stop(started)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    return rows

"""`lacre issue`: hash, sign, submit, wait for commit, write receipts.

Two ways to issue, one command:

- **one record per credential** (`--no-batch`; the default for one file and
  for fewer than BATCH_DEFAULT_MIN credentials), here: records are submitted
  in chunks with `?wait=commit`, so the node's backpressure (503 +
  Retry-After, retried by the SDK) paces the client; a credential already on
  the ledger under the same issuer key is not issued twice, its receipt is
  fetched;
- **batches** (`--batch`; the default from BATCH_DEFAULT_MIN credentials):
  one `credential.issue_batch` record, one signature, per chunk of
  `--batch-size` credentials, resumable. The pipeline is
  `client.batch_issuance`; its input (chunks, ids, the run name) is
  `client.cohort_input`, its output `client.receipt_output`, and its state
  file `client.issue_state`. This module only checks the options and
  prints the summary.

Either way a credential without an "id" is given one derived from the
issuer's key and its content (`client.cohort_input.derived_id`), and the
document with it is written back: the id is part of what is hashed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from client.batch_issuance import BatchOptions, issue_batches
from client.cli import SUBMIT_CHUNK, RECEIPT_FETCH_CONCURRENCY, CliError, _load_key, _write_json
from client.cohort_input import hashing_pool, id_secret, scan_input, with_id
from client.credential import CredentialError, canonical, load_credentials
from client.sdk import ApiError, AsyncClient
from ledger.batch import BATCH_CREDENTIALS_MAX
from ledger.crypto import KeyPair
from ledger.records import CredentialBatch, CredentialIssuance, RecordError, SignedRecord

BATCH_DEFAULT_MIN = 256
"""From this many credentials in a folder or JSON-lines file, batches are the default."""


# -- one record per credential ------------------------------------------------

@dataclass
class Pending:
    source: str
    document: dict
    id_added: bool
    credential_id: bytes
    record: SignedRecord
    receipt: dict | None = None


def prepare(source: Path, key: KeyPair, expires_at: int, now_s: int) -> list[Pending]:
    items: list[Pending] = []
    seen: dict[bytes, str] = {}
    secret = id_secret(key)
    try:
        for label, document in load_credentials(source):
            document, added = with_id(document, secret)
            cid = hashlib.sha256(canonical(document)).digest()
            if cid in seen:
                raise CliError(f"{label}: same credential as {seen[cid]}")
            seen[cid] = label
            record = SignedRecord.sign(CredentialIssuance(cid, now_s, expires_at), key)
            items.append(Pending(label, document, added, cid, record))
    except (CredentialError, RecordError) as error:
        raise CliError(str(error)) from None
    if not items:
        raise CliError(f"{source}: no credentials found")
    return items


async def submit_all(url: str, items: list[Pending], key: KeyPair, progress: bool) -> None:
    bar = tqdm(total=len(items), unit="cred", disable=not progress, file=sys.stderr, desc="issuing")
    async with AsyncClient(url) as node:
        for start in range(0, len(items), SUBMIT_CHUNK):
            chunk = items[start : start + SUBMIT_CHUNK]
            await _submit_chunk(node, chunk, key)
            bar.update(len(chunk))
        bar.close()
        bar = tqdm(total=len(items), unit="receipt", disable=not progress, file=sys.stderr, desc="receipts")
        limit = asyncio.Semaphore(RECEIPT_FETCH_CONCURRENCY)

        async def fetch(item: Pending) -> None:
            async with limit:
                item.receipt = await node.receipt(item.credential_id)
                bar.update(1)

        await asyncio.gather(*(fetch(item) for item in items))
        bar.close()


async def _submit_chunk(node: AsyncClient, chunk: list[Pending], key: KeyPair) -> None:
    while chunk:
        try:
            answer = await node.submit([item.record for item in chunk], wait=True)
        except ApiError as error:
            refused = error.body.get("refused") if error.status == 409 else None
            if not refused or any(r["error"] != "credential-unique" for r in refused):
                raise
            # Already issued: ours (a resumed run) is fine, anyone else's is not.
            done = set()
            for refusal in refused:
                item = chunk[refusal["index"]]
                existing = await node.credential(item.credential_id)
                if existing.get("issuer", {}).get("key") != key.public_key.hex():
                    raise CliError(f"{item.source}: credential {item.credential_id.hex()} was issued by another issuer", 1)
                done.add(refusal["index"])
            chunk = [item for i, item in enumerate(chunk) if i not in done]
            continue
        pending = [r for r in answer["records"] if r["status"] != "committed"]
        if pending:
            raise CliError(f"{len(pending)} records not committed in time; run again to resume", 1)
        return


def _issue_singly(args: argparse.Namespace, key: KeyPair, source: Path, single: bool) -> int:
    items = prepare(source, key, args.expires, int(time.time()))
    progress = not args.no_progress and not args.json and len(items) > 1
    try:
        asyncio.run(submit_all(args.node, items, key, progress))
    except ApiError as error:
        raise CliError(f"node refused: {error}", 1) from None
    results = []
    if single:
        item = items[0]
        receipt_path = Path(args.out) if args.out else source.with_name(source.stem + ".receipt.json")
        _write_json(receipt_path, item.receipt)
        result = {"source": item.source, "credential_id": item.credential_id.hex(), "receipt": str(receipt_path)}
        if item.id_added:
            # The id is part of what was hashed: the holder needs this exact document.
            issued_path = source.with_name(source.stem + ".issued.json")
            _write_json(issued_path, item.document)
            result["credential"] = str(issued_path)
        results.append(result)
    else:
        out_dir = Path(args.out) if args.out else source.with_name(source.stem + ".receipts")
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in items:
            name = item.credential_id.hex()
            _write_json(out_dir / f"{name}.receipt.json", item.receipt)
            _write_json(out_dir / f"{name}.credential.json", item.document)
            results.append({
                "source": item.source, "credential_id": name,
                "receipt": str(out_dir / f"{name}.receipt.json"),
                "credential": str(out_dir / f"{name}.credential.json"),
            })
    if args.json:
        print(json.dumps({"issued": results}, indent=2))
    else:
        for result in results[:20]:
            print(f"issued {result['credential_id']}  {result['source']} -> {result['receipt']}")
        if len(results) > 20:
            print(f"... and {len(results) - 20} more")
        print(f"{len(results)} credential(s) issued and committed")
    return 0



# -- batches ------------------------------------------------------------------

def _issue_in_batches(args: argparse.Namespace, key: KeyPair, source: Path, scan: tuple[bytes, int]) -> int:
    if not 1 <= args.batch_size <= BATCH_CREDENTIALS_MAX:
        raise CliError(f"--batch-size must be 1..{BATCH_CREDENTIALS_MAX}")
    if args.in_flight < 1 or args.workers < 1:
        raise CliError("--in-flight and --workers must be at least 1")
    options = BatchOptions(
        args.batch_size, args.in_flight, args.workers, args.expires, args.achievement_type or "",
    )
    try:  # the records' own checks, before anything is read
        CredentialBatch(b"\0" * 32, b"\0" * 32, 1, int(time.time()), options.expires_at, options.achievement_type)
    except RecordError as error:
        raise CliError(str(error)) from None
    out = Path(args.out) if args.out else source.with_name(source.stem + ".receipts")
    progress = not args.no_progress and not args.json
    pool = hashing_pool(options.workers, scan[1])
    try:
        summary = asyncio.run(issue_batches(args.node, key, source, out, options, scan, progress, pool))
    except ApiError as error:
        raise CliError(f"node refused: {error}; run again to resume", 1) from None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for batch in summary["batches"][:20]:
            print(f"batch {batch['batch_id']}  {batch['count']:,} credentials  {batch['outcome']}, "
                  f"leaf {batch['leaf_index']} at height {batch['height']}")
        if len(summary["batches"]) > 20:
            print(f"... and {len(summary['batches']) - 20} more batches")
        if summary["already_issued"]:
            print(f"{summary['already_issued']:,} credential(s) were already issued; their receipts come from the node")
        print(f"{summary['credentials']:,} credential(s) issued and committed in {summary['elapsed_s']:.1f} s; "
              f"receipts in {summary['receipts']}")
    return 0


def issue_credentials(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    source = Path(args.credentials)
    if not source.exists():
        raise CliError(f"{source}: no such file or folder")
    single = source.is_file() and source.suffix.lower() != ".jsonl"
    batch = getattr(args, "batch", None)
    if batch and single:
        raise CliError("--batch takes a folder or a .jsonl file")
    scan = None if single else scan_input(source)
    if batch is None:
        batch = scan is not None and scan[1] >= BATCH_DEFAULT_MIN
    if batch:
        return _issue_in_batches(args, key, source, scan)
    return _issue_singly(args, key, source, single)

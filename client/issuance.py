"""`lacre issue`: hash, sign, submit, wait for commit, write receipts.

Credentials are submitted in chunks with `?wait=commit`, so the node's
backpressure (503 + Retry-After, retried by the SDK) paces the client. A
credential already on the ledger under the same issuer key (a re-run after an
interruption) is not issued twice: its receipt is fetched instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from client.cli import SUBMIT_CHUNK, RECEIPT_FETCH_CONCURRENCY, CliError, _load_key, _write_json
from client.credential import CredentialError, credential_id, ensure_id, load_credentials
from client.sdk import ApiError, AsyncClient
from ledger.crypto import KeyPair
from ledger.records import CredentialIssuance, RecordError, SignedRecord


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
    try:
        for label, document in load_credentials(source):
            document, added = ensure_id(document)
            cid = credential_id(document)
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


def issue_credentials(args: argparse.Namespace) -> int:
    key = _load_key(args.key)
    source = Path(args.credentials)
    single = source.is_file() and source.suffix.lower() != ".jsonl"
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

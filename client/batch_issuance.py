"""Batch issuance (`lacre issue --batch`): one `credential.issue_batch` record, one signature,
per chunk of `--batch-size` credentials.

Theory of operation::

    input --scan: count, SHA-256--> run name                                  (client.cohort_input)
          --read chunk k (--batch-size)--> hash (worker processes) --> ids
          --sign as batch batch_id_for(issuer, "<run>/<k>")--> POST /v1/records?wait=commit
                (at most --in-flight chunks at a time; 503: wait, retry)
          --GET /v1/batches/{id}--> one receipt per id (client.batch_receipts)
          --> --out DIR: DIR/<id>.receipt.json  |  --out FILE.jsonl: a receipt a line
                                                                          (client.receipt_output)

Resuming. The run keeps a state file beside its output (`client.issue_state`).
On a re-run, a chunk whose receipts are written is skipped (the output is
first brought back to the position the state records). Any other chunk is
looked up (`GET /v1/batches/{id}`): if its batch is on the ledger, only its
receipts are written; if not, it is signed (at the state's time, so the same
bytes) and submitted. The node answers an identical record "pending" or
"committed"; `batch-unique` means a batch of that name is already committed
or pending, and its signed root settles whether it is this chunk;
`credential-unique` means some ids were issued earlier (say, by a run of an
edited input): those this issuer issued get their receipts from the node,
and the rest are signed as a batch named after them ("<run>/<k>/<SHA-256 of
their ids>"). Nothing is issued twice: the ledger refuses it, and the names
lead a re-run to the same decisions.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from client.batch_receipts import batch_id_for, sign_batch
from client.cli import RECEIPT_FETCH_CONCURRENCY, CliError
from client.cohort_input import hash_credentials, id_secret, read_chunks, run_name, scan_input
from client.issue_state import IssueState, state_path
from client.receipt_output import ReceiptFolder, ReceiptLines, ReceiptSink, receipt_texts
from client.sdk import ApiError, AsyncClient
from ledger.batch import BatchTree, split_ids
from ledger.crypto import KeyPair
from ledger.records import CredentialBatch, SignedRecord

BATCH_SIZE_DEFAULT = 10_000
IN_FLIGHT_DEFAULT = 4
COMMIT_TIMEOUT_S = 600.0
"""How long one chunk may wait for its commit (across 503s and resubmissions) before the run stops."""
RETRY_S = 1.0
UNREACHABLE_RETRIES = 3
SPLITS_MAX = 8
"""Re-signings of one chunk's remaining ids after `credential-unique` refusals, before giving up."""


@dataclass(frozen=True, slots=True)
class BatchOptions:
    batch_size: int = BATCH_SIZE_DEFAULT
    in_flight: int = IN_FLIGHT_DEFAULT
    workers: int = 1
    expires_at: int = 0
    achievement_type: str = ""
    commit_timeout_s: float = COMMIT_TIMEOUT_S


@dataclass
class ChunkResult:
    number: int
    count: int
    batches: list[dict] = field(default_factory=list)
    already_issued: int = 0
    receipts: int = 0
    skipped: bool = False


class _Split(Exception):
    """Some ids of a batch were issued before: `taken` ids, none pending."""

    def __init__(self, taken: set[bytes]) -> None:
        super().__init__(f"{len(taken)} ids already issued")
        self.taken = taken


class BatchIssuance:
    """One batch-mode run: chunks hashed, signed, submitted and written, a few at a time."""

    def __init__(
        self, node: AsyncClient, key: KeyPair, source: Path, sink: ReceiptSink,
        state: IssueState, options: BatchOptions, count: int, progress: bool,
        pool: concurrent.futures.Executor | None = None,
    ) -> None:
        self.node = node
        self.key = key
        self.source = source
        self.sink = sink
        self.state = state
        self.options = options
        self.count = count
        self.pool = pool
        self.secret = id_secret(key)
        self.seen: set[bytes] = set()
        self.results: list[ChunkResult] = []
        self.busy_s = {"hashing": 0.0, "committing": 0.0, "writing": 0.0}
        """Seconds spent per step, summed over chunks (they overlap: not a breakdown of the wall time)."""
        self.bar = tqdm(total=count, unit="cred", disable=not progress, file=sys.stderr, desc="issuing")

    async def run(self) -> list[ChunkResult]:
        if not self.sink.restore(self.state.position):
            self.state.written.clear()
        self.state.position = self.sink.position()
        limit = asyncio.Semaphore(self.options.in_flight)
        try:
            async with asyncio.TaskGroup() as group:
                for number, items in enumerate(read_chunks(self.source, self.options.batch_size)):
                    if number in self.state.written:
                        self.results.append(ChunkResult(number, len(items), skipped=True))
                        self.bar.update(len(items))
                        continue
                    await limit.acquire()
                    group.create_task(self._chunk(number, items, limit))
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            self.bar.close()
        self.results.sort(key=lambda result: result.number)
        return self.results

    async def _chunk(self, number: int, items: list[tuple[str, bytes]], limit: asyncio.Semaphore) -> None:
        try:
            loop = asyncio.get_running_loop()
            began = time.perf_counter()
            joined, added = await loop.run_in_executor(self.pool, hash_credentials, items, self.secret)
            self.busy_s["hashing"] += time.perf_counter() - began
            ids = split_ids(joined)
            for index, credential_id in enumerate(ids):
                if credential_id in self.seen:
                    raise CliError(f"{items[index][0]}: the same credential as an earlier one ({credential_id.hex()})")
                self.seen.add(credential_id)
            documents = [(ids[index], data) for index, data in added]
            del items, joined, added
            result = ChunkResult(number, len(ids))
            await self._issue(f"{self.state.run}/{number}", ids, result, documents)
            # Receipts written and position taken with no await between: the
            # state never counts another chunk's half-written receipts.
            self.state.written.add(number)
            self.state.position = self.sink.position()
            self.state.save()
            self.results.append(result)
            self.bar.update(len(ids))
        finally:
            limit.release()

    async def _issue(self, base: str, ids: list[bytes], result: ChunkResult, documents: list) -> None:
        """Get `ids` on the ledger as batch `base` (or, if some were issued before, the rest
        as a batch named after them) and write every receipt, all in one go at the end."""
        texts: list[tuple[bytes, str]] = []
        name = base
        for _ in range(SPLITS_MAX):
            tree = BatchTree(ids)
            began = time.perf_counter()
            try:
                document, found = await self._batch(name, ids, tree)
            except _Split as split:
                taken = [cid for cid in ids if cid in split.taken]
                texts += await self._node_receipts(taken)
                result.already_issued += len(taken)
                ids = [cid for cid in ids if cid not in split.taken]
                if not ids:
                    result.receipts += self.sink.write(iter(texts), documents)
                    return
                name = f"{base}/{hashlib.sha256(b''.join(ids)).hexdigest()}"
                continue
            finally:
                self.busy_s["committing"] += time.perf_counter() - began
            began = time.perf_counter()
            ours = zip(ids, receipt_texts(document, ids, tree, self.sink.compact))
            result.receipts += self.sink.write(itertools.chain(texts, ours), documents)
            self.busy_s["writing"] += time.perf_counter() - began
            result.batches.append({
                "name": name, "batch_id": document["batch_id"], "count": len(ids),
                "leaf_index": document["leaf_index"], "height": document["height"],
                "outcome": "found on the ledger" if found else "committed",
            })
            return
        raise CliError(f"batch {base}: its credentials kept being issued elsewhere; run again to resume", 1)

    async def _batch(self, name: str, ids: list[bytes], tree: BatchTree) -> tuple[dict, bool]:
        """The ledger's document of batch `name` over `ids`, signing and submitting it if need be;
        and whether it was there already. Raises _Split when some ids were issued before."""
        batch_id = batch_id_for(self.key.public_key, name)
        known = self.state.signed.get(name)
        if known is not None and known["root"] != tree.root.hex():
            raise CliError(f"batch {name} was signed over other credentials; the input changed under its state file", 1)
        document = await self._document(batch_id)
        if document is not None:
            self._check(document, name, batch_id, tree, len(ids))
            return document, True
        options = self.options
        record = sign_batch(self.key, ids, batch_id, self.state.issued_at, options.expires_at, options.achievement_type)
        if known is None:
            self.state.signed[name] = {"batch_id": batch_id.hex(), "root": tree.root.hex(), "count": len(ids)}
            self.state.save()
        deadline = time.monotonic() + options.commit_timeout_s
        unreachable = 0
        while True:
            answer = None
            try:
                answer = await self.node.submit([record], wait=True)
            except ApiError as error:
                rule = error.error if error.status == 409 else ""
                if rule == "credential-unique":
                    taken = await self._taken(ids)
                    if taken:
                        raise _Split(taken) from None
                    # Pending in another batch, not committed yet: wait for it.
                elif rule == "batch-unique":
                    # This name is committed or pending, signed at another
                    # time: once committed, its root says whether it is ours.
                    if (document := await self._document(batch_id)) is not None:
                        self._check(document, name, batch_id, tree, len(ids))
                        return document, True
                elif error.status == 0 and unreachable < UNREACHABLE_RETRIES:
                    unreachable += 1  # a timeout or a dropped connection: resubmitting is harmless
                elif error.status != 503:  # 503: still overloaded after the SDK's own retries
                    raise
            if answer is not None and answer["records"][0]["status"] == "committed":
                break
            if time.monotonic() > deadline:
                raise CliError(f"batch {name} not committed in {options.commit_timeout_s:.0f} s; run again to resume", 1)
            if answer is None:
                await asyncio.sleep(RETRY_S)
            # else still pending after the node's own wait: submit again (idempotent) and wait more
        while (document := await self._document(batch_id)) is None:
            if time.monotonic() > deadline:
                raise CliError(f"batch {name} committed but not served; run again to resume", 1)
            await asyncio.sleep(0.1)
        self._check(document, name, batch_id, tree, len(ids))
        return document, False

    async def _document(self, batch_id: bytes) -> dict | None:
        """The ledger's document of batch `batch_id`; None while it is not committed."""
        try:
            return await self.node.batch(batch_id)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def _check(self, document: dict, name: str, batch_id: bytes, tree: BatchTree, count: int) -> None:
        """The ledger's batch under `name` must be this issuer's signature over exactly `tree`."""
        try:
            record = SignedRecord.decode(base64.b64decode(document["record"], validate=True))
        except (KeyError, TypeError, ValueError) as error:
            raise CliError(f"batch {name}: the node's document is malformed ({error})", 1) from None
        body = record.body
        if (
            type(body) is not CredentialBatch or record.signer != self.key.public_key or body.batch_id != batch_id
            or body.root != tree.root or body.count != count or document.get("batch_id") != batch_id.hex()
        ):
            raise CliError(f"batch {name} ({batch_id.hex()}) on the ledger holds other credentials than this run's", 1)

    async def _taken(self, ids: Sequence[bytes]) -> set[bytes]:
        """The ids already on the ledger; CliError if any was issued by another issuer."""
        limit = asyncio.Semaphore(RECEIPT_FETCH_CONCURRENCY)
        mine = self.key.public_key.hex()

        async def status(credential_id: bytes) -> dict:
            async with limit:
                return await self.node.credential(credential_id)

        answers = await asyncio.gather(*(status(cid) for cid in ids))
        taken = set()
        for credential_id, answer in zip(ids, answers):
            if answer.get("status", "unknown") == "unknown":
                continue
            if answer.get("issuer", {}).get("key") != mine:
                raise CliError(f"credential {credential_id.hex()} was issued by another issuer", 1)
            taken.add(credential_id)
        return taken

    async def _node_receipts(self, ids: list[bytes]) -> list[tuple[bytes, str]]:
        """Receipts from the node, as text, for ids issued before this run's batch."""
        limit = asyncio.Semaphore(RECEIPT_FETCH_CONCURRENCY)

        async def fetch(credential_id: bytes) -> dict:
            async with limit:
                return await self.node.receipt(credential_id)

        receipts = await asyncio.gather(*(fetch(cid) for cid in ids))
        if self.sink.compact:
            return [(cid, json.dumps(r, separators=(",", ":"))) for cid, r in zip(ids, receipts)]
        return [(cid, json.dumps(r, indent=2) + "\n") for cid, r in zip(ids, receipts)]


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group: a CliError or ApiError first."""
    leaves = []
    stack = [group]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    return next((e for e in leaves if isinstance(e, (CliError, ApiError))), leaves[0])


async def issue_batches(
    url: str, key: KeyPair, source: Path, out: Path, options: BatchOptions,
    input_scan: tuple[bytes, int] | None = None, progress: bool = False,
    pool: concurrent.futures.Executor | None = None, now_s: int | None = None,
) -> dict:
    """Issue every credential of `source` (a folder or a JSON-lines file) in batches; returns the summary.

    `out` ending in .jsonl gets a receipt a line, else it is a folder. `pool`
    hashes the credentials (None: a thread of this process).
    """
    started = time.perf_counter()
    digest, count = input_scan or scan_input(source)
    if count == 0:
        raise CliError(f"{source}: no credentials found")
    run = run_name(digest, options.batch_size, options.expires_at, options.achievement_type)
    state, resumed = IssueState.open(state_path(out), run, key.public_key.hex(), now_s or int(time.time()))
    sink = ReceiptLines(out) if out.suffix.lower() == ".jsonl" else ReceiptFolder(out)
    try:
        async with AsyncClient(url) as node:
            issuance = BatchIssuance(node, key, source, sink, state, options, count, progress, pool)
            results = await issuance.run()
    finally:
        sink.close()
    state.remove()
    batches = [batch | {"chunk": r.number} for r in results for batch in r.batches]
    return {
        "mode": "batch",
        "credentials": count,
        "run": run,
        "resumed": resumed,
        "chunks": len(results),
        "chunks_already_written": sum(r.skipped for r in results),
        "batches": batches,
        "batches_submitted": sum(b["outcome"] == "committed" for b in batches),
        "already_issued": sum(r.already_issued for r in results),
        "receipts_written": sum(r.receipts for r in results),
        **sink.describe(),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "busy_s": {step: round(seconds, 3) for step, seconds in issuance.busy_s.items()},
    }


"""`lacre issue`: hash, sign, submit, wait for commit, write receipts.

Two ways to issue, one command:

- **one record per credential** (`--no-batch`; the default for one file and
  for fewer than BATCH_DEFAULT_MIN credentials): records are submitted in
  chunks with `?wait=commit`, so the node's backpressure (503 + Retry-After,
  retried by the SDK) paces the client; a credential already on the ledger
  under the same issuer key is not issued twice, its receipt is fetched;
- **batches** (`--batch`; the default from BATCH_DEFAULT_MIN credentials):
  one `credential.issue_batch` record, one signature, per chunk of
  `--batch-size` credentials.

Batch mode, theory of operation::

    input --scan: count, SHA-256--> run name
          --read chunk k (--batch-size)--> hash (worker processes) --> ids
          --sign as batch batch_id_for(issuer, "<run>/<k>")--> POST /v1/records?wait=commit
                (at most --in-flight chunks at a time; 503: wait, retry)
          --GET /v1/batches/{id}--> one receipt per id (client.batch_receipts)
          --> --out DIR: DIR/<id>.receipt.json  |  --out FILE.jsonl: a receipt a line

Names. The run name is a SHA-256 of the input's bytes and of the options
that shape the records (batch size, expiry, achievement type). A credential
without an "id" gets one derived from the issuer's key and its content
(`derived_id`), not a random one. So the same input, run again, makes the
same chunks of the same ids under the same batch names: a name is never
signed over other ids.

Resuming. A state file beside the output (`<out>.issue-state.json`) holds
the run name, the signing time, each name signed with its root, and the
chunks whose receipts are written; it is removed once the run completes.
On a re-run, a chunk whose receipts are written is skipped (a JSON-lines
output is first cut back to the length the state records). Any other chunk
is looked up (`GET /v1/batches/{id}`): if its batch is on the ledger, only
its receipts are written; if not, it is signed (at the state's time, so the
same bytes) and submitted. The node answers an identical record "pending" or
"committed"; `batch-unique` means a batch of that name is already committed or
pending, and its signed root settles whether it is this chunk;
`credential-unique` means some ids were issued earlier (say, by a run of an
edited input): those this issuer issued get their receipts from the node,
and the rest are signed as a batch named after them ("<run>/<k>/<SHA-256 of
their ids>"). Nothing is issued twice: the ledger refuses it, and the names
lead a re-run to the same decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import itertools
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from client.batch_receipts import batch_id_for, batch_receipts, sign_batch
from client.cli import SUBMIT_CHUNK, RECEIPT_FETCH_CONCURRENCY, CliError, _load_key, _write_json
from client.credential import CredentialError, canonical_bytes, ensure_id, load_credentials, parse_credential
from client.sdk import ApiError, AsyncClient
from ledger.batch import BATCH_CREDENTIALS_MAX, BatchTree, split_ids
from ledger.crypto import KeyPair
from ledger.records import CredentialBatch, CredentialIssuance, RecordError, SignedRecord

BATCH_DEFAULT_MIN = 256
"""From this many credentials in a folder or JSON-lines file, batches are the default."""
BATCH_SIZE_DEFAULT = 10_000
IN_FLIGHT_DEFAULT = 4
COMMIT_TIMEOUT_S = 600.0
"""How long one chunk may wait for its commit (across 503s and resubmissions) before the run stops."""
RETRY_S = 1.0
UNREACHABLE_RETRIES = 3
STATE_VERSION = 1
SPLITS_MAX = 8
"""Re-signings of one chunk's remaining ids after `credential-unique` refusals, before giving up."""
RUN_TAG = b"lacre/issue-run\x00"
ID_KEY_TAG = b"lacre/credential-id-key\x00"
INLINE_HASHING_MAX = 2_000
"""Up to this many credentials, hashing runs on a thread rather than worker processes."""


# -- credential ids --------------------------------------------------------

def id_secret(key: KeyPair) -> bytes:
    """The issuer's secret for `derived_id`: a one-way function of its key seed."""
    return hmac.new(key.seed, ID_KEY_TAG, hashlib.sha256).digest()


def derived_id(document: dict, secret: bytes) -> str:
    """A "urn:uuid:" id for a credential that has none: an HMAC of its canonical form, as a UUIDv8.

    Deterministic, so a re-run issues the same id; keyed, so nobody without
    the issuer's key can confirm a guessed credential from its ledger id.
    """
    digest = bytearray(hmac.new(secret, canonical_bytes(document), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (RFC 9562: custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC variant
    return f"urn:uuid:{uuid.UUID(bytes=bytes(digest))}"


def with_id(document: dict, secret: bytes) -> tuple[dict, bool]:
    """`client.credential.ensure_id`, with a `derived_id` instead of a random one."""
    if "id" in document:
        return ensure_id(document)
    fresh = derived_id(document, secret)
    if "@context" in document:
        result = {"@context": document["@context"], "id": fresh}
        result.update((k, v) for k, v in document.items() if k != "@context")
    else:
        result = {"id": fresh, **document}
    return result, True


_compact_sorted = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False, check_circular=False
).encode


def _jcs_is_plain_json(value: object) -> bool:
    """True when RFC 8785 of `value` is compact, key-sorted JSON: no floats, no key beyond the BMP.

    There, JCS's UTF-16 key order is code-point order, JCS and the json
    module escape the same characters the same way, and integers (within
    +-2^53, as `parse_credential` ensures) are written alike.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if not key.isascii() and max(key) > "\uffff":
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float:
            return False
    return True


def canonical(document: dict) -> bytes:
    """`client.credential.canonical_bytes` of a credential as `parse_credential` returns it
    (I-JSON: integers within +-2^53, no lone surrogates), about 4x faster on the usual document."""
    if _jcs_is_plain_json(document):
        return _compact_sorted(document).encode()
    return canonical_bytes(document)


def hash_credentials(items: Sequence[tuple[str, bytes]], secret: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Parse and hash raw credentials (label, bytes): (their ids, concatenated;
    [(index, canonical bytes)] of those given an id here, which the holder needs).

    Raises CliError naming the label of the first credential that cannot be read.
    Runs in worker processes: arguments and result are plain picklable values.
    """
    ids = []
    added = []
    for index, (label, data) in enumerate(items):
        try:
            document, fresh = with_id(parse_credential(data), secret)
            encoded = canonical(document)
        except CredentialError as error:
            raise CliError(f"{label}: {error.problem}") from None
        ids.append(hashlib.sha256(encoded).digest())
        if fresh:
            added.append((index, encoded))
    return b"".join(ids), added


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


# -- batches: the input ---------------------------------------------------------

def _folder_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.glob("*.json") if p.is_file()), key=lambda p: p.name)
    if not files:
        raise CliError(f"{folder}: folder holds no *.json credentials")
    return files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CliError(f"{path}: cannot read: {error.strerror or error}") from None


def scan_input(source: Path) -> tuple[bytes, int]:
    """(SHA-256 of the input's credentials as bytes, how many there are): a folder's
    `*.json` files by name, or a JSON-lines file's non-blank lines."""
    digest = hashlib.sha256()
    if source.is_dir():
        files = _folder_files(source)
        for path in files:
            data = _read(path)
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.digest(), len(files)
    count = 0
    try:
        with source.open("rb") as handle:
            for line in handle:
                digest.update(line)
                count += line.strip(b" \t\r\n") != b""
    except OSError as error:
        raise CliError(f"{source}: cannot read: {error.strerror or error}") from None
    return digest.digest(), count


def read_chunks(source: Path, size: int) -> Iterator[list[tuple[str, bytes]]]:
    """The input's credentials as (label, raw bytes), `size` at a time, in order."""
    if source.is_dir():
        files = _folder_files(source)
        for start in range(0, len(files), size):
            yield [(str(path), _read(path)) for path in files[start : start + size]]
        return
    chunk: list[tuple[str, bytes]] = []
    with source.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip(b" \t\r\n") == b"":
                continue
            chunk.append((f"{source}:{number}", line))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def run_name(input_digest: bytes, batch_size: int, expires_at: int, achievement_type: str) -> str:
    """The run's name: what its batch names start with (hex)."""
    options = json.dumps([batch_size, expires_at, achievement_type]).encode()
    return hashlib.sha256(RUN_TAG + input_digest + options).hexdigest()


# -- batches: the output ----------------------------------------------------------

def receipt_texts(document: dict, ids: Sequence[bytes], tree: BatchTree, compact: bool) -> Iterator[str]:
    """The receipts `client.batch_receipts` makes, as JSON text, one per id (one line each when `compact`).

    What all members share is encoded once and each receipt adds its id
    and batch path, several times faster than encoding each
    receipt whole. The first text is checked against `batch_receipts`'
    first receipt: if they ever differ, every receipt is encoded whole.
    """
    receipts = batch_receipts(document, ids, tree)
    first = next(receipts)
    shared = {k: v for k, v in first.items() if k not in ("credential_id", "batch")}
    if compact:
        shared_text = json.dumps(shared, separators=(",", ":"))[1:]
        head, quote, comma = '{"credential_id":"%s","batch":{"index":%d,"path":[', '"', '","'
        tail = "]},"
    else:
        shared_text = json.dumps(shared, indent=2)[1:] + "\n"
        head, quote, comma = '{\n  "credential_id": "%s",\n  "batch": {\n    "index": %d,\n    "path": [\n      ', '"', '",\n      "'
        tail = "\n    ]\n  },"

    def text(index: int, credential_id: bytes) -> str:
        path = [node.hex() for node in tree.path(index)]
        listed = quote + comma.join(path) + quote if path else ""
        if not path and not compact:
            return (head % (credential_id.hex(), index)).rstrip() + "]\n  }," + shared_text
        return head % (credential_id.hex(), index) + listed + tail + shared_text

    if json.loads(text(0, ids[0])) != first:  # batch_receipts changed shape: encode each receipt whole
        yield json.dumps(first, separators=(",", ":")) if compact else json.dumps(first, indent=2) + "\n"
        for receipt in receipts:
            yield json.dumps(receipt, separators=(",", ":")) if compact else json.dumps(receipt, indent=2) + "\n"
        return
    for index, credential_id in enumerate(ids):
        yield text(index, credential_id)


class ReceiptFolder:
    """--out DIR: DIR/<id>.receipt.json, and DIR/<id>.credential.json for a credential given its id here.

    Files are written in place, not renamed into place: a chunk counts as
    written only once the state file says so, and is rewritten otherwise.
    `position` is how many receipts the written chunks hold; `restore` finds
    fewer receipt files than that when the folder was emptied since.
    """

    compact = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.receipts = 0
        path.mkdir(parents=True, exist_ok=True)

    def restore(self, position: dict | None) -> bool:
        self.receipts = (position or {}).get("receipt_files", 0)
        if self.receipts and sum(1 for _ in self.path.glob("*.receipt.json")) < self.receipts:
            self.receipts = 0
            return False
        return True

    def write(self, receipts: Iterator[tuple[bytes, str]], documents: Sequence[tuple[bytes, bytes]]) -> int:
        count = 0
        for credential_id, text in receipts:
            (self.path / f"{credential_id.hex()}.receipt.json").write_text(text)
            count += 1
        for credential_id, data in documents:
            (self.path / f"{credential_id.hex()}.credential.json").write_bytes(data + b"\n")
        self.receipts += count
        return count

    def position(self) -> dict:
        return {"receipt_files": self.receipts}

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"receipts": str(self.path)}


class ReceiptLines:
    """--out FILE.jsonl: one receipt a line; credentials given their id here go to FILE.credentials.jsonl.

    Appended a chunk at a time; `position` (the byte lengths after the last
    whole chunk) goes to the state file, and `restore` cuts both files back
    to it, so a chunk half written when a run stopped is not there twice.
    """

    compact = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.documents_path = path.with_name(path.name.removesuffix(".jsonl") + ".credentials.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._receipts = open(path, "ab")
        self._documents = None

    def restore(self, position: dict | None) -> bool:
        """Cut the files back to `position`; False (and both emptied) if they are shorter than it."""
        receipts, documents = (position or {}).get("receipts_bytes", 0), (position or {}).get("documents_bytes", 0)
        size = self._receipts.seek(0, os.SEEK_END)
        documents_size = self.documents_path.stat().st_size if self.documents_path.exists() else 0
        whole = size >= receipts and documents_size >= documents
        if not whole:
            receipts = documents = 0
        self._receipts.truncate(receipts)
        self._receipts.seek(receipts)
        if documents_size or documents:
            with open(self.documents_path, "ab") as handle:
                handle.truncate(documents)
        return whole

    def write(self, receipts: Iterator[tuple[bytes, str]], documents: Sequence[tuple[bytes, bytes]]) -> int:
        lines = [text for _, text in receipts]
        if lines:
            self._receipts.write(("\n".join(lines) + "\n").encode())
            self._receipts.flush()
        if documents:
            if self._documents is None:
                self._documents = open(self.documents_path, "ab")
            self._documents.write(b"".join(data + b"\n" for _, data in documents))
            self._documents.flush()
        return len(lines)

    def position(self) -> dict:
        documents = self._documents.tell() if self._documents is not None else (
            self.documents_path.stat().st_size if self.documents_path.exists() else 0
        )
        return {"receipts_bytes": self._receipts.tell(), "documents_bytes": documents}

    def close(self) -> None:
        self._receipts.close()
        if self._documents is not None:
            self._documents.close()

    def describe(self) -> dict:
        described = {"receipts": str(self.path)}
        if self.documents_path.exists() and self.documents_path.stat().st_size:
            described["credential_documents"] = str(self.documents_path)
        return described


# -- batches: the state file -------------------------------------------------------

@dataclass
class IssueState:
    """What a run has done so far, kept beside its output until the run completes."""

    path: Path
    run: str
    issuer: str
    issued_at: int
    signed: dict[str, dict] = field(default_factory=dict)
    """Batch name -> {"batch_id", "root", "count"}: what was signed under each name."""
    written: set[int] = field(default_factory=set)
    position: dict | None = None

    @classmethod
    def open(cls, path: Path, run: str, issuer: str, now_s: int) -> tuple["IssueState", bool]:
        """The state of this run from `path`, or a fresh one; and whether it was resumed."""
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path, run, issuer, now_s), False
        except (OSError, ValueError) as error:
            raise CliError(f"{path}: unreadable state file ({error}); remove it to start over") from None
        if document.get("version") != STATE_VERSION or document.get("run") != run or document.get("issuer") != issuer:
            print(f"lacre: {path} was left by a run of other input, options or key: starting over "
                  "(nothing already on the ledger is issued again)", file=sys.stderr)
            return cls(path, run, issuer, now_s), False
        return cls(
            path, run, issuer, document["issued_at"], document.get("signed", {}),
            set(document.get("written", [])), document.get("position"),
        ), True

    def save(self) -> None:
        _write_json(self.path, {
            "version": STATE_VERSION, "run": self.run, "issuer": self.issuer, "issued_at": self.issued_at,
            "signed": self.signed, "written": sorted(self.written), "position": self.position,
        })

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# -- batches: issuing ---------------------------------------------------------------

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


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle; and a worker outlives no killed parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


class BatchIssuance:
    """One batch-mode run: chunks hashed, signed, submitted and written, a few at a time."""

    def __init__(
        self, node: AsyncClient, key: KeyPair, source: Path, sink: ReceiptFolder | ReceiptLines,
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
        # TODO: AsyncClient.batch() once client/sdk.py has it.
        try:
            return await self.node._request("GET", f"/v1/batches/{batch_id.hex()}")
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


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".issue-state.json")


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
    state, resumed = IssueState.open(_state_path(out), run, key.public_key.hex(), now_s or int(time.time()))
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


def _pool(workers: int, count: int) -> concurrent.futures.Executor | None:
    if workers <= 1 or count <= INLINE_HASHING_MAX:
        return None
    import multiprocessing

    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
    )
    # Fork every worker now, before any thread (the event loop's resolver, the
    # progress bar's monitor) exists in this process.
    pool.submit(int).result()
    return pool


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
    pool = _pool(options.workers, scan[1])
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

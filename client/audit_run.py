"""Running `lacre audit`: stream blocks, verify signatures on every core, stop and resume.

    source --blocks--> batches of ~4,096 records
        batch k+2:      Auditor.prepare (decode, list signatures) -> pool (all cores)
        batch k+1, k+2: their signatures being verified
        batch k:        wait for its signatures, then Auditor.check + commit, block by block

Signatures of the next batches are verified while the current one is
judged, so the main thread (decoding, the state rules, the maps) and the
workers (Ed25519, which PyNaCl runs without the GIL) overlap. At most three
batches are in memory, whatever the chain's length.

The main thread is the critical path: it does about as much work per record
as the verification does, and only it can do it. So the workers run at a
lower priority (niceness WORKER_NICENESS): on a machine with fewer free
cores than workers + 1, they take what the main thread leaves instead of
taking turns with it; and two batches are queued for them, so that they
never run dry while the main thread reads and prepares the next one.
Measured in docs/audit.md.

Stopping and resuming. `stop` (a threading.Event; the CLI sets it on Ctrl-C)
is looked at after every block: the audit ends there, cleanly. With a state
file, the auditor's store is a LevelDB folder beside it (FILE.ldb) that holds
the progress in the same write as each block's state, so the store is always
consistent with itself; the state file (JSON, replaced atomically, after the
store is synced) names the store and copies its progress for people and
tools, so it is never ahead of the store. `resume` reopens that store and
asks the source for the blocks from the last audited one on: that block's
hash must be the one audited (a source of another history is refused, rule
"resume-head"), then replay goes on. A state file of a finished audit
resumes too: only the blocks committed since are replayed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import gc
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from client.audit import Auditor, AuditStoreError, AuditViolation, PreparedBlock, verify_jobs
from client.audit_evidence import check_evidence, fetch_evidence
from client.audit_report import AuditReport, Violation, checkpoint_note, epochs_json, head_json, issuers_json
from client.block_source import DataDirBlocks, NodeBlocks, SourceError
from client.chain_file import ChainFileError, ChainFileReader, sync_directory
from ledger.block import Block
from ledger.genesis import Genesis, Trust
from ledger.leveldb_store import LevelDBStore

BATCH_RECORDS = 4096
BATCH_BLOCKS = 256
PIPELINE_BATCHES = 2
"""Batches whose signatures are being verified while the main thread judges
an earlier one (see the module docstring)."""
CHUNK_JOBS = 1024
SAVE_INTERVAL_S = 10.0
STATE_VERSION = 1
WORKER_NICENESS = 10
"""Verification workers yield the CPU to the main thread (see the module docstring)."""
GC_THRESHOLD = (100_000, 50, 100)
"""While replaying: every block makes tens of thousands of short-lived, acyclic
objects; the default threshold (700) would run the cyclic collector over
the live batch hundreds of times per block."""
# Table files the audit's own store keeps open: each holds its index and Bloom
# filter in memory, and the store grows with the chain; the audit's memory must
# not. 128 tables of STATE_TABLE_BYTES hold 4 GB.
STATE_OPEN_FILES = 128
# The audit's store takes every block's map tiles, entries and record index
# at random keys. With LevelDB's 2 MB tables, 5M records made thousands of
# them, reopened through the 128 handles and merged in small compactions;
# 32 MB tables and a 64 MB memtable audited 5M records 6-10% faster for 32 MB
# more memory at any length (docs/audit.md, "LevelDB tables of 32 MB").
STATE_TABLE_BYTES = 32 << 20
STATE_WRITE_BUFFER_BYTES = 64 << 20


class AuditInputError(Exception):
    """The audit cannot start: bad usage or input (exit status 2)."""


Progress = Callable[[Auditor, int], None]
"""Called after every block with the auditor and the source's byte offset (files; else 0)."""


@dataclass
class AuditOptions:
    workers: int | None = None
    """Signature verification workers; default: one per core."""
    pool: str = "process"
    """"process" (default: measured faster, see docs/audit.md) or "thread" (PyNaCl
    releases the GIL, but each verification needs it back, and the main thread
    holds it while it judges). Processes start from a forkserver: a script that
    calls the audit must guard its entry point with `if __name__ == "__main__"`."""
    save_interval_s: float = SAVE_INTERVAL_S
    switch_interval_s: float | None = None
    """The interpreter's GIL switch interval while replaying (None: leave it). A
    worker thread back from Ed25519 in C waits for the GIL until the main thread
    yields it, at most this long; Python's default, 5 ms, starves the workers."""


def _start_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(WORKER_NICENESS)


def _executor(options: AuditOptions) -> concurrent.futures.Executor:
    workers = options.workers or os.cpu_count() or 1
    if options.pool == "process":
        return concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("forkserver"), initializer=_start_worker)
    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="audit-verify")


def _batches(blocks: Iterator[Block]) -> Iterator[list[Block]]:
    """Blocks grouped by about BATCH_RECORDS records. A source fault is raised only
    after the blocks read before it were yielded: an earlier violation comes first."""
    batch: list[Block] = []
    records = 0
    failure: Exception | None = None
    try:
        for block in blocks:
            batch.append(block)
            records += len(block.records)
            if records >= BATCH_RECORDS or len(batch) >= BATCH_BLOCKS:
                yield batch
                batch, records = [], 0
    except (ChainFileError, SourceError) as error:
        failure = error
    if batch:
        yield batch
    if failure is not None:
        raise failure


class _Saver:
    """Writes the state file now and then: store synced first, then the file replaced atomically."""

    def __init__(self, auditor: Auditor, path: Path | None, store_path: Path | None, source: str, interval_s: float) -> None:
        self.auditor, self.path, self.store_path, self.source = auditor, path, store_path, source
        self.interval_s = interval_s
        self.saved_at = time.monotonic()

    def maybe_save(self) -> None:
        if self.path is not None and time.monotonic() - self.saved_at >= self.interval_s:
            self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.auditor.sync()
        document = {"kind": "lacre-audit-state", "state_version": STATE_VERSION, "store": str(self.store_path),
                    "source": self.source, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **self.auditor.progress()}
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temporary, "w") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        sync_directory(self.path.parent)
        self.saved_at = time.monotonic()


def replay(
    auditor: Auditor, blocks: Iterator[Block], executor: concurrent.futures.Executor,
    stop: threading.Event | None = None, progress: Progress | None = None,
    after_block: Callable[[], None] | None = None, offset: Callable[[], int] = lambda: 0,
    switch_interval_s: float | None = None,
) -> bool:
    """Check and commit `blocks` in order; False if `stop` ended it early.

    Raises AuditViolation at the first broken rule (blocks before it are
    committed), and a source's ChainFileError or SourceError only once every
    block read before the fault was judged.
    """

    def submit(prepared: list[PreparedBlock]) -> list[concurrent.futures.Future]:
        jobs = [job for block in prepared for job in block.jobs]
        return [executor.submit(verify_jobs, jobs[i:i + CHUNK_JOBS]) for i in range(0, len(jobs), CHUNK_JOBS)]

    def apply(prepared: list[PreparedBlock], futures: list[concurrent.futures.Future]) -> bool:
        flags = b"".join(future.result() for future in futures)
        start = 0
        for block in prepared:
            block.verified = flags[start:start + len(block.jobs)]
            start += len(block.jobs)
        for block in prepared:
            auditor.commit(auditor.check(block))
            if progress is not None:
                progress(auditor, offset())
            if after_block is not None:
                after_block()
            if stop is not None and stop.is_set():
                return False
        return True

    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(*GC_THRESHOLD)
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)
    try:
        return _replay(blocks, auditor.prepare, submit, apply)
    finally:
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


def _replay(blocks: Iterator[Block], prepare, submit, apply) -> bool:
    pending: collections.deque[tuple[list[PreparedBlock], list[concurrent.futures.Future]]] = collections.deque()

    def drain(keep: int) -> bool:
        """Judge the oldest batches until `keep` remain; False (futures cancelled) if told to stop."""
        while len(pending) > keep:
            if not apply(*pending.popleft()):
                for _, futures in pending:
                    for future in futures:
                        future.cancel()
                return False
        return True

    batches = _batches(blocks)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (ChainFileError, SourceError):
            drain(0)
            raise
        prepared = [prepare(block) for block in batch]
        pending.append((prepared, submit(prepared)))
        if not drain(PIPELINE_BATCHES):
            return False
    return drain(0)


def _load_state(path: Path) -> dict:
    try:
        document = json.loads(path.read_text())
        if document.get("kind") != "lacre-audit-state" or document.get("state_version") != STATE_VERSION:
            raise ValueError("not a lacre audit state")
        document["height"], document["store"] = int(document["height"]), str(document["store"])
        return document
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AuditInputError(f"{path}: not a readable audit state ({error})") from None


def _open_source(file: str | Path | None, url: str | None, data_dir: str | Path | None, genesis: Genesis | None):
    if sum(x is not None for x in (file, url, data_dir)) != 1:
        raise AuditInputError("give exactly one of --node, --data-dir, --file")
    if url is not None:
        return NodeBlocks(url, genesis), url
    if file is not None:
        try:
            return ChainFileReader(file, check_links=False), str(file)
        except ChainFileError as error:
            if error.rule in ("magic", "version", "unreadable"):
                raise AuditInputError(str(error)) from None
            raise
    if not Path(data_dir).is_dir():  # type: ignore[arg-type]
        raise AuditInputError(f"{data_dir}: no such folder")
    return DataDirBlocks(data_dir), str(data_dir)  # type: ignore[arg-type]


def _source_blocks(source, auditor: Auditor, to: int | None) -> Iterator[Block]:
    """The source's blocks from the last audited one on (that one must be the block
    audited) up to `to`, if given."""
    resumed = auditor.height
    if isinstance(source, (NodeBlocks, DataDirBlocks)):
        if source.stop < resumed:
            raise SourceError(f"the source holds {source.stop} blocks; the audit reached block {resumed}")
        source.start = max(1, resumed)
        if to is not None:
            source.stop = max(min(source.stop, to), resumed)
    for block in source:
        height = block.header.height
        if to is not None and height > max(to, resumed):
            return
        if resumed and height <= resumed:
            if height == resumed and block.header.hash != auditor.head.hash:
                raise AuditViolation(Violation(height, "resume-head", "the source's block differs from the one audited",
                                               data={"audited": auditor.head.hash.hex(), "found": block.header.hash.hex()}))
            continue
        yield block


def audit_chain(
    *, file: str | Path | None = None, url: str | None = None, data_dir: str | Path | None = None,
    genesis: Genesis | None = None, trust: Trust | None = None, state_path: str | Path | None = None,
    resume: bool = False, options: AuditOptions | None = None, stop: threading.Event | None = None,
    progress: Progress | None = None, on_open: Callable[[object, Auditor], None] | None = None,
    to: int | None = None,
) -> AuditReport:
    """Audit the chain of a file, a node or a data folder (exactly one) from genesis,
    up to block `to` (default: the source's last; a file's trailer is then not read).

    Raises AuditInputError before anything is replayed (bad usage, a genesis
    or trust file of another chain, an unusable state). Everything found
    while replaying is in the report: the first violation, a source that
    failed, an interruption. `on_open(source, auditor)` runs once both are
    open (the CLI sizes its progress bar there).
    """
    options = options or AuditOptions()
    state = Path(state_path) if state_path is not None else None
    if resume and state is None:
        raise AuditInputError("--resume needs --state FILE")
    if state is not None and not resume and state.exists():
        raise AuditInputError(f"{state} exists: --resume to continue that audit, or remove it (and its store) to start over")
    if resume and state is not None and not state.exists():
        raise AuditInputError(f"{state}: no saved audit to resume")
    saved = _load_state(state) if resume and state is not None else None

    source, description = _open_source(file, url, data_dir, genesis)
    temporary: Path | None = None
    store = None
    try:
        chain_genesis = source.genesis
        if genesis is not None and genesis.hash != chain_genesis.hash:
            raise AuditInputError(f"the source holds the chain of genesis {chain_genesis.hash.hex()}, not {genesis.hash.hex()}")
        if trust is not None and (trust.genesis_hash != chain_genesis.hash or trust.origin != chain_genesis.origin):
            raise AuditInputError(f"the source holds the chain of genesis {chain_genesis.hash.hex()} ({chain_genesis.origin}), "
                                  f"not the trust file's {trust.genesis_hash.hex()} ({trust.origin})")
        if saved is not None:
            store_path = Path(saved["store"])
            if saved["genesis_hash"] != chain_genesis.hash.hex() or not store_path.is_dir():
                raise AuditInputError(f"{state}: an audit of another chain, or its store {store_path} is gone")
        elif state is not None:
            store_path = state.with_name(state.name + ".ldb")
            if store_path.exists():
                raise AuditInputError(f"{store_path} exists: remove it to start over")
        else:
            temporary = Path(tempfile.mkdtemp(prefix="lacre-audit-"))
            store_path = temporary / "audit.ldb"
        store = LevelDBStore(store_path, open_files=STATE_OPEN_FILES, table_bytes=STATE_TABLE_BYTES,
                             write_buffer_bytes=STATE_WRITE_BUFFER_BYTES)
        try:
            auditor = Auditor(chain_genesis, store, trust, resumable=state is not None)
        except AuditStoreError as error:
            raise AuditInputError(f"{store_path}: {error}") from None
        if saved is not None and auditor.height < saved["height"]:
            raise AuditInputError(f"{store_path} is behind its state file (block {auditor.height} < {saved['height']})")
        if on_open is not None:
            on_open(source, auditor)
        saver = _Saver(auditor, state, store_path.resolve(), description, options.save_interval_s)
        saver.save()
        return _run(source, description, auditor, saver, trust, url, options, stop, progress, to)
    finally:
        source.close()
        if store is not None:
            store.close()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _run(source, description: str, auditor: Auditor, saver: _Saver, trust: Trust | None, url: str | None,
         options: AuditOptions, stop: threading.Event | None, progress: Progress | None, to: int | None) -> AuditReport:
    started = time.perf_counter()
    records_before = auditor.counts.records
    violation, error, interrupted = auditor.check_trust_genesis(), None, False
    offset = (lambda: source.offset) if isinstance(source, ChainFileReader) else (lambda: 0)
    if violation is None:
        executor = _executor(options)
        try:
            interrupted = not replay(auditor, _source_blocks(source, auditor, to), executor, stop, progress,
                                     saver.maybe_save, offset, options.switch_interval_s)
        except AuditViolation as found:
            violation = found.violation
        except ChainFileError as fault:
            violation = Violation(fault.height, fault.rule, fault.detail, offset=fault.offset)
        except SourceError as fault:
            error = str(fault)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            saver.save()
    evidence: list[dict] = []
    warnings: list[str] = []
    if url is not None:
        try:
            evidence = [check_evidence(item, auditor.history, auditor.chain_id) for item in fetch_evidence(url)]
        except (OSError, ValueError) as fault:
            warnings.append(f"could not read {url}/v1/evidence: {fault}")
    trust_note = None
    if trust is not None and (violation is None or violation.rule != "trust-history"):
        epochs = len(auditor.history.epochs)
        later = len(trust.history) - epochs
        trust_note = (f"agrees with the chain's {epochs} epoch{'s' if epochs != 1 else ''} through block {auditor.height}"
                      + (f"; {later} later epoch(s) of the trust file are beyond the audited blocks" if later > 0 else ""))
    report = AuditReport(
        description, auditor.origin, auditor.chain_id, auditor.started_height + 1, auditor.counts,
        head=head_json(auditor.head.block), issuers=issuers_json(auditor.counts, auditor.history, auditor.state),
        epochs=epochs_json(auditor.history), checkpoint=checkpoint_note(auditor.head.block, auditor.origin, auditor.history),
        trust=trust_note, evidence=evidence, violation=violation,
        error=error, warnings=warnings, interrupted=interrupted,
        elapsed_s=time.perf_counter() - started, records_this_run=auditor.counts.records - records_before,
        state_file=str(saver.path) if saver.path else None,
    )
    return report

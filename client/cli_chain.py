"""`lacre chain export`, `lacre chain import`, `lacre audit` and `lacre monitor`.

`add_commands(commands)` registers them on the `lacre` parser's subcommands.
Handlers print a human summary or, with --json, one JSON document, and
return the exit status: 0 when everything checked holds, 1 when a check
fails (a damaged file, a broken rule, an alarm) or a node cannot serve, 2 for
usage or input errors (and 130 for an audit stopped by Ctrl-C). Progress
(tqdm) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from client.audit import Auditor
from client.audit_run import AuditInputError, AuditOptions, audit_chain
from client.block_source import DataDirBlocks, NodeBlocks, SourceError
from client.chain_file import ChainFileError, ChainFileReader, LinkError, export_chain
from client.chain_import import ChainImportError, import_chain
from client.monitor import DEFAULT_INTERVAL_S, DEFAULT_TIMEOUT_S, MonitorError, monitor_urls, run_monitor
from ledger.block import Block
from ledger.genesis import Genesis, GenesisError, Trust


class _Failure(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _reported(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the failures these commands expect into a message on stderr and an exit status."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _Failure as failure:
            message, status = str(failure), failure.status
        except ChainFileError as error:
            # Not a chain file at all is bad input; a damaged one is a failed check.
            message, status = str(error), 2 if error.rule in ("magic", "version", "unreadable") else 1
        except SourceError as error:
            message, status = str(error), 1
        except ChainImportError as error:
            message, status = str(error), 1 if error.height is not None else 2
        except (GenesisError, MonitorError, AuditInputError) as error:
            message, status = str(error), 2
        except OSError as error:
            message, status = f"{error.filename or ''}: {error.strerror or error}", 2
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": message}, indent=2))
        print(f"lacre: {message}", file=sys.stderr)
        return status

    return run


def _emit(args: argparse.Namespace, document: Any, human: str) -> None:
    print(json.dumps(document, indent=2) if args.json else human)


def _trust(path: str | None) -> Trust | None:
    return Trust.load(path) if path else None


# -- chain export ----------------------------------------------------------------

def _export_genesis(args: argparse.Namespace) -> Genesis | None:
    if args.genesis:
        return Genesis.load(args.genesis)
    if args.trust and (Path(args.trust).parent / "genesis.json").exists():
        return Genesis.load(Path(args.trust).parent / "genesis.json")
    return None


@_reported
def cmd_chain_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise _Failure(f"{out} exists; use --force to overwrite", 2)
    trust = _trust(args.trust)
    genesis = _export_genesis(args)
    if args.node:
        source: NodeBlocks | DataDirBlocks = NodeBlocks(args.node, genesis)
    else:
        if not Path(args.data_dir).is_dir():
            raise _Failure(f"{args.data_dir}: no such folder", 2)
        source = DataDirBlocks(args.data_dir)
    with source:
        if genesis is not None and source.genesis.hash != genesis.hash:
            raise _Failure(f"the source's genesis is {source.genesis.hash.hex()}, not {genesis.hash.hex()}", 1)
        if trust is not None and source.genesis.hash != trust.genesis_hash:
            raise _Failure(f"the source's genesis is {source.genesis.hash.hex()}, the trust file's {trust.genesis_hash.hex()}", 1)
        if args.to is not None:
            source.stop = min(max(args.to, 0), source.stop)
        total = source.stop
        with tqdm(total=total, unit="block", desc="export", disable=True if args.no_progress else None) as bar:
            def progress(block: Block) -> None:
                bar.update(1)

            try:
                summary = export_chain(source, source.genesis, out, progress)
            except LinkError as error:
                raise _Failure(f"the source's blocks do not form one chain: {error}", 1) from None
    _emit(args, {"ok": True, **summary.to_json()},
          f"exported {summary.blocks} blocks (tree size {summary.log_size}, head {summary.head_hash.hex()}) "
          f"to {summary.path}\n{summary.file_bytes} bytes, sha256 {summary.sha256.hex()}")
    return 0


# -- chain import ----------------------------------------------------------------

NODE_CONFIG_HINT = """\
serve it with a node.toml in {dir} (paths are relative to the file):
  name = "AUTHORITY"            # the authority this node runs as
  key_file = "AUTHORITY.key"    # its key
  genesis_file = "genesis.json"
  data_dir = "."
  [peers]                       # the other authorities' URLs
then: lacre node run --config {dir}/node.toml"""


@_reported
def cmd_chain_import(args: argparse.Namespace) -> int:
    trust = _trust(args.trust)
    path = Path(args.file)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _Failure(f"{path}: {error.strerror}", 2) from None
    with tqdm(total=size, unit="B", unit_scale=True, desc="import",
              disable=True if args.no_progress else None) as bar:
        blocks = 0

        def progress(block: Block, offset: int) -> None:
            nonlocal blocks
            blocks += 1
            bar.update(max(0, offset - bar.n))
            bar.set_postfix(blocks=blocks, refresh=False)

        summary = import_chain(path, args.data_dir, trust, progress)
        bar.update(size - bar.n)
    _emit(args, {"ok": True, **summary.to_json()},
          f"imported {summary.blocks} blocks (tree size {summary.log_size}, head {summary.head_hash.hex()}) "
          f"into {summary.data_dir}\ngenesis {summary.genesis_hash.hex()} written to {summary.genesis_file}\n"
          + NODE_CONFIG_HINT.format(dir=summary.data_dir))
    return 0


# -- audit ---------------------------------------------------------------------

class _Interrupts:
    """First Ctrl-C: ask the audit to stop after the current block. Second: stop now."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous = None

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        print("\nlacre: stopping after this block (Ctrl-C again to abandon it)", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _AuditProgress:
    """A tqdm bar: blocks (a node, a data folder) or bytes (a file), with records and records/s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self._bytes = False
        self._records_at_start = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def open(self, source: object, auditor: Auditor) -> None:
        self._bytes = isinstance(source, ChainFileReader)
        total = source.size if self._bytes else source.stop  # type: ignore[attr-defined]
        self.bar = tqdm(total=total, initial=0 if self._bytes else auditor.height, unit="B" if self._bytes else "block",
                        unit_scale=self._bytes, desc="audit", disable=None if self.enabled else True)
        self._records_at_start = auditor.counts.records
        self._started = time.monotonic()

    def update(self, auditor: Auditor, offset: int) -> None:
        bar = self.bar
        if bar is None:
            return
        bar.update(max(0, offset - bar.n) if self._bytes else 1)
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            records = auditor.counts.records - self._records_at_start
            bar.set_postfix(block=f"{auditor.height:,}", records=f"{auditor.counts.records:,}",
                            records_per_s=f"{records / max(now - self._started, 1e-9):,.0f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@_reported
def cmd_audit(args: argparse.Namespace) -> int:
    trust = _trust(args.trust)
    genesis = _export_genesis(args)
    if args.workers is not None and args.workers < 1:
        raise _Failure("--workers must be at least 1", 2)
    progress = _AuditProgress(not args.no_progress)
    try:
        with _Interrupts() as interrupts:
            report = audit_chain(
                file=args.file, url=args.node, data_dir=args.data_dir, genesis=genesis, trust=trust,
                state_path=args.state, resume=args.resume, options=AuditOptions(args.workers, args.pool),
                stop=interrupts.stop, progress=progress.update, on_open=progress.open, to=args.to,
            )
    finally:
        progress.close()
    _emit(args, report.to_json(), report.render())
    if report.ok:
        return 0
    return 130 if report.interrupted and report.violation is None and report.error is None else 1


# -- monitor -------------------------------------------------------------------

@_reported
def cmd_monitor(args: argparse.Namespace) -> int:
    trust = Trust.load(args.trust)
    iterations = 1 if args.once else args.iterations
    if iterations is not None and iterations < 1:
        raise _Failure("--iterations must be at least 1", 2)
    if args.interval < 0:
        raise _Failure("--interval must not be negative", 2)
    urls = monitor_urls(trust, args.url or [])
    return asyncio.run(run_monitor(
        trust, urls, state_path=Path(args.state) if args.state else None, interval_s=args.interval,
        iterations=iterations, webhook_lines=args.webhook_lines, json_rounds=args.json, timeout_s=args.timeout,
    ))


# -- parser ----------------------------------------------------------------------

def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `chain export`, `chain import`, `audit` and `monitor` on the `lacre` subcommands."""

    def command(parent, name: str, handler, help: str) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print one JSON document")
        return sub

    chain = commands.add_parser("chain", help="export or import a whole chain")
    chain_commands = chain.add_subparsers(dest="chain_command", required=True, metavar="COMMAND")

    sub = command(chain_commands, "export", cmd_chain_export, "write a self-verifying chain file from a node or a data folder")
    where = sub.add_mutually_exclusive_group(required=True)
    where.add_argument("--node", metavar="URL", help="a node's HTTP API")
    where.add_argument("--data-dir", metavar="DIR", help="a stopped node's data folder (read-only)")
    sub.add_argument("--out", required=True, metavar="FILE")
    sub.add_argument("--genesis", metavar="genesis.json",
                     help="the consortium's genesis (needed with --node: nodes serve only its hash)")
    sub.add_argument("--trust", metavar="consortium.json",
                     help="check the chain's genesis against the trust file (and find genesis.json beside it)")
    sub.add_argument("--to", type=int, metavar="HEIGHT", help="last block to export (default: the head when export starts)")
    sub.add_argument("--force", action="store_true", help="overwrite FILE")
    sub.add_argument("--no-progress", action="store_true")

    sub = command(chain_commands, "import", cmd_chain_import, "rebuild a node's store from a chain file, checking every block")
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--data-dir", required=True, metavar="DIR", help="an empty or new folder")
    sub.add_argument("--trust", metavar="consortium.json", help="require the file's genesis to be the trust file's")
    sub.add_argument("--no-progress", action="store_true")

    sub = command(commands, "audit", cmd_audit,
                  "replay a chain from genesis and check every rule, signature and root; report the first violation")
    where = sub.add_mutually_exclusive_group(required=True)
    where.add_argument("--node", metavar="URL", help="a node's HTTP API")
    where.add_argument("--data-dir", metavar="DIR", help="a stopped node's data folder (read-only)")
    where.add_argument("--file", metavar="EXPORT", help="a chain export file (lacre chain export)")
    sub.add_argument("--trust", metavar="consortium.json",
                     help="check the trust file's authority-set history against the chain's (and find genesis.json beside it)")
    sub.add_argument("--genesis", metavar="genesis.json",
                     help="the consortium's genesis (with --node, if the node does not serve it)")
    sub.add_argument("--state", metavar="FILE",
                     help="keep the audit's progress here (and its own state store in FILE.ldb), to stop and resume")
    sub.add_argument("--resume", action="store_true", help="continue the audit saved in --state FILE")
    sub.add_argument("--to", type=int, metavar="HEIGHT", help="stop after this block (default: the source's last)")
    sub.add_argument("--workers", type=int, metavar="N", help="signature verification workers (default: one per core)")
    sub.add_argument("--pool", choices=["process", "thread"], default="process",
                     help="verify signatures on worker processes (default) or threads")
    sub.add_argument("--no-progress", action="store_true")

    sub = command(commands, "monitor", cmd_monitor, "watch every node's checkpoints for split views, rollbacks and evidence")
    sub.add_argument("--trust", required=True, metavar="consortium.json")
    sub.add_argument("--url", action="append", metavar="URL", help="another node to watch (repeatable)")
    sub.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, metavar="S", help="seconds between rounds")
    sub.add_argument("--once", action="store_true", help="one round, then exit")
    sub.add_argument("--iterations", type=int, metavar="N", help="N rounds, then exit")
    sub.add_argument("--state", metavar="FILE", help="keep the last verified checkpoints here, across restarts")
    sub.add_argument("--webhook-lines", action="store_true",
                     help="print each alarm as one JSON line on stdout and keep going")
    sub.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="per request")

"""`lacre chain export`, `lacre chain import` and `lacre monitor`.

`add_commands(commands)` registers them on the `lacre` parser's subcommands.
Handlers print a human summary or, with --json, one JSON document, and
return the exit status: 0 when everything checked holds, 1 when a check
fails (a damaged file, a broken rule, an alarm) or a node cannot serve, 2 for
usage or input errors. Progress (tqdm) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from client.block_source import DataDirBlocks, NodeBlocks, SourceError
from client.chain_file import ChainFileError, LinkError, export_chain
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
        except (GenesisError, MonitorError) as error:
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
    """Register `chain export`, `chain import` and `monitor` on the `lacre` subcommands."""

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

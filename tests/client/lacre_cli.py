"""Run `lacre` in-process, with `chain` and `monitor` even before client/cli.py registers them."""

from __future__ import annotations

import argparse
import contextlib
import io

from client import cli
from client.cli_chain import add_commands


def _wired() -> bool:
    """Whether client/cli.py already registers the chain commands."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.build_parser().parse_args(["chain", "import", "FILE", "--data-dir", "DIR"])
        except SystemExit:
            return False
    return True


def lacre(*argv: str) -> int:
    """The exit status of `lacre ARGV`."""
    if _wired():
        return cli.main(list(argv))
    parser = argparse.ArgumentParser(prog="lacre")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.handler(args)

"""`python -m node run --config node.toml`: run one node process."""

from __future__ import annotations

import argparse
import sys

from node.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lacre node")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a node until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, help="node.toml")
    args = parser.parse_args(argv)
    from ledger.chain import ChainError
    from ledger.crypto import KeyFileError
    from ledger.genesis import GenesisError
    from node.app import main as run_node

    try:
        run_node(args.config)
    except (ConfigError, ChainError, GenesisError, KeyFileError) as error:
        print(f"lacre node: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

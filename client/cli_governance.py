"""`lacre governance`: draft a consortium change, collect approvals, submit it.

A change travels as a small JSON file between the authorities: one drafts it
(`propose`, which reads the current epoch from a node), each approver adds
its signature (`approve`, offline, with its own key), and any authority
submits it once a quorum approved (`submit`). The ledger re-checks every
approval against the set in force; the file is only a carrier.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ledger.governance import approve
from ledger.records import GOVERNANCE_ACTIONS, ConsortiumChange, RecordError, SignedRecord


def _change_from_file(cli, path: str) -> tuple[dict, ConsortiumChange]:
    try:
        document = json.loads(Path(path).read_text())
        fields = document["change"]
        change = ConsortiumChange(
            int(fields["epoch"]), fields["action"], fields.get("name", ""),
            bytes.fromhex(fields.get("public_key", "")), fields.get("url", ""),
            int(fields.get("block_records_max", 0)),
            tuple(sorted((bytes.fromhex(k), bytes.fromhex(s)) for k, s in document.get("approvals", {}).items())),
        )
        bytes.fromhex(document["chain_id"])
    except OSError as error:
        raise cli.CliError(f"{path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError, RecordError) as error:
        raise cli.CliError(f"{path}: not a change file ({error})") from None
    return document, change


def _change_document(chain_id: bytes, change: ConsortiumChange) -> dict:
    return {
        "chain_id": chain_id.hex(),
        "change": {
            "epoch": change.epoch, "action": change.action, "name": change.name,
            "public_key": change.public_key.hex(), "url": change.url, "block_records_max": change.block_records_max,
        },
        "approvals": {key.hex(): signature.hex() for key, signature in change.approvals},
    }


def cmd_propose(args: argparse.Namespace) -> int:
    from client import cli

    async def fetch() -> dict:
        from client.sdk import AsyncClient

        async with AsyncClient(args.node) as node:
            return await node._request("GET", "/v1/consortium")

    answer = cli._run(fetch())
    chain_id = bytes.fromhex(answer["trust"]["genesis_hash"])
    epoch = answer["trust"]["history"][-1]["epoch"]
    public_key = b""
    if args.authority_key:
        public_key = cli._load_key(args.authority_key).public_key
    elif args.public_key:
        public_key = bytes.fromhex(args.public_key)
    try:
        change = ConsortiumChange(
            epoch, args.action, args.name or "", public_key, args.url or "", args.block_records_max or 0,
        )
    except RecordError as error:
        raise cli.CliError(str(error)) from None
    cli._write_json(Path(args.out), _change_document(chain_id, change))
    cli._emit(args, _change_document(chain_id, change), f"drafted {args.action} for epoch {epoch} in {args.out}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from client import cli

    document, change = _change_from_file(cli, args.change)
    key = cli._load_key(args.key)
    chain_id = bytes.fromhex(document["chain_id"])
    public_key, signature = approve(key, chain_id, change)
    document["approvals"][public_key.hex()] = signature.hex()
    cli._write_json(Path(args.change), document)
    cli._emit(args, document, f"{key.name} approved; {len(document['approvals'])} approval(s) in {args.change}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from client import cli

    _, change = _change_from_file(cli, args.change)
    record = SignedRecord.sign(change, cli._load_key(args.key))
    answer = cli._run(cli._submit(args.node, [record]))
    entry = answer["records"][0]
    cli._emit(args, entry, f"consortium change {change.action} (epoch {change.epoch}): record {entry['hash']} "
              f"{entry['status']}" + (f" at leaf {entry['leaf_index']}" if "leaf_index" in entry else ""))
    return 0 if entry["status"] == "committed" else 1


def add_commands(command, commands) -> None:
    governance = commands.add_parser("governance", help="change the consortium (quorum-approved)").add_subparsers(
        dest="governance_command", required=True
    )
    sub = command("propose", cmd_propose, "draft a change file for the current epoch", parent=governance)
    sub.add_argument("--node", required=True, metavar="URL")
    sub.add_argument("--action", required=True, choices=GOVERNANCE_ACTIONS)
    sub.add_argument("--name", help="authority name (add, remove)")
    sub.add_argument("--authority-key", metavar="KEYFILE", help="add: the new authority's key file (public part used)")
    sub.add_argument("--public-key", metavar="HEX", help="add: the new authority's public key")
    sub.add_argument("--url", help="add: the new authority's node URL")
    sub.add_argument("--block-records-max", type=int, help="policy.set: records per block")
    sub.add_argument("--out", default="change.json", metavar="FILE")
    sub = command("approve", cmd_approve, "add your approval to a change file", parent=governance)
    sub.add_argument("change", metavar="CHANGE.json")
    sub.add_argument("--key", required=True, metavar="AUTHORITY_KEYFILE")
    sub = command("submit", cmd_submit, "submit an approved change", parent=governance)
    sub.add_argument("change", metavar="CHANGE.json")
    sub.add_argument("--key", required=True, metavar="AUTHORITY_KEYFILE")
    sub.add_argument("--node", required=True, metavar="URL")


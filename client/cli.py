"""`lacre`: the command line.

Each subcommand parses its arguments, calls the SDK or the pure ledger
modules, and prints a human summary or, with --json, one JSON document.
Exit status: 0 when everything checked holds, 1 when a check fails or the
node refuses, 2 for usage or input errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from client.credential import CredentialError, credential_id, load_credentials, parse_credential
from client.sdk import ApiError, AsyncClient
from client.verify import verify_receipt
from ledger.crypto import KeyFileError, KeyPair
from ledger.genesis import Authority, AuthoritySet, Genesis, GenesisError, Trust
from ledger.note import NoteVerifier
from ledger.records import IssuerRegistration, RecordError, SignedRecord

SUBMIT_CHUNK = 1000
RECEIPT_FETCH_CONCURRENCY = 16


class CliError(Exception):
    """A problem to report to the user as-is, with an exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _emit(args: argparse.Namespace, document: Any, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(document, indent=2))
    else:
        print(human)


def _write_json(path: Path, document: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(temporary, path)


def _load_key(path: str) -> KeyPair:
    try:
        return KeyPair.load(path)
    except KeyFileError as error:
        raise CliError(str(error)) from None


def _credential_ref(text: str) -> tuple[bytes, dict | None]:
    """A credential id from a hex id or from a credential file."""
    if len(text) == 64 and not Path(text).exists():
        try:
            return bytes.fromhex(text), None
        except ValueError:
            pass
    try:
        document = parse_credential(Path(text).read_bytes())
    except OSError as error:
        raise CliError(f"{text}: not a credential file or a 64-hex credential id ({error.strerror})") from None
    except CredentialError as error:
        raise CliError(f"{text}: {error}") from None
    return credential_id(document), document


# -- keys and genesis -------------------------------------------------------

def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; use --force to overwrite")
    name = args.name or out.stem
    key = KeyPair.generate(name)
    key.save(out)
    verifier = NoteVerifier.from_key(name, key.public_key)
    _emit(args, {"name": name, "public_key": key.public_key.hex(), "verifier_key": verifier.encode(), "file": str(out)},
          f"wrote {out}\npublic key   {key.public_key.hex()}\nverifier key {verifier.encode()}")
    return 0


def cmd_genesis(args: argparse.Namespace) -> int:
    authorities, urls = [], {}
    for spec in args.authority:
        path, _, url = spec.partition("=")
        key = _load_key(path)
        authorities.append(Authority(key.name, key.public_key))
        if url:
            urls[key.name] = url
    try:
        genesis = Genesis(args.origin, AuthoritySet(tuple(authorities)), int(time.time()))
    except GenesisError as error:
        raise CliError(str(error)) from None
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "genesis.json", genesis.to_json())
    _write_json(out / "consortium.json", Trust.from_genesis(genesis, urls).to_json())
    _emit(args, {"genesis_hash": genesis.hash.hex(), "dir": str(out)},
          f"genesis {genesis.hash.hex()}\nwrote {out / 'genesis.json'} and {out / 'consortium.json'}")
    return 0


def cmd_node_run(args: argparse.Namespace) -> int:
    # The node is its own program: a verifier's install of the client never
    # imports node code, and the node gets a clean process.
    os.execv(sys.executable, [sys.executable, "-m", "node", "run", "--config", args.config])
    return 0  # pragma: no cover


def cmd_devnet(args: argparse.Namespace) -> int:
    from client.devnet import run_devnet

    return run_devnet(args)


# -- records ---------------------------------------------------------------

async def _submit(url: str, records: list[SignedRecord]) -> dict:
    async with AsyncClient(url) as node:
        return await node.submit(records, wait=True)


def _run(coroutine) -> Any:
    try:
        return asyncio.run(coroutine)
    except ApiError as error:
        raise CliError(f"node refused: {error}", status=1) from None


def cmd_issuer_register(args: argparse.Namespace) -> int:
    authority = _load_key(args.key)
    if args.issuer_key:
        issuer_public = _load_key(args.issuer_key).public_key
    elif args.issuer_public_key:
        try:
            issuer_public = bytes.fromhex(args.issuer_public_key)
        except ValueError:
            raise CliError("--issuer-public-key must be hex") from None
    else:
        raise CliError("give --issuer-key FILE or --issuer-public-key HEX")
    try:
        body = IssuerRegistration(issuer_public, args.name, args.country, args.web_origin or "")
    except RecordError as error:
        raise CliError(str(error)) from None
    record = SignedRecord.sign(body, authority)
    answer = _run(_submit(args.node, [record]))
    entry = answer["records"][0]
    _emit(args, entry, f"issuer {args.name} ({args.country}) registered: record {entry['hash']} {entry['status']}"
          + (f" at leaf {entry['leaf_index']}" if "leaf_index" in entry else ""))
    return 0 if entry["status"] == "committed" else 1


def cmd_issue(args: argparse.Namespace) -> int:
    from client.issuance import issue_credentials

    return issue_credentials(args)


def cmd_status(args: argparse.Namespace) -> int:
    """A credential's proven status; with --out, the stapled document a holder hands a verifier."""
    from client.online import fetch_status_document

    cid, _ = _credential_ref(args.credential)
    since = None
    if args.receipt:
        try:
            since = json.loads(Path(args.receipt).read_text())["tree_size"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CliError(f"{args.receipt}: not a receipt ({error})") from None
    try:
        answer, path = asyncio.run(fetch_status_document(args.node, cid, since))
    except ApiError as error:
        raise CliError(f"node refused: {error}", status=1) from None
    lines = [f"credential {cid.hex()}: {answer['status'].upper()}"]
    if answer["status"] != "unknown":
        issuer = answer.get("issuer", {})
        lines.append(f"  issuer   {issuer.get('name', '?')} ({issuer.get('country', '?')}) key {issuer.get('key', '')}")
        lines.append(f"  issued   {_time(answer['issued_at'])} (leaf {answer['issuance_leaf']})")
        if answer.get("expires_at"):
            lines.append(f"  expires  {_time(answer['expires_at'])}")
        if answer.get("changed_leaf", -1) >= 0:
            reason = f", reason {answer['reason']}" if answer.get("reason") else ""
            lines.append(f"  changed  {_time(answer['changed_at'])}{reason} (leaf {answer['changed_leaf']})")
    if args.out:
        staple = dict(answer)
        if path is not None:
            staple["consistency"] = {"from": since, "path": [h.hex() for h in path]}
        _write_json(Path(args.out), staple)
        lines.append(f"  wrote the stapled status proof to {args.out}")
    summary = {k: v for k, v in answer.items() if k not in ("records", "checkpoint", "status_proof", "issuer_proof")}
    _emit(args, summary, "\n".join(lines))
    return 0


def _time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))


def cmd_receipt(args: argparse.Namespace) -> int:
    cid, _ = _credential_ref(args.credential)

    async def fetch() -> dict:
        async with AsyncClient(args.node) as node:
            return await node.receipt(cid)

    receipt = _run(fetch())
    if args.out:
        _write_json(Path(args.out), receipt)
        print(f"wrote receipt for {cid.hex()} to {args.out}", file=sys.stderr)
    else:
        print(json.dumps(receipt, indent=2))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        document = parse_credential(Path(args.credential).read_bytes())
        receipt = json.loads(Path(args.receipt).read_text())
        trust = Trust.load(args.trust)
        staple = json.loads(Path(args.status).read_text()) if args.status else None
    except OSError as error:
        raise CliError(f"{error.filename}: {error.strerror}") from None
    except (CredentialError, GenesisError, json.JSONDecodeError) as error:
        raise CliError(str(error)) from None
    cid = credential_id(document)
    now_s = int(time.time())
    result = verify_receipt(receipt, trust, cid, now_s=now_s)
    if staple is not None and result.checkpoint is not None:
        from client.online import check_status_document

        path = None
        consistency = staple.get("consistency") if isinstance(staple, dict) else None
        if isinstance(consistency, dict) and consistency.get("from") == result.checkpoint.tree_size:
            try:
                path = [bytes.fromhex(h) for h in consistency["path"]]
            except (KeyError, TypeError, ValueError):
                path = None
        if path is None:
            result.add("stapled-consistency", False, "stapled status carries no consistency proof from the receipt's tree")
        else:
            check_status_document(staple, trust, cid, result, now_s, args.max_age, path, prefix="stapled")
    if args.online and result.checkpoint is not None:
        from client.online import check_online

        asyncio.run(check_online(args.online, trust, cid, result, now_s, args.private_bits))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        for check in result.checks:
            print(f"  {'ok  ' if check.ok else 'FAIL'} {check.name:22} {check.detail}")
        issuer = result.issuer
        if result.endorsements:
            print(f"  endorsed by: {', '.join(result.endorsements)}")
        if result.ok:
            print(f"VERIFIED: credential {cid.hex()} issued by {issuer.get('name')} ({issuer.get('country')}) "
                  f"on {_time(result.issued_at)}")
        else:
            failed = next(c for c in result.checks if not c.ok)
            print(f"NOT VERIFIED: credential {cid.hex()}: {failed.name}: {failed.detail}")
    return 0 if result.ok else 1


def _duration_s(text: str) -> int:
    """'90', '90s', '15m', '24h', '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 24h")
    return int(number) * unit


# -- parser ----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lacre", description="lacre: a ledger for academic micro-credentials")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str, parent=commands, json_flag: bool = True) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print one JSON document")
        return sub

    sub = command("keygen", cmd_keygen, "generate an Ed25519 key file")
    sub.add_argument("--out", required=True, metavar="KEYFILE")
    sub.add_argument("--name", help="key name (authority or issuer label); default: the file name")
    sub.add_argument("--force", action="store_true", help="overwrite an existing file")

    sub = command("genesis", cmd_genesis, "write genesis.json and consortium.json from authority keys")
    sub.add_argument("--origin", required=True, help="log origin, a schema-less URL such as lacre.example.org/consortium")
    sub.add_argument("--authority", action="append", required=True, metavar="KEYFILE[=URL]",
                     help="an authority's key file (its public key is used), in proposer order")
    sub.add_argument("--out-dir", default=".", metavar="DIR")

    node = commands.add_parser("node", help="run a node").add_subparsers(dest="node_command", required=True)
    sub = command("run", cmd_node_run, "run a node until SIGINT/SIGTERM", parent=node, json_flag=False)
    sub.add_argument("--config", required=True, metavar="node.toml")

    sub = command("devnet", cmd_devnet, "run a local consortium on 127.0.0.1 with a demo", json_flag=False)
    sub.add_argument("--nodes", type=int, default=4, help="authorities (default 4)")
    sub.add_argument("--followers", type=int, default=0, help="extra nodes that are not authorities (default 0)")
    sub.add_argument("--dir", default="devnet", help="data folder (reused if it exists)")
    sub.add_argument("--no-demo", action="store_true", help="skip the demo")
    sub.add_argument("--exit-after-demo", action="store_true", help="stop the nodes after the demo instead of serving")

    issuer = commands.add_parser("issuer", help="manage issuers").add_subparsers(dest="issuer_command", required=True)
    sub = command("register", cmd_issuer_register, "register an issuer key (signed by an authority)", parent=issuer)
    sub.add_argument("--key", required=True, metavar="AUTHORITY_KEYFILE")
    sub.add_argument("--issuer-key", metavar="KEYFILE")
    sub.add_argument("--issuer-public-key", metavar="HEX")
    sub.add_argument("--name", required=True)
    sub.add_argument("--country", required=True, help="ISO 3166-1 alpha-2, e.g. MX")
    sub.add_argument("--web-origin")
    sub.add_argument("--node", required=True, metavar="URL")

    sub = command("issue", cmd_issue, "issue credentials: a file, a folder of .json, or a .jsonl file")
    sub.add_argument("credentials", metavar="CREDENTIAL|FOLDER|FILE.jsonl")
    sub.add_argument("--key", required=True, metavar="ISSUER_KEYFILE")
    sub.add_argument("--node", required=True, metavar="URL")
    sub.add_argument("--out", metavar="RECEIPT|DIR|FILE.jsonl",
                     help="receipt file (one credential), folder (many), or with batches a .jsonl file (a receipt a line)")
    sub.add_argument("--expires", type=int, default=0, metavar="UNIX_SECONDS", help="expiry of the credentials")
    sub.add_argument("--no-progress", action="store_true")
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument("--batch", dest="batch", action="store_const", const=True, default=None,
                      help="sign each chunk of credentials once, as a batch (default from 256 credentials)")
    mode.add_argument("--no-batch", dest="batch", action="store_const", const=False,
                      help="one signed record per credential")
    sub.add_argument("--batch-size", type=int, default=10_000, metavar="N", help="credentials per batch (default 10000)")
    sub.add_argument("--in-flight", type=int, default=4, metavar="N", help="batches submitted at a time (default 4)")
    sub.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                     help="processes hashing credentials (default: one per core)")
    sub.add_argument("--achievement-type", metavar="TYPE", help="with batches: the Open Badges achievement type they share")

    from client import cli_state

    cli_state.add_commands(command, commands, issuer)
    cli_state.add_trust_commands(command, commands)
    from client import cli_governance

    cli_governance.add_commands(command, commands)
    from client import cli_chain

    cli_chain.add_commands(commands)

    sub = command("status", cmd_status, "show a credential's proven status; --out staples it for a verifier")
    sub.add_argument("credential", metavar="CREDENTIAL|ID")
    sub.add_argument("--node", required=True, metavar="URL")
    sub.add_argument("--out", metavar="STATUS.json", help="write the status document a holder hands a verifier")
    sub.add_argument("--receipt", metavar="RECEIPT", help="with --out: include a consistency proof from this receipt")

    sub = command("receipt", cmd_receipt, "fetch a credential's receipt", json_flag=False)
    sub.add_argument("credential", metavar="CREDENTIAL|ID")
    sub.add_argument("--node", required=True, metavar="URL")
    sub.add_argument("--out", metavar="RECEIPT")

    sub = command("verify", cmd_verify, "verify a credential and its receipt against the trust file")
    sub.add_argument("credential", metavar="CREDENTIAL")
    sub.add_argument("--receipt", required=True)
    sub.add_argument("--trust", required=True, metavar="consortium.json")
    sub.add_argument("--online", metavar="URL", help="also fetch the current proven status from a node")
    sub.add_argument("--private-bits", type=int, metavar="BITS",
                     help="with --online: ask only for the first BITS bits of the id (8-64; k-anonymous)")
    sub.add_argument("--status", metavar="STATUS.json", help="a stapled status document (lacre status --out)")
    sub.add_argument("--max-age", type=_duration_s, default=86400, metavar="DURATION",
                     help="freshness policy for a stapled status, e.g. 24h (default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"lacre: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print("lacre: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Under `python -m client.cli` this file runs as `__main__`, and the modules
    # it loads import `client.cli` anew: a CliError they raise would be that
    # module's class, not this one's, and escape as a traceback. Run the
    # importable module's main instead.
    from client.cli import main as _main

    sys.exit(_main())

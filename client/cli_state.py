"""`lacre` subcommands that change state beyond issuance: a credential's
suspension and reinstatement, and an issuer key's rotation, retirement and
endorsement. Each signs one record, submits it and waits for its commit.
"""

from __future__ import annotations

import argparse
import time

from ledger.records import (
    CredentialReinstatement,
    CredentialSuspension,
    IssuerEndorsement,
    IssuerRetirement,
    IssuerRotation,
    RecordBody,
    RecordError,
    SignedRecord,
)


def _key_ref(cli, args: argparse.Namespace, file_name: str, hex_name: str, what: str) -> bytes:
    file_value, hex_value = getattr(args, file_name), getattr(args, hex_name)
    if file_value:
        return cli._load_key(file_value).public_key
    if hex_value:
        try:
            key = bytes.fromhex(hex_value)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise cli.CliError(f"--{hex_name.replace('_', '-')} must be 64 hex characters")
        return key
    raise cli.CliError(f"give --{file_name.replace('_', '-')} FILE or --{hex_name.replace('_', '-')} HEX for the {what}")


def _sign_and_submit(cli, args: argparse.Namespace, make_body, summary: str) -> int:
    key = cli._load_key(args.key)
    try:
        body: RecordBody = make_body()
    except (RecordError, ValueError) as error:
        raise cli.CliError(str(error)) from None
    answer = cli._run(cli._submit(args.node, [SignedRecord.sign(body, key)]))
    entry = answer["records"][0]
    cli._emit(args, entry, f"{summary}: record {entry['hash']} {entry['status']}"
              + (f" at leaf {entry['leaf_index']}" if "leaf_index" in entry else ""))
    return 0 if entry["status"] == "committed" else 1


def cmd_suspend(args: argparse.Namespace) -> int:
    from client import cli

    cid, _ = cli._credential_ref(args.credential)
    return _sign_and_submit(cli, args, lambda: CredentialSuspension(cid, int(time.time())), f"credential {cid.hex()} suspended")


def cmd_reinstate(args: argparse.Namespace) -> int:
    from client import cli

    cid, _ = cli._credential_ref(args.credential)
    return _sign_and_submit(
        cli, args, lambda: CredentialReinstatement(cid, int(time.time())), f"credential {cid.hex()} reinstated"
    )


def cmd_issuer_rotate(args: argparse.Namespace) -> int:
    from client import cli

    old = _key_ref(cli, args, "issuer_key", "issuer_public_key", "key being replaced")
    new = _key_ref(cli, args, "new_key", "new_public_key", "new key")
    return _sign_and_submit(cli, args, lambda: IssuerRotation(old, new), f"issuer key {old.hex()[:16]}... rotated to {new.hex()[:16]}...")


def cmd_issuer_retire(args: argparse.Namespace) -> int:
    from client import cli

    old = _key_ref(cli, args, "issuer_key", "issuer_public_key", "key to retire")
    return _sign_and_submit(cli, args, lambda: IssuerRetirement(old), f"issuer key {old.hex()[:16]}... retired")


def cmd_issuer_endorse(args: argparse.Namespace) -> int:
    from client import cli

    endorsed = _key_ref(cli, args, "issuer_key", "issuer_public_key", "endorsed issuer")
    kind = args.achievement_type or ""
    return _sign_and_submit(
        cli, args, lambda: IssuerEndorsement(endorsed, kind),
        f"issuer {endorsed.hex()[:16]}... endorsed" + (f" for {kind}" if kind else ""),
    )


def add_commands(command, commands, issuer) -> None:
    """Register the subcommands: `command(name, handler, help, parent=...)` is cli's helper."""
    for name, handler, help in (
        ("suspend", cmd_suspend, "suspend a credential (reversible)"),
        ("reinstate", cmd_reinstate, "reinstate a suspended credential"),
    ):
        sub = command(name, handler, help)
        sub.add_argument("credential", metavar="CREDENTIAL|ID")
        sub.add_argument("--key", required=True, metavar="KEYFILE", help="the issuer's key, or its authority's")
        sub.add_argument("--node", required=True, metavar="URL")

    def issuer_command(name, handler, help, target_help):
        sub = command(name, handler, help, parent=issuer)
        sub.add_argument("--key", required=True, metavar="KEYFILE", help="signer: " + target_help)
        sub.add_argument("--issuer-key", metavar="KEYFILE")
        sub.add_argument("--issuer-public-key", metavar="HEX")
        sub.add_argument("--node", required=True, metavar="URL")
        return sub

    sub = issuer_command(
        "rotate", cmd_issuer_rotate, "move an issuer to a new key (the old key stops signing)",
        "the current issuer key, or the authority that registered it",
    )
    sub.add_argument("--new-key", metavar="KEYFILE")
    sub.add_argument("--new-public-key", metavar="HEX")
    issuer_command(
        "retire", cmd_issuer_retire, "retire an issuer key for good (its credentials stay valid)",
        "the issuer key itself, or the authority that registered it",
    )
    sub = issuer_command(
        "endorse", cmd_issuer_endorse, "record that you recognise an issuer's credentials",
        "an authority or a registered issuer",
    )
    sub.add_argument("--achievement-type", metavar="TYPE", help="only this Open Badges achievement type")

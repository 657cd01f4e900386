"""`lacre` subcommands that change state beyond issuance: a credential's
revocation, suspension and reinstatement, a whole batch's revocation, and an
issuer key's rotation, retirement and endorsement. Each signs one record,
submits it and waits for its commit.
"""

from __future__ import annotations

import argparse
import time

from ledger.records import (
    BatchRevocation,
    CredentialReinstatement,
    CredentialRevocation,
    CredentialSuspension,
    IssuerEndorsement,
    IssuerRetirement,
    IssuerRotation,
    RecordBody,
    RecordError,
    RevocationReason,
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


def _revoke(cli, args: argparse.Namespace, key, make_body, subject: dict, summary: str) -> int:
    try:
        body: RecordBody = make_body(RevocationReason(args.reason), int(time.time()))
    except (RecordError, ValueError) as error:
        raise cli.CliError(str(error)) from None
    answer = cli._run(cli._submit(args.node, [SignedRecord.sign(body, key)]))
    entry = answer["records"][0]
    cli._emit(args, {**subject, **entry}, f"{summary} ({args.reason}): record {entry['hash']} {entry['status']}")
    return 0 if entry["status"] == "committed" else 1


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke one credential, or with --batch every credential of a batch in one record."""
    from client import cli

    key = cli._load_key(args.key)
    if args.batch is None:
        cid, _ = cli._credential_ref(args.credential)
        return _revoke(cli, args, key, lambda reason, now_s: CredentialRevocation(cid, reason, now_s),
                       {"credential_id": cid.hex()}, f"credential {cid.hex()} revoked")
    try:
        batch_id = bytes.fromhex(args.batch)
    except ValueError:
        batch_id = b""
    if len(batch_id) != 32:
        raise cli.CliError("--batch must be a batch id, 64 hex characters (a receipt's batch_proof.batch_id)")
    return _revoke(cli, args, key, lambda reason, now_s: BatchRevocation(batch_id, reason, now_s),
                   {"batch_id": batch_id.hex()}, f"batch {batch_id.hex()} revoked")


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
    sub = command("revoke", cmd_revoke, "revoke a credential, or with --batch every credential of a batch")
    target = sub.add_mutually_exclusive_group(required=True)
    target.add_argument("credential", nargs="?", metavar="CREDENTIAL|ID")
    target.add_argument("--batch", metavar="BATCH_ID_HEX", help="revoke the whole batch (a receipt's batch_proof.batch_id)")
    sub.add_argument("--key", required=True, metavar="KEYFILE")
    sub.add_argument("--node", required=True, metavar="URL")
    sub.add_argument("--reason", default="unspecified", choices=[r.value for r in RevocationReason])

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


def cmd_trust_export(args: argparse.Namespace) -> int:
    """Write consortium.json with the whole authority-set history from a node.

    With --trust OLD, nothing the node says is taken on faith: the new file
    must extend OLD's history, and every later epoch must follow from a
    consortium.change record carrying valid approvals of a quorum of the
    epoch before it.
    """
    import base64
    from pathlib import Path

    from client import cli
    from client.sdk import AsyncClient
    from ledger.genesis import GenesisError, Trust
    from ledger.governance import ConsortiumEntry, GovernanceError
    from ledger.records import ConsortiumChange

    async def fetch() -> dict:
        async with AsyncClient(args.node) as node:
            return await node._request("GET", "/v1/consortium")

    answer = cli._run(fetch())
    try:
        trust = Trust.from_json(answer["trust"])
    except (GenesisError, KeyError, TypeError) as error:
        raise cli.CliError(f"node's trust document is malformed: {error}", status=1) from None
    checked = "the node's word (no --trust to check it against)"
    if args.trust:
        try:
            old = Trust.load(args.trust)
        except GenesisError as error:
            raise cli.CliError(str(error)) from None
        def sets(history):
            return [(e.epoch, e.from_height, e.quorum, [(a.name, a.verifier.public_key) for a in e.authorities])
                    for e in history]

        if old.genesis_hash != trust.genesis_hash or sets(old.history) != sets(trust.history[: len(old.history)]):
            raise cli.CliError("the node's history does not extend the trust file's: another consortium, or a fork", 1)
        changes = {c["epoch"]: c for c in answer.get("changes", [])}
        for previous, claimed in zip(trust.history[len(old.history) - 1:], trust.history[len(old.history):]):
            try:
                record = SignedRecord.decode(base64.b64decode(changes[claimed.epoch]["record"]))
                if not isinstance(record.body, ConsortiumChange):
                    raise GovernanceError("governance", "the record is not a consortium change")
                entry = ConsortiumEntry(
                    previous.epoch, previous.from_height, trust.genesis_hash,
                    tuple(_authority(a) for a in previous.authorities),
                    tuple(a.url for a in previous.authorities), 1,
                )
                after = entry.apply(record.body, record.signer, claimed.from_height - 1, -1)
            except (KeyError, ValueError, TypeError, RecordError, GovernanceError) as error:
                raise cli.CliError(f"epoch {claimed.epoch} is not proven by an approved change: {error}", 1) from None
            if [(a.name, a.public_key) for a in after.authorities] != [
                (a.name, a.verifier.public_key) for a in claimed.authorities
            ]:
                raise cli.CliError(f"epoch {claimed.epoch} differs from what its change record says", 1)
        checked = f"every change since epoch {len(old.history) - 1} re-checked against its approvals"
    cli._write_json(Path(args.out), trust.to_json())
    cli._emit(args, trust.to_json(),
              f"wrote {args.out}: {len(trust.history)} epoch(s), {len(trust.authorities)} authorities now, "
              f"quorum {trust.quorum}; {checked}")
    return 0


def _authority(trusted):
    from ledger.genesis import Authority

    return Authority(trusted.name, trusted.verifier.public_key)


def add_trust_commands(command, commands) -> None:
    trust = commands.add_parser("trust", help="the consortium's trust file").add_subparsers(
        dest="trust_command", required=True
    )
    sub = command("export", cmd_trust_export, "write consortium.json with the authority-set history", parent=trust)
    sub.add_argument("--node", required=True, metavar="URL")
    sub.add_argument("--out", default="consortium.json", metavar="FILE")
    sub.add_argument("--trust", metavar="consortium.json", help="an older trust file the new one must extend")

"""`lacre devnet`: a local consortium on 127.0.0.1, with a demo.

The folder it builds (reused on the next run, so the chain persists):

    DIR/consortium.json        trust file: what verifiers need
    DIR/genesis.json
    DIR/issuer.key             the demo issuer's key, registered on the ledger
    DIR/authorities/NAME.key   authority keys
    DIR/followers.json         nodes that are not (yet) authorities: name, url, public key
    DIR/followers/NAME.key     their keys
    DIR/nodes/NAME/node.toml   node config; data/ and node.log beside it
    DIR/demo/                  the demo credential, its receipt

Node processes run `python -m node run`; the devnet only starts, watches and
stops them, and talks to them over HTTP like any client.

A follower (`--followers K`, or `add_follower`) is a node whose key is in no
authority set: it fetches blocks from the authorities, serves the API and
forwards records, and starts signing once a `consortium.change` adds it, at
the URL written in followers.json:

    lacre governance propose --node URL --action authority.add --name inst-4 \
        --authority-key DIR/followers/inst-4.key --url URL-OF-inst-4 --out change.json
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from client.credential import credential_id, ensure_id, sample_open_badge
from ledger.crypto import KeyPair
from ledger.genesis import Authority, AuthoritySet, Genesis, Trust

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DEMO_ISSUER_NAME = "Universidad Demo de Lacre"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml_config(
    name: str, port: int, peers: dict[str, str], fault_injection: bool = False, key_dir: str = "authorities"
) -> str:
    lines = [
        f"fault_injection = {'true' if fault_injection else 'false'}",
        f'name = "{name}"',
        f'key_file = "../../{key_dir}/{name}.key"',
        'genesis_file = "../../genesis.json"',
        'data_dir = "data"',
        'host = "127.0.0.1"',
        f"port = {port}",
        "",
        "[peers]",
    ]
    lines += [f'"{peer}" = "{url}"' for peer, url in peers.items() if peer != name]
    return "\n".join(lines) + "\n"


def create(root: Path, nodes: int, fault_injection: bool = False, followers: int = 0) -> None:
    """Keys, genesis, trust file and node configs for a new devnet of `nodes` authorities and `followers`."""
    (root / "authorities").mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(nodes):
        key = KeyPair.generate(f"inst-{i}")
        key.save(root / "authorities" / f"{key.name}.key")
        keys.append(key)
    urls = {key.name: f"http://127.0.0.1:{_free_port()}" for key in keys}
    genesis = Genesis(
        f"devnet.lacre.local/{secrets.token_hex(4)}",
        AuthoritySet(tuple(Authority(k.name, k.public_key) for k in keys)),
        int(time.time()),
    )
    (root / "genesis.json").write_text(json.dumps(genesis.to_json(), indent=2) + "\n")
    (root / "consortium.json").write_text(json.dumps(Trust.from_genesis(genesis, urls).to_json(), indent=2) + "\n")
    for key in keys:
        node_dir = root / "nodes" / key.name
        node_dir.mkdir(parents=True, exist_ok=True)
        port = int(urls[key.name].rsplit(":", 1)[1])
        (node_dir / "node.toml").write_text(_toml_config(key.name, port, urls, fault_injection))
    KeyPair.generate("demo-issuer").save(root / "issuer.key")
    for _ in range(followers):
        add_follower(root, fault_injection=fault_injection)


def followers(root: Path) -> list[dict]:
    """The devnet's followers: {"name", "url", "public_key" (hex)}, in the order they were added."""
    path = root / "followers.json"
    return json.loads(path.read_text()) if path.exists() else []


def add_follower(root: Path, name: str | None = None, fault_injection: bool = False) -> dict:
    """Key and config for a node that is no authority yet; it follows the genesis authorities.

    Its URL is fixed now, so a `consortium.change` can name it before it
    runs. Returns its followers.json entry.
    """
    trust = json.loads((root / "consortium.json").read_text())
    known = followers(root)
    taken = {a["name"] for a in trust["authorities"]} | {f["name"] for f in known}
    if name is None:
        name = next(f"inst-{i}" for i in range(len(taken), len(taken) + 1000) if f"inst-{i}" not in taken)
    elif name in taken:
        raise ValueError(f"{name!r} is already a node of this devnet")
    (root / "followers").mkdir(exist_ok=True)
    key = KeyPair.generate(name)
    key.save(root / "followers" / f"{name}.key")
    port = _free_port()
    node_dir = root / "nodes" / name
    node_dir.mkdir(parents=True, exist_ok=True)
    peers = {a["name"]: a["url"] for a in trust["authorities"]}
    (node_dir / "node.toml").write_text(_toml_config(name, port, peers, fault_injection, key_dir="followers"))
    entry = {"name": name, "url": f"http://127.0.0.1:{port}", "public_key": key.public_key.hex()}
    (root / "followers.json").write_text(json.dumps(known + [entry], indent=2) + "\n")
    return entry


def _status(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url + "/v1/status", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def start(root: Path) -> list[tuple[str, str, subprocess.Popen]]:
    """Start every node (genesis authorities, then followers); returns (name, url, process) once all serve."""
    trust = json.loads((root / "consortium.json").read_text())
    started = []
    for authority in trust["authorities"] + followers(root):
        node_dir = root / "nodes" / authority["name"]
        log_file = open(node_dir / "node.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--config", str(node_dir / "node.toml")],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the devnet, which stops nodes in order
        )
        log_file.close()
        started.append((authority["name"], authority["url"], process))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for name, url, process in started:
        while _status(url) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(started)
                tail = (root / "nodes" / name / "node.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"node {name} did not start; its log ends:\n{tail}")
            time.sleep(0.1)
    return started


def stop(started: list[tuple[str, str, subprocess.Popen]]) -> None:
    for _, _, process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for _, _, process in started:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _lacre(*argv: str) -> int:
    """Run one CLI command in-process, echoing it as the user would type it."""
    from client.cli import main

    print(f"\n$ lacre {shlex.join(argv)}", flush=True)
    status = main(list(argv))
    sys.stdout.flush()
    return status


def demo(root: Path, url: str) -> bool:
    """Register an issuer, issue, receipt, verify offline, revoke, show status, audit the chain."""
    demo_dir = root / "demo"
    demo_dir.mkdir(exist_ok=True)
    issuer = KeyPair.load(root / "issuer.key")
    authority_key = sorted((root / "authorities").glob("*.key"))[0]
    registered = _status(url) is not None and _issuer_known(url, issuer.public_key)
    ok = True
    if not registered:
        ok &= _lacre(
            "issuer", "register", "--key", str(authority_key), "--issuer-key", str(root / "issuer.key"),
            "--name", DEMO_ISSUER_NAME, "--country", "MX", "--web-origin", "https://demo.lacre.local",
            "--node", url,
        ) == 0
    credential, _ = ensure_id(sample_open_badge(
        DEMO_ISSUER_NAME, "did:example:learner-" + secrets.token_hex(4),
        "Introducción a la Criptografía Aplicada",
    ))
    credential_path = demo_dir / f"credential-{time.strftime('%Y%m%d-%H%M%S')}.json"
    credential_path.write_text(json.dumps(credential, indent=2, ensure_ascii=False) + "\n")
    receipt_path = credential_path.with_name(credential_path.stem + ".receipt.json")
    trust = str(root / "consortium.json")
    ok &= _lacre("issue", str(credential_path), "--key", str(root / "issuer.key"), "--node", url, "--out", str(receipt_path)) == 0
    if receipt_path.exists():
        receipt = json.loads(receipt_path.read_text())
        print(f"\n# the receipt ({receipt_path.name}): leaf {receipt['leaf_index']} of {receipt['tree_size']}, "
              f"under this cosigned checkpoint:\n{receipt['checkpoint']}")
    ok &= _lacre("verify", str(credential_path), "--receipt", str(receipt_path), "--trust", trust) == 0
    ok &= _lacre("revoke", str(credential_path), "--key", str(root / "issuer.key"), "--node", url, "--reason", "issued_in_error") == 0
    ok &= _lacre("status", str(credential_path), "--node", url) == 0
    print("\n# the old receipt still proves issuance offline; online, the revocation shows:")
    ok &= _lacre("verify", str(credential_path), "--receipt", str(receipt_path), "--trust", trust, "--online", url) == 1
    ok &= _cohort_demo(root, demo_dir, url, trust)
    print("\n# an auditor replays the whole chain from genesis and checks every rule, signature and root:")
    ok &= _lacre("audit", "--node", url, "--trust", trust, "--no-progress") == 0
    return bool(ok)


COHORT_SIZE = 500


def _cohort_demo(root: Path, demo_dir: Path, url: str, trust: str) -> bool:
    """A cohort issued as one signed batch; one member's receipt verified offline."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cohort = demo_dir / f"cohort-{stamp}.jsonl"
    documents = [
        ensure_id(sample_open_badge(DEMO_ISSUER_NAME, f"did:example:learner-{secrets.token_hex(4)}",
                                    "Diplomado en Ciencia de Datos"))[0]
        for _ in range(COHORT_SIZE)
    ]
    cohort.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents))
    receipts = demo_dir / f"cohort-{stamp}.receipts.jsonl"
    print(f"\n# a cohort of {COHORT_SIZE} credentials, signed once as a batch; a receipt for each:")
    ok = _lacre("issue", str(cohort), "--batch", "--key", str(root / "issuer.key"), "--node", url,
                "--out", str(receipts), "--no-progress") == 0
    if not ok or not receipts.exists():
        return False
    first = json.loads(receipts.read_text().splitlines()[0])
    member = next((d for d in documents if credential_id(d).hex() == first["credential_id"]), None)
    if member is None:
        print("lacre devnet: the first receipt is for no credential of the cohort", file=sys.stderr)
        return False
    credential_path = demo_dir / f"cohort-{stamp}-member.json"
    credential_path.write_text(json.dumps(member, indent=2, ensure_ascii=False) + "\n")
    receipt_path = credential_path.with_name(credential_path.stem + ".receipt.json")
    receipt_path.write_text(json.dumps(first, indent=2) + "\n")
    print(f"\n# one member's receipt: credential {first['batch']['index']} of the batch, "
          f"{len(receipt_path.read_bytes()):,} bytes")
    return _lacre("verify", str(credential_path), "--receipt", str(receipt_path), "--trust", trust) == 0


def _issuer_known(url: str, key: bytes) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/issuers/{key.hex()}", timeout=2):
            return True
    except OSError:
        return False


def run_devnet(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    wanted_followers = getattr(args, "followers", 0)
    if args.nodes < 1 or wanted_followers < 0:
        print("lacre devnet: --nodes must be at least 1, --followers at least 0", file=sys.stderr)
        return 2
    if not (root / "genesis.json").exists():
        print(f"creating a {args.nodes}-authority consortium in {root}")
        create(root, args.nodes, followers=wanted_followers)
    else:
        print(f"reusing the consortium in {root}")
        for _ in range(wanted_followers - len(followers(root))):
            add_follower(root)
    try:
        started = start(root)
    except RuntimeError as error:
        print(f"lacre devnet: {error}", file=sys.stderr)
        return 1
    try:
        ok = True
        if not args.no_demo:
            ok = demo(root, started[0][1])
            print("\ndemo", "succeeded" if ok else "FAILED")
        print(f"\nconsortium {root / 'consortium.json'}; demo issuer key {root / 'issuer.key'}")
        follower_names = {f["name"] for f in followers(root)}
        for name, url, _ in started:
            status = _status(url) or {}
            role = ""
            if name not in status.get("authorities", [name]):
                role = " (follower: not an authority in force"
                if name in follower_names:
                    role += f"; add it by governance, key {root / 'followers' / (name + '.key')}"
                role += ")"
            print(f"node {name}: {url}{role}")
        if args.exit_after_demo:
            return 0 if ok else 1
        print("serving; Ctrl-C to stop", flush=True)
        stopped = False

        def on_signal(signum, frame) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stopped:
            for name, _, process in started:
                if process.poll() is not None:
                    print(f"node {name} exited with status {process.returncode}; see {root / 'nodes' / name / 'node.log'}")
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        stop(started)
        print("nodes stopped")

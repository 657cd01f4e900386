"""Batch issuance (`lacre issue --batch`): ids, chunks, receipts, and resuming, against a real node in-process.

The node is the real application over LevelDB on 127.0.0.1 (tests/node/conftest.py's
way); the issuer talks to it over HTTP like the CLI does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from client import cli, issuance
from client.batch_issuance import BatchIssuance, BatchOptions, issue_batches
from client.batch_receipts import batch_id_for, batch_receipts, sign_batch
from client.cli import CliError, build_parser
from client.cohort_input import derived_id, hash_credentials, id_secret, read_chunks, run_name, scan_input, with_id
from client.credential import canonical, canonical_bytes, credential_id, parse_credential, sample_open_badge
from client.receipt_output import ReceiptLines, receipt_texts
from client.sdk import AsyncClient
from client.verify import ReceiptVerifier, verify_receipt
from ledger.batch import BatchTree
from ledger.genesis import Trust
from ledger.records import CredentialIssuance, SignedRecord
from node.app import create_app
from tests.conftest import seeded_key
from tests.node.conftest import node_config

NOW_S = 1_800_000_000


def _badge(i: int, with_id: bool = True) -> dict:
    document = sample_open_badge("Universidad Batch", f"did:example:learner-{i}", "Cálculo I",
                                 valid_from="2026-06-01T00:00:00Z")
    if with_id:
        document = {"id": f"urn:example:credential:{i}", **document}
    return document


def _jsonl(path: Path, documents: list[dict], blank_every: int = 0) -> Path:
    lines = []
    for i, document in enumerate(documents):
        lines.append(json.dumps(document, ensure_ascii=False))
        if blank_every and i % blank_every == 0:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n")
    return path


def _ids(documents: list[dict]) -> list[bytes]:
    return [credential_id(d) for d in documents]


# -- ids ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_fast_canonical_form_is_rfc8785(document):
    try:
        expected = canonical_bytes(document)
    except Exception:  # lone surrogates: parse_credential refuses them before hashing
        return
    assert canonical(document) == expected


@pytest.mark.parametrize("document", [
    _badge(1),
    {"a": "\u0000\u001f\u007f\u2028\"\\/\n\t\b\f\r", "é": 1, "z": -(2**53) + 1},
    {"\ue000": 1, "\U0001f600": 2, "b": [1.0, 2.5, 1e21, -0.0]},  # non-BMP key and floats: rfc8785 decides
    {"nested": [{"k": [[], {}]}], "unicode": "日本語 😀"},
])
def test_canonical_form_on_awkward_documents(document):
    assert canonical(document) == canonical_bytes(document)


def test_derived_ids_are_stable_keyed_uuids():
    document = _badge(7, with_id=False)
    secret = id_secret(seeded_key("issuer"))
    first, added = with_id(document, secret)
    again, _ = with_id(document, secret)
    assert added and first == again and "id" not in document
    assert list(first)[:2] == ["@context", "id"]
    assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first["id"])
    assert derived_id(document, id_secret(seeded_key("other issuer"))) != first["id"]
    assert derived_id(_badge(8, with_id=False), secret) != first["id"]
    kept, added = with_id(_badge(7), secret)
    assert not added and kept["id"] == "urn:example:credential:7"


def test_hash_credentials_matches_credential_id_and_names_bad_lines():
    secret = id_secret(seeded_key("issuer"))
    items = [("a:1", json.dumps(_badge(1)).encode()), ("a:2", json.dumps(_badge(2, with_id=False)).encode())]
    joined, added = hash_credentials(items, secret)
    assert joined[:32] == credential_id(_badge(1))
    assert [index for index, _ in added] == [1]
    given_id = parse_credential(added[0][1])
    assert joined[32:] == credential_id(given_id) == hashlib.sha256(added[0][1]).digest()
    with pytest.raises(CliError, match="a:9: .*duplicate key"):
        hash_credentials([("a:9", b'{"id": "x", "id": "y"}')], secret)


# -- input ---------------------------------------------------------------------

def test_chunks_of_a_jsonl_file_skip_blank_lines(tmp_path):
    documents = [_badge(i) for i in range(25)]
    path = _jsonl(tmp_path / "cohort.jsonl", documents, blank_every=7)
    chunks = list(read_chunks(path, 10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [json.loads(data) for chunk in chunks for _, data in chunk] == documents
    assert chunks[0][0][0] == f"{path}:1" and chunks[0][1][0] == f"{path}:3"  # line 2 is blank
    digest, count = scan_input(path)
    assert count == 25
    _jsonl(path, documents[:24] + [_badge(99)], blank_every=7)
    assert scan_input(path)[0] != digest


def test_chunks_of_a_folder_by_file_name(tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i:02d}.json").write_text(json.dumps(_badge(i)))
    (folder / "notes.txt").write_text("not a credential")
    chunks = list(read_chunks(folder, 2))
    assert [[Path(label).name for label, _ in c] for c in chunks] == [["00.json", "01.json"], ["02.json", "03.json"], ["04.json"]]
    assert scan_input(folder)[1] == 5


def test_run_name_covers_input_and_record_options():
    digest = hashlib.sha256(b"input").digest()
    names = {
        run_name(digest, 10_000, 0, ""), run_name(digest, 1_000, 0, ""),
        run_name(digest, 10_000, NOW_S, ""), run_name(digest, 10_000, 0, "Course"),
        run_name(hashlib.sha256(b"other").digest(), 10_000, 0, ""),
    }
    assert len(names) == 5 and run_name(digest, 10_000, 0, "") == run_name(digest, 10_000, 0, "")


# -- receipts as text ------------------------------------------------------------

@pytest.mark.parametrize("compact", [True, False])
def test_receipt_texts_equal_batch_receipts(compact):
    ids = [hashlib.sha256(b"%d" % i).digest() for i in range(13)]
    document = {
        "batch_id": "ab" * 32, "record": "cmVjb3Jk", "leaf_index": 4, "tree_size": 9, "inclusion_path": ["00" * 32],
        "checkpoint": "origin\n9\nroot=\n\n\u2014 inst-0 sig\n", "batch_proof": {"proof": ["x"]},
        "issuer_proof": {"entry": {"name": "Ñandú"}}, "status": "issued", "count": 13, "height": 3,
    }
    tree = BatchTree(ids)
    texts = list(receipt_texts(document, ids, tree, compact))
    assert [json.loads(t) for t in texts] == list(batch_receipts(document, ids, tree))
    if compact:
        assert all("\n" not in t for t in texts)


# -- against a node ---------------------------------------------------------------

@pytest.fixture
async def node(tmp_path, consortium):
    """A running node with the consortium's issuer registered; yields its URL."""
    (tmp_path / "node").mkdir()
    server = TestServer(create_app(node_config(tmp_path / "node", consortium)), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    async with AsyncClient(url) as client:
        await client.submit([consortium.registration()], wait=True)
    yield url
    await server.close()


async def _tree_size(url: str) -> int:
    async with AsyncClient(url) as client:
        return (await client.status())["tree_size"]


def _receipt_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _verify_all(receipts: list[dict], consortium, ids: list[bytes]) -> None:
    verifier = ReceiptVerifier(Trust.from_genesis(consortium.genesis, {}))
    by_id = {r["credential_id"]: r for r in receipts}
    assert len(by_id) == len(receipts) == len(ids)
    for cid in ids:
        result = verifier.verify(by_id[cid.hex()], cid)
        assert result.ok, [c for c in result.checks if not c.ok]


async def test_issue_in_batches_then_rerun_issues_nothing(tmp_path, node, consortium):
    documents = [_badge(i) for i in range(2_500)]
    source = _jsonl(tmp_path / "cohort.jsonl", documents)
    out = tmp_path / "cohort.receipts.jsonl"
    options = BatchOptions(batch_size=1_000, in_flight=2)
    summary = await issue_batches(node, consortium.issuer, source, out, options, now_s=NOW_S)
    assert summary["credentials"] == 2_500 and summary["receipts_written"] == 2_500
    assert [b["count"] for b in summary["batches"]] == [1_000, 1_000, 500]
    assert {b["outcome"] for b in summary["batches"]} == {"committed"}
    run = summary["run"]
    assert [b["batch_id"] for b in summary["batches"]] == [
        batch_id_for(consortium.issuer.public_key, f"{run}/{k}").hex() for k in range(3)
    ]
    assert not (tmp_path / "cohort.receipts.jsonl.issue-state.json").exists()
    _verify_all(_receipt_lines(out), consortium, _ids(documents))
    size = await _tree_size(node)
    assert size == 1 + 3  # the registration and one leaf per batch

    again = await issue_batches(node, consortium.issuer, source, out, options, now_s=NOW_S + 60)
    assert again["run"] == run and again["batches_submitted"] == 0
    assert {b["outcome"] for b in again["batches"]} == {"found on the ledger"}
    assert await _tree_size(node) == size
    assert len(_receipt_lines(out)) == 2_500


async def test_receipt_folder_and_credentials_given_ids(tmp_path, node, consortium):
    documents = [_badge(i, with_id=i % 2 == 0) for i in range(300)]
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i, document in enumerate(documents):
        (folder / f"{i:04d}.json").write_text(json.dumps(document))
    out = tmp_path / "receipts"
    summary = await issue_batches(node, consortium.issuer, folder, out, BatchOptions(batch_size=128), now_s=NOW_S)
    assert summary["receipts_written"] == 300 and len(summary["batches"]) == 3
    given = sorted(out.glob("*.credential.json"))
    assert len(given) == 150  # only those without an "id" in the input
    trust = Trust.from_genesis(consortium.genesis, {})
    for path in given[:20]:
        document = parse_credential(path.read_bytes())
        cid = credential_id(document)
        assert path.name == f"{cid.hex()}.credential.json"
        receipt = json.loads((out / f"{cid.hex()}.receipt.json").read_text())
        assert verify_receipt(receipt, trust, cid).ok
    kept = credential_id(documents[0])
    assert verify_receipt(json.loads((out / f"{kept.hex()}.receipt.json").read_text()), trust, kept).ok
    assert len(list(out.glob("*.receipt.json"))) == 300


class _Stop(Exception):
    pass


async def test_interrupted_run_resumes_without_issuing_twice(tmp_path, node, consortium, monkeypatch):
    documents = [_badge(i, with_id=i % 3 != 0) for i in range(2_500)]
    source = _jsonl(tmp_path / "cohort.jsonl", documents)
    out = tmp_path / "out.jsonl"
    options = BatchOptions(batch_size=1_000, in_flight=1)
    state_path = tmp_path / "out.jsonl.issue-state.json"

    # Chunk 0 is written; chunk 1 commits but the run dies before its receipts are all out.
    real_write = ReceiptLines.write
    calls = []

    def dying_write(self, receipts, documents_given):
        calls.append(1)
        if len(calls) == 2:
            self._receipts.write(b'{"half": "a line"}\n')
            self._receipts.flush()
            raise _Stop()
        return real_write(self, receipts, documents_given)

    monkeypatch.setattr(ReceiptLines, "write", dying_write)
    with pytest.raises(_Stop):
        await issue_batches(node, consortium.issuer, source, out, options, now_s=NOW_S)
    state = json.loads(state_path.read_text())
    assert state["written"] == [0] and len(state["signed"]) == 2
    assert await _tree_size(node) == 1 + 2
    monkeypatch.setattr(ReceiptLines, "write", real_write)

    summary = await issue_batches(node, consortium.issuer, source, out, options, now_s=NOW_S + 3600)
    assert summary["resumed"] and summary["chunks_already_written"] == 1
    assert [(b["chunk"], b["outcome"]) for b in summary["batches"]] == [(1, "found on the ledger"), (2, "committed")]
    assert await _tree_size(node) == 1 + 3
    receipts = _receipt_lines(out)
    assert "half" not in out.read_text()
    given = [parse_credential(line) for line in (tmp_path / "out.credentials.jsonl").read_text().splitlines()]
    assert len(given) == 834  # i % 3 == 0, once each
    ids = [credential_id(d) for d in documents if "id" in d] + [credential_id(d) for d in given]
    _verify_all(receipts, consortium, ids)
    assert not state_path.exists()


async def test_a_batch_pending_under_its_name_is_recognised(tmp_path, node, consortium, monkeypatch):
    """State lost and the batch signed at another time: the node says batch-unique; the root settles it."""
    documents = [_badge(i) for i in range(300)]
    source = _jsonl(tmp_path / "cohort.jsonl", documents)
    digest, _ = scan_input(source)
    run = run_name(digest, 500, 0, "")
    ids = _ids(documents)
    async with AsyncClient(node) as client:
        await client.submit([sign_batch(consortium.issuer, ids, batch_id_for(consortium.issuer.public_key, f"{run}/0"), NOW_S - 99)], wait=True)
    real_document = BatchIssuance._document
    misses = []

    async def unseen_once(self, batch_id):
        if not misses:
            misses.append(batch_id)
            return None  # as if it were still pending when first looked up
        return await real_document(self, batch_id)

    monkeypatch.setattr(BatchIssuance, "_document", unseen_once)
    summary = await issue_batches(node, consortium.issuer, source, tmp_path / "r.jsonl", BatchOptions(batch_size=500), now_s=NOW_S)
    assert misses and summary["batches"][0]["outcome"] == "found on the ledger"
    assert await _tree_size(node) == 2
    _verify_all(_receipt_lines(tmp_path / "r.jsonl"), consortium, ids)


async def test_credentials_issued_before_are_not_issued_again(tmp_path, node, consortium):
    documents = [_badge(i) for i in range(600)]
    ids = _ids(documents)
    # An earlier run of the first 150 in a batch, and two credentials issued alone.
    first = _jsonl(tmp_path / "first.jsonl", documents[:150])
    await issue_batches(node, consortium.issuer, first, tmp_path / "first.jsonl.out", BatchOptions(batch_size=1_000), now_s=NOW_S)
    async with AsyncClient(node) as client:
        await client.submit([SignedRecord.sign(CredentialIssuance(ids[i], NOW_S), consortium.issuer) for i in (400, 599)], wait=True)
    size = await _tree_size(node)

    source = _jsonl(tmp_path / "cohort.jsonl", documents)
    summary = await issue_batches(node, consortium.issuer, source, tmp_path / "r.jsonl", BatchOptions(batch_size=500), now_s=NOW_S)
    assert summary["already_issued"] == 152 and summary["receipts_written"] == 600
    assert [b["count"] for b in summary["batches"]] == [349, 99]
    assert summary["batches"][0]["name"].startswith(f"{summary['run']}/0/")
    assert await _tree_size(node) == size + 2
    _verify_all(_receipt_lines(tmp_path / "r.jsonl"), consortium, ids)

    # Run again: everything is on the ledger already; nothing is submitted, every receipt comes from the node.
    again = await issue_batches(node, consortium.issuer, source, tmp_path / "r.jsonl", BatchOptions(batch_size=500), now_s=NOW_S + 5)
    assert again["batches"] == [] and again["already_issued"] == 600
    assert await _tree_size(node) == size + 2
    _verify_all(_receipt_lines(tmp_path / "r.jsonl"), consortium, ids)


async def test_another_issuers_credential_stops_the_run(tmp_path, node, consortium):
    other = seeded_key("other issuer")
    documents = [_badge(i) for i in range(20)]
    async with AsyncClient(node) as client:
        await client.submit([consortium.registration(other)], wait=True)
        await client.submit([SignedRecord.sign(CredentialIssuance(credential_id(documents[5]), NOW_S), other)], wait=True)
    source = _jsonl(tmp_path / "cohort.jsonl", documents)
    with pytest.raises(CliError, match=f"{credential_id(documents[5]).hex()} was issued by another issuer"):
        await issue_batches(node, consortium.issuer, source, tmp_path / "r.jsonl", BatchOptions(), now_s=NOW_S)


async def test_duplicates_in_the_input_are_refused_before_signing(tmp_path, node, consortium):
    documents = [_badge(i) for i in range(10)] + [_badge(3)]
    source = _jsonl(tmp_path / "cohort.jsonl", documents)
    with pytest.raises(CliError, match=r"cohort.jsonl:11: the same credential as an earlier one"):
        await issue_batches(node, consortium.issuer, source, tmp_path / "r.jsonl", BatchOptions(), now_s=NOW_S)
    assert await _tree_size(node) == 1


async def test_a_name_is_never_signed_over_other_ids(tmp_path, node, consortium):
    source = _jsonl(tmp_path / "cohort.jsonl", [_badge(i) for i in range(10)])
    digest, _ = scan_input(source)
    run = run_name(digest, BatchOptions().batch_size, 0, "")
    (tmp_path / "r.jsonl.issue-state.json").write_text(json.dumps({
        "version": 1, "run": run, "issuer": consortium.issuer.public_key.hex(), "issued_at": NOW_S,
        "signed": {f"{run}/0": {"batch_id": "00" * 32, "root": "11" * 32, "count": 10}}, "written": [], "position": None,
    }))
    with pytest.raises(CliError, match="signed over other credentials"):
        await issue_batches(node, consortium.issuer, source, tmp_path / "r.jsonl", BatchOptions(), now_s=NOW_S)
    assert await _tree_size(node) == 1


# -- the command line ------------------------------------------------------------

def _issue_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["issue", *argv, "--key", "k", "--node", "http://127.0.0.1:1"])


def test_command_line_modes(tmp_path, monkeypatch):
    assert _issue_args("x.jsonl").batch is None
    assert _issue_args("x.jsonl", "--batch").batch is True
    assert _issue_args("x.jsonl", "--no-batch").batch is False
    with pytest.raises(SystemExit):
        _issue_args("x.jsonl", "--batch", "--no-batch")
    seeded_key("issuer").save(tmp_path / "k")
    monkeypatch.chdir(tmp_path)
    one = tmp_path / "one.json"
    one.write_text(json.dumps(_badge(1)))
    with pytest.raises(CliError, match="--batch takes a folder or a .jsonl file"):
        issuance.issue_credentials(_issue_args(str(one), "--batch"))
    chosen = []
    monkeypatch.setattr(issuance, "_issue_in_batches", lambda *a: chosen.append("batch") or 0)
    monkeypatch.setattr(issuance, "_issue_singly", lambda *a: chosen.append("single") or 0)
    small = _jsonl(tmp_path / "small.jsonl", [_badge(i) for i in range(issuance.BATCH_DEFAULT_MIN - 1)])
    large = _jsonl(tmp_path / "large.jsonl", [_badge(i) for i in range(issuance.BATCH_DEFAULT_MIN)])
    for path, *flags in ((small,), (large,), (small, "--batch"), (large, "--no-batch"), (one,)):
        issuance.issue_credentials(_issue_args(str(path), *flags))
    assert chosen == ["single", "batch", "batch", "single", "single"]


async def test_revoke_a_whole_batch_from_the_command_line(tmp_path, node, consortium, capsys):
    documents = [_badge(i) for i in range(20)]
    ids = _ids(documents)
    summary = await issue_batches(node, consortium.issuer, _jsonl(tmp_path / "cohort.jsonl", documents),
                                  tmp_path / "r.jsonl", BatchOptions(batch_size=10))
    revoked = summary["batches"][0]["batch_id"]  # ids[:10]; ids[10:] are the second batch
    key = tmp_path / "issuer.key"
    consortium.issuer.save(key)
    capsys.readouterr()

    async def lacre(*argv: str) -> int:  # the CLI runs its own event loop: give it a thread
        return await asyncio.to_thread(cli.main, ["revoke", *argv, "--key", str(key), "--node", node])

    assert await lacre("--batch", revoked, "--reason", "key_compromise", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["batch_id"] == revoked and answer["status"] == "committed"
    async with AsyncClient(node) as client:
        assert (await client.batch(bytes.fromhex(revoked)))["status"] == "revoked"
        member = await client.credential(ids[3])
        assert member["status"] == "revoked" and member["reason"] == "key_compromise"
        assert (await client.credential(ids[15]))["status"] == "issued"

    assert await lacre("--batch", revoked) == 1  # revoked for good already: the node refuses
    assert "batch-not-revoked" in capsys.readouterr().err
    assert await lacre("--batch", "ab" * 31) == 2
    assert "--batch must be a batch id" in capsys.readouterr().err

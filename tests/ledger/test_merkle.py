"""RFC 9162 reference functions and verifiers (ledger.merkle).

Three kinds of evidence: the published transparency-dev/merkle probe files,
the RFC 6962 test tree whose roots and proofs are printed in that project's
tests, and brute force over every tree of up to 64 leaves with every possible
single corruption.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import ProofError

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "rfc9162"


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _probes(kind: str) -> list:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def test_the_probe_files_are_there():
    assert len(_probes("inclusion")) > 80 and len(_probes("consistency")) > 80


@pytest.mark.parametrize("probe", _probes("inclusion"))
def test_inclusion_probe(probe):
    def verify():
        merkle.verify_inclusion(
            _b64(probe["leafHash"]), probe["leafIdx"], probe["treeSize"],
            [_b64(h) for h in probe["proof"] or []], _b64(probe["root"]),
        )

    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        assert verify() is None


@pytest.mark.parametrize("probe", _probes("consistency"))
def test_consistency_probe(probe):
    def verify():
        merkle.verify_consistency(
            probe["size1"], probe["size2"], _b64(probe["root1"]), _b64(probe["root2"]),
            [_b64(h) for h in probe["proof"] or []],
        )

    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        assert verify() is None


# -- the RFC 6962 test tree (transparency-dev/merkle proof/verify_test.go) ----

RFC6962_LEAVES = [bytes.fromhex(h) for h in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
]]
RFC6962_ROOTS = [bytes.fromhex(h) for h in [  # roots of sizes 1..8
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
RFC6962_INCLUSION = {  # (index, size): path
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
RFC6962_CONSISTENCY = {  # (old size, new size): proof
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (6, 7): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (1, 1): [],
}
RFC6962_HASHES = [merkle.leaf_hash(data) for data in RFC6962_LEAVES]


def test_the_empty_tree_hashes_the_empty_string():
    assert merkle.root([]) == merkle.EMPTY_ROOT
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_hashes_are_domain_separated():
    assert merkle.leaf_hash(b"").hex() == RFC6962_ROOTS[0].hex()
    assert merkle.node_hash(b"a", b"b") != merkle.leaf_hash(b"ab")


def test_parent_hashes_are_the_node_hashes_of_the_pairs():
    a, b, c, d, e = RFC6962_HASHES[:5]
    assert merkle.parent_hashes([a, b, c, d, e]) == [merkle.node_hash(a, b), merkle.node_hash(c, d)]
    assert merkle.parent_hashes([a]) == merkle.parent_hashes([]) == []


@pytest.mark.parametrize("size", range(1, 9))
def test_rfc6962_roots(size):
    assert merkle.root(RFC6962_HASHES[:size]) == RFC6962_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size"), RFC6962_INCLUSION)
def test_rfc6962_inclusion_proofs(index, size):
    expected = [bytes.fromhex(h) for h in RFC6962_INCLUSION[index, size]]
    assert merkle.inclusion_proof(index, RFC6962_HASHES[:size]) == expected
    merkle.verify_inclusion(RFC6962_HASHES[index], index, size, expected, RFC6962_ROOTS[size - 1])


@pytest.mark.parametrize(("old_size", "new_size"), RFC6962_CONSISTENCY)
def test_rfc6962_consistency_proofs(old_size, new_size):
    expected = [bytes.fromhex(h) for h in RFC6962_CONSISTENCY[old_size, new_size]]
    assert merkle.consistency_proof(old_size, RFC6962_HASHES[:new_size]) == expected
    merkle.verify_consistency(old_size, new_size, RFC6962_ROOTS[old_size - 1], RFC6962_ROOTS[new_size - 1], expected)


# -- brute force over every small tree -----------------------------------------

LEAVES = [merkle.leaf_hash(b"leaf %d" % i) for i in range(65)]
SIZES = range(1, 65)


def _flip(value: bytes, bit: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit // 8 % len(value)] ^= 1 << (bit % 8)
    return bytes(flipped)


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    """What a verifier's hash chain depends on besides the index: the number of
    inner and border hashes. Two sizes with one shape give one chain, so the
    proof cannot tell them apart; the signed tree head binds the size."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, bin(index >> inner).count("1")


@pytest.mark.parametrize("size", SIZES)
def test_every_inclusion_proof_verifies_and_every_corruption_fails(size):
    leaves = LEAVES[:size]
    root = merkle.root(leaves)
    for index in range(size):
        proof = merkle.inclusion_proof(index, leaves)
        merkle.verify_inclusion(leaves[index], index, size, proof, root)
        for position in range(len(proof)):
            corrupt = list(proof)
            corrupt[position] = _flip(proof[position], 7 * index + 13 * position)
            with pytest.raises(ProofError):
                merkle.verify_inclusion(leaves[index], index, size, corrupt, root)
        for corrupt in (proof[:-1], proof + [root], [root] + proof) if proof else ([root],):
            with pytest.raises(ProofError):
                merkle.verify_inclusion(leaves[index], index, size, corrupt, root)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(_flip(leaves[index], index), index, size, proof, root)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, size, proof, _flip(root, size))
        for wrong_index in {index - 1, index + 1, index ^ 2, size, -1} - {index}:
            with pytest.raises(ProofError):
                merkle.verify_inclusion(leaves[index], wrong_index, size, proof, root)
        for wrong_size in {size - 1, size + 1, size * 2, size // 2, 0} - {size}:
            if wrong_size > index and _inclusion_shape(index, wrong_size) == _inclusion_shape(index, size):
                continue
            with pytest.raises(ProofError):
                merkle.verify_inclusion(leaves[index], index, wrong_size, proof, root)


@pytest.mark.parametrize("new_size", SIZES)
def test_every_consistency_proof_verifies_and_every_corruption_fails(new_size):
    leaves = LEAVES[:new_size]
    new_root = merkle.root(leaves)
    for old_size in range(1, new_size + 1):
        old_root = merkle.root(leaves[:old_size])
        proof = merkle.consistency_proof(old_size, leaves)
        merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
        for position in range(len(proof)):
            corrupt = list(proof)
            corrupt[position] = _flip(proof[position], 11 * old_size + 5 * position)
            with pytest.raises(ProofError):
                merkle.verify_consistency(old_size, new_size, old_root, new_root, corrupt)
        garbage = [proof[:-1], proof + [new_root], [old_root] + proof] if proof else [[old_root]]
        for corrupt in garbage:
            with pytest.raises(ProofError):
                merkle.verify_consistency(old_size, new_size, old_root, new_root, corrupt)
        with pytest.raises(ProofError):
            merkle.verify_consistency(old_size, new_size, _flip(old_root, 3), new_root, proof)
        with pytest.raises(ProofError):
            merkle.verify_consistency(old_size, new_size, old_root, _flip(new_root, 5), proof)
        if old_size != new_size:
            with pytest.raises(ProofError):
                merkle.verify_consistency(old_size, new_size, new_root, old_root, proof)
        for wrong_old in {old_size - 1, old_size + 1, new_size + 1} - {old_size}:
            with pytest.raises(ProofError):
                merkle.verify_consistency(wrong_old, new_size, old_root, new_root, proof)


def test_consistency_from_the_empty_tree_is_refused_everywhere():
    with pytest.raises(ValueError):
        merkle.consistency_proof(0, LEAVES[:4])
    for new_size, new_root in ((0, merkle.EMPTY_ROOT), (4, merkle.root(LEAVES[:4]))):
        with pytest.raises(ProofError):
            merkle.verify_consistency(0, new_size, merkle.EMPTY_ROOT, new_root, [])


@pytest.mark.parametrize("bad", [
    {"index": 4, "size": 4}, {"index": -1}, {"index": True}, {"size": 0},
    {"leaf": b"short"}, {"leaf": "not bytes"}, {"proof": [b"\x00" * 31]},
    {"proof": b"\x00" * 32}, {"proof": 7}, {"proof": [None]}, {"root": None},
])
def test_verify_inclusion_raises_only_proof_error_on_malformed_input(bad):
    leaves = LEAVES[:4]
    args = {"leaf": leaves[1], "index": 1, "size": 4, "proof": merkle.inclusion_proof(1, leaves),
            "root": merkle.root(leaves)} | bad
    with pytest.raises(ProofError):
        merkle.verify_inclusion(args["leaf"], args["index"], args["size"], args["proof"], args["root"])


@pytest.mark.parametrize("bad", [
    {"old": -1}, {"new": 2}, {"old": 3.0}, {"old_root": "hex"}, {"new_root": b"short"},
    {"proof": [b"\x00" * 33]}, {"proof": "abc"}, {"proof": None},
])
def test_verify_consistency_raises_only_proof_error_on_malformed_input(bad):
    leaves = LEAVES[:7]
    args = {"old": 3, "new": 7, "old_root": merkle.root(leaves[:3]), "new_root": merkle.root(leaves),
            "proof": merkle.consistency_proof(3, leaves)} | bad
    with pytest.raises(ProofError):
        merkle.verify_consistency(args["old"], args["new"], args["old_root"], args["new_root"], args["proof"])


@given(st.data())
def test_any_single_bit_flip_anywhere_is_caught(data):
    size = data.draw(st.integers(1, 64))
    index = data.draw(st.integers(0, size - 1))
    leaves = LEAVES[:size]
    proof = merkle.inclusion_proof(index, leaves)
    leaf, root = leaves[index], merkle.root(leaves)
    target = data.draw(st.integers(0, len(proof) + 1))
    bit = data.draw(st.integers(0, 255))
    if target < len(proof):
        proof[target] = _flip(proof[target], bit)
    elif target == len(proof):
        leaf = _flip(leaf, bit)
    else:
        root = _flip(root, bit)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf, index, size, proof, root)


@pytest.mark.parametrize(("call", "args"), [
    (merkle.inclusion_proof, (0, [])),
    (merkle.inclusion_proof, (3, LEAVES[:3])),
    (merkle.consistency_proof, (4, LEAVES[:3])),
])
def test_reference_proofs_state_their_preconditions(call, args):
    with pytest.raises(ValueError):
        call(*args)

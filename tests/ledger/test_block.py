"""Commit certificates: a quorum of precommits that also cosign the checkpoint."""

from __future__ import annotations

import dataclasses

import pytest

from ledger.block import BlockError, BlockHeader, CommitCertificate, CommitSignature, precommit
from tests.conftest import make_consortium, seeded_key

C = make_consortium(4)
CHAIN_ID = C.genesis.hash
ORIGIN = C.genesis.origin
HEADER = BlockHeader(1, CHAIN_ID, "inst-1", 0, 5, 1, 1, b"\x07" * 32, bytes(32))


def certificate(signers, header=HEADER, round=0):
    return CommitCertificate(header.height, round, header.hash, tuple(precommit(k, header, round, CHAIN_ID, ORIGIN) for k in signers))


def test_quorum_of_precommits_verifies():
    certificate(C.authorities[:3]).verify(HEADER, C.genesis.authority_set, CHAIN_ID, ORIGIN)
    certificate(C.authorities).verify(HEADER, C.genesis.authority_set, CHAIN_ID, ORIGIN)


def _duplicate(cert):
    return dataclasses.replace(cert, signatures=cert.signatures[:2] + cert.signatures[:1])


def _swap_checkpoint_signature(cert):
    a, b = cert.signatures[0], cert.signatures[1]
    return dataclasses.replace(cert, signatures=(CommitSignature(a.authority, a.vote_signature, b.checkpoint_signature),) + cert.signatures[1:])


def _outsider(cert):
    outsider = seeded_key("inst-0-impostor")
    other = precommit(outsider, HEADER, 0, CHAIN_ID, ORIGIN)
    return dataclasses.replace(cert, signatures=cert.signatures + (other,))


BAD = {
    "below quorum": (lambda c: dataclasses.replace(c, signatures=c.signatures[:2]), "quorum"),
    "same authority twice": (_duplicate, "signed twice"),
    "checkpoint signature of another": (_swap_checkpoint_signature, "checkpoint signature"),
    "signature by a non-member": (_outsider, "not an authority"),
    "other block hash": (lambda c: dataclasses.replace(c, block_hash=bytes(32)), "block hash"),
    "other round": (lambda c: dataclasses.replace(c, round=1), "precommit signature"),
}


@pytest.mark.parametrize("tamper,message", BAD.values(), ids=BAD.keys())
def test_bad_certificates_are_refused(tamper, message):
    with pytest.raises(BlockError, match=message):
        tamper(certificate(C.authorities[:3])).verify(HEADER, C.genesis.authority_set, CHAIN_ID, ORIGIN)


def test_precommit_for_another_chain_does_not_count():
    cert = CommitCertificate(1, 0, HEADER.hash, tuple(precommit(k, HEADER, 0, b"\x01" * 32, ORIGIN) for k in C.authorities))
    with pytest.raises(BlockError, match="precommit signature"):
        cert.verify(HEADER, C.genesis.authority_set, CHAIN_ID, ORIGIN)


def test_checkpoint_note_carries_every_cosignature():
    from ledger.checkpoint import verify_checkpoint

    note = certificate(C.authorities[:3]).checkpoint_note(HEADER, ORIGIN, C.genesis.authority_set)
    checkpoint, signatures = verify_checkpoint(note, C.genesis.authority_set.verifiers, 3, origin=ORIGIN)
    assert checkpoint.tree_size == 1 and len(signatures) == 3
    assert checkpoint.extensions[0].startswith("lacre-block 1 ")


STRUCTURAL = {k: v for k, v in BAD.items() if k in ("below quorum", "same authority twice", "signature by a non-member", "other block hash")}


@pytest.mark.parametrize("tamper,message", STRUCTURAL.values(), ids=STRUCTURAL.keys())
def test_a_certificate_whose_signatures_the_caller_checked_is_still_bound_and_counted(tamper, message):
    with pytest.raises(BlockError, match=message):
        tamper(certificate(C.authorities[:3])).verify(HEADER, C.genesis.authority_set, CHAIN_ID, ORIGIN, signatures_checked=True)


def test_signatures_checked_skips_only_the_signature_checks():
    forged = dataclasses.replace(certificate(C.authorities[:3]), round=1)  # every vote signature now fails
    forged.verify(HEADER, C.genesis.authority_set, CHAIN_ID, ORIGIN, signatures_checked=True)
    with pytest.raises(BlockError, match="precommit signature"):
        forged.verify(HEADER, C.genesis.authority_set, CHAIN_ID, ORIGIN)

"""C2SP tlog checkpoints: format, strict parsing and quorum cosigning.

The sum.golang.org checkpoint and its cosignatures come from
transparency-dev/formats log/note_test.go (TestSumDBNoteParsing, BenchmarkParse);
the example body from c2sp.org/tlog-checkpoint.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.checkpoint import Checkpoint, CheckpointError, sign_checkpoint, verify_checkpoint
from ledger.note import InvalidSignatureError, NoteError, NoteSigner, QuorumError, format_note, parse_verifier_key, sign_text

SUMDB_KEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_TEXT = "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
SUMDB_NOTE = SUMDB_TEXT + "\n— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
COSIGNER_KEYS = [
    "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT",
    "bananas+cf639f13+AaPjhFnPCQnid/Ql32KWhmh+uk72FVRfK+2DLmO3BI3M",
    "witness+f13a86db+AdYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN",
]
COSIGNATURES = [
    "— monkeys 202ffh9ve46Mqbhuyb4wnC2Pwdan5EsXQym/tF1ggXJqhjGosU4T5intH4iKMRgDLxrnXuIjRaU2NbvAnaepM6Y+8ww=\n",
    "— bananas z2OfE+2bbsBZ7NLgfuslc0v7NFW2QyexJ7fhePpoL2N/P7N/COd5S+JNHbQEAlYzz2C5sg0E+x/MggS1mDR6t3/9rQw=\n",
    "— witness 8TqG25yWGFLdT7WPf/WoyeG3LwqtkXP+8S3yykOVm6EMh4hPgCke6eSVPU4BdtXNMPJBXKF+UpDbGgCdcpR8SVSoqAU=\n",
]
C2SP_EXAMPLE = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)

ORIGIN = "test.lacre.local/consortium"
ROOT = hashlib.sha256(b"root").digest()
AUTHORITIES = [NoteSigner(f"inst-{i}.example", hashlib.sha256(b"inst %d" % i).digest()) for i in range(4)]
VERIFIERS = [a.verifier for a in AUTHORITIES]
OUTSIDERS = [NoteSigner(f"outsider-{i}", hashlib.sha256(b"outsider %d" % i).digest()) for i in range(3)]


def checkpoint(size: int = 10, extensions: tuple[str, ...] = ()) -> Checkpoint:
    return Checkpoint(ORIGIN, size, ROOT, extensions)


# --- format ------------------------------------------------------------------------

def test_text_format():
    cp = checkpoint(1204, ("lacre-state abc=",))
    root = base64.b64encode(ROOT).decode()
    assert cp.text() == f"{ORIGIN}\n1204\n{root}\nlacre-state abc=\n"


@pytest.mark.parametrize("cp", [
    checkpoint(0), checkpoint(1), checkpoint(2**64 - 1), checkpoint(5, ("a", "b c", "ü + ü")),
    Checkpoint("Moon Log", 4027504, ROOT),
])
def test_round_trip(cp):
    assert Checkpoint.parse(cp.text()) == cp


def test_c2sp_example_body():
    text = C2SP_EXAMPLE[: C2SP_EXAMPLE.index("\n\n") + 1]
    cp = Checkpoint.parse(text)
    assert (cp.origin, cp.tree_size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert base64.b64encode(cp.root_hash).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert cp.text() == text
    # Its key is not ours: the note is well formed but never trusted.
    with pytest.raises(QuorumError):
        verify_checkpoint(C2SP_EXAMPLE, VERIFIERS, 1)


def test_sumdb_checkpoint_verifies():
    cp, signatures = verify_checkpoint(SUMDB_NOTE, [parse_verifier_key(SUMDB_KEY)], 1, origin="go.sum database tree")
    assert cp.tree_size == 6476701 and cp.text() == SUMDB_TEXT
    assert [s.name for s in signatures] == ["sum.golang.org"]
    with pytest.raises(CheckpointError, match="expected"):
        verify_checkpoint(SUMDB_NOTE, [parse_verifier_key(SUMDB_KEY)], 1, origin="Go rocks but I might have the wrong ID")


def test_sumdb_checkpoint_with_real_cosignatures():
    verifiers = [parse_verifier_key(k) for k in [SUMDB_KEY, *COSIGNER_KEYS]]
    note = SUMDB_NOTE + "".join(COSIGNATURES)
    _, signatures = verify_checkpoint(note, verifiers, 4)
    assert [s.name for s in signatures] == ["sum.golang.org", "monkeys", "bananas", "witness"]
    # The witness signature under other names is from unknown keys: ignored, not counted.
    impostors = COSIGNATURES[2].replace("witness", "random1") + COSIGNATURES[2].replace("witness", "random2")
    _, signatures = verify_checkpoint(SUMDB_NOTE + COSIGNATURES[0] + impostors, verifiers, 2)
    assert len(signatures) == 2
    with pytest.raises(QuorumError):
        verify_checkpoint(SUMDB_NOTE + COSIGNATURES[0] + impostors, verifiers, 3)


@pytest.mark.parametrize("text, why", [
    ("Head\n9944\n", "too few lines"),
    ("\n9944\n" + base64.b64encode(ROOT).decode() + "\n", "empty origin"),
    ("Log\n123\n" + base64.b64encode(ROOT).decode(), "no final newline"),
    ("Log\nbananas\n" + base64.b64encode(ROOT).decode() + "\n", "size not a number"),
    ("Log\n-34\n" + base64.b64encode(ROOT).decode() + "\n", "negative size"),
    ("Log\n+34\n" + base64.b64encode(ROOT).decode() + "\n", "plus sign"),
    ("Log\n 34\n" + base64.b64encode(ROOT).decode() + "\n", "space"),
    ("Log\n034\n" + base64.b64encode(ROOT).decode() + "\n", "leading zero"),
    ("Log\n00\n" + base64.b64encode(ROOT).decode() + "\n", "double zero"),
    ("Log\n1_000\n" + base64.b64encode(ROOT).decode() + "\n", "underscore"),
    ("Log\n\u0661\u0662\n" + base64.b64encode(ROOT).decode() + "\n", "arabic-indic digits"),
    ("Log\n18446744073709551616\n" + base64.b64encode(ROOT).decode() + "\n", "beyond uint64"),
    ("Log\n123\nThisIsn'tBase64\n", "not base64"),
    ("Log\n123\nYmFuYW5hcw==\n", "root not 32 bytes"),
    ("Log\n123\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n", "unpadded"),
    ("Log\n123\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n", "url-safe alphabet"),
    ("Log\n123\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n", "non-canonical base64"),
    ("Log\n123\n" + base64.b64encode(ROOT).decode() + "\n\n", "empty extension line"),
    ("Log\n123\n" + base64.b64encode(ROOT).decode() + "\nok\n\n\n", "trailing blank lines"),
    ("Log\r\n123\n" + base64.b64encode(ROOT).decode() + "\n", "carriage return"),
])
def test_malformed_bodies_refused(text, why):
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


@pytest.mark.parametrize("args", [
    ("", 1, ROOT), ("a\nb", 1, ROOT), (ORIGIN, -1, ROOT), (ORIGIN, 2**64, ROOT), (ORIGIN, True, ROOT),
    (ORIGIN, 1, ROOT[:31]), (ORIGIN, 1, ROOT, ("",)), (ORIGIN, 1, ROOT, ("a\nb",)), (ORIGIN, 1, ROOT, ["x"]),
])
def test_bad_fields_refused(args):
    with pytest.raises(CheckpointError):
        Checkpoint(*args)


@given(st.text(max_size=200))
def test_parse_raises_only_checkpoint_error(text):
    try:
        cp = Checkpoint.parse(text)
    except CheckpointError:
        return
    assert cp.text() == text  # anything accepted is in its one canonical spelling


# --- quorum cosigning --------------------------------------------------------------------

def test_three_of_four_accepted():
    note = sign_checkpoint(checkpoint(), AUTHORITIES[:3])
    cp, signatures = verify_checkpoint(note, VERIFIERS, 3, origin=ORIGIN)
    assert cp == checkpoint()
    assert [s.name for s in signatures] == [a.name for a in AUTHORITIES[:3]]


def test_two_of_four_refused():
    note = sign_checkpoint(checkpoint(), AUTHORITIES[:2])
    with pytest.raises(QuorumError):
        verify_checkpoint(note, VERIFIERS, 3)


def test_outsiders_do_not_count():
    note = sign_checkpoint(checkpoint(), AUTHORITIES[:2] + OUTSIDERS)
    with pytest.raises(QuorumError):
        verify_checkpoint(note, VERIFIERS, 3)
    _, signatures = verify_checkpoint(note, VERIFIERS, 2)
    assert {s.name for s in signatures} == {AUTHORITIES[0].name, AUTHORITIES[1].name}


def test_repeated_signature_does_not_make_quorum():
    text = checkpoint().text()
    twice = [sign_text(text, AUTHORITIES[0])] * 2 + [sign_text(text, AUTHORITIES[1])]
    with pytest.raises(QuorumError):
        verify_checkpoint(format_note(text, twice), VERIFIERS, 3)


def test_outsider_using_an_authority_name_is_ignored():
    impostor = NoteSigner(AUTHORITIES[3].name, hashlib.sha256(b"impostor").digest())
    note = sign_checkpoint(checkpoint(), [*AUTHORITIES[:2], impostor])
    with pytest.raises(QuorumError):
        verify_checkpoint(note, VERIFIERS, 3)


def test_altered_checkpoint_fails():
    note = sign_checkpoint(checkpoint(10), AUTHORITIES[:3])
    altered = note.replace(f"{ORIGIN}\n10\n", f"{ORIGIN}\n11\n", 1)
    with pytest.raises(InvalidSignatureError):
        verify_checkpoint(altered, VERIFIERS, 3)


def test_signed_body_that_is_no_checkpoint():
    text = "if this is a valid checkpoint then I'll eat my hat\n"
    note = format_note(text, [sign_text(text, AUTHORITIES[0])])
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, VERIFIERS, 1)


def test_errors_are_value_errors_for_callers():
    assert issubclass(NoteError, ValueError) and issubclass(CheckpointError, ValueError)

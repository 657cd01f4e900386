"""C2SP signed notes, byte-exact with golang.org/x/mod/sumdb/note.

The PeterNeumann and EnochRoot vectors come from that package's note.go
documentation and note_test.go (TestSign, TestOpen).
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.note import (
    SIGNATURES_MAX,
    InvalidSignatureError,
    NoteError,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    QuorumError,
    format_note,
    key_id,
    open_note,
    parse_note,
    parse_signer_key,
    parse_verifier_key,
    sign_text,
)

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
PETER_NOTE = TEXT + "\n" + PETER_SIG

PETER = parse_verifier_key(PETER_VKEY)
ENOCH = parse_verifier_key(ENOCH_VKEY)


def signer(name: str) -> NoteSigner:
    return NoteSigner(name, hashlib.sha256(name.encode()).digest())


# --- the Go vectors -------------------------------------------------------------

def test_go_vector_signs_byte_for_byte():
    note = format_note(TEXT, [sign_text(TEXT, parse_signer_key(PETER_SKEY))])
    assert note == PETER_NOTE
    assert note.encode() == PETER_NOTE.encode()


def test_go_vector_opens():
    opened = open_note(PETER_NOTE, [PETER])
    assert opened.text == TEXT
    assert [s.line() for s in opened.verified] == [PETER_SIG]
    assert opened.unknown == ()


def test_go_vector_keys_round_trip():
    assert PETER.name == "PeterNeumann" and PETER.key_id == bytes.fromhex("c74f20a3")
    assert PETER.encode() == PETER_VKEY
    peter_signer = parse_signer_key(PETER_SKEY)
    assert peter_signer.encode() == PETER_SKEY
    assert peter_signer.verifier == PETER
    assert NoteVerifier.from_key("PeterNeumann", PETER.public_key) == PETER
    assert key_id("PeterNeumann", PETER.public_key) == bytes.fromhex("c74f20a3")
    assert ENOCH.key_id == bytes.fromhex("af0cfe78")


def test_go_open_one_known_one_unknown_then_both_known():
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    opened = open_note(note, [PETER])
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [s.name for s in opened.unknown] == ["EnochRoot"]
    opened = open_note(note, [PETER, ENOCH], quorum=2)
    assert [s.name for s in opened.verified] == ["PeterNeumann", "EnochRoot"]


def test_go_open_with_no_known_key_is_refused():
    with pytest.raises(QuorumError):
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])


@pytest.mark.parametrize("note", [
    TEXT,
    TEXT + "\n",
    TEXT + "\n" + PETER_SIG[:-1],
    "\x01" + TEXT + "\n" + PETER_SIG,
    TEXT + "\n" + "— Bad Name " + PETER_SIG.split(" ")[2],
    TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    TEXT + "\n" + PETER_SIG * (SIGNATURES_MAX + 1),
], ids=["no-signatures", "blank-only", "no-final-newline", "control-char", "bad-name", "stray-line", "too-many"])
def test_go_malformed_notes(note):
    with pytest.raises(NoteError):
        open_note(note, [PETER])


def test_invalid_utf8_bytes_refused():
    with pytest.raises(NoteError, match="UTF-8"):
        parse_note(b"\xff" + PETER_NOTE.encode())


def test_go_key_manglings_refused():
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1:]
        with pytest.raises(NoteError):
            parse_verifier_key(mangled)
    for cut in range(1, len(PETER_VKEY)):
        for key in (PETER_VKEY[:cut], PETER_VKEY[cut:]):
            with pytest.raises(NoteError):
                parse_verifier_key(key)
    # Go's own cases: wrong key length and unknown algorithm, each with the key id adjusted.
    with pytest.raises(NoteError):
        parse_verifier_key("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(NoteError, match="algorithm"):
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_signer_key_manglings_refused():
    for i in range(len(PETER_SKEY)):
        mangled = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1:]
        with pytest.raises(NoteError):
            parse_signer_key(mangled)
    with pytest.raises(NoteError):
        parse_signer_key(PETER_VKEY)


def test_upper_case_key_id_accepted_like_go():
    assert parse_verifier_key(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == PETER


# --- verification rules -----------------------------------------------------------

def test_tampered_text_fails():
    tampered = PETER_NOTE.replace("cryptography", "cryptograph")
    with pytest.raises(InvalidSignatureError):
        open_note(tampered, [PETER])


def test_wrong_key_id_is_an_unknown_key():
    raw = base64.b64decode(PETER_SIG.split(" ")[2])
    wrong = "— PeterNeumann " + base64.b64encode(b"\x00\x00\x00\x00" + raw[4:]).decode() + "\n"
    opened = open_note(TEXT + "\n" + PETER_SIG + wrong, [PETER])
    assert len(opened.verified) == 1 and opened.unknown[0].key_id == bytes(4)
    with pytest.raises(QuorumError):
        open_note(TEXT + "\n" + wrong, [PETER])


def test_same_key_id_other_name_is_unknown():
    misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    with pytest.raises(QuorumError):
        open_note(TEXT + "\n" + misnamed, [PETER])


def test_truncated_signature_of_known_key_fails():
    raw = base64.b64decode(PETER_SIG.split(" ")[2])
    truncated = "— PeterNeumann " + base64.b64encode(raw[:-1]).decode() + "\n"
    with pytest.raises(InvalidSignatureError):
        open_note(TEXT + "\n" + truncated, [PETER])


def test_corrupted_signature_of_known_key_fails_whole_note():
    # Go's "Invalid signature" case: four bytes spliced into the signature.
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidSignatureError):
        open_note(TEXT + "\n" + bad, [PETER])
    # Even next to a good signature from the same key.
    with pytest.raises(InvalidSignatureError):
        open_note(TEXT + "\n" + PETER_SIG + bad, [PETER])


def test_unknown_keys_ignored_unless_quorum_unmet():
    others = [signer(f"other-{i}") for i in range(3)]
    text = "hello\n"
    note = format_note(text, [sign_text(text, s) for s in others] + [sign_text(text, signer("me"))])
    opened = open_note(note, [signer("me").verifier])
    assert len(opened.verified) == 1 and len(opened.unknown) == 3
    with pytest.raises(QuorumError, match="quorum is 2"):
        open_note(note, [signer("me").verifier], quorum=2)


def test_unknown_signature_of_other_length_is_kept_aside():
    # A witness cosignature (type 0x04) is 72 bytes: not ours to check, not an error.
    cosignature = NoteSignature("witness.example/w1", b"\x01\x02\x03\x04", bytes(72))
    note = format_note(TEXT, [sign_text(TEXT, parse_signer_key(PETER_SKEY)), cosignature])
    opened = open_note(note, [PETER])
    assert opened.unknown == (cosignature,)


def test_duplicates_count_once_toward_quorum():
    note = TEXT + "\n" + PETER_SIG * 3 + ENOCH_SIG * 2
    opened = open_note(note, [PETER, ENOCH], quorum=2)
    assert len(opened.verified) == 2
    with pytest.raises(QuorumError):
        open_note(TEXT + "\n" + PETER_SIG * 5, [PETER, ENOCH], quorum=2)
    assert len(open_note(note, [PETER]).unknown) == 1


def test_one_key_under_two_names_counts_once():
    key = signer("a")
    alias = NoteSigner("alias", key.seed)
    text = "x\n"
    note = format_note(text, [sign_text(text, key), sign_text(text, alias)])
    with pytest.raises(QuorumError):
        open_note(note, [key.verifier, alias.verifier], quorum=2)


def test_ambiguous_verifiers_refused():
    forged = object.__new__(NoteVerifier)  # a colliding key id needs 2^32 work; fake it
    for name, value in (("name", "PeterNeumann"), ("key_id", PETER.key_id), ("public_key", bytes(32))):
        object.__setattr__(forged, name, value)
    object.__setattr__(forged, "_verify_key", None)
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(PETER_NOTE, [PETER, forged])


def test_quorum_below_one_is_misuse():
    with pytest.raises(ValueError):
        open_note(PETER_NOTE, [PETER], quorum=0)


# --- construction rules -------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "a\u3000b", "a\tb", "a\x01b", "\ud800"])
def test_bad_names_refused(name):
    with pytest.raises(NoteError):
        NoteVerifier.from_key(name, PETER.public_key)
    with pytest.raises(NoteError):
        NoteSigner(name, bytes(32))


def test_names_may_be_urls_and_non_ascii():
    for name in ("example.com/log42", "universidad.example/autoridad-ñ", "a\x7fb"):
        assert parse_verifier_key(NoteVerifier.from_key(name, PETER.public_key).encode()).name == name


@pytest.mark.parametrize("text", ["no newline", "", "tab\there\n", "cr\r\n", "\udc80\n"])
def test_bad_texts_cannot_be_signed(text):
    with pytest.raises(NoteError):
        sign_text(text, signer("a"))


def test_text_may_hold_blank_lines():
    text = "first\n\nthird\n\n"
    note = format_note(text, [sign_text(text, signer("a"))])
    assert open_note(note, [signer("a").verifier]).text == text


def test_format_note_needs_signatures():
    with pytest.raises(NoteError):
        format_note(TEXT, [])


def test_wrong_sizes_refused():
    with pytest.raises(NoteError):
        NoteVerifier("PeterNeumann", PETER.key_id, PETER.public_key[:31])
    with pytest.raises(NoteError):
        NoteVerifier("PeterNeumann", b"\x00" * 4, PETER.public_key)
    with pytest.raises(NoteError):
        NoteSigner("a", bytes(31))
    with pytest.raises(NoteError):
        NoteSignature("a", b"\x00" * 3, bytes(64))


def test_signer_repr_hides_seed():
    assert "seed" not in repr(signer("secret")) and signer("secret").seed.hex() not in repr(signer("secret"))


def test_non_canonical_base64_signature_refused():
    b64 = PETER_SIG.split(" ")[2].rstrip("\n")
    assert b64.endswith("M=")  # last char carries 2 spare bits; "N" sets one
    with pytest.raises(NoteError, match="canonical"):
        parse_note(TEXT + "\n— PeterNeumann " + b64[:-2] + "N=\n")


# --- garbage in, NoteError out -------------------------------------------------------

@given(st.binary(max_size=400))
def test_random_bytes_raise_only_note_error(data):
    try:
        parse_note(data)
        open_note(data, [PETER])
    except NoteError:
        pass


@given(st.text(max_size=300))
def test_random_text_raises_only_note_error(text):
    try:
        open_note(text, [PETER, ENOCH])
    except NoteError:
        pass


_pieces = st.sampled_from([TEXT, "\n", "\n\n", "— ", "PeterNeumann", " ", "x08go/ZJkuBS9UG", "=", "+", "\u2014", PETER_SIG, ENOCH_SIG])


@given(st.lists(_pieces, max_size=12).map("".join))
def test_near_miss_notes_raise_only_note_error(note):
    try:
        open_note(note, [PETER, ENOCH])
    except NoteError:
        pass


@given(st.text(max_size=120))
def test_random_keys_raise_only_note_error(text):
    for parse in (parse_verifier_key, parse_signer_key):
        try:
            parse(text)
        except NoteError:
            pass

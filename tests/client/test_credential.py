"""Credentials: strict I-JSON parsing, RFC 8785 canonical bytes, ids and loading."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from client.credential import (
    CONTEXT_OB_V3,
    CONTEXT_VC_V2,
    CredentialError,
    canonical_bytes,
    credential_id,
    ensure_id,
    load_credentials,
    parse_credential,
    parse_json,
    sample_open_badge,
)

JCS = Path(__file__).resolve().parent.parent / "vectors" / "jcs"
JCS_NAMES = sorted(p.name for p in (JCS / "input").glob("*.json"))


def badge() -> dict:
    return sample_open_badge("Facultad de Ingeniería", "did:example:ana", "Redes I", valid_from="2025-01-15T00:00:00Z")


# --- RFC 8785 reference vectors -----------------------------------------------------------

def test_every_vector_pair_is_present():
    assert JCS_NAMES == ["arrays.json", "french.json", "structures.json", "unicode.json", "values.json", "weird.json"]
    assert JCS_NAMES == sorted(p.name for p in (JCS / "output").glob("*.json"))


@pytest.mark.parametrize("name", JCS_NAMES)
def test_jcs_vector(name):
    value = parse_json((JCS / "input" / name).read_bytes())
    assert canonical_bytes(value) == (JCS / "output" / name).read_bytes()


@pytest.mark.parametrize("name", [n for n in JCS_NAMES if n != "arrays.json"])
def test_jcs_vector_objects_are_credentials(name):
    # Every vector but arrays.json is an object, so it also passes the credential gate unchanged.
    document = parse_credential((JCS / "input" / name).read_bytes())
    assert credential_id(document) == hashlib.sha256((JCS / "output" / name).read_bytes()).digest()


# --- ids --------------------------------------------------------------------------------

def test_id_ignores_key_order_and_whitespace():
    document = badge()
    compact = json.dumps(document, separators=(",", ":"), ensure_ascii=True)
    shuffled = json.dumps(dict(reversed(list(document.items()))), indent=4, ensure_ascii=False)
    ids = {credential_id(parse_credential(text)) for text in (compact, shuffled, shuffled.encode())}
    assert ids == {credential_id(document)}
    assert len(credential_id(document)) == 32


def test_id_changes_with_content():
    document = badge()
    forged = json.loads(json.dumps(document))
    forged["credentialSubject"]["achievement"]["name"] = "Redes II"
    assert credential_id(forged) != credential_id(document)


def test_same_number_different_spellings_same_id():
    assert credential_id(parse_credential('{"n": 4.50}')) == credential_id(parse_credential('{"n": 4.5}'))
    assert credential_id(parse_credential('{"n": 1E30}')) == credential_id(parse_credential('{"n": 1e+30}'))


def test_canonical_bytes_refuses_what_jcs_cannot_represent():
    for value, pattern in [
        ({"n": 2**53}, "large integers"), ({"n": float("nan")}, "NaN"), ({1: "x"}, "keys must be strings"),
        ({"s": "\ud800"}, "UTF-8"), ({"\udc00": 1}, "surrogate"), ({"b": b"x"}, "unsupported"),
    ]:
        with pytest.raises(CredentialError, match=pattern):
            canonical_bytes(value)


# --- refusals ----------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    ('{"a": 1, "a": 2}', r'duplicate key "a" in one object \(at \$\)'),
    ('{"x": {"y": [0, {"k": 1, "k": 1}]}}', r'duplicate key "k" .*\(at \$\.x\.y\[1\]\)'),
    ('{"n": NaN}', r"NaN is not a JSON value \(at \$\.n\)"),
    ('{"n": [Infinity]}', r"Infinity is not a JSON value \(at \$\.n\[0\]\)"),
    ('{"n": -Infinity}', r"-Infinity is not a JSON value"),
    ('{"n": 9007199254740992}', r"integer 9007199254740992 is outside the I-JSON range"),
    ('{"n": -9007199254740992}', r"integer -9007199254740992 is outside"),
    ('{"n": ' + "9" * 5000 + "}", r"integer 9999.*\.\.\. is outside"),
    ('{"n": 1e400}', r"number 1e400 is too large for a double \(at \$\.n\)"),
    ('{"n": -1.5e999}', r"too large for a double"),
    ('{"n": 4.261155412774073e16}', r"canonicalizes to an integer outside the I-JSON range .*\(at \$\.n\)"),
    ('{"n": 9007199254740992.0}', r"canonicalizes to an integer outside"),
    ('{"s": "\\ud800"}', r"lone surrogate .*\(at \$\.s\)"),
    ('{"s": ["ok", "x\\udfffy"]}', r"lone surrogate .*\(at \$\.s\[1\]\)"),
    ('{"\\udc00": 1}', r"key has a lone surrogate"),
    ('{"weird key": {"\\ud83d": 1}}', r'key has a lone surrogate .*\(at \$\["weird key"\]\)'),
    ("[1, 2]", r"must be a JSON object, not an array"),
    ('"text"', r"not a string"),
    ("null", r"not null"),
    ("42", r"not a number"),
    ("", r"not valid JSON: Expecting value at line 1 column 1"),
    ('{"a": 1,}', r"not valid JSON: .* at line 1 column"),
    ('{"a": 1}\n{"b": 2}', r"not valid JSON: Extra data at line 2 column 1"),
    ('{"a": "tab\there"}', r"Invalid control character"),
    (b'{"a": "\xff"}', r"not valid UTF-8 \(byte 7\)"),
    (b'\xff\xfe{\x00}\x00', r"not valid UTF-8"),
    ("[" * 100_000 + "]" * 100_000, r"nested too deeply"),
])
def test_refusals_name_the_problem(data, message):
    with pytest.raises(CredentialError, match=message) as caught:
        parse_credential(data)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_largest_safe_integers_and_ordinary_floats_accepted():
    document = parse_credential('{"max": 9007199254740991, "min": -9007199254740991, "f": 1e308, "g": -0.0, "u": 1e-400}')
    assert canonical_bytes(document) == b'{"f":1e+308,"g":0,"max":9007199254740991,"min":-9007199254740991,"u":0}'


def test_byte_order_mark_ignored():
    assert parse_credential(b"\xef\xbb\xbf" + b'{"a": 1}') == {"a": 1}


def test_paths_of_surrogate_pairs_are_fine():
    assert parse_credential('{"s": "\\ud83d\\ude02"}') == {"s": "\U0001F602"}


def test_an_escaped_backslash_before_ud800_is_text_not_a_surrogate():
    # Looks like an escape to the quick scan, which then walks the tree and finds nothing.
    assert parse_credential('{"s": "\\\\ud800"}') == {"s": "\\ud800"}


# --- ensure_id -----------------------------------------------------------------------------

def test_ensure_id_adds_uuid_after_context():
    document = badge()
    assert "id" not in document
    with_id, changed = ensure_id(document)
    assert changed and "id" not in document  # the input is left alone
    assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", with_id["id"])
    assert list(with_id)[:2] == ["@context", "id"]
    assert {k: v for k, v in with_id.items() if k != "id"} == document
    assert ensure_id(with_id) == (with_id, False)
    assert ensure_id(document)[0]["id"] != with_id["id"]


def test_ensure_id_without_context_and_bad_ids():
    assert list(ensure_id({"a": 1})[0]) == ["id", "a"]
    for bad in ("", 7, None, ["urn:x"]):
        with pytest.raises(CredentialError, match='"id" must be'):
            ensure_id({"id": bad})


# --- sample badge ------------------------------------------------------------------------------

def test_sample_open_badge_shape():
    document = badge()
    assert document["@context"] == [CONTEXT_VC_V2, CONTEXT_OB_V3]
    assert document["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert document["issuer"]["type"] == ["Profile"] and document["issuer"]["name"] == "Facultad de Ingeniería"
    assert document["issuer"]["id"] == "https://example.edu/issuers/facultad-de-ingenieria"
    subject = document["credentialSubject"]
    assert subject["type"] == ["AchievementSubject"] and subject["id"] == "did:example:ana"
    achievement = subject["achievement"]
    assert achievement["type"] == ["Achievement"] and achievement["name"] == "Redes I"
    assert achievement["criteria"]["narrative"]
    assert achievement["id"] == "https://example.edu/issuers/facultad-de-ingenieria/achievements/redes-i"
    assert document["validFrom"] == "2025-01-15T00:00:00Z"
    # It survives the strict parser unchanged, so issuing it from a file gives the same id.
    assert parse_credential(json.dumps(document, ensure_ascii=False).encode()) == document


def test_sample_open_badge_email_recipient_and_defaults():
    document = sample_open_badge("U", "ana@example.edu", "Python", issuer_url="https://u.example/")
    assert document["credentialSubject"]["identifier"] == [
        {"type": "IdentityObject", "identityHash": "ana@example.edu", "identityType": "emailAddress", "hashed": False}
    ]
    assert document["credentialSubject"]["achievement"]["id"] == "https://u.example/achievements/python"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["validFrom"])


# --- load_credentials ---------------------------------------------------------------------------

def _write(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def test_load_folder_sorted_json_only(tmp_path):
    for name in ("b.json", "a.json", "c.txt", "d.jsonl"):
        _write(tmp_path / name, {"name": name})
    (tmp_path / "sub.json").mkdir()
    loaded = list(load_credentials(tmp_path))
    assert [(Path(label).name, doc["name"]) for label, doc in loaded] == [("a.json", "a.json"), ("b.json", "b.json")]


def test_load_folder_error_names_file(tmp_path):
    _write(tmp_path / "a.json", {"ok": True})
    (tmp_path / "b.json").write_text('{"id": 1, "id": 2}')
    loaded = load_credentials(tmp_path)
    assert next(loaded)[1] == {"ok": True}
    with pytest.raises(CredentialError) as caught:
        next(loaded)
    assert caught.value.source == str(tmp_path / "b.json")
    assert str(caught.value) == f'{tmp_path / "b.json"}: duplicate key "id" in one object (at $)'


def test_load_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(CredentialError, match="no \\*.json"):
        list(load_credentials(tmp_path))
    with pytest.raises(CredentialError, match="no such file"):
        list(load_credentials(tmp_path / "missing.json"))


def test_load_single_json_file(tmp_path):
    document = badge()
    _write(tmp_path / "badge.json", document)
    assert list(load_credentials(tmp_path / "badge.json")) == [(str(tmp_path / "badge.json"), document)]
    (tmp_path / "badge.vc").write_bytes(json.dumps(document).encode())  # any suffix but .jsonl is one document
    assert list(load_credentials(tmp_path / "badge.vc"))[0][1] == document


def test_load_jsonl_skips_blank_lines_and_names_bad_line(tmp_path):
    path = tmp_path / "batch.jsonl"
    lines = [json.dumps({"n": 1}), "", "   ", json.dumps({"n": 2}) + "\r", '{"n": NaN}', json.dumps({"n": 4})]
    path.write_text("\n".join(lines) + "\n")
    loaded = load_credentials(path)
    assert next(loaded) == (f"{path}:1", {"n": 1})
    assert next(loaded) == (f"{path}:4", {"n": 2})
    with pytest.raises(CredentialError) as caught:
        next(loaded)
    assert str(caught.value) == f"{path}:5: NaN is not a JSON value (at $.n)"
    assert caught.value.source == f"{path}:5"


def test_load_jsonl_non_object_line(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_text('{"n": 1}\n[1]\n')
    with pytest.raises(CredentialError, match=r"batch\.jsonl:2: a credential must be a JSON object"):
        list(load_credentials(path))


# --- properties ---------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_safe_floats = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not (2**53 <= abs(f) < 1e21))
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | _safe_floats | st.text(st.characters(exclude_categories=("Cs",))),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=5), _json_values, max_size=5))
def test_id_is_independent_of_formatting(document):
    spellings = [
        json.dumps(document, ensure_ascii=True),
        json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True),
    ]
    ids = {credential_id(parse_credential(text)) for text in spellings}
    assert ids == {credential_id(document)}
    assert json.loads(canonical_bytes(document)) == json.loads(json.dumps(document))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_accepted_numbers_canonicalize_to_acceptable_text(number):
    text = json.dumps({"n": number})
    try:
        document = parse_credential(text)
    except CredentialError:
        assert 2**53 <= abs(number) < 1e21 and number.is_integer()
        return
    canonical = canonical_bytes(document)
    assert canonical_bytes(parse_credential(canonical)) == canonical


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_garbage_raises_only_credential_error(data):
    try:
        parse_credential(data)
    except CredentialError:
        pass

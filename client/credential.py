"""Credentials: strict JSON in, RFC 8785 canonical bytes and a SHA-256 id out.

lacre never stores a credential, only its id:

    credential_id = SHA-256(RFC 8785 canonical bytes of the JSON document)

so every party that hashes the same document must get the same bytes. RFC 8785
(JCS) fixes key order, whitespace, string escaping and number spelling, but it
presumes I-JSON (RFC 7493) input. Anything outside I-JSON would hash
differently in different languages, so `parse_credential` refuses it up front,
with a message that names the problem and where it is:

    duplicate keys            the "last one wins" rule is not universal
    NaN, Infinity             not JSON at all, though Python accepts them
    integers beyond 2^53 - 1  JavaScript rounds them; the id would differ
    numbers overflowing       1e400 would become infinity
    4.2e16 and the like       JCS writes it as an integer beyond 2^53 - 1
    lone surrogates           "\\ud800" has no UTF-8 encoding
    invalid UTF-8, non-object top level

Canonicalization itself is the maintained `rfc8785` package, checked against
the reference vectors in tests/vectors/jcs. `canonical` is a fast path for
the usual credential (no floats, no key beyond the BMP), where RFC 8785 is
the json module's compact, key-sorted output; it falls back to `rfc8785`
otherwise, and tests check the two agree.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rfc8785

INTEGER_MAX = 2**53 - 1  # I-JSON: the integers an IEEE 754 double holds exactly
CREDENTIAL_BYTES_MAX = 16 << 20  # far beyond any real credential; bounds a runaway file

CONTEXT_VC_V2 = "https://www.w3.org/ns/credentials/v2"
CONTEXT_OB_V3 = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# How a lone surrogate can reach a parsed string or key: as a \u escape, or
# as itself in text given as str (UTF-8 decoding never yields one).
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


class CredentialError(ValueError):
    """A credential that cannot be read or hashed; str() is fit to show a user as-is.

    `source` names the file (and line) when known; `problem` is the message without it.
    """

    def __init__(self, problem: str, source: str | None = None) -> None:
        super().__init__(f"{source}: {problem}" if source else problem)
        self.problem = problem
        self.source = source


class _Refused:
    """Stands in, during parsing, for a value I-JSON refuses, so the walk can name its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _DuplicateKeys(dict):
    """An object that repeated a key; the walk reports it with its path."""

    __slots__ = ("duplicates",)


def _object(pairs: list[tuple[str, Any]]) -> dict:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    duplicates = []
    for key, _ in pairs:
        if key in seen:
            duplicates.append(key)
        seen.add(key)
    refused = _DuplicateKeys(result)
    refused.duplicates = duplicates
    return refused


def _integer(text: str) -> int | _Refused:
    # Checking the length first keeps a 100,000-digit number from reaching int().
    if len(text.lstrip("-")) > 16 or abs(int(text)) > INTEGER_MAX:
        return _Refused(f"integer {_shorten(text)} is outside the I-JSON range ±(2^53 - 1); write it as a string")
    return int(text)


def _float(text: str) -> float | _Refused:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _Refused(f"number {_shorten(text)} is too large for a double")
    # JCS writes whole numbers below 1e21 without an exponent: 4.2e16 becomes
    # "42000000000000000", an integer this parser refuses. Refusing it here
    # too keeps every accepted credential's canonical form itself acceptable.
    if INTEGER_MAX < abs(value) < 1e21 and value.is_integer():
        return _Refused(
            f"number {_shorten(text)} canonicalizes to an integer outside the I-JSON range ±(2^53 - 1); write it as a string"
        )
    return value


def _constant(text: str) -> _Refused:
    return _Refused(f"{text} is not a JSON value")


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _path_step(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _check_tree(value: Any) -> None:
    """Raise CredentialError, naming the JSON path, at the first value I-JSON refuses.

    Iterative, so a deeply nested document cannot exhaust Python's stack here.
    """
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _Refused):
            raise CredentialError(f"{item.reason} (at {path})")
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise CredentialError(f"string has a lone surrogate (\\ud800-\\udfff), which is not Unicode (at {path})")
        elif isinstance(item, dict):
            if isinstance(item, _DuplicateKeys):
                names = ", ".join(json.dumps(k) for k in dict.fromkeys(item.duplicates))
                raise CredentialError(f"duplicate key {names} in one object (at {path})")
            for key, child in reversed(item.items()):
                if _SURROGATE.search(key):
                    raise CredentialError(f"key has a lone surrogate (\\ud800-\\udfff), which is not Unicode (at {path})")
                stack.append((_path_step(path, key), child))
        elif isinstance(item, list):
            stack.extend((_path_step(path, i), child) for i, child in reversed(list(enumerate(item))))


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CredentialError(f"not valid UTF-8 (byte {error.start}); save the file as UTF-8") from None
    return text


def parse_credential(data: bytes | str) -> dict:
    """Parse a credential as strict I-JSON; return the top-level object.

    Refuses, with a CredentialError naming the problem and its JSON path:
    invalid UTF-8, invalid JSON, duplicate keys, NaN/Infinity, integers
    beyond ±(2^53 - 1), numbers that overflow a double, lone surrogates in
    keys or strings, nesting too deep for the parser, and a top level that is
    not an object.
    """
    value = parse_json(data)
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
        raise CredentialError(f"a credential must be a JSON object, not {kind}")
    return value


def parse_json(data: bytes | str) -> Any:
    """Parse any strict I-JSON value, with the checks of `parse_credential` but any top level."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if len(data) > CREDENTIAL_BYTES_MAX:
            raise CredentialError(f"larger than {CREDENTIAL_BYTES_MAX} bytes; is this a credential?")
        text, from_bytes = _decode(data), True
    elif isinstance(data, str):
        text, from_bytes = data, False
    else:
        raise TypeError("parse_json takes bytes or str")
    # RFC 8259 lets a parser ignore a byte order mark; editors on Windows add one.
    text = text.removeprefix("\ufeff")
    refused: list[object] = []  # the parse hooks' refusals; the walk finds where they are

    def on_object(pairs: list[tuple[str, Any]]) -> dict:
        result = _object(pairs)
        if type(result) is _DuplicateKeys:
            refused.append(result)
        return result

    def on_int(text: str) -> int | _Refused:
        result = _integer(text)
        if type(result) is _Refused:
            refused.append(result)
        return result

    def on_float(text: str) -> float | _Refused:
        result = _float(text)
        if type(result) is _Refused:
            refused.append(result)
        return result

    def on_constant(text: str) -> _Refused:
        result = _constant(text)
        refused.append(result)
        return result

    try:
        value = json.loads(text, object_pairs_hook=on_object, parse_int=on_int, parse_float=on_float,
                           parse_constant=on_constant)
    except json.JSONDecodeError as error:
        raise CredentialError(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise CredentialError("nested too deeply to be a credential") from None
    # The walk builds a JSON path for every value, most of the cost of a
    # parse; it runs only when there is something to name a path for.
    if refused or ("\\u" in text and _ESCAPED_SURROGATE.search(text)) or (not from_bytes and _SURROGATE.search(text)):
        _check_tree(value)
    return value


def canonical_bytes(doc: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (normally a credential object).

    Raises CredentialError for anything JCS cannot represent: non-string keys,
    lone surrogates, NaN or infinite floats, integers beyond ±(2^53 - 1),
    types other than dict, list, tuple, str, int, float, bool and None.
    """
    try:
        return rfc8785.dumps(doc)
    except rfc8785.IntegerDomainError as error:
        raise CredentialError(f"cannot canonicalize: {error}; write large integers as strings") from None
    except rfc8785.FloatDomainError as error:
        raise CredentialError(f"cannot canonicalize: {error} (NaN and infinity are not JSON)") from None
    except rfc8785.CanonicalizationError as error:
        raise CredentialError(f"cannot canonicalize: {error}") from None
    except UnicodeError:
        # rfc8785 sorts keys by their UTF-16 encoding, which fails on a lone surrogate.
        raise CredentialError("cannot canonicalize: a key has a lone surrogate, which is not Unicode") from None
    except RecursionError:
        raise CredentialError("cannot canonicalize: nested too deeply") from None


_compact_sorted = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False, check_circular=False
).encode


def _jcs_is_plain_json(value: object) -> bool:
    """True when RFC 8785 of `value` is compact, key-sorted JSON: no floats, no key beyond the BMP.

    There, JCS's UTF-16 key order is code-point order, JCS and the json
    module escape the same characters the same way, and integers (within
    +-2^53, as `parse_credential` ensures) are written alike.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if not key.isascii() and max(key) > "\uffff":
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float:
            return False
    return True


def canonical(document: dict) -> bytes:
    """`canonical_bytes` of a credential as `parse_credential` returns it
    (I-JSON: integers within +-2^53, no lone surrogates), about 4x faster on the usual document."""
    if _jcs_is_plain_json(document):
        return _compact_sorted(document).encode()
    return canonical_bytes(document)


def credential_id(doc: Any) -> bytes:
    """The 32-byte credential id: SHA-256 of `canonical_bytes(doc)`."""
    return hashlib.sha256(canonical_bytes(doc)).digest()


def ensure_id(doc: dict) -> tuple[dict, bool]:
    """Return (`doc`, False) if it has an "id", else (a copy with a fresh "urn:uuid:<uuid4>" id, True).

    The id goes right after "@context", where people look for it; key order
    does not change the credential id. The input is never modified.
    """
    if "id" in doc:
        if not isinstance(doc["id"], str) or not doc["id"]:
            raise CredentialError('"id" must be a non-empty string, a URL such as urn:uuid:... (at $.id)')
        return doc, False
    fresh = f"urn:uuid:{uuid.uuid4()}"
    if "@context" in doc:
        result = {"@context": doc["@context"], "id": fresh}
        result.update((k, v) for k, v in doc.items() if k != "@context")
    else:
        result = {"id": fresh, **doc}
    return result, True


def _read(path: Path, label: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CredentialError(f"cannot read: {error.strerror or error}", label) from None


def _load_one(data: bytes, label: str) -> dict:
    try:
        return parse_credential(data)
    except CredentialError as error:
        raise CredentialError(error.problem, label) from None


def _load_lines(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise CredentialError(f"cannot read: {error.strerror or error}", str(path)) from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip(b" \t\r\n") == b"":
                continue
            label = f"{path}:{number}"
            yield label, _load_one(line, label)


def load_credentials(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield (source label, credential) from one file, a folder or a JSON Lines file.

    - a folder: every `*.json` file directly in it, sorted by name; label is the file path
    - `*.jsonl`: one credential per line, blank lines skipped; label is "path:line"
    - any other file: one JSON credential; label is the file path

    Lazy: a bad credential raises CredentialError (carrying the label) when
    reached, after the good ones before it were yielded. A missing path or a
    folder with no `*.json` raises at the first next().
    """
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.glob("*.json") if p.is_file()), key=lambda p: p.name)
        if not files:
            raise CredentialError("folder holds no *.json credentials", str(path))
        for file in files:
            yield str(file), _load_one(_read(file, str(file)), str(file))
    elif path.is_file():
        if path.suffix.lower() == ".jsonl":
            yield from _load_lines(path)
        else:
            yield str(path), _load_one(_read(path, str(path)), str(path))
    else:
        raise CredentialError("no such file or folder", str(path))


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "item"


def _subject_identity(recipient: str) -> dict:
    """How an AchievementSubject names its holder: an id when given a URI, else an IdentityObject."""
    if _URI_SCHEME.fullmatch(recipient):
        return {"id": recipient}
    kind = "emailAddress" if "@" in recipient else "name"
    return {"identifier": [
        {"type": "IdentityObject", "identityHash": recipient, "identityType": kind, "hashed": False}
    ]}


def sample_open_badge(
    issuer_name: str,
    recipient: str,
    achievement: str,
    issuer_url: str | None = None,
    valid_from: str | None = None,
) -> dict:
    """A realistic Open Badges 3.0 OpenBadgeCredential, without an "id" (see `ensure_id`).

    `recipient` is a URI (e.g. a DID) used as the subject id, or an email
    address or name recorded as an unhashed IdentityObject. `issuer_url`
    defaults to an example.edu URL derived from the issuer name; `valid_from`
    (an XML Schema dateTime) defaults to now, UTC, to the second.
    """
    issuer_url = issuer_url or f"https://example.edu/issuers/{_slug(issuer_name)}"
    valid_from = valid_from or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "@context": [CONTEXT_VC_V2, CONTEXT_OB_V3],
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": achievement,
        "issuer": {"id": issuer_url, "type": ["Profile"], "name": issuer_name},
        "validFrom": valid_from,
        "credentialSubject": {
            "type": ["AchievementSubject"],
            **_subject_identity(recipient),
            "achievement": {
                "id": f"{issuer_url.rstrip('/')}/achievements/{_slug(achievement)}",
                "type": ["Achievement"],
                "name": achievement,
                "description": f"Awarded by {issuer_name} for completing {achievement}.",
                "criteria": {
                    "narrative": f"The learner completed the assessed coursework of {achievement} "
                    f"and passed its final evaluation, as recorded by {issuer_name}.",
                },
            },
        },
    }

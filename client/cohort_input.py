"""The input side of batch issuance: a cohort read raw, a chunk at a time, hashed and named.

Input. A folder's `*.json` files, by name, or a JSON-lines file's non-blank
lines. `scan_input` reads the input once, whole, for its SHA-256 and count;
`read_chunks` then yields raw bytes, `--batch-size` credentials at a time, so
a cohort of millions is never in memory at once. `hash_credentials` takes and
returns plain bytes, so it can run in worker processes (`hashing_pool`).

Names. The run name is a SHA-256 of the input's bytes and of the options
that shape the records (batch size, expiry, achievement type). A credential
without an "id" gets one derived from the issuer's key and its content
(`derived_id`), not a random one. So the same input, run again, makes the
same chunks of the same ids under the same batch names: a name is never
signed over other ids.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import signal
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from client.cli import CliError
from client.credential import CredentialError, canonical, canonical_bytes, ensure_id, parse_credential
from ledger.crypto import KeyPair

RUN_TAG = b"lacre/issue-run\x00"
ID_KEY_TAG = b"lacre/credential-id-key\x00"
INLINE_HASHING_MAX = 2_000
"""Up to this many credentials, hashing runs on a thread rather than worker processes."""


# -- credential ids --------------------------------------------------------

def id_secret(key: KeyPair) -> bytes:
    """The issuer's secret for `derived_id`: a one-way function of its key seed."""
    return hmac.new(key.seed, ID_KEY_TAG, hashlib.sha256).digest()


def derived_id(document: dict, secret: bytes) -> str:
    """A "urn:uuid:" id for a credential that has none: an HMAC of its canonical form, as a UUIDv8.

    Deterministic, so a re-run issues the same id; keyed, so nobody without
    the issuer's key can confirm a guessed credential from its ledger id.
    """
    digest = bytearray(hmac.new(secret, canonical_bytes(document), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (RFC 9562: custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC variant
    return f"urn:uuid:{uuid.UUID(bytes=bytes(digest))}"


def with_id(document: dict, secret: bytes) -> tuple[dict, bool]:
    """`client.credential.ensure_id`, with a `derived_id` instead of a random one."""
    if "id" in document:
        return ensure_id(document)
    fresh = derived_id(document, secret)
    if "@context" in document:
        result = {"@context": document["@context"], "id": fresh}
        result.update((k, v) for k, v in document.items() if k != "@context")
    else:
        result = {"id": fresh, **document}
    return result, True


# -- hashing -----------------------------------------------------------------

def hash_credentials(items: Sequence[tuple[str, bytes]], secret: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Parse and hash raw credentials (label, bytes): (their ids, concatenated;
    [(index, canonical bytes)] of those given an id here, which the holder needs).

    Raises CliError naming the label of the first credential that cannot be read.
    Runs in worker processes: arguments and result are plain picklable values.
    """
    ids = []
    added = []
    for index, (label, data) in enumerate(items):
        try:
            document, fresh = with_id(parse_credential(data), secret)
            encoded = canonical(document)
        except CredentialError as error:
            raise CliError(f"{label}: {error.problem}") from None
        ids.append(hashlib.sha256(encoded).digest())
        if fresh:
            added.append((index, encoded))
    return b"".join(ids), added


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle; and a worker outlives no killed parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def hashing_pool(workers: int, count: int) -> concurrent.futures.Executor | None:
    """Worker processes for `hash_credentials` over `count` credentials; None: hash on a thread.

    Call before any thread exists in this process (the pool forks). The caller shuts it down.
    """
    if workers <= 1 or count <= INLINE_HASHING_MAX:
        return None
    import multiprocessing

    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
    )
    # Fork every worker now, before any thread (the event loop's resolver, the
    # progress bar's monitor) exists in this process.
    pool.submit(int).result()
    return pool


# -- the input -----------------------------------------------------------------

def _folder_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.glob("*.json") if p.is_file()), key=lambda p: p.name)
    if not files:
        raise CliError(f"{folder}: folder holds no *.json credentials")
    return files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CliError(f"{path}: cannot read: {error.strerror or error}") from None


def scan_input(source: Path) -> tuple[bytes, int]:
    """(SHA-256 of the input's credentials as bytes, how many there are): a folder's
    `*.json` files by name, or a JSON-lines file's non-blank lines."""
    digest = hashlib.sha256()
    if source.is_dir():
        files = _folder_files(source)
        for path in files:
            data = _read(path)
            digest.update(len(data).to_bytes(8, "big") + data)
        return digest.digest(), len(files)
    count = 0
    try:
        with source.open("rb") as handle:
            for line in handle:
                digest.update(line)
                count += line.strip(b" \t\r\n") != b""
    except OSError as error:
        raise CliError(f"{source}: cannot read: {error.strerror or error}") from None
    return digest.digest(), count


def read_chunks(source: Path, size: int) -> Iterator[list[tuple[str, bytes]]]:
    """The input's credentials as (label, raw bytes), `size` at a time, in order."""
    if source.is_dir():
        files = _folder_files(source)
        for start in range(0, len(files), size):
            yield [(str(path), _read(path)) for path in files[start : start + size]]
        return
    chunk: list[tuple[str, bytes]] = []
    with source.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip(b" \t\r\n") == b"":
                continue
            chunk.append((f"{source}:{number}", line))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def run_name(input_digest: bytes, batch_size: int, expires_at: int, achievement_type: str) -> str:
    """The run's name: what its batch names start with (hex)."""
    options = json.dumps([batch_size, expires_at, achievement_type]).encode()
    return hashlib.sha256(RUN_TAG + input_digest + options).hexdigest()

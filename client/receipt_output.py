"""The output side of batch issuance: every member's receipt, written as text, a chunk at a time.

A batch's receipts share everything but the member's id and its path in the
batch tree, so `receipt_texts` encodes the shared part once (checked against
`client.batch_receipts`, which defines a receipt). Two sinks take them:

- `ReceiptFolder` (--out DIR): DIR/<id>.receipt.json, and DIR/<id>.credential.json
  for a credential given its id by the run;
- `ReceiptLines` (--out FILE.jsonl): a receipt a line, and the credentials
  given their id in FILE.credentials.jsonl.

Both report a `position` after each whole chunk, which the run keeps in its
state file (`client.issue_state`); on a re-run, `restore` brings the output
back to that position, so a chunk half written when a run stopped is written
again whole and is never there twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from client.batch_receipts import batch_receipts
from ledger.batch import BatchTree, level_path


def receipt_texts(document: dict, ids: Sequence[bytes], tree: BatchTree, compact: bool) -> Iterator[str]:
    """The receipts `client.batch_receipts` makes, as JSON text, one per id (one line each when `compact`).

    What all members share is encoded once and each receipt adds its id
    and batch path, several times faster than encoding each
    receipt whole. The first text is checked against `batch_receipts`'
    first receipt: if they ever differ, every receipt is encoded whole.
    """
    receipts = batch_receipts(document, ids, tree)
    first = next(receipts)
    shared = {k: v for k, v in first.items() if k not in ("credential_id", "batch")}
    if compact:
        shared_text = json.dumps(shared, separators=(",", ":"))[1:]
        head, quote, comma = '{"credential_id":"%s","batch":{"index":%d,"path":[', '"', '","'
        tail = "]},"
    else:
        shared_text = json.dumps(shared, indent=2)[1:] + "\n"
        head, quote, comma = '{\n  "credential_id": "%s",\n  "batch": {\n    "index": %d,\n    "path": [\n      ', '"', '",\n      "'
        tail = "\n    ]\n  },"

    # An upper node sits on many members' paths: hex each node once, not once per path.
    hex_levels = [[node.hex() for node in level] for level in tree.levels]

    def text(index: int, credential_id: bytes) -> str:
        path = level_path(hex_levels, index)
        listed = quote + comma.join(path) + quote if path else ""
        if not path and not compact:
            return (head % (credential_id.hex(), index)).rstrip() + "]\n  }," + shared_text
        return head % (credential_id.hex(), index) + listed + tail + shared_text

    if json.loads(text(0, ids[0])) != first:  # batch_receipts changed shape: encode each receipt whole
        yield json.dumps(first, separators=(",", ":")) if compact else json.dumps(first, indent=2) + "\n"
        for receipt in receipts:
            yield json.dumps(receipt, separators=(",", ":")) if compact else json.dumps(receipt, indent=2) + "\n"
        return
    for index, credential_id in enumerate(ids):
        yield text(index, credential_id)


class ReceiptFolder:
    """--out DIR: DIR/<id>.receipt.json, and DIR/<id>.credential.json for a credential given its id here.

    Files are written in place, not renamed into place: a chunk counts as
    written only once the state file says so, and is rewritten otherwise.
    `position` is how many receipts the written chunks hold; `restore` finds
    fewer receipt files than that when the folder was emptied since.
    """

    compact = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.receipts = 0
        path.mkdir(parents=True, exist_ok=True)

    def restore(self, position: dict | None) -> bool:
        self.receipts = (position or {}).get("receipt_files", 0)
        if self.receipts and sum(1 for _ in self.path.glob("*.receipt.json")) < self.receipts:
            self.receipts = 0
            return False
        return True

    def write(self, receipts: Iterator[tuple[bytes, str]], documents: Sequence[tuple[bytes, bytes]]) -> int:
        count = 0
        for credential_id, text in receipts:
            (self.path / f"{credential_id.hex()}.receipt.json").write_text(text)
            count += 1
        for credential_id, data in documents:
            (self.path / f"{credential_id.hex()}.credential.json").write_bytes(data + b"\n")
        self.receipts += count
        return count

    def position(self) -> dict:
        return {"receipt_files": self.receipts}

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"receipts": str(self.path)}


class ReceiptLines:
    """--out FILE.jsonl: one receipt a line; credentials given their id here go to FILE.credentials.jsonl.

    Appended a chunk at a time; `position` (the byte lengths after the last
    whole chunk) goes to the state file, and `restore` cuts both files back
    to it, so a chunk half written when a run stopped is not there twice.
    """

    compact = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.documents_path = path.with_name(path.name.removesuffix(".jsonl") + ".credentials.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._receipts = open(path, "ab")
        self._documents = None

    def restore(self, position: dict | None) -> bool:
        """Cut the files back to `position`; False (and both emptied) if they are shorter than it."""
        receipts, documents = (position or {}).get("receipts_bytes", 0), (position or {}).get("documents_bytes", 0)
        size = self._receipts.seek(0, os.SEEK_END)
        documents_size = self.documents_path.stat().st_size if self.documents_path.exists() else 0
        whole = size >= receipts and documents_size >= documents
        if not whole:
            receipts = documents = 0
        self._receipts.truncate(receipts)
        self._receipts.seek(receipts)
        if documents_size or documents:
            with open(self.documents_path, "ab") as handle:
                handle.truncate(documents)
        return whole

    def write(self, receipts: Iterator[tuple[bytes, str]], documents: Sequence[tuple[bytes, bytes]]) -> int:
        lines = [text for _, text in receipts]
        if lines:
            self._receipts.write(("\n".join(lines) + "\n").encode())
            self._receipts.flush()
        if documents:
            if self._documents is None:
                self._documents = open(self.documents_path, "ab")
            self._documents.write(b"".join(data + b"\n" for _, data in documents))
            self._documents.flush()
        return len(lines)

    def position(self) -> dict:
        documents = self._documents.tell() if self._documents is not None else (
            self.documents_path.stat().st_size if self.documents_path.exists() else 0
        )
        return {"receipts_bytes": self._receipts.tell(), "documents_bytes": documents}

    def close(self) -> None:
        self._receipts.close()
        if self._documents is not None:
            self._documents.close()

    def describe(self) -> dict:
        described = {"receipts": str(self.path)}
        if self.documents_path.exists() and self.documents_path.stat().st_size:
            described["credential_documents"] = str(self.documents_path)
        return described


ReceiptSink = ReceiptFolder | ReceiptLines
"""Where a batch run writes its receipts."""

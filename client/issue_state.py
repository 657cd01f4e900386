"""The state file of a batch run: what it signed and wrote, so that a stopped run resumes.

`<out>.issue-state.json`, beside the output, holds the run name, the signing
time, each batch name signed with its root, the chunks whose receipts are
written, and the output's position after them. A name is saved before its
record is first submitted, and a chunk as written only once all its receipts
are out; the file is removed once the run completes.

A re-run of the same input, options and key resumes from it: it signs at
the state's time, so a resubmitted batch has the same bytes, and refuses a
name saved with another root (the input changed under the state file). A
state file left by another run is set aside: the run starts over, and the
ledger itself keeps anything already issued from being issued twice.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from client.cli import CliError, _write_json

STATE_VERSION = 1


def state_path(out: Path) -> Path:
    """Where the run writing to `out` keeps its state."""
    return out.with_name(out.name + ".issue-state.json")


@dataclass
class IssueState:
    """What a run has done so far, kept beside its output until the run completes."""

    path: Path
    run: str
    issuer: str
    issued_at: int
    signed: dict[str, dict] = field(default_factory=dict)
    """Batch name -> {"batch_id", "root", "count"}: what was signed under each name."""
    written: set[int] = field(default_factory=set)
    position: dict | None = None

    @classmethod
    def open(cls, path: Path, run: str, issuer: str, now_s: int) -> tuple["IssueState", bool]:
        """The state of this run from `path`, or a fresh one; and whether it was resumed."""
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path, run, issuer, now_s), False
        except (OSError, ValueError) as error:
            raise CliError(f"{path}: unreadable state file ({error}); remove it to start over") from None
        if document.get("version") != STATE_VERSION or document.get("run") != run or document.get("issuer") != issuer:
            print(f"lacre: {path} was left by a run of other input, options or key: starting over "
                  "(nothing already on the ledger is issued again)", file=sys.stderr)
            return cls(path, run, issuer, now_s), False
        return cls(
            path, run, issuer, document["issued_at"], document.get("signed", {}),
            set(document.get("written", [])), document.get("position"),
        ), True

    def save(self) -> None:
        _write_json(self.path, {
            "version": STATE_VERSION, "run": self.run, "issuer": self.issuer, "issued_at": self.issued_at,
            "signed": self.signed, "written": sorted(self.written), "position": self.position,
        })

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

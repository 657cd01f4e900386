"""The `lacre` command line as a user runs it: `python -m client.cli`, in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import build_parser
from client.credential import sample_open_badge

REPOSITORY = Path(__file__).resolve().parents[2]


def _lacre(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *argv], capture_output=True, text=True, cwd=REPOSITORY, timeout=60,
    )


def test_an_error_raised_in_a_subcommand_module_is_reported_not_traced(tmp_path):
    """Under -m, cli.py runs as __main__; a CliError from client.issuance (which imports
    client.cli) must still be caught by main and reported with the usage-error status."""
    credential = tmp_path / "badge.json"
    credential.write_text(json.dumps(sample_open_badge("Universidad", "did:example:learner", "Álgebra")))
    result = _lacre("issue", str(credential), "--key", str(tmp_path / "missing.key"), "--node", "http://127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"lacre: {tmp_path / 'missing.key'}: not a lacre key file")
    assert result.stdout == ""


def test_revoke_takes_a_credential_or_a_batch():
    parser = build_parser()
    common = ["--key", "k", "--node", "http://127.0.0.1:1"]
    assert parser.parse_args(["revoke", "ab" * 32, *common]).batch is None
    args = parser.parse_args(["revoke", "--batch", "cd" * 32, "--reason", "key_compromise", *common])
    assert args.credential is None and args.batch == "cd" * 32 and args.reason == "key_compromise"
    for wrong in (["revoke", *common], ["revoke", "ab" * 32, "--batch", "cd" * 32, *common]):
        with pytest.raises(SystemExit):
            parser.parse_args(wrong)

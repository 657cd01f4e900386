"""Real node processes on 127.0.0.1, OS-assigned ports, killed on teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 30.0


def lacre(*argv: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in its own process."""
    result = subprocess.run(
        [sys.executable, "-m", "client.cli", *argv], capture_output=True, text=True, cwd=cwd, timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lacre {' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


class NodeProcess:
    def __init__(self, config: Path, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        url_file = self.data_dir / "url"
        url_file.unlink(missing_ok=True)
        self.log = open(self.config.parent / "node.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--config", str(self.config)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not url_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("node did not start:\n" + (self.config.parent / "node.log").read_text())
            time.sleep(0.05)
        self.url = url_file.read_text().strip()
        return self.url

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def node_processes():
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.kill() if node.process and node.process.poll() is None else None

"""A real `bkr serve` process for the tests that need one: a free port, and a server that is
waited for until it answers and stopped at the end."""

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class BkrServer:
    """A `bkr serve` process: its base URL and the file its output goes to."""

    process: subprocess.Popen[str]
    base: str
    log: Path

    def wait_until_it_answers(self, deadline_seconds: float = 60) -> None:
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"bkr serve exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"bkr serve did not answer in time: {self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_bkr_serve(db_url: str, directory: Path, *args: str) -> BkrServer:
    """`bkr serve --db db_url` on a free port, its output in a file of `directory`, answering."""
    port = free_port()
    log = directory / f"serve-{port}.log"
    with log.open("w") as sink:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen([sys.executable, "-m", "bkr.cli", "serve", "--port", str(port), "--db", db_url,
                                    *args], stdout=sink, stderr=subprocess.STDOUT, text=True, cwd=directory)
    server = BkrServer(process, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_until_it_answers()
    except BaseException:
        server.stop()
        raise
    return server

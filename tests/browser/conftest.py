"""Fixtures of the browser tests: a demo program served by a real `bkr serve`, and Debian's
Chromium driven by Playwright.

Chromium is the system's (`/usr/bin/chromium`, which `make test` installs): Playwright's own
browsers are never downloaded.
"""

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from browser_support import BROKER, CHROMIUM, OTHER_BROKER, Program
from playwright.sync_api import Browser, Page, sync_playwright

from bkr.domain.signing import KeyPair
from serve_support import BkrServer, free_port


def _bkr(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bkr.cli", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Program]:
    """A small demo (last month closed, this month so far) in a SQLite file, served on a free port."""
    directory = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{directory / 'bkr.db'}"
    _bkr("demo", "--db", url, "--previous-fills", "4000", "--current-fills", "2000")
    token = json.loads(_bkr("operator", "add", "root", "--role", "admin", "--json", "--db", url))["token"]
    brokers = {}
    for broker_id in (BROKER, OTHER_BROKER):
        created = json.loads(_bkr("broker", "key", "create", str(broker_id), "--json", "--key", token, "--db", url))
        brokers[broker_id] = KeyPair(created["api_key"], created["secret"])
    port = free_port()
    log = directory / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "bkr.cli", "serve", "--port", str(port), "--db", url,
                                    "--no-scheduled-close"], stdout=sink, stderr=subprocess.STDOUT, text=True,
                                   cwd=directory)
    server = BkrServer(process, f"http://127.0.0.1:{port}", log)
    server.wait_until_it_answers()
    yield Program(server, url, token, brokers)
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) with a desktop viewport."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()

"""Helpers of the browser tests: the served program with its keys and API, signing in through
the form, and screenshots kept as test artifacts (tests/browser/artifacts/, not versioned)."""

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page

from bkr.domain.signing import KeyPair, sign, signing_string
from serve_support import BkrServer

CHROMIUM = Path(os.environ.get("BKR_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
BROKER = 1400  # the demo's largest broker: it has a closed month and this month so far
OTHER_BROKER = 2200


@dataclass
class Program:
    """The served demo: where it answers, and the keys of an operator and of two brokers."""

    server: BkrServer
    db_url: str
    operator_token: str
    brokers: dict[int, KeyPair]

    @property
    def base(self) -> str:
        return self.server.base

    def admin(self, path: str) -> Any:
        answer = httpx.get(f"{self.base}{path}", headers={"Authorization": f"Bearer {self.operator_token}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def broker_api(self, broker_id: int, path: str, instruction: str, params: dict[str, Any] | None = None,
                   ) -> httpx.Response:
        """A request signed with the broker's key exactly as the broker API expects."""
        params = params or {}
        pair, timestamp = self.brokers[broker_id], int(time.time() * 1000)
        headers = {"X-API-Key": pair.api_key, "X-Timestamp": str(timestamp), "X-Window": "5000",
                   "X-Signature": sign(pair.secret, signing_string(instruction, params, timestamp, 5000))}
        return httpx.get(f"{self.base}/v1/broker/{broker_id}{path}", params=params, headers=headers)


def sign_in(page: Page, program: Program, key: str) -> None:
    """Sign in through the form, as a person does: paste the key, press the button."""
    page.goto(f"{program.base}/dashboard")
    page.get_by_label("Key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def keep_for_docs(name: str, target: Path) -> None:
    """Copy a screenshot of this run where the README shows it, when asked to (BKR_UPDATE_SCREENSHOTS=1)."""
    if os.environ.get("BKR_UPDATE_SCREENSHOTS") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / f"{name}.png", target)

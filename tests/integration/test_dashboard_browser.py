"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the
whole stack (`sealroom up`: control plane + host agent + sim TEE as real processes).

A user logs in with the keyboard, creates a computation by uploading its manifest, the
parties upload their inputs, and the page follows it to completed; then its evidence
(appraisal table, SIMULATED banner) and its receipt. Screenshots land in the test's tmp
dir (``screenshots/``), or in ``$SEALROOM_TEST_ARTIFACTS`` when set. Playwright's own
browser download is never used (``executable_path``)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealroom.cli import stack as stack_mod
from sealroom.client.controlplane import ControlPlaneClient
from tests.integration.test_stack import Parties, manifest_doc, upload_inputs

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason="Debian 'chromium' is not installed"
    ),
]

sync_api = pytest.importorskip("playwright.sync_api")

# Every visible form control must have a label a screen reader announces.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => el.type !== 'hidden')
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML)"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SEALROOM_HOME", str(h))
    return h


@pytest.fixture
def stack(home: Path) -> Iterator[stack_mod.Stack]:
    s = stack_mod.up(home / "stack", agents=1)
    yield s
    stack_mod.down(home / "stack")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("SEALROOM_TEST_ARTIFACTS") or tmp_path) / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


def tab_to(page: Any, text: str, limit: int = 40) -> None:
    """Press Tab until the focused element's text or label is ``text`` (keyboard only)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement; return (e.textContent || '').trim() "
            "+ '|' + (e.labels && e.labels[0] ? e.labels[0].textContent.trim() : ''); }"
        )
        if text in focused.split("|"):
            return
    raise AssertionError(f"{text!r} is not reachable with the keyboard")


def test_dashboard_follows_a_computation_to_its_verified_receipt(
    stack: stack_mod.Stack, home: Path, tmp_path: Path, shots: Path
) -> None:
    admin = ControlPlaneClient(stack.url, stack.admin_key)
    acc = admin.create_account("hospital-a")
    key = admin.create_key(acc.id).key
    p = Parties()
    doc = manifest_doc(p, tmp_path, "browser-1")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(doc))
    owner = ControlPlaneClient(stack.url, key)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            # no session: the login page, and the key typed with the keyboard alone
            page.goto(stack.url + "/ui/computations")
            assert "/ui/login" in page.url
            assert page.evaluate(UNLABELLED) == []
            assert page.evaluate("() => document.activeElement.id") == "api_key"
            page.keyboard.type(key)
            page.keyboard.press("Enter")
            page.wait_for_url("**/ui/computations")
            assert page.evaluate(UNLABELLED) == []
            page.screenshot(path=str(shots / "01-computations.png"), full_page=True)

            # create it: the file chosen, then the button reached and pressed by keyboard
            page.set_input_files("#manifest_file", str(manifest))
            tab_to(page, "Create computation")
            page.keyboard.press("Enter")
            page.wait_for_url("**/ui/computations/cmp_*")
            cid = page.url.rsplit("/", 1)[1]
            assert page.get_by_role("alert").first.inner_text().startswith("SIMULATED")
            tab_to(page, "Cancel computation")  # the other main action is reachable too

            # the parties attest the enclave and upload; the page follows by itself
            comp = owner.wait_for(cid, ("awaiting_inputs",), 90)
            assert comp.state == "awaiting_inputs", comp
            page.screenshot(path=str(shots / "02-awaiting-inputs.png"), full_page=True)
            upload_inputs(comp.enclave_url or "", doc, p, tmp_path, home)
            page.wait_for_function(
                "() => document.getElementById('state').textContent.startsWith('completed')",
                timeout=120_000,
            )
            slots = page.inner_text("ul.slots")
            assert slots.count("filled") == 3 and "waiting" not in slots, slots
            text = page.inner_text("#events")
            assert "upload_accepted" in text and "run_started" in text
            page.screenshot(path=str(shots / "03-completed.png"), full_page=True)

            # its evidence: the appraisal table, every rule passed, SIMULATED said loudly
            page.click("#evidence-link")
            page.wait_for_url("**/evidence")
            assert page.locator(".simulated").is_visible()
            rows = page.locator("table.appraisal tbody tr")
            assert rows.count() > 3
            assert page.locator("table.appraisal tr.fail").count() == 0
            assert "every rule passed" in page.inner_text("main")
            page.screenshot(path=str(shots / "04-evidence.png"), full_page=True)

            page.go_back()
            page.click("#receipt-link")
            page.wait_for_url("**/receipt")
            assert "Receipt verified" in page.inner_text("main")
            assert page.locator("#tlog-ok").is_visible()  # in the transparency log
            page.screenshot(path=str(shots / "05-receipt.png"), full_page=True)

            # another account's browser sees none of it
            other_key = admin.create_key(admin.create_account("hospital-b").id).key
            other = browser.new_page()
            other.goto(stack.url + "/ui/login")
            other.fill("#api_key", other_key)
            other.click("button[type=submit]")
            other.wait_for_url("**/ui/computations")
            assert cid not in other.content()
            resp = other.goto(f"{stack.url}/ui/computations/{cid}")
            assert resp is not None and resp.status == 404
        finally:
            browser.close()
    assert len(list(shots.glob("*.png"))) == 5

"""Browser tests: Debian's chromium driven by Playwright against the real server and the local fake platform."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import RunningService, platform  # noqa: F401 (a fixture)
from tests.e2e.test_pipeline_modes import worker_service  # noqa: F401 (the fixture: the same service)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
# Records every value a <progress> takes, so a test sees the intermediate ones however fast they pass.
PROGRESS_LOG = """
window.__progressLog = [];
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of [record.target, ...record.addedNodes]) {
      if (!(node instanceof Element)) continue;
      for (const bar of node.matches("progress") ? [node] : node.querySelectorAll("progress")) {
        const card = bar.closest("[data-task-id]");
        window.__progressLog.push({task: card ? card.dataset.taskId : null, value: Number(bar.value)});
      }
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["value"]});
"""


@pytest.fixture(scope="package")  # playwright's sync API keeps an event loop running in this thread until closed
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, worker_service: RunningService) -> Iterator[Page]:  # noqa: F811 (the fixture)
    """A fresh browser context (empty localStorage) on the service's origin; page errors fail the test."""
    context = browser.new_context(
        base_url=worker_service.url, viewport={"width": 1000, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    context.add_init_script(PROGRESS_LOG)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


def shoot(page: Page, name: str) -> Path:
    """Save a full-page screenshot of this step to test-artifacts/browser/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

"""The web page in a real browser: sign in, submit, watch live progress, outputs, failures, refunds, retry."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect
from standardwebhooks.webhooks import Webhook

from tests.browser.conftest import shoot
from tests.e2e.conftest import RunningService
from tests.support.fake_platform import FakePlatform
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.browser

# The lowest contrast ratio (WCAG 2 relative luminance) between the text and the background behind it.
LOWEST_CONTRAST = """
(selectors) => {
  const rgb = (css) => css.match(/[\\d.]+/g).map(Number);
  const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const color = rgb(getComputedStyle(e).backgroundColor);
      if (color.length < 4 || color[3] > 0) return color;
    }
    return [255, 255, 255];
  };
  const ratios = selectors.flatMap((selector) => [...document.querySelectorAll(selector)]).map((element) => {
    const [a, b] = [luminance(rgb(getComputedStyle(element).color)), luminance(background(element))];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  });
  return Math.min(...ratios);
}
"""
SLOW_VIDEO = {"size": 16384 * 48, "chunk": 16384, "delay": 0.04}  # ~2 s of streaming: progress 30 → 60 in steps


def sign_in(page: Page, api_key: str) -> None:
    """Keyboard only: the key field has the focus on arrival; Enter submits."""
    page.goto("/")
    expect(page.locator("#api-key")).to_be_focused()
    page.keyboard.type(api_key)
    page.keyboard.press("Enter")
    expect(page.locator("#home-view")).to_be_visible()


def card(page: Page, task_id: str):  # noqa: ANN201 (a Playwright Locator)
    return page.locator(f'.task[data-task-id="{task_id}"]')


def new_task_id(page: Page, key: str, service: RunningService) -> str:
    """The task just submitted: its card is on the page and it is the user's only task."""
    expect(page.locator(".task")).to_have_count(1)
    with service.client(key) as client:
        task_id = only_task(client)["task_id"]
    assert page.locator(".task").get_attribute("data-task-id") == task_id
    return task_id


def only_task(client: httpx.Client) -> dict:
    tasks = client.get("/v1/tasks").json()["tasks"]
    assert len(tasks) == 1, tasks
    return tasks[0]


def test_submit_watch_live_progress_then_read_outputs(
    page: Page, worker_service: RunningService, platform: FakePlatform
) -> None:
    page.set_viewport_size({"width": 760, "height": 1000})
    _, key = worker_service.new_user(10)
    sign_in(page, key)
    expect(page.locator("#balance")).to_have_text("10")
    shoot(page, "01-signed-in")
    page.evaluate("window.__sameDocument = true")

    page.fill("#url", platform.media_url("slow", langs="en,de", **SLOW_VIDEO))
    page.get_by_label("Video and subtitles — 3 credits").check()
    page.click("#submit-button")
    task_id = new_task_id(page, key, worker_service)
    expect(card(page, task_id).locator("progress")).to_have_attribute("value", "100", timeout=30_000)
    expect(card(page, task_id).locator(".status")).to_have_text("extracted")
    expect(page.locator("#balance")).to_have_text("7")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    seen = [e["value"] for e in page.evaluate("window.__progressLog") if e["task"] == task_id]
    intermediate = sorted({v for v in seen if 0 < v < 100})
    assert len(intermediate) >= 2, seen
    assert seen == sorted(seen), seen
    shoot(page, "02-task-list-finished")

    card(page, task_id).get_by_role("link").click()
    expect(page.locator("#task-view")).to_be_visible()
    expect(page.locator("#task-title")).to_be_focused()
    timeline = page.locator("#timeline li")
    expect(timeline.first).to_have_attribute("data-type", "Started")
    expect(timeline.last).to_have_attribute("data-type", "Extracted")
    assert all(item.locator("time").count() == 1 for item in timeline.all())
    preview = page.locator("#subtitle-preview")
    expect(preview).to_contain_text("WEBVTT")
    expect(preview).to_contain_text("(en)")
    page.select_option("#subtitle-lang", "de")
    expect(preview).to_contain_text("Second line in de")
    assert page.eval_on_selector("#video-player", "v => v.src").startswith(
        f"{worker_service.url}/v1/tasks/{task_id}/video?"
    )
    shoot(page, "03-task-page")

    with page.expect_download() as srt_download:
        page.click("#download-srt")
    srt = open(srt_download.value.path(), encoding="utf-8").read()
    assert srt_download.value.suggested_filename == f"{task_id}.de.srt"
    assert "00:00:01,500 --> 00:00:03,000" in srt and "Second line in de" in srt
    with page.expect_download() as txt_download:
        page.click("#download-txt")
    assert "Goodbye" in open(txt_download.value.path(), encoding="utf-8").read()
    with page.expect_download() as video_download:
        page.click("#download-video")
    assert len(open(video_download.value.path(), "rb").read()) == SLOW_VIDEO["size"]
    expect(page.locator("#retry")).to_have_count(0)
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_failed_task_shows_the_error_and_refund_then_retry_succeeds(
    page: Page, worker_service: RunningService, platform: FakePlatform
) -> None:
    _, key = worker_service.new_user(3)
    sign_in(page, key)
    # All three attempts (MAX_ATTEMPTS=3) meet a 503: retries exhausted, refunded; the user's retry then works.
    page.fill("#url", platform.media_url("flaky-503", fails=3))
    page.get_by_label("Subtitles — 1 credit").check()
    page.click("#submit-button")
    task_id = new_task_id(page, key, worker_service)
    failure = card(page, task_id).locator(".failure")
    expect(failure).to_contain_text("we gave up after several attempts", timeout=30_000)
    expect(failure).to_contain_text("Refunded 1 credit.")
    expect(card(page, task_id).locator(".status")).to_have_text("failed")
    expect(page.locator("#balance")).to_have_text("3")
    expect(page.locator('#ledger tr[data-kind="refund"]')).to_have_count(1)
    expect(page.locator("#ledger tbody tr").first).to_contain_text("Refunded")
    shoot(page, "04-failed-and-refunded")

    card(page, task_id).get_by_role("link").click()
    retry = page.locator("#retry")
    expect(retry).to_have_text("Retry (costs 1 credit)")
    expect(page.locator("#timeline li[data-type=Failed]")).to_have_count(3)
    shoot(page, "05-failed-task-page")
    retry.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#task-summary .status")).to_have_text("extracted", timeout=30_000)
    expect(page.locator("#task-summary progress")).to_have_attribute("value", "100")
    expect(page.locator("#timeline li[data-type=Retried]")).to_have_count(1)
    expect(page.locator("#subtitle-preview")).to_contain_text("WEBVTT")
    expect(page.locator("#balance")).to_have_text("2")
    shoot(page, "06-retried-and-finished")


def test_submission_errors_are_shown_in_words(
    page: Page, worker_service: RunningService, platform: FakePlatform
) -> None:
    _, key = worker_service.new_user(1)
    sign_in(page, key)
    error = page.locator("#submit-error")
    page.fill("#url", "not a link")
    page.click("#submit-button")
    expect(error).to_have_text("That is not a web address: it must start with http:// or https://.")
    expect(page.locator("#url")).to_have_attribute("aria-invalid", "true")
    page.fill("#url", "https://example.com/clip.mp4")
    page.click("#submit-button")
    expect(error).to_contain_text("We cannot use this link")
    page.fill("#url", platform.media_url("ok"))
    page.get_by_label("Video — 2 credits").check()
    page.click("#submit-button")
    expect(error).to_have_text("Not enough credits: this costs 2 credits and your balance is 1 credit.")
    shoot(page, "07-not-enough-credits")
    with worker_service.client(key) as client:
        assert client.get("/v1/tasks").json()["tasks"] == []
        assert client.get("/v1/account").json()["balance"] == 1


def test_double_click_makes_one_task(page: Page, worker_service: RunningService, platform: FakePlatform) -> None:
    _, key = worker_service.new_user(5)
    sign_in(page, key)
    page.fill("#url", platform.media_url("ok", size=10_000))
    page.locator("#submit-button").dblclick()
    expect(page.locator("#submit-error")).to_have_text("")
    expect(page.locator(".task")).to_have_count(1)
    page.wait_for_timeout(500)  # a second request, had one been sent, has landed by now
    with worker_service.client(key) as client:
        task = only_task(client)
        account = client.get("/v1/account").json()
    assert [e["kind"] for e in account["entries"]] == ["charge", "grant"]
    assert account["balance"] == 4 and task["credits_charged"] == 1


def test_narrow_screen_keyboard_order_and_sign_out(page: Page, worker_service: RunningService) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto("/")
    page.fill("#api-key", "mt_not-a-key")
    page.keyboard.press("Enter")
    expect(page.locator("#signin-error")).to_have_text("This API key is not valid.")
    _, key = worker_service.new_user(2)
    page.fill("#api-key", key)
    page.keyboard.press("Enter")
    expect(page.locator("#home-title")).to_be_focused()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    text = ["body", "h1", "h2", "label", ".hint", "caption", "th", "td", "button", ".bar a", ".who", "a"]
    assert page.evaluate(LOWEST_CONTRAST, text) >= 4.5

    order = []
    for _ in range(7):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.value"))
    assert order == ["url", "subtitles", "max-height", "mute", "audio-format", "languages", "submit-button"], order
    for field in ("url", "languages", "api-key"):
        assert page.locator(f'label[for="{field}"]').count() == 1
    shoot(page, "08-narrow-screen")

    page.click("#sign-out")
    expect(page.locator("#signin-view")).to_be_visible()
    assert page.evaluate("localStorage.getItem('mediatasks.apiKey')") is None
    page.reload()
    expect(page.locator("#signin-view")).to_be_visible()


def test_webhook_deliveries_are_listed_and_can_be_redelivered(
    page: Page, worker_service: RunningService, platform: FakePlatform
) -> None:
    _, key = worker_service.new_user(3)
    receiver = WebhookReceiver().start()
    try:
        with worker_service.client(key) as client:
            created = client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["task.extracted"]})
            assert created.status_code == 201, created.text
            receiver.webhook = Webhook(created.json()["secret"])
            endpoint_id = created.json()["id"]
        sign_in(page, key)
        endpoint = page.locator(f'.webhook[data-webhook-id="{endpoint_id}"]')
        expect(endpoint).to_contain_text("No deliveries yet.")
        page.fill("#url", platform.media_url("ok", size=10_000))
        page.get_by_label("Subtitles — 1 credit").check()
        page.click("#submit-button")
        task_id = new_task_id(page, key, worker_service)
        expect(card(page, task_id).locator(".status")).to_have_text("extracted", timeout=30_000)
        row = endpoint.locator("tr.delivery")
        for _ in range(60):  # the delivery follows the event a moment later: refresh like a user would
            page.click("#webhooks-refresh")
            page.wait_for_timeout(250)
            if row.count() == 1 and "HTTP 200" in row.inner_text():
                break
        expect(row).to_have_count(1)
        expect(row.locator(".event")).to_have_text("task.extracted")
        expect(row.locator(".status")).to_have_text("succeeded")
        expect(row.locator(".attempts")).to_contain_text("#1: HTTP 200,")
        expect(row.locator(".attempts")).to_contain_text(" ms")
        expect(row.locator(".next")).to_have_text("—")
        assert len(receiver.processed) == 1
        shoot(page, "09-webhook-deliveries")

        row.get_by_role("button", name="Redeliver").click()
        for _ in range(60):
            page.click("#webhooks-refresh")
            page.wait_for_timeout(250)
            if "#2: HTTP 200" in row.inner_text():
                break
        expect(row.locator(".attempts")).to_contain_text("#2: HTTP 200,")
        expect(page.locator("#webhooks-error")).to_have_text("")
        assert receiver.duplicates == 1  # the same webhook-id again: the receiver dedups it
    finally:
        receiver.stop()

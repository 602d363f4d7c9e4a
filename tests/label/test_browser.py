"""A real headless Chromium (Debian's, driven by Playwright) labels through the pages of the Serve app: after an
outsider on another address has locked its own (address, name) pair out, the labeler logs in with a one-time
password, is made to change it, and labels; the answers stream onto the page as the engine writes them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hh_ray.label.client import LabelAPIError, LabelClient
from hh_ray.label.store import Task

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTES_SHOT = Path("/work/notes/label-screenshot.png")


def _open(playwright, timeout_ms: int):
    """Debian's Chromium, headless, and one page whose waits last `timeout_ms` (CPU engines answer slowly)."""
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(timeout_ms)
    return browser, page


def test_browser_logs_in_labels_continues_and_ends(label_service, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (Debian package chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a CPU vLLM engine may take longer than the 5 s default to answer
    name, store = "browser-labeler", label_service.store
    password = label_service.new_labeler(name, one_time=True)
    statuses = []
    with LabelClient(label_service.url, local_address="127.0.0.2") as outsider:  # guesses from another address
        for _ in range(label_service.cfg.server.login_max_failures + 2):
            try:
                outsider.login(name, "a guess")
            except LabelAPIError as exc:
                statuses.append(exc.status)
    assert statuses[-1] == 429, statuses  # the outsider is locked out ...
    with sync_playwright() as p:
        browser, page = _open(p, 60_000)
        page.goto(label_service.url + "/label")
        expect(page).to_have_url(label_service.url + "/login?next=expired")  # no session: the login page
        page.fill("#name", name)
        page.fill("#password", password)
        page.click("#login")  # ... the labeler is not
        expect(page).to_have_url(label_service.url + "/password")  # a one-time password: changed first
        expect(page.locator("#one-time")).to_be_visible()
        page.goto(label_service.url + "/label")
        expect(page).to_have_url(label_service.url + "/password")  # nothing else until then
        page.fill("#current-password", password)
        page.fill("#new-password", "my own browser passphrase")
        page.click("#change-password")
        expect(page).to_have_url(label_service.url + "/label")
        expect(page.locator("#my-count")).to_contain_text("Comparisons: 0")
        page.click("#start-helpful-ab")

        # turn 1: typed, sent with Ctrl+Enter; B "much better" picked with key 6 (the right end of the scale)
        page.fill("#turn-text", "How do I make a good cup of <b>tea</b>?")
        page.wait_for_load_state("load")  # the shortcuts' deferred script has run (it can lag a loaded server)
        page.press("#turn-text", "Control+Enter")
        expect(page.locator("#response-b")).to_be_visible()
        response_b = page.locator("#response-b .text").inner_text()
        streamed = json.loads(page.evaluate("sessionStorage.getItem('hh-ray-stream')") or "null")
        assert streamed and streamed["chunks"] > 1, streamed  # the answers appeared on the page as they grew ...
        assert [" ".join(streamed[f"shown_{x}"].split()) for x in "ab"] == [  # ... and are the pair to pick from
            " ".join(page.locator(f"#response-{x} .text").inner_text().split()) for x in "ab"]
        page.screenshot(path=str(tmp_path / "1-pair.png"), full_page=True)
        page.wait_for_load_state("load")
        page.keyboard.press("6")
        expect(page.locator("#turn-text")).to_be_visible()
        expect(page.locator("#my-count")).to_contain_text("Comparisons: 1")
        expect(page.locator("#transcript .assistant .text").first).to_have_text(response_b)
        expect(page.locator("#transcript .human .text").first).to_have_text("How do I make a good cup of <b>tea</b>?")

        # turn 2: continue the dialogue, pick by clicking "A slightly better"
        page.fill("#turn-text", "And how long should it steep?")
        page.click("#send")
        expect(page.locator("#response-a")).to_be_visible()
        page.screenshot(path=str(tmp_path / "2-second-pair.png"), full_page=True)
        page.click("#pick-A-1")
        expect(page.locator("#my-count")).to_contain_text("Comparisons: 2")
        page.screenshot(path=str(tmp_path / "3-dialogue.png"), full_page=True)
        page.wait_for_load_state("load")
        page.keyboard.press("Alt+e")  # the shortcut for "End conversation"
        expect(page).to_have_url(label_service.url + "/label")
        assert page.evaluate("window.__xss") is None  # the typed markup never ran
        browser.close()

    user = store.user_credentials(name)[0]
    (conv_id, campaign, ended, n_turns), = store.conversations_of(user)
    assert (campaign, ended, n_turns) == ("helpful-ab", True, 4)
    rows = [r for r in store.comparisons() if r.labeler == name]
    assert [(r.choice, r.strength) for r in rows] == [("B", 3), ("A", 1)]
    assert rows[0].chosen == response_b and rows[0].context.startswith(
        "\n\nHuman: How do I make a good cup of <b>tea</b>?\n\nAssistant:")
    with store.sessions() as s:
        assert s.query(Task).filter_by(conversation_id=conv_id, decided=False).count() == 0
    for shot in ("1-pair.png", "2-second-pair.png", "3-dialogue.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
    if NOTES_SHOT.parent.is_dir():
        shutil.copyfile(tmp_path / "2-second-pair.png", NOTES_SHOT)


def test_browser_shows_a_real_chat_model_answer(label_service, tmp_path):
    """The smollm2-135m preset served through the labeling page: the person sees an English answer to the
    question typed, rendered in the model's chat format by the service."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (Debian package chromium)")
    from playwright.sync_api import expect, sync_playwright

    name = "browser-smollm2"
    password = label_service.new_labeler(name)
    with sync_playwright() as p:
        browser, page = _open(p, 90_000)
        page.goto(label_service.url + "/login")
        page.fill("#name", name)
        page.fill("#password", password)
        page.click("#login")
        expect(page).to_have_url(label_service.url + "/label", timeout=60_000)
        page.click("#start-helpful-smollm2")
        page.fill("#turn-text", "What is the capital of France?")
        page.click("#send")
        expect(page.locator("#response-a")).to_be_visible(timeout=90_000)
        answers = [page.locator(f"#response-{x} .text").inner_text() for x in "ab"]
        page.screenshot(path=str(tmp_path / "smollm2-pair.png"), full_page=True)
        browser.close()
    for text in answers:  # a sampled 4-bit 135M model need not know the answer; it must speak English in one turn
        words = [w.strip(".,!?;:'\"()") for w in text.split()]
        assert len(words) >= 3 and sum(w.isalpha() for w in words) > 0.6 * len(words), answers
        assert "<|im" not in text and "Human:" not in text, answers  # one assistant turn, no template tokens

"""The web app in Debian's chromium (headless, driven by Playwright), against a live server
whose backend streams scripted answers slowly enough to watch and stop."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from test_serve_helpers import ScriptedBackend, live_server

from chatsmith.serve.app import STATIC

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt install chromium)"),
    pytest.mark.skipif(not (STATIC / "index.html").is_file(), reason="the web app is not built (make web)"),
]
playwright = pytest.importorskip("playwright.sync_api")
ARTIFACT = Path(os.environ.get("CHATSMITH_ARTIFACTS", Path(__file__).parent.parent / "runs" / "artifacts"))

XSS = (
    'Careful: <script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">'
    ' [click me](javascript:window.__xss=3) <a href="javascript:window.__xss=4">raw</a>\n\n'
    "```python\nprint('hi')\n```\n\nEuler: $e^{i\\pi} + 1 = 0$"
)
REPLIES = {
    "xss": XSS,
    "chinese": "你好！我是一个助手。人工智能領域知名科學家。",
    "long": " ".join(f"word{i}" for i in range(300)),
}


def reply_for(prompt_text: str, n: int) -> str:
    for key, text in REPLIES.items():
        if key in prompt_text:
            return text
    return f"Answer number {n}: hello **there**."


@pytest.fixture(scope="module")
def server(tiny_tok, tmp_path_factory):
    backend = ScriptedBackend(tiny_tok, reply_for)
    with live_server(tiny_tok, tmp_path_factory.mktemp("web") / "w.db", backend=backend) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1100, "height": 800})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/")
    pg.wait_for_selector("#model-name:text('scripted')")
    yield pg
    ctx.close()
    assert not errors, errors


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def last_answer(page):
    return page.locator(".msg.assistant").last


def wait_idle(page) -> None:
    """Until the answer is streamed and stored (the page is busy from send to save)."""
    page.wait_for_function("!document.body.classList.contains('busy')")


def test_send_streams_and_persists_across_reload(page, server) -> None:
    send(page, "Hello there")
    page.wait_for_selector(".msg.assistant.streaming")
    partial = last_answer(page).inner_text()
    wait_idle(page)
    final = last_answer(page).locator(".body").inner_text()
    assert final.startswith("Answer number") and "there" in final
    assert len(partial) < len(final)  # we saw it arrive in pieces
    assert page.locator(".msg.assistant strong").count() == 1  # Markdown rendered
    assert page.locator(".msg.user .body").inner_text() == "Hello there"
    page.reload()
    page.wait_for_selector(".msg.assistant")
    assert page.locator(".msg.assistant .body").inner_text() == final
    assert page.locator(".conv-title").first.inner_text() == "Hello there"


def _artifact() -> Path:
    ARTIFACT.mkdir(parents=True, exist_ok=True)
    return ARTIFACT / "web_app.png"


def test_stop_mid_stream_keeps_the_partial_answer(page, server) -> None:
    page.click("#new-chat")
    before = server.backend.cancelled
    send(page, "long story please")
    page.wait_for_function("document.querySelector('.msg.streaming')?.innerText.length > 20")
    page.click("#stop")
    wait_idle(page)
    text = last_answer(page).locator(".body").inner_text()
    assert 10 < len(text) < len(REPLIES["long"])
    deadline = time.time() + 5
    while server.backend.cancelled == before and time.time() < deadline:
        time.sleep(0.05)
    assert server.backend.cancelled > before  # the server stopped generating too


def test_regenerate_edit_and_switch_branches(page) -> None:
    page.click("#new-chat")
    send(page, "first question")
    wait_idle(page)
    first = last_answer(page).locator(".body").inner_text()
    last_answer(page).locator("button.regen").click()
    wait_idle(page)
    assert last_answer(page).locator(".branch-label").inner_text() == "2/2"
    assert last_answer(page).locator(".body").inner_text() != first
    last_answer(page).locator(".branch-prev").click()
    assert last_answer(page).locator(".body").inner_text() == first
    # Edit the question: a new branch; the old one is one click away.
    page.locator(".msg.user button.edit").click()
    page.fill(".edit-input", "edited question")
    page.click(".edit-save")
    wait_idle(page)
    user = page.locator(".msg.user")
    assert user.locator(".body").inner_text() == "edited question"
    assert user.locator(".branch-label").inner_text() == "2/2"
    user.locator(".branch-prev").click()
    wait_idle(page)
    assert page.locator(".msg.user .body").inner_text() == "first question"
    # Back on the old branch, on the answer that was shown there last.
    assert last_answer(page).locator(".body").inner_text() == first
    assert last_answer(page).locator(".branch-label").inner_text() == "1/2"
    page.reload()  # the branch choice is stored on the server
    page.wait_for_selector(".msg.user")
    assert page.locator(".msg.user .body").inner_text() == "first question"


def test_model_output_is_sanitized(page) -> None:
    page.click("#new-chat")
    send(page, "show me xss")
    wait_idle(page)
    body = last_answer(page).locator(".body")
    body.locator("a").first.click()
    body.locator("img").first.evaluate("img => img.dispatchEvent(new Event('error'))")
    assert page.evaluate("window.__xss") is None
    assert body.locator("script").count() == 0
    assert body.locator("[onerror]").count() == 0
    hrefs = [a.get_attribute("href") or "" for a in body.locator("a").all()]
    assert not any(h.lower().startswith("javascript") for h in hrefs)
    assert body.locator("pre code.hljs").count() == 1 and body.locator("button.copy-code").count() == 1
    assert body.locator(".katex").count() >= 1
    page.screenshot(path=str(_artifact()))  # one picture of the page per test run


def test_chinese_and_shift_enter(page) -> None:
    page.click("#new-chat")
    page.fill("#input", "第一行")
    page.press("#input", "Shift+Enter")
    page.type("#input", "second line chinese")
    assert page.input_value("#input") == "第一行\nsecond line chinese"
    assert page.locator(".msg").count() == 0  # Shift+Enter did not send
    page.press("#input", "Enter")
    wait_idle(page)
    assert page.locator(".msg.user .body").inner_text() == "第一行\nsecond line chinese"
    answer = last_answer(page).locator(".body")
    assert answer.inner_text() == REPLIES["chinese"]
    # Each CJK character gets a real glyph of about one em (a missing font draws nothing or a narrow box).
    width = answer.evaluate(
        "el => { const r = document.createRange(); r.setStart(el.firstChild.firstChild, 0);"
        " r.setEnd(el.firstChild.firstChild, 2); return r.getBoundingClientRect().width; }"
    )
    assert width > 20


def test_dark_mode_and_phone_layout(page, browser, server) -> None:
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.click("#theme")
    assert page.evaluate("document.documentElement.classList.contains('dark')")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
    page.reload()
    assert page.evaluate("document.documentElement.classList.contains('dark')")
    phone = browser.new_context(viewport={"width": 375, "height": 740}).new_page()
    phone.goto(server.url + "/")
    phone.wait_for_selector("#model-name:text('scripted')")
    assert phone.locator("#menu").is_visible()
    box = phone.locator("#sidebar").bounding_box()
    assert box["x"] + box["width"] <= 1  # off screen until opened
    phone.click("#menu")
    phone.wait_for_timeout(300)
    assert phone.locator("#sidebar").bounding_box()["x"] >= 0
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    phone.context.close()


def test_settings_export_and_import(page, server, tmp_path) -> None:
    page.click("#new-chat")
    page.click("#settings-toggle")
    page.fill("#system", "You are terse.")
    page.fill("#temperature", "0.3")
    page.locator("#temperature").dispatch_event("change")
    send(page, "export me")
    wait_idle(page)
    assert "You are terse." in server.backend.last_prompt
    assert server.backend.last_params.temperature == pytest.approx(0.3)
    with page.expect_download() as dl:
        page.click("#export")
    path = tmp_path / "conversation.json"
    dl.value.save_as(path)
    data = json.loads(path.read_text())
    assert [m["content"] for m in data["messages"]] == [
        "export me",
        "Answer number " + data["messages"][1]["content"][14:],
    ]
    n = page.locator(".conv").count()
    page.set_input_files("#import", str(path))
    page.wait_for_function(f"document.querySelectorAll('.conv').length === {n + 1}")
    page.wait_for_selector(".msg.assistant")
    assert page.locator(".msg.user .body").inner_text() == "export me"


def test_rename_search_and_delete(page) -> None:
    page.click("#new-chat")
    send(page, "a question about zebras")
    wait_idle(page)
    item = page.locator(".conv.active")
    item.locator("button.rename").click()
    page.fill(".rename-input", "Zebra facts 斑马")
    page.press(".rename-input", "Enter")
    page.wait_for_selector(".conv-title:text('Zebra facts 斑马')")
    page.fill("#search", "斑马")
    page.wait_for_function("document.querySelectorAll('.conv').length === 1")
    page.fill("#search", "zebras")  # message text is searched too
    page.wait_for_function("document.querySelectorAll('.conv').length === 1")
    page.once("dialog", lambda d: d.accept())  # Delete asks first
    page.locator(".conv.active button.delete").click()
    page.wait_for_function("document.querySelectorAll('.conv').length === 0")
    page.fill("#search", "")
    page.wait_for_function("document.querySelectorAll('.conv').length > 0")
    assert "Zebra" not in page.locator("#conversations").inner_text()
    assert page.locator(".msg").count() == 0

"""Answers that end unusually: empty, at the length limit, past the context window, or left
behind by "+ New chat" while they stream. The page says what happened and offers a Retry."""

from __future__ import annotations

import pytest
from test_serve_helpers import live_server
from test_web_helpers import (
    PagedBackend,
    browser,
    last_answer,
    needs_browser,
    open_page,
    page,
    send,
    server,
    wait_idle,
)

pytestmark = needs_browser
__all__ = ["browser", "page", "server"]


def roles(page) -> list[str]:
    return [m.get_attribute("data-role") for m in page.locator("#messages .msg").all()]


def test_empty_answer_is_shown_with_a_retry(page) -> None:
    send(page, "empty please")
    wait_idle(page)
    assert roles(page) == ["user", "assistant"]  # not two user turns in a row
    answer = last_answer(page)
    assert "empty" in answer.locator(".status-note").inner_text().lower()
    page.reload()  # stored by the server, not only drawn by the page
    answer = last_answer(page)
    answer.wait_for()
    assert roles(page) == ["user", "assistant"]
    answer.get_by_role("button", name="Retry").click()
    wait_idle(page)
    assert last_answer(page).locator(".branch-label").inner_text() == "2/2"


def test_length_limit_is_said(page) -> None:
    page.click("#settings-toggle")
    page.fill("#max_tokens", "3")
    page.locator("#max_tokens").dispatch_event("change")
    send(page, "long story please")
    wait_idle(page)
    answer = last_answer(page)
    assert answer.get_attribute("data-status") == "length"
    assert "length limit" in answer.locator(".status-note").inner_text()
    assert answer.locator(".body").inner_text().strip() == "word0 word1"  # three 4-character tokens


def test_new_chat_while_streaming_stops_cleanly(page) -> None:
    send(page, "long story please")
    page.wait_for_function("document.querySelector('.msg.streaming')?.innerText.length > 20")
    old = page.evaluate("localStorage.getItem('chatsmith.open')")
    page.click("#new-chat")
    assert page.locator("#stop").is_hidden()
    assert page.locator(".msg").count() == 0
    send(page, "hello in the new chat")
    wait_idle(page)
    assert page.locator(".msg.user .body").inner_text() == "hello in the new chat"
    assert last_answer(page).locator(".body").inner_text().startswith("Answer number")
    assert page.evaluate("localStorage.getItem('chatsmith.open')") != old
    # The old answer was stopped and its partial text kept by the server.
    page.locator(f".conv[data-id='{old}'] .conv-title").click()
    page.wait_for_selector(".msg.user .body:text('long story please')")
    answer = last_answer(page)
    assert answer.get_attribute("data-status") == "stopped"
    assert len(answer.locator(".body").inner_text()) > 20


@pytest.fixture(scope="module")
def small_server(tiny_tok, tmp_path_factory):
    backend = PagedBackend(tiny_tok, context=512)
    with live_server(tiny_tok, tmp_path_factory.mktemp("ctx") / "c.db", backend=backend) as s:
        yield s


def test_long_message_then_a_normal_one_gets_an_answer(browser, small_server) -> None:
    page = open_page(browser, small_server.url)
    page.fill("#input", "long text " * 2000)  # 20,000 characters, far past a 512-token window
    page.press("#input", "Enter")
    wait_idle(page)
    send(page, "and now a short question")
    wait_idle(page)
    assert roles(page) == ["user", "assistant", "user", "assistant"]
    assert last_answer(page).locator(".body").inner_text().startswith("Answer number")
    assert "Older messages were left out" in last_answer(page).locator(".context-note").inner_text()
    assert page.locator("#error").is_hidden()
    assert not page.errors, page.errors
    page.context.close()

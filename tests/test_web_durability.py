"""The server dies mid-answer (SIGKILL, or SIGINT with a short drain): what the page showed is
kept by the server, shown as cut after a restart, with a Retry; what the user typed while the
server was down stays in the box, with an error in words and a Retry."""

from __future__ import annotations

import signal

import pytest
from test_serve_helpers import free_port
from test_web_helpers import (
    LONG,
    browser,
    last_answer,
    needs_browser,
    open_page,
    send,
    spawn_server,
    wait_idle,
)

pytestmark = needs_browser
__all__ = ["browser"]


# Each run starts the server twice in a process of its own; the SIGINT case (the same page
# path, the server's drain instead of a crash) runs with the slow tests.
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["sigkill", "sigint"]
)
def test_server_death_mid_answer_loses_nothing(browser, tmp_path, sig) -> None:
    db, port, log = tmp_path / "chat.db", free_port(), tmp_path / "server.log"
    proc = spawn_server(db, port, log)
    try:
        page = open_page(browser, f"http://127.0.0.1:{port}")
        send(page, "long story please")
        page.wait_for_function("document.querySelector('.msg.streaming')?.innerText.length > 60")
        proc.send_signal(sig)
        proc.wait(30)
        page.wait_for_selector("#error:visible")
        read = last_answer(page).locator(".body").inner_text()
        assert len(read) > 60 and LONG.startswith(read.strip())  # still on screen
        # While the server is down, Enter keeps the text and says why in words.
        send(page, "are you there?")
        page.wait_for_function("document.querySelector('#error').innerText.includes('reach the server')")
        assert page.input_value("#input") == "are you there?"
        assert "Failed to fetch" not in page.inner_text("#error")
        proc = spawn_server(db, port, log)
        page.click("#error button.error-retry")
        wait_idle(page)
        assert page.input_value("#input") == ""
        assert page.locator(".msg.user .body").last.inner_text() == "are you there?"
        assert last_answer(page).locator(".body").inner_text().startswith("Answer number")
        # After a reload the partial answer is there, marked as cut, with a Retry that works.
        page.reload()
        cut = page.locator(".msg.assistant").first
        cut.wait_for()
        assert cut.get_attribute("data-status") in ("cut", "stopped")
        assert cut.locator(".status-note").is_visible()
        stored = cut.locator(".body").inner_text().strip()
        assert len(stored) >= len(read.strip()) // 2 and LONG.startswith(stored)
        cut.get_by_role("button", name="Retry").click()
        wait_idle(page)
        again = page.locator(".msg.assistant").first
        assert again.locator(".body").inner_text().startswith("Answer number")
        assert again.locator(".branch-label").inner_text() == "2/2"
        assert not page.errors, page.errors
    finally:
        proc.kill()
        proc.wait(10)

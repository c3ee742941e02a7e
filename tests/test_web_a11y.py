"""Keyboard, screen reader and forms (WCAG 2.1 AA for these controls): every control reachable
by Tab with a name in words, errors in words in a live region, renames that cannot go wrong,
deletes that ask first, settings checked before anything is sent."""

from __future__ import annotations

import json
import re

import pytest
from test_web_helpers import (
    AXE,
    browser,
    iter_buttons,
    last_answer,
    needs_browser,
    page,
    send,
    server,
    wait_idle,
)

pytestmark = needs_browser
__all__ = ["browser", "page", "server"]

# axe-core rules for names, labels, focus and tab order, and contrast (WCAG 2.1 A/AA).
AXE_RULES = [
    "button-name",
    "input-button-name",
    "label",
    "select-name",
    "link-name",
    "aria-input-field-name",
    "aria-command-name",
    "aria-toggle-field-name",
    "tabindex",
    "nested-interactive",
    "scrollable-region-focusable",
    "focus-order-semantics",
    "color-contrast",
]


NAME_OF_FOCUSED = "(e => (e.getAttribute('aria-label') || e.innerText).trim())(document.activeElement)"


def chat_with_branches(page) -> None:
    send(page, "first question")
    wait_idle(page)
    last_answer(page).get_by_role("button", name="Regenerate").click()
    wait_idle(page)


def test_focus_on_load_and_tab_reaches_chats_and_import(page) -> None:
    chat_with_branches(page)
    page.reload()
    page.wait_for_selector(".msg.assistant")
    assert page.evaluate("document.activeElement.id") == "input"
    page.evaluate("document.activeElement.blur()")
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(NAME_OF_FOCUSED))
    assert "first question" in reached  # the past chat
    assert "Import" in reached
    page.click("#new-chat")
    page.locator(".conv-title").first.focus()
    page.keyboard.press("Enter")  # opens it
    page.wait_for_selector(".msg.assistant")


def test_every_button_has_a_name_in_words(page) -> None:
    chat_with_branches(page)
    page.click("#settings-toggle")
    names = [b["name"] for b in iter_buttons(page)]
    assert names and all(re.search(r"[A-Za-z]{3}", n) for n in names), names
    for expected in ("Rename", "Delete", "Previous", "Next"):
        assert any(expected in n for n in names), (expected, names)


@pytest.mark.skipif(not AXE.is_file(), reason="needs axe-core from npm (cd web && npm ci)")
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_violations(page, theme) -> None:
    chat_with_branches(page)
    if theme == "dark":
        page.click("#theme")
    page.click("#settings-toggle")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("rules => axe.run(document, {runOnly: {type: 'rule', values: rules}})", AXE_RULES)
    found = [
        (v["id"], [(n["target"], n["failureSummary"]) for n in v["nodes"]])
        for v in result["violations"]
    ]
    assert found == []
    assert len(result["passes"]) >= 5  # the rules ran and found things to check


def test_delete_asks_first(page) -> None:
    send(page, "keep me")
    wait_idle(page)
    page.once("dialog", lambda d: d.dismiss())
    page.locator(".conv.active").get_by_role("button", name=re.compile("Delete")).click()
    page.wait_for_timeout(300)
    assert page.locator(".conv.active").count() == 1
    page.once("dialog", lambda d: d.accept())
    page.locator(".conv.active").get_by_role("button", name=re.compile("Delete")).click()
    page.wait_for_function("document.querySelectorAll('.conv.active').length === 0")
    assert page.locator(".msg").count() == 0


def test_errors_are_in_words_and_dismissable(page, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"title": "x", "messages": [{"role": "user", "content": "hi"}]}))
    page.set_input_files("#import", str(bad))
    error = page.locator("#error")
    error.wait_for()
    text = error.inner_text()
    assert "Field required" not in text and "messages.0" not in text
    assert "import" in text.lower()
    assert page.evaluate("!!document.querySelector('#error').closest('[aria-live], [role=alert]')")
    error.get_by_role("button", name="Dismiss").click()
    assert error.is_hidden()


def test_unreachable_server_keeps_the_text(page) -> None:
    page.route("**/api/**", lambda route: route.abort("connectionrefused"))
    send(page, "typed while offline")
    page.wait_for_function("document.querySelector('#error')?.innerText.includes('reach the server')")
    assert page.input_value("#input") == "typed while offline"
    assert "Failed to fetch" not in page.inner_text("#error")
    page.unroute("**/api/**")
    page.locator("#error").get_by_role("button", name="Retry").click()
    wait_idle(page)
    assert page.input_value("#input") == ""
    assert page.locator(".msg.user .body").inner_text() == "typed while offline"


def test_rename_escape_enter_and_limit(page, server) -> None:
    send(page, "rename me")
    wait_idle(page)
    row = page.locator(".conv.active")
    patches: list[str] = []
    page.on("request", lambda r: patches.append(r.url) if r.method == "PATCH" else None)
    row.get_by_role("button", name=re.compile("Rename")).click()
    page.fill(".rename-input", "not this")
    page.press(".rename-input", "Escape")
    assert row.locator(".conv-title").inner_text() == "rename me"
    page.wait_for_timeout(200)
    assert patches == []  # Escape saved nothing
    row.get_by_role("button", name=re.compile("Rename")).click()
    page.fill(".rename-input", "x" * 501)
    page.press(".rename-input", "Enter")
    note = page.locator(".rename-error")
    note.wait_for()
    assert "500" in note.inner_text() and patches == []
    page.fill(".rename-input", "Renamed once")
    page.press(".rename-input", "Enter")
    page.wait_for_selector(".conv-title:text('Renamed once')")
    page.wait_for_timeout(300)
    assert len(patches) == 1  # Enter (and the blur after it) saved once


def test_temperature_out_of_range_is_refused_before_sending(page) -> None:
    page.click("#settings-toggle")
    assert "0–2" in page.locator("label:has(#temperature)").inner_text()
    page.fill("#temperature", "5")
    page.locator("#temperature").dispatch_event("change")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    send(page, "too hot")
    page.wait_for_selector("#error:visible")
    assert "between 0 and 2" in page.inner_text("#error")
    assert page.get_attribute("#temperature", "aria-invalid") == "true"
    assert sent == [] and page.input_value("#input") == "too hot"

"""What people expect of a chat page: a phone layout whose list closes, a model picker when
several models are served, an export of every chat that Import reads back, "Copied" feedback."""

from __future__ import annotations

import json

from test_web_helpers import browser, last_answer, needs_browser, open_page, page, send, server, wait_idle

pytestmark = needs_browser
__all__ = ["browser", "page", "server"]


def test_phone_sidebar_closes_after_new_chat_and_on_the_scrim(browser, server) -> None:
    phone = open_page(browser, server.url, viewport=(390, 844))
    closed = "document.querySelector('#sidebar').getBoundingClientRect().right <= 1"
    phone.click("#menu")
    phone.wait_for_function("document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
    phone.click("#new-chat")
    phone.wait_for_function(closed)  # a new chat goes to the chat, as opening one does
    phone.click("#menu")
    phone.wait_for_function("document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
    phone.mouse.click(370, 400)  # the dimmed chat beside the list
    phone.wait_for_function(closed)
    phone.click("#menu")
    phone.wait_for_function("document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
    phone.keyboard.press("Escape")
    phone.wait_for_function(closed)
    assert phone.locator("#menu").get_attribute("aria-expanded") == "false"
    assert not phone.errors, phone.errors
    phone.context.close()


def test_model_picker_only_with_several_models(browser, server) -> None:
    page = open_page(browser, server.url)
    assert page.locator("#model-picker").is_hidden()  # one model: nothing to pick
    page.context.close()
    ctx = browser.new_context()
    two = {"object": "list", "data": [{"id": name, "object": "model"} for name in ("scripted", "other")]}
    ctx.route("**/v1/models", lambda r: r.fulfill(json=two))
    page = ctx.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#model-picker:visible")
    assert page.locator("#model-picker option").all_inner_texts() == ["scripted", "other"]
    page.select_option("#model-picker", "other")
    bodies: list[dict] = []
    page.on("request", lambda r: r.url.endswith("/answer") and bodies.append(json.loads(r.post_data)))
    send(page, "which model?")
    wait_idle(page)
    assert bodies and bodies[0]["model"] == "other"
    ctx.close()


def test_export_all_is_read_back_by_import(page, tmp_path) -> None:
    for q in ("first chat", "second chat"):
        page.click("#new-chat")
        send(page, q)
        wait_idle(page)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export all").click()
    path = tmp_path / "all.json"
    dl.value.save_as(path)
    data = json.loads(path.read_text())
    assert isinstance(data, list) and {"first chat", "second chat"} <= {c["title"] for c in data}
    assert all(c["messages"] for c in data)
    n = page.locator(".conv").count()
    page.set_input_files("#import", str(path))
    page.wait_for_function(f"document.querySelectorAll('.conv').length === {n + len(data)}")


def test_copy_says_copied(page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(page, "copy this")
    wait_idle(page)
    button = last_answer(page).get_by_role("button", name="Copy")
    button.click()
    page.wait_for_function(
        "[...document.querySelectorAll('.msg.assistant button')].some(b => b.innerText == 'Copied')"
    )
    assert page.evaluate("navigator.clipboard.readText()").startswith("Answer number")

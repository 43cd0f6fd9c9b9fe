"""The /inbox page in a real browser: Debian's Chromium driven by Playwright for Python.

The service runs over real HTTP (aiohttp test server); messages arrive through the JSON API
(as Logto sends them) or the SMTP intake (as any app sends mail). Chromium must be installed
(scripts/test.sh installs Debian's ``chromium`` with apt-get): a missing browser is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect
from yarl import URL

from otp_service.http.app import SERVICES

from .support.service import ClientFactory

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# inbox.test: a host name that is not loopback to the browser (so not a secure context), served
# from 127.0.0.1 like every other page here.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--host-resolver-rules=MAP inbox.test 127.0.0.1"]  # fmt: skip
TOKEN = "tok_" + "d" * 28
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)  # a loaded shared machine, not a slow page


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; missing, the browser tests fail (they are never skipped)."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does: apt-get "
        "install chromium)"
    )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


async def open_inbox(browser: Browser, client: Any, **context: Any) -> Page:
    """The inbox page, once its live stream is connected (or it asks for a token)."""
    page = await (await browser.new_context(**context)).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(str(client.make_url("/inbox")))
    await page.wait_for_selector("#live[data-state='live'], #login:not([hidden])")
    return page


async def send(client: Any, to: str, code: str, channel: str = "email", **extra: Any) -> str:
    body = {"to": to, "type": extra.pop("type", "SignIn"), "payload": {"code": code, **extra}}
    response = await client.post(f"/v1/{channel}", json=body, headers=extra.pop("headers", {}))
    answer = await response.json()
    assert response.status == 200, answer
    message_id: str = answer["id"]
    return message_id


async def mail_in(client: Any, message: EmailMessage) -> None:
    """Send ``message`` to the service's SMTP intake with a real SMTP client."""
    intake = client.server.app[SERVICES].intake
    await aiosmtplib.send(message, hostname="127.0.0.1", port=intake.port)


def card(page: Page, message_id: str) -> Any:
    return page.locator(f"li.msg[data-id='{message_id}']")


async def test_browser_new_code_appears_live_and_open_items_stay_open(
    service: ClientFactory, browser: Browser
) -> None:
    """A code sent through the API shows on the open page without a reload, and a message the
    user opened stays open while others arrive."""
    client = await service()
    first = await send(client, "ana@example.com", "111111")
    page = await open_inbox(browser, client)
    await page.evaluate("window.__sameDocument = true")
    await card(page, first).locator(".summary").click()
    await expect(card(page, first).locator(".detail")).to_be_visible()
    second = await send(client, "ana@example.com", "135790")
    await expect(card(page, second).locator(".code")).to_have_text("135790")
    assert await page.evaluate("window.__sameDocument") is True  # no reload happened
    await expect(card(page, first).locator(".detail")).to_be_visible()
    assert await page.locator("li.msg").first.get_attribute("data-id") == second
    assert page.errors == []  # type: ignore[attr-defined]


async def test_browser_copy_button_puts_the_code_on_the_clipboard(
    service: ClientFactory, browser: Browser
) -> None:
    """Copy next to a code writes exactly that code to the clipboard."""
    client = await service()
    message_id = await send(client, "ana@example.com", "482913")
    page = await open_inbox(browser, client, permissions=["clipboard-read", "clipboard-write"])
    button = card(page, message_id).locator("button.copy")
    await button.click()
    await expect(button).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "482913"


async def clipboard(browser: Browser, client: Any, write: str | None = None) -> str:
    """The browser's clipboard (one for all its contexts), read (after writing ``write``) from a
    context that may."""
    context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        page = await context.new_page()
        await page.goto(str(client.make_url("/healthz")))
        if write is not None:
            await page.evaluate("(text) => navigator.clipboard.writeText(text)", write)
        return str(await page.evaluate("navigator.clipboard.readText()"))
    finally:
        await context.close()


async def open_inbox_page(
    browser: Browser, url: str, *, refuse_clipboard: bool = False, script: str | None = None
) -> Page:
    """The inbox page at ``url`` in a context without clipboard permissions; with
    ``refuse_clipboard`` the browser refuses the Clipboard API to the page's origin (as a user's
    "Block" does); ``script`` runs before the page's own."""
    context = await browser.new_context()
    if script is not None:
        await context.add_init_script(script)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    if refuse_clipboard:
        cdp = await context.new_cdp_session(page)
        target = await cdp.send("Target.getTargetInfo")
        origin = URL(url).origin()
        await cdp.send(
            "Browser.setPermission",
            {
                "permission": {"name": "clipboard-write"},
                "setting": "denied",
                "origin": str(origin),
                "browserContextId": target["targetInfo"]["browserContextId"],
            },
        )
    await page.goto(url)
    await page.wait_for_selector("#live[data-state='live']")
    return page


async def test_browser_copy_falls_back_when_the_clipboard_api_is_refused(
    service: ClientFactory, browser: Browser
) -> None:
    """Where the browser refuses the Clipboard API to the page, Copy still puts the code on the
    clipboard (a hidden textarea and execCommand)."""
    client = await service()
    message_id = await send(client, "ana@example.com", "730516")
    assert await clipboard(browser, client, write="before") == "before"
    page = await open_inbox_page(browser, str(client.make_url("/inbox")), refuse_clipboard=True)
    refused = "navigator.clipboard.writeText('x').then(() => 'written', (error) => error.name)"
    assert await page.evaluate(refused) == "NotAllowedError"
    button = card(page, message_id).locator("button.copy")
    await button.click()
    await expect(button).to_have_text("Copied")
    assert await clipboard(browser, client) == "730516"


async def test_browser_copy_works_over_plain_http_on_another_host_name(
    service: ClientFactory, browser: Browser
) -> None:
    """Served as http://inbox.test (not loopback, so not a secure context) the page has no
    Clipboard API at all; Copy puts the code on the clipboard all the same (the name is in
    server.allowed_hosts: other names are refused, against DNS rebinding)."""
    client = await service({"server": {"allowed_hosts": ["inbox.test"]}})
    message_id = await send(client, "ana@example.com", "604218")
    assert await clipboard(browser, client, write="before") == "before"
    url = str(client.make_url("/inbox").with_host("inbox.test"))
    page = await open_inbox_page(browser, url)
    assert await page.evaluate("[window.isSecureContext, 'clipboard' in navigator]") == [
        False,
        False,
    ]
    button = card(page, message_id).locator("button.copy")
    await button.click()
    await expect(button).to_have_text("Copied")
    assert await clipboard(browser, client) == "604218"


async def test_browser_copy_selects_the_code_when_no_way_of_copying_works(
    service: ClientFactory, browser: Browser
) -> None:
    """Where the Clipboard API is refused and execCommand("copy") fails too, Copy selects the
    code and tells the user which keys copy it; it never claims a copy that did not happen."""
    client = await service()
    message_id = await send(client, "ana@example.com", "951847")
    assert await clipboard(browser, client, write="before") == "before"
    no_exec = "document.execCommand = () => false;"
    url = str(client.make_url("/inbox"))
    page = await open_inbox_page(browser, url, refuse_clipboard=True, script=no_exec)
    button = card(page, message_id).locator("button.copy")
    await button.click()
    await expect(button).to_have_text("Press Ctrl+C")
    assert await page.evaluate("window.getSelection().toString()") == "951847"
    assert await clipboard(browser, client) == "before"


async def test_browser_html_preview_is_sandboxed_and_its_script_never_runs(
    service: ClientFactory, browser: Browser, aiohttp_server: Any
) -> None:
    """An email's HTML renders inside a sandboxed frame; its script does not run and it loads
    nothing from elsewhere."""
    hits: list[str] = []

    async def tracker(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"", content_type="image/gif")

    elsewhere = web.Application()
    elsewhere.router.add_get("/{any:.*}", tracker)
    other: TestServer = await aiohttp_server(elsewhere)
    client = await service({"capture": {"smtp": {"host": "127.0.0.1", "port": 0}}})
    page = await open_inbox(browser, client)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@acme.test", "ana@example.com", "Hi"
    message.set_content("Your code is 246810")
    message.add_alternative(
        '<p id="greeting">Your code is <b>246810</b></p>'
        "<script>document.getElementById('greeting').textContent = 'script ran';"
        "parent.document.title = 'script ran';</script>"
        f'<img src="{other.make_url("/pixel.gif")}" alt="">'
        f'<link rel="stylesheet" href="{other.make_url("/style.css")}">',
        subtype="html",
    )
    await mail_in(client, message)
    item = page.locator("li.msg").first
    await expect(item.locator(".code")).to_have_text("246810")
    await item.locator(".summary").click()
    frame_element = item.locator("iframe.preview")
    await expect(frame_element).to_be_visible()
    sandbox = await frame_element.get_attribute("sandbox")
    assert sandbox is not None and "allow-scripts" not in sandbox
    assert "allow-same-origin" not in sandbox
    frame = await (await frame_element.element_handle()).content_frame()
    assert frame is not None
    await frame.wait_for_load_state("load")
    await expect(page.frame_locator("iframe.preview").locator("#greeting")).to_have_text(
        "Your code is 246810"
    )
    assert await page.title() != "script ran"
    assert hits == []  # neither the image nor the stylesheet was fetched
    # The tabs: plain text and headers.
    await item.get_by_role("tab", name="Text").click()
    await expect(item.locator("pre.text")).to_contain_text("Your code is 246810")
    await item.get_by_role("tab", name="Headers").click()
    await expect(item.locator("table.headers")).to_contain_text("a@acme.test")


async def test_browser_filters_delete_and_clear(service: ClientFactory, browser: Browser) -> None:
    """Recipient, channel and type filters narrow the list; delete removes one; clear all
    empties the inbox (on the server too) and the page explains how to connect Logto."""
    client = await service()
    ana = await send(client, "ana@example.com", "111111")
    bob = await send(client, "bob@example.com", "222222", type="Register")
    sms = await send(client, "+33612345678", "333333", channel="sms")
    page = await open_inbox(browser, client)
    visible = page.locator("li.msg:visible")
    await expect(visible).to_have_count(3)
    await page.select_option("#f-channel", "sms")
    await expect(visible).to_have_count(1)
    await expect(card(page, sms)).to_be_visible()
    await expect(card(page, sms).locator(".detail")).to_be_hidden()
    await page.select_option("#f-channel", "")
    await page.select_option("#f-type", "Register")
    await expect(visible).to_have_count(1)
    await expect(card(page, bob)).to_be_visible()
    await page.select_option("#f-type", "")
    await page.fill("#f-to", "ANA@")
    await expect(visible).to_have_count(1)
    await expect(card(page, ana)).to_be_visible()
    await page.fill("#f-to", "")
    await card(page, bob).locator("button.delete").click()
    await expect(visible).to_have_count(2)
    listed = (await (await client.get("/v1/messages")).json())["messages"]
    assert {m["id"] for m in listed} == {ana, sms}
    await page.click("#clear")
    await expect(page.locator("li.msg")).to_have_count(0)
    await expect(page.locator("#empty")).to_be_visible()
    await expect(page.locator("#help-email")).to_have_text(str(client.make_url("/v1/email")))
    assert (await (await client.get("/v1/messages")).json())["messages"] == []


async def test_browser_token_prompt_keeps_the_token_out_of_urls(
    service: ClientFactory, browser: Browser
) -> None:
    """With tokens configured the page asks for one, refuses a wrong one, then sends the right
    one as a header (never in a URL) and keeps it for the browser session."""
    client = await service({"auth": {"tokens": [TOKEN]}})
    message_id = await send(client, "ana@example.com", "271828",
                            headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    page = await open_inbox(browser, client)
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("li.msg")).to_have_count(0)
    await expect(page.locator("#filters")).to_be_hidden()  # nothing to filter or clear yet
    await page.fill("#token", "tok_wrong_wrong_wrong_wrong")
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login-error")).to_be_visible()
    await page.fill("#token", TOKEN)
    await page.click("#login-form button[type=submit]")
    await expect(card(page, message_id).locator(".code")).to_have_text("271828")
    await expect(page.locator("#login")).to_be_hidden()
    assert all(TOKEN not in url for url, _ in requests)
    api = [auth for url, auth in requests if "/v1/messages" in url]
    assert api and api[-1] == f"Bearer {TOKEN}"
    await page.reload()
    await expect(card(page, message_id).locator(".code")).to_have_text("271828")
    await expect(page.locator("#login")).to_be_hidden()
    assert TOKEN not in page.url


async def test_browser_send_only_token_is_told_it_lacks_the_read_scope(
    service: ClientFactory, browser: Browser
) -> None:
    """A send-only token (what Logto holds) opens nothing: the page says the token lacks the
    scope and asks again; a read token then shows the inbox."""
    sender = "send-only-token-0123456789"
    reader = "read-only-token-0123456789"
    client = await service({"auth": {"tokens": [{"token": sender, "scopes": ["send"]},
                                                {"token": reader, "scopes": ["read"]}]}})  # fmt: skip
    message_id = await send(client, "ana@example.com", "314159",
                            headers={"Authorization": f"Bearer {sender}"})  # fmt: skip
    page = await open_inbox(browser, client)
    await page.fill("#token", sender)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login-error")).to_contain_text("lacks the scope")
    await expect(page.locator("li.msg")).to_have_count(0)
    await page.fill("#token", reader)
    await page.click("#login-form button[type=submit]")
    await expect(card(page, message_id).locator(".code")).to_have_text("314159")


async def test_browser_hostile_message_shows_as_text(
    service: ClientFactory, browser: Browser
) -> None:
    """Markup in a code, subject, sender, text or link is shown as text and never runs."""
    client = await service({"capture": {"smtp": {"host": "127.0.0.1", "port": 0}}})
    page = await open_inbox(browser, client)
    await page.evaluate("window.__pwned = 0")
    code = '<img src=x onerror="window.__pwned=1">'
    hostile = await send(client, "ana@example.com", code, link="javascript:window.__pwned=2")
    message = EmailMessage()
    message["From"] = '"<script>window.__pwned=3</script>" <evil@acme.test>'
    message["To"] = "ana@example.com"
    message["Subject"] = '<img src=x onerror="window.__pwned=4"><b>bold</b>'
    message.set_content('<svg onload="window.__pwned=5"></svg> code 5555')
    await mail_in(client, message)
    api_card = card(page, hostile)
    await expect(api_card.locator(".code")).to_have_text(code)
    smtp_card = page.locator("li.msg").first
    await expect(smtp_card.locator(".subject")).to_have_text(message["Subject"])
    await smtp_card.locator(".summary").click()
    await expect(smtp_card.locator("pre.text")).to_contain_text('<svg onload="window.__pwned=5">')
    await smtp_card.get_by_role("tab", name="Headers").click()
    await expect(smtp_card.locator("table.headers")).to_contain_text("<script>window.__pwned=3")
    await api_card.locator(".summary").click()
    await expect(api_card.locator(".detail")).to_be_visible()
    assert await page.locator("main img, main svg, main script, a[href^='javascript']").count() == 0
    assert await page.evaluate("window.__pwned") == 0


async def test_browser_phone_width_keeps_the_code_in_view(
    service: ClientFactory, browser: Browser
) -> None:
    """On a 390 px wide screen the code and its copy button are inside the viewport, and an
    SMS opens as a phone would show it, with its encoding and segment count."""
    client = await service()
    message_id = await send(client, "+33612345678", "864209", channel="sms")
    page = await open_inbox(browser, client, viewport={"width": 390, "height": 844})
    item = card(page, message_id)
    for part in (item.locator(".code"), item.locator("button.copy")):
        box = await part.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await item.locator(".summary").click()
    await expect(item.locator(".bubble")).to_contain_text("864209")
    await expect(item.locator(".sms-facts")).to_contain_text("GSM-7 · 1 segment")

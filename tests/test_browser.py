"""The join pages in a real browser: Playwright driving Debian's chromium (`make browser` installs it) against
one `onboards serve --demo --sandbox` process. Every page visited is checked by axe-core (npm) for serious or
critical accessibility violations and saved as a screenshot under tests/artifacts/ (git-ignored)."""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from onboards.demo import BUYER_EMAIL, SELLER_EMAIL, demo_key
from tests.servers import Server

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "sandbox-token-for-the-browser-tests"
SERIOUS = "(r) => r.violations.filter(v => ['serious', 'critical'].includes(v.impact)).map(v => v.id + ': ' + v.help)"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("browser")
    started = Server(f"sqlite:///{directory}/x.db", directory / "serve.log", args=["--demo", "--sandbox"],
                     SANDBOX_TOKEN=TOKEN)
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is missing: `make browser` installs it"
    assert AXE.exists(), "axe-core is missing: `npm ci` installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    # bypass_csp: the pages' policy would (rightly) refuse the axe-core script the test puts in.
    context = browser.new_context(base_url=server.url, bypass_csp=True)
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    yield opened
    context.close()


def check(page: Page, name: str) -> None:
    """The page as it is now: no serious or critical axe-core violation; a screenshot kept."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    page.add_script_tag(path=AXE)
    assert page.evaluate(f"async () => ({SERIOUS})(await axe.run())") == [], name


def invite(email: str, key: str = demo_key(SELLER_EMAIL), *, url: str) -> str:
    with httpx.Client(base_url=url, auth=("API", key), timeout=10) as http:
        answer = http.post("/invitations/recipient", json={"email": email})
    assert answer.status_code == 201, answer.text
    return answer.json()["entity"]["invitation_id"]


def open_mailbox(page: Page) -> None:
    page.goto("/sandbox/mail")
    if page.locator("#token").count():
        page.fill("#token", TOKEN)
        page.click("text=Open the mailbox")
    expect(page.locator("h1")).to_have_text("Sandbox mailbox")


def mail_to(page: Page, email: str) -> str:
    """The text of the newest e-mail to `email` in the sandbox mailbox page."""
    open_mailbox(page)
    return page.locator("article.mail", has_text=f"To {email}").first.inner_text()


def test_a_new_buyer_from_the_mailbox_link_to_the_key_page(page: Page, server: Server) -> None:
    started = time.monotonic()
    invite("newbuyer@example.com", url=server.url)
    open_mailbox(page)
    check(page, "01-sandbox-mailbox")
    page.locator("article.mail", has_text="To newbuyer@example.com").first.get_by_role(
        "link", name="Accept Invite to Connect").click()
    expect(page.locator("h1")).to_have_text("Acme Leads invites you to connect")
    link = page.url
    check(page, "02-invitation")
    page.click("text=Create account")  # empty: a form error, the fields marked
    expect(page.locator("#company")).to_have_attribute("aria-invalid", "true")
    check(page, "03-form-error")
    page.fill("#company", "Newbuyer Inc")
    page.fill("#user_name", "Nia Buyer")
    expect(page.locator("#email")).to_have_value("newbuyer@example.com")
    page.click("text=Create account")
    check(page, "04-accept")
    page.click("text=Accept invite to connect")
    expect(page.locator("legend")).to_contain_text("Which flow receives Acme Leads's leads?")
    check(page, "05-choose-flow")
    page.check("#flow-new")
    page.click("text=Continue")
    check(page, "06-finish")
    page.click("text=Finish setup")
    expect(page.locator("[role=status]")).to_contain_text("Done:")
    check(page, "07-completed")
    page.click("text=Get your API key")
    page.click("text=Show my API key")
    key = page.locator("#api-key").input_value()
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    expect(page.locator("#curl")).to_have_value(f"curl -u API:{key} {server.url}/onboards")
    check(page, "08-api-key")
    with httpx.Client(base_url=server.url, auth=("API", key), timeout=10) as http:
        assert [o["status"] for o in http.get("/onboards").json()] == ["completed"]
    print(f"new buyer's path in the browser: {time.monotonic() - started:.1f}s")

    page.context.clear_cookies()
    page.goto(link)  # the same link again: it made an account already
    expect(page.locator("h1")).to_have_text("This invitation link was used")
    check(page, "09-link-used")


def test_an_existing_user_signs_in_with_the_code_from_the_mailbox(page: Page, server: Server) -> None:
    link = re.search(r"^(http://\S+/join/\S+)$", server.log(), re.MULTILINE)
    assert link, server.log()
    page.goto(link[1])
    page.click("text=E-mail me a sign-in code")
    check(page, "10-code")
    mailbox = page.context.new_page()  # another tab
    mail = mail_to(mailbox, BUYER_EMAIL)
    mailbox.close()
    code = re.search(r"code for onboards: (\d{6})", mail)
    assert code, mail
    page.fill("#code", code[1])
    page.click("button:text('Sign in')")
    page.click("text=Accept invite to connect")
    page.check("label:text('Inbound solar')")
    page.click("text=Continue")
    page.click("text=Finish setup")
    expect(page.locator("[role=status]")).to_contain_text("Done:")
    expect(page.locator("dd").nth(1)).to_contain_text("Inbound solar")


def test_the_invitee_declines(page: Page, server: Server) -> None:
    invite("decliner@example.com", url=server.url)
    mail_to(page, "decliner@example.com")
    page.locator("article.mail", has_text="To decliner@example.com").first.get_by_role("link").click()
    page.click("text=Decline the invitation")
    expect(page.locator("h1")).to_have_text("Invitation declined")
    check(page, "11-declined")
    assert "declined your invitation" in mail_to(page, SELLER_EMAIL)


def test_an_expired_link(page: Page, server: Server) -> None:
    headers = {"X-Sandbox-Token": TOKEN}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        seller = http.post("/sandbox/accounts", json={"name": "Late Co", "email": "late@example.com"},
                           headers=headers).json()
        invite("tardy@example.com", seller["api_key"], url=server.url)
        moved = http.post(f"/sandbox/accounts/{seller['account_id']}/clock", json={"seconds": 8 * 86400},
                          headers=headers)
        assert moved.status_code == 200, moved.text
    mail_to(page, "tardy@example.com")
    page.locator("article.mail", has_text="To tardy@example.com").first.get_by_role("link").click()
    expect(page.locator("h1")).to_have_text("This invitation has expired")
    check(page, "12-expired")


def test_a_form_without_its_csrf_token_gets_a_403_page(page: Page, server: Server) -> None:
    invite("forged@example.com", url=server.url)
    mail_to(page, "forged@example.com")
    page.locator("article.mail", has_text="To forged@example.com").first.get_by_role("link").click()
    page.evaluate("() => document.querySelectorAll('input[name=csrf]').forEach(i => i.remove())")
    page.fill("#company", "Forged Co")
    page.fill("#user_name", "Mallory")
    with page.expect_response(lambda r: r.url.endswith("/account")) as answer:
        page.click("text=Create account")
    assert answer.value.status == 403
    expect(page.locator("h1")).to_have_text("This form has expired")
    check(page, "13-csrf-refused")


def tab_to(page: Page, selector: str) -> None:
    """Tab until the element `selector` (a Playwright selector) has the focus, as a keyboard user would."""
    target = page.locator(selector).first
    for _ in range(40):
        page.keyboard.press("Tab")
        if target.evaluate("(element) => element === document.activeElement"):
            return
    raise AssertionError(f"{selector} cannot be reached with the Tab key")


def test_the_whole_path_with_the_keyboard_only(page: Page, server: Server) -> None:
    invite("keys@example.com", url=server.url)
    mail_to(page, "keys@example.com")
    tab_to(page, "article.mail:has-text('To keys@example.com') >> a")
    page.keyboard.press("Enter")
    tab_to(page, "#company")
    page.keyboard.type("Keyboard Co")
    tab_to(page, "#user_name")
    page.keyboard.type("Kim Keys")
    page.keyboard.press("Enter")
    tab_to(page, "button:text('Accept invite to connect')")
    page.keyboard.press("Enter")
    tab_to(page, "button:text('Continue')")  # "a new minimal flow" is chosen already
    page.keyboard.press("Enter")
    tab_to(page, "button:text('Finish setup')")
    page.keyboard.press("Enter")
    expect(page.locator("[role=status]")).to_contain_text("Done:")
    tab_to(page, "a:text('Get your API key')")
    page.keyboard.press("Enter")
    tab_to(page, "button:text('Show my API key')")
    page.keyboard.press("Enter")
    expect(page.locator("#api-key")).to_have_value(re.compile(r"^[0-9a-f]{40}$"))


def test_the_reference_works_offline_and_an_unknown_anchor_lands_on_the_top(page: Page, server: Server) -> None:
    # Every request but the server's is refused, as with no network at all; none is even tried.
    elsewhere: list[str] = []

    def only_the_server(route: Route, request: Request) -> None:
        if request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto("/docs/#tag/no/such/anchor")
    expect(page.locator("#redoc")).to_contain_text("Onboards")
    page.wait_for_function("() => location.hash === ''")
    assert "No page at this address" not in page.locator("#redoc").inner_text()
    assert page.evaluate("() => scrollY") == 0
    assert page.evaluate("() => [...document.images].filter(i => !i.complete || !i.naturalWidth).length") == 0
    assert elsewhere == []

"""The console in a real browser: Debian's headless Chromium driven by Selenium through /usr/bin/chromedriver
(``make test-tools`` installs both; Selenium Manager is never asked to fetch a browser). One server and one
browser for the module. With MODELCACHE_SCREENSHOTS=1 the main pages are saved to docs/console/*.png."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache_svc.config import Settings
from modelcache_svc.embedding import Embedder, load_embedder
from tests.servers import ROOT, ThreadServer, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN = "browser-admin-key"
MODEL = "support-bot"
SHOTS = ROOT / "docs" / "console"

if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(f"no {CHROMIUM} and {CHROMEDRIVER}: `make test-tools` installs Debian's chromium and "
                "chromium-driver (apt-get); this host could not", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: no browser, no Selenium needed)
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver import Chrome as WebDriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    data = tmp_path_factory.mktemp("console-browser")
    settings = Settings(data_dir=data, grpc_port=0, http_port=free_port(), resp_port=0, admin_key=ADMIN,
                        scalar_uri=f"sqlite:///{data}/s.db", verifier="off", embedding_model_cjk="off",
                        embedding_model_multilingual="off")
    embedder: Embedder = load_embedder("onnx", "packaged:all-MiniLM-L6-v2")
    running = ThreadServer(settings, embedder)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def world(server: ThreadServer) -> dict[str, Any]:
    with server.client(ADMIN) as admin:
        admin.create_tenant("acme")
        admin.create_tenant("globex")
        _, acme = admin.create_api_key("acme")
        _, globex = admin.create_api_key("globex")
        chats = [
            ("How do I reset my password?", "Open Settings > Security > Reset password."),
            ("How do I cancel my subscription?", "Billing > Plan > Cancel; you keep access to the period's end."),
            ("Can I export my data as CSV?", "Yes: Reports > Export > CSV."),
            ("How do I add a team member?", "Team > Invite, then their e-mail address."),
            ("What does the free plan include?", "Three projects and 1 GB of storage."),
        ]
        ids = {q: admin.insert("acme", MODEL, q, a) for q, a in chats}
        evil = admin.insert("acme", MODEL, "Show me an HTML example", "<script>alert('xss')</script><b>bold</b>")
        secret = admin.insert("globex", MODEL, "What is the globex launch date?", "The globex launch is in May.")
    return {"acme": acme, "globex": globex, "ids": ids, "evil": evil, "secret": secret}


def url(server: ThreadServer, path: str) -> str:
    return f"http://127.0.0.1:{server.service.http_port}/console{path}"


def sign_in(browser: WebDriver, server: ThreadServer, key: str) -> None:
    browser.delete_all_cookies()
    browser.get(url(server, "/"))
    assert "Sign in" in browser.title
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.ID, "signin").click()
    arrived(browser, "Overview")


def arrived(browser: WebDriver, title: str) -> None:
    """The page a click led to has loaded: its title says so."""
    WebDriverWait(browser, 15).until(lambda b: title in b.title)


def click(browser: WebDriver, element_id: str, title: str) -> None:
    browser.find_element(By.ID, element_id).click()
    arrived(browser, title)


def shot(browser: WebDriver, name: str) -> None:
    if os.environ.get("MODELCACHE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        height = int(browser.execute_script("return document.documentElement.scrollHeight"))
        # The whole page, not the window: the viewport made as tall as the page (at most 2400 px) for the shot.
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": min(max(800, height), 2400), "deviceScaleFactor": 1, "mobile": False})
        browser.save_screenshot(str(SHOTS / f"{name}.png"))
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def text(browser: WebDriver, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def test_sign_in_find_by_a_paraphrase_remove_and_the_query_misses(
        browser: WebDriver, server: ThreadServer, world: dict[str, Any]) -> None:
    browser.get(url(server, "/"))
    assert "Sign in" in browser.title and "reset my password" not in browser.page_source
    shot(browser, "signin")
    browser.find_element(By.ID, "key").send_keys("mck_not-a-key")
    click(browser, "signin", "Sign in")
    WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.ID, "message"))
    assert "invalid or revoked API key" in text(browser, "message")

    sign_in(browser, server, world["acme"])
    cookie = browser.get_cookie("mc_console")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    with server.client(world["acme"]) as client:  # some traffic for the pictures
        for q in ("How can I reset my password?", "How do I cancel my plan?", "What is in the free plan?",
                  "How do I export my data to CSV?", "Where is the nearest train station?"):
            client.query("acme", MODEL, q)
    browser.get(url(server, "/"))
    browser.find_element(By.LINK_TEXT, "acme").click()
    arrived(browser, "acme")
    assert "Tenant acme" in browser.page_source and "Save settings" not in browser.page_source  # the admin's

    browser.find_element(By.LINK_TEXT, "Entries").click()
    arrived(browser, "Entries of acme")
    browser.find_element(By.ID, "text").send_keys("I forgot my password, how do I reset it?")
    browser.find_element(By.ID, "find").click()
    WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.ID, "results"))
    first = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")[0]
    assert "How do I reset my password?" in first.text and "yes" in first.text
    shot(browser, "entries")
    first.find_element(By.CSS_SELECTOR, "a.question").click()
    arrived(browser, "Entry ")
    assert text(browser, "question") == "How do I reset my password?"
    shot(browser, "entry")
    click(browser, "remove-entry", "Done")
    assert "is removed" in text(browser, "message")
    with server.client(world["acme"]) as client:
        assert not client.query("acme", MODEL, "I forgot my password, how do I reset it?").hit
        assert not client.query("acme", MODEL, "How do I reset my password?").hit


def test_mark_a_served_hit_wrong_and_the_next_similar_query_refuses_it(
        browser: WebDriver, server: ThreadServer, world: dict[str, Any]) -> None:
    sign_in(browser, server, world["acme"])
    paraphrase = "How can I add a member to my team?"
    with server.client(world["acme"]) as client:
        served = client.query("acme", MODEL, paraphrase)
    assert served.hit and served.match == "semantic" and served.id == world["ids"]["How do I add a team member?"]
    browser.get(url(server, "/t/acme/traffic?outcome=semantic"))
    shot(browser, "traffic")
    assert browser.find_element(By.ID, "similarity-histogram").find_elements(By.CSS_SELECTOR, "rect.bar")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#traffic tbody tr") if paraphrase in r.text)
    row.find_element(By.CSS_SELECTOR, "button.wrong").click()
    arrived(browser, "Done")
    assert "Marked WRONG" in text(browser, "message") and "no longer serves this chat" in text(browser, "message")
    with server.client(world["acme"]) as client:
        again = client.query("acme", MODEL, paraphrase)
        assert not again.hit
        assert client.query("acme", MODEL, "How do I add a team member?").hit  # its own question still is
    browser.get(url(server, f"/t/acme/entry/{served.id}"))
    assert text(browser, "floor") != "none" and "WRONG" in text(browser, "feedback")


def test_a_tenant_key_sees_nothing_of_another_tenant(
        browser: WebDriver, server: ThreadServer, world: dict[str, Any]) -> None:
    sign_in(browser, server, world["acme"])
    assert "globex" not in browser.find_element(By.ID, "tenants").text
    for path in ("/t/globex", "/t/globex/entries", "/t/globex/traffic", f"/t/globex/entry/{world['secret']}",
                 "/t/globex/entries?text=launch+date"):
        browser.get(url(server, path))
        assert "Not for this key" in browser.page_source, path
        assert "launch" not in text(browser, "message") and "May" not in browser.page_source
    browser.get(url(server, f"/t/acme/entry/{world['secret']}"))
    assert "Not found" in browser.page_source and "May" not in browser.page_source
    browser.get(url(server, "/t/acme/entries?text=What+is+the+globex+launch+date%3F"))
    assert "globex launch" not in browser.find_element(By.ID, "results").text and "May" not in browser.page_source

    sign_in(browser, server, world["globex"])  # and the other way round
    browser.get(url(server, f"/t/acme/entry/{world['evil']}"))
    assert "Not for this key" in browser.page_source


def test_an_answer_holding_a_script_is_shown_as_text(
        browser: WebDriver, server: ThreadServer, world: dict[str, Any]) -> None:
    sign_in(browser, server, ADMIN)
    shot(browser, "overview")  # every tenant
    browser.get(url(server, "/t/acme"))
    assert browser.find_element(By.ID, "save-settings")  # the admin edits a tenant's settings
    shot(browser, "tenant")
    browser.get(url(server, f"/t/acme/entry/{world['evil']}"))
    assert text(browser, "answer") == "<script>alert('xss')</script><b>bold</b>"
    assert not browser.find_elements(By.CSS_SELECTOR, "#answer b, #answer script")
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    browser.get(url(server, "/t/acme/entries?text=Show+me+an+HTML+example"))
    assert "<script>alert('xss')</script>" in browser.find_element(By.ID, "results").text
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    # The browser keeps to the policy it was sent: no script runs here, not even one of ours.
    assert browser.execute_script("return document.scripts.length") == 0


def test_the_screenshots_are_committed() -> None:
    if os.environ.get("MODELCACHE_SCREENSHOTS") == "1":
        pytest.skip("this run writes them")
    missing = [n for n in ("signin", "overview", "tenant", "entries", "entry", "traffic")
               if not (SHOTS / f"{n}.png").is_file()]
    assert not missing, f"docs/console lacks {missing}: run MODELCACHE_SCREENSHOTS=1 pytest {__file__}"

"""What a person sees in a browser: headless Chromium (Debian's) driven by
Selenium against a real gunicorn on 127.0.0.1, screenshots under tmp_path.

A browser's navigation asks for text/html and names no feed type, so feedsvc
answers a feed URL with its HTML preview (feedsvc.preview): no XSLT, which
Chromium is removing (it shows "This site uses XSLT; that functionality is
being removed" over pages that use it). The test follows the links a person
would and checks the preview against the feed a reader gets at the same URL.
"""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BUNDLED
from tests.deploy_harness import Gunicorn
from tests.feedcheck import check_atom, check_rss

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("Chromium is not installed here (.ci/run installs Debian's chromium and "
                "chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.slow

FEED_SIZE = 4
#: Chromium's words over a page that uses XSLT.
XSLT_BANNER = "uses XSLT"


@dataclass
class Site:
    base: str
    port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """gunicorn with no FEEDSVC_BASE_URL: links, and the stylesheet's, follow the host used."""
    tmp = tmp_path_factory.mktemp("browser")
    articles = tmp / "articles"
    shutil.copytree(BUNDLED, articles)
    gunicorn = Gunicorn(tmp, {"FEEDSVC_ARTICLES_DIR": str(articles),
                              "FEEDSVC_LEDGER_PATH": str(tmp / "ledger.sqlite3"),
                              "FEEDSVC_FEED_SIZE": str(FEED_SIZE),  # so feeds have archives
                              "FEEDSVC_RELOAD_INTERVAL": "0"}, workers=1)
    yield Site(f"http://127.0.0.1:{gunicorn.port}", gunicorn.port)
    output = gunicorn.stop()
    assert "Traceback" not in output, output


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1300"):
        options.add_argument(flag)
    # The driver's path is given, so Selenium Manager downloads nothing.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _to_topic_page(browser, base: str, shots: Path) -> str:
    """Home page, then the first topic with several articles; returns the topic's name."""
    browser.get(base + "/")
    assert browser.title == "feedsvc"
    assert browser.find_element(By.TAG_NAME, "h1").text == "feedsvc"
    assert len(browser.find_elements(By.CSS_SELECTOR, "ol.entries h2, ol.entries li")) >= 20
    browser.save_screenshot(str(shots / "1-home.png"))
    links = browser.find_elements(By.CSS_SELECTOR, "ul.topics a")
    name, link = next((a.text, a) for a in links
                      if int(a.find_element(By.XPATH, "..").text.rsplit("(", 1)[1][:-1]) >= 3)
    link.click()
    assert browser.current_url.startswith(base + "/topics/")
    assert browser.find_element(By.TAG_NAME, "h1").text == name
    browser.save_screenshot(str(shots / "2-topic.png"))
    return name


def _check_preview(browser, parsed, title: str, shots: Path, shot: str) -> None:
    """The preview: an HTML page with the title, the subscribe box and every entry."""
    browser.save_screenshot(str(shots / shot))
    assert browser.execute_script("return document.contentType") == "text/html"
    assert XSLT_BANNER not in browser.page_source
    assert XSLT_BANNER not in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_element(By.ID, "feed-title").text == title
    hint = browser.find_element(By.ID, "subscribe")
    assert hint.is_displayed() and "This is a web feed" in hint.text
    self_url = next(link.href for link in parsed.feed.links if link.rel == "self")
    assert browser.find_element(By.ID, "feed-url").get_attribute("value") == self_url
    # The stylesheet applied (same origin, allowed by the CSP): the box has its colour.
    assert hint.value_of_css_property("background-color") == "rgba(255, 248, 225, 1)"
    shown = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "li.entry h2 a")]
    assert shown == [entry.title for entry in parsed.entries] and shown
    first = browser.find_element(By.CSS_SELECTOR, "li.entry h2 a")
    assert first.get_attribute("href") == parsed.entries[0].link


def _get(port: int, path: str) -> bytes:
    """What a feed reader gets at ``path`` (no Accept: the feed itself)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, path
        assert not response.getheader("Content-Type", "").startswith("text/html"), path
        return response.read()
    finally:
        conn.close()


def test_feed_preview_in_chromium(server: Site, browser, tmp_path: Path) -> None:
    """Home, a topic, its Atom feed's preview; its RSS feed; the site feed and an archive."""
    name = _to_topic_page(browser, server.base, tmp_path)
    browser.find_element(By.CSS_SELECTOR, "p.feeds a[type='application/atom+xml']").click()
    assert browser.current_url.endswith("/feed.atom")
    path = browser.current_url.removeprefix(server.base)
    _check_preview(browser, check_atom(_get(server.port, path)), f"{name} — feedsvc",
                   tmp_path, "3-feed-atom.png")
    assert "Atom feed" in browser.title
    browser.find_element(By.ID, "feed-home").click()  # back to the topic's page
    assert browser.find_element(By.TAG_NAME, "h1").text == name
    rss_path = path.replace(".atom", ".rss")
    browser.get(server.base + rss_path)
    _check_preview(browser, check_rss(_get(server.port, rss_path)), f"{name} — feedsvc",
                   tmp_path, "4-feed-rss.png")
    assert "RSS feed" in browser.title
    # The site feed, then its newest archive by the preview's own link.
    browser.get(server.base + "/feed.atom")
    _check_preview(browser, check_atom(_get(server.port, "/feed.atom")), "feedsvc",
                   tmp_path, "5-site-atom.png")
    browser.find_element(By.ID, "prev-archive").click()
    archive_path = browser.current_url.removeprefix(server.base)
    assert archive_path.startswith("/archive/") and archive_path.endswith("/feed.atom")
    _check_preview(browser, check_atom(_get(server.port, archive_path)), "feedsvc",
                   tmp_path, "6-archive-atom.png")
    assert "archive" in browser.find_element(By.ID, "archive-note").text
    browser.find_element(By.ID, "current").click()
    assert browser.current_url == server.base + "/feed.atom"


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """gunicorn over the markup corpus of tests/test_text_fields.py."""
    from tests.test_text_fields import write_corpus

    tmp = tmp_path_factory.mktemp("browser-corpus")
    write_corpus(tmp / "articles")
    gunicorn = Gunicorn(tmp, {"FEEDSVC_ARTICLES_DIR": str(tmp / "articles"),
                              "FEEDSVC_LEDGER_PATH": str(tmp / "ledger.sqlite3"),
                              "FEEDSVC_RELOAD_INTERVAL": "0"}, workers=1)
    yield Site(f"http://127.0.0.1:{gunicorn.port}", gunicorn.port)
    output = gunicorn.stop()
    assert "Traceback" not in output, output


def test_markup_like_text_is_shown_as_text_in_chromium(corpus_server: Site, browser,
                                                       tmp_path: Path) -> None:
    """The feed views (RSS and Atom through feed.xsl) and the pages show "<b>Bold</b>"
    and "<script>" as the words they are: no such element, no dialog, the text exact."""
    from selenium.common.exceptions import NoAlertPresentException

    from tests.test_text_fields import BY_TITLE

    markup = ("script", "b", "i", "u", "em", "img")
    for number, path in enumerate(("/feed.rss", "/feed.atom", "/", "/authors/sam-i-tag-i/")):
        browser.get(corpus_server.base + path)
        browser.save_screenshot(str(tmp_path / f"corpus-{number}.png"))
        for tag in markup:
            assert browser.find_elements(By.TAG_NAME, tag) == [], f"<{tag}> in {path}"
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 (reading it is the check)
        shown = {h.text for h in browser.find_elements(
            By.CSS_SELECTOR, "li.entry h2 a, ol.entries h2 a")}
        if path.startswith("/feed"):
            assert shown == set(BY_TITLE), path
        else:
            assert shown and shown <= set(BY_TITLE), path
    summaries = {p.text for p in browser.find_elements(By.CSS_SELECTOR, "ol.entries p")}
    assert BY_TITLE['The <b>Bold</b> & <script>alert(1)</script> "Headline"']["summary"] in (
        summaries)

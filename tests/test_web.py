"""The app end to end through Flask's test client over the bundled articles."""

from __future__ import annotations

import gzip
import os
import shutil
import time

import pytest
from lxml import etree, html

from feedsvc.collection import SITE_FEED, FeedRef
from feedsvc.web import PAGE_SECURITY_HEADERS
from tests.conftest import BASE_URL, write_article
from tests.feedcheck import ATOM, CHECKS, check_atom, check_json, check_rss

SEED = "000_116cfd26fe85501a.txt"
SEED_TITLE = "Ukraine Drops NATO Bid For Security Guarantees"
DC = "{http://purl.org/dc/elements/1.1/}"


def all_feed_paths(app) -> list[str]:
    collection = app.extensions["feedsvc"].collection
    return [f"{ref.prefix}/feed.{fmt}" for ref in collection.feed_refs()
            for fmt in ("atom", "rss", "json")]


def test_bundled_articles_give_site_topic_and_author_feeds(app) -> None:
    publisher = app.extensions["feedsvc"]
    collection = publisher.collection
    assert publisher.rejections == {}
    assert len(collection.entries) >= 20
    assert {"ukraine", "nato", "ukraine-abandons-nato-membership-pursuit"} <= set(
        collection.topics)
    assert "sara-wazowski" in collection.authors
    shared = [t for t in collection.topics.values() if t.count >= 2]
    assert len(shared) >= 3, "the bundled set should show shared broad topics"
    assert sum(1 for info in collection.authors.values() if info.count >= 2) >= 3


def test_every_feed_is_valid_in_every_format(app, client) -> None:
    paths = all_feed_paths(app)
    assert len(paths) > 30
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        fmt = path.rsplit(".", 1)[1]
        CHECKS[fmt](response.data)


@pytest.mark.parametrize(("fmt", "content_type"), [
    ("atom", "application/atom+xml; charset=utf-8"),
    ("rss", "application/rss+xml; charset=utf-8"),
    ("json", "application/feed+json; charset=utf-8"),
])
def test_content_types(client, fmt: str, content_type: str) -> None:
    assert client.get(f"/feed.{fmt}").headers["Content-Type"] == content_type


def _seed_entry(parsed):
    return next(e for e in parsed.entries if e.title == SEED_TITLE)


def test_seed_entry_in_atom(client) -> None:
    parsed = check_atom(client.get("/feed.atom").data)
    entry = _seed_entry(parsed)
    assert entry.author_detail.name == "Sara Wazowski"
    assert entry.author_detail.href == f"{BASE_URL}/authors/sara-wazowski/"
    assert entry.link.startswith(f"{BASE_URL}/articles/")
    assert entry.summary.startswith("Ukraine has stepped back from its long-held goal")
    assert len(entry.summary) <= 300
    content = entry.content[0].value
    assert "<h2>Why This Matters Now</h2>" in content
    assert content.count("<li>") == 4
    assert "Sara pursued her passion" not in content
    assert "Sara pursued her passion" not in entry.summary
    terms = {t.term: t for t in entry.tags}
    assert {"ukraine", "nato", "ukraine-abandons-nato-membership-pursuit"} <= set(terms)
    assert terms["nato"].label == "NATO"
    assert terms["ukraine"].scheme == f"{BASE_URL}/topics/"
    assert entry.id.startswith("tag:news.example.org,")
    assert entry.published_parsed and entry.updated_parsed


def test_feed_updated_is_newest_entry_not_render_time(app, client) -> None:
    doc = etree.fromstring(client.get("/feed.atom").data)
    feed_updated = doc.findtext(f"{ATOM}updated")
    entry_updated = [e.findtext(f"{ATOM}updated") for e in doc.iter(f"{ATOM}entry")]
    assert feed_updated == max(entry_updated)
    time.sleep(1.1)
    app.extensions["feedsvc"].clear_cache()  # force a fresh render
    assert etree.fromstring(client.get("/feed.atom").data).findtext(
        f"{ATOM}updated") == feed_updated


def test_entries_newest_first(client) -> None:
    parsed = check_atom(client.get("/feed.atom").data)
    published = [e.published_parsed for e in parsed.entries]
    assert published == sorted(published, reverse=True)


def test_rss_channel_link_guid_and_dc_creator(client) -> None:
    body = client.get("/topics/ukraine/feed.rss").data
    check_rss(body)
    doc = etree.fromstring(body)
    channel = doc.find("channel")
    assert channel.findtext("link") == f"{BASE_URL}/topics/ukraine/"
    self_links = channel.findall(f"{ATOM}link[@rel='self']")
    assert [link.get("href") for link in self_links] == [f"{BASE_URL}/topics/ukraine/feed.rss"]
    for item in channel.findall("item"):
        guid = item.find("guid")
        assert guid.text.startswith("tag:") and guid.get("isPermaLink") == "false"
        assert item.findall(f"{DC}creator")
        assert item.find("author") is None


def test_json_feed_fields(client) -> None:
    feed = check_json(client.get("/authors/sara-wazowski/feed.json").data)
    assert feed["feed_url"] == f"{BASE_URL}/authors/sara-wazowski/feed.json"
    assert feed["home_page_url"] == f"{BASE_URL}/authors/sara-wazowski/"
    item = next(i for i in feed["items"] if i["title"] == SEED_TITLE)
    assert item["authors"] == [{"name": "Sara Wazowski",
                                "url": f"{BASE_URL}/authors/sara-wazowski/"}]
    assert "NATO" in item["tags"]
    assert item["date_published"] and item["date_modified"]


def test_feed_size_setting_caps_entries(make_app, articles_dir) -> None:
    client = make_app(articles_dir, feed_size=5).test_client()
    assert len(check_atom(client.get("/feed.atom").data).entries) == 5
    assert len(check_json(client.get("/feed.json").data)["items"]) == 5


def test_unknown_things_get_plain_404(client) -> None:
    for path in ("/topics/nope/", "/topics/nope/feed.atom", "/authors/nope/",
                 "/authors/nope/feed.rss", "/articles/nope", "/feed.xml"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"].startswith("text/plain")
        assert b"Traceback" not in response.data


def test_pages_have_autodiscovery_and_links(client) -> None:
    for path, feed in (("/", "/feed.atom"), ("/topics/ukraine/", "/topics/ukraine/feed.atom"),
                       ("/authors/sara-wazowski/", "/authors/sara-wazowski/feed.atom")):
        response = client.get(path)
        assert response.status_code == 200
        page = html.fromstring(response.data)
        alternates = page.xpath("//link[@rel='alternate']/@href")
        assert f"{BASE_URL}{feed}" in alternates, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "script-src" not in response.headers["Content-Security-Policy"]
    author_page = html.fromstring(client.get("/authors/sara-wazowski/").data)
    assert "Sara pursued her passion" in author_page.text_content()
    topics_page = html.fromstring(client.get("/topics/").data)
    assert f"{BASE_URL}/topics/nato/feed.rss" in topics_page.xpath("//a/@href")


def test_every_entry_link_opens_its_article_page(app, client) -> None:
    parsed = check_atom(client.get("/feed.atom").data)
    for entry in parsed.entries:
        path = entry.link.removeprefix(BASE_URL)
        page = client.get(path)
        assert page.status_code == 200, path
        assert html.fromstring(page.data).findtext(".//h1") == entry.title


def test_opml_lists_every_feed(app, client) -> None:
    response = client.get("/feeds.opml")
    assert response.status_code == 200
    doc = etree.fromstring(response.data)
    urls = doc.xpath("//outline/@xmlUrl")
    collection = app.extensions["feedsvc"].collection
    assert len(urls) == len(list(collection.feed_refs()))
    assert f"{BASE_URL}/topics/nato/feed.atom" in urls


def test_healthz_counts(client, articles_dir, make_app) -> None:
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["published"] >= 20 and body["rejected"] == 0
    (articles_dir / "bad.txt").write_bytes(b"")
    body = make_app(articles_dir).test_client().get("/healthz").get_json()
    assert body["rejected"] == 1


def test_a_bad_file_is_reported_and_the_others_published(make_app, articles_dir,
                                                         caplog) -> None:
    (articles_dir / "empty.txt").write_bytes(b"")
    (articles_dir / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (articles_dir / "only-headline.txt").write_text("Just A Headline\n")
    (articles_dir / ".#junk.txt").write_text("editor lock")
    (articles_dir / "x.txt~").write_text("backup")
    with caplog.at_level("WARNING", logger="feedsvc"):
        app = make_app(articles_dir)
    publisher = app.extensions["feedsvc"]
    assert set(publisher.rejections) == {"empty.txt", "binary.txt", "only-headline.txt"}
    assert len(publisher.collection.entries) >= 20
    for name in ("empty.txt", "binary.txt", "only-headline.txt"):
        assert sum(name in r.getMessage() for r in caplog.records) == 1
    check_atom(app.test_client().get("/feed.atom").data)


def test_draft_is_in_no_feed_or_page(make_app, articles_dir) -> None:
    write_article(articles_dir, "draft.txt", "Secret Draft Story",
                  front="---\ndraft: true\n---\n", topic="secret draft topic")
    client = make_app(articles_dir).test_client()
    for path in ("/feed.atom", "/feed.rss", "/feed.json", "/", "/topics/"):
        assert b"Secret Draft Story" not in client.get(path).data
    assert client.get("/topics/secret-draft-topic/feed.atom").status_code == 404


def test_front_matter_dates_are_used(make_app, articles_dir) -> None:
    write_article(articles_dir, "dated.txt", "A Dated Story",
                  front="---\ndate: 2020-01-02 10:00 +01:00\nupdated: 3 Jan 2020 12:00 UTC\n---\n")
    client = make_app(articles_dir).test_client()
    feed = check_json(client.get("/feed.json?limit=1000").data)
    item = next(i for i in feed["items"] if i["title"] == "A Dated Story")
    assert item["date_published"].startswith("2020-01-02T09:00:00")
    assert item["date_modified"].startswith("2020-01-03T12:00:00")


# -- stability of ids and dates ------------------------------------------------


def _feeds(client, paths) -> dict[str, bytes]:
    return {p: client.get(p).data for p in paths}


def test_restart_touch_and_fresh_copy_change_nothing(make_app, articles_dir, tmp_path) -> None:
    first = make_app(articles_dir)
    paths = all_feed_paths(first)
    before = _feeds(first.test_client(), paths)
    # Restart: a new app over the same folder and ledger.
    assert _feeds(make_app(articles_dir).test_client(), paths) == before
    # touch every file.
    future = time.time() + 3600
    for path in articles_dir.rglob("*.txt"):
        os.utime(path, (future, future))
    assert _feeds(make_app(articles_dir).test_client(), paths) == before
    # A fresh copy of the folder elsewhere, with new modification times.
    fresh = tmp_path / "fresh-checkout"
    shutil.copytree(articles_dir, fresh, copy_function=shutil.copy)
    assert _feeds(make_app(fresh).test_client(), paths) == before


def test_two_instances_are_byte_identical(make_app, articles_dir) -> None:
    one, two = make_app(articles_dir), make_app(articles_dir)
    paths = all_feed_paths(one) + ["/", "/topics/", "/feeds.opml"]
    assert _feeds(one.test_client(), paths) == _feeds(two.test_client(), paths)


def test_editing_text_changes_only_updated(make_app, articles_dir) -> None:
    client = make_app(articles_dir).test_client()
    before = {e.id: e for e in check_atom(client.get("/feed.atom?limit=1000").data).entries}
    time.sleep(1.1)  # the ledger keeps whole seconds
    seed = articles_dir / SEED
    seed.write_text(seed.read_text(encoding="utf-8").replace(
        "signaling a major shift", "signalling a major shift"), encoding="utf-8")
    client = make_app(articles_dir).test_client()
    after = {e.id: e for e in check_atom(client.get("/feed.atom?limit=1000").data).entries}
    assert before.keys() == after.keys()
    changed = [i for i in after if after[i].updated != before[i].updated]
    assert len(changed) == 1
    entry_id = changed[0]
    assert after[entry_id].title == SEED_TITLE
    assert after[entry_id].link == before[entry_id].link
    assert after[entry_id].published == before[entry_id].published
    assert after[entry_id].updated > before[entry_id].updated
    assert "signalling" in after[entry_id].summary


def test_live_refresh_sees_new_changed_and_deleted_files(app, articles_dir) -> None:
    publisher = app.extensions["feedsvc"]
    publisher.settle_seconds = 0
    client = app.test_client()
    first = client.get("/feed.atom")
    write_article(articles_dir, "new.txt", "A Brand New Story")
    report = publisher.refresh()
    assert report.changed and report.read == 1
    second = client.get("/feed.atom")
    assert second.headers["ETag"] != first.headers["ETag"]
    assert b"A Brand New Story" in second.data
    (articles_dir / "new.txt").unlink()
    publisher.refresh()
    assert b"A Brand New Story" not in client.get("/feed.atom").data
    assert publisher.refresh().read == 0  # nothing changed: nothing read


def test_conditional_get_and_gzip(client) -> None:
    first = client.get("/feed.atom")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert first.headers["Cache-Control"] == "public, max-age=300"
    assert first.headers["Vary"] == "Accept, Accept-Encoding"
    again = client.get("/feed.atom", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert client.get("/feed.atom", headers={"If-Modified-Since": modified}).status_code == 304
    # If-None-Match wins over If-Modified-Since (RFC 9110).
    assert client.get("/feed.atom", headers={"If-None-Match": '"other"',
                                             "If-Modified-Since": modified}).status_code == 200
    zipped = client.get("/feed.atom", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["ETag"] != etag
    assert gzip.decompress(zipped.data) == first.data
    assert client.head("/feed.atom").data == b""


def test_limit_query(client, make_app, articles_dir) -> None:
    assert len(check_atom(client.get("/feed.atom?limit=5").data).entries) == 5  # 1-2-5 steps
    for bad in ("-1", "abc", "0", "1.5", ""):
        response = client.get(f"/feed.atom?limit={bad}")
        assert response.status_code == 400, bad
        assert b"limit" in response.data


def test_feeds_for_refs_match_collection(app) -> None:
    collection = app.extensions["feedsvc"].collection
    assert collection.feed_entries(FeedRef("topic", "ukraine"))
    assert collection.feed_entries(FeedRef("topic", "missing")) is None


CHROME_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                 "image/webp,*/*;q=0.8")
FEEDPARSER_ACCEPT = ("application/atom+xml,application/rdf+xml,application/rss+xml,"
                     "application/x-netcdf,application/xml;q=0.9,text/xml;q=0.2,*/*;q=0.1")


SAFETY_HEADERS = ("X-Content-Type-Options", "Content-Security-Policy", "Referrer-Policy")


def test_readers_get_the_feed_and_browsers_the_preview(client) -> None:
    """One URL, two representations, each with its own validators; Vary: Accept on both."""
    for path, parse in (("/feed.atom", check_atom), ("/topics/nato/feed.rss", check_rss),
                        ("/authors/sara-wazowski/feed.json", check_json)):
        plain = client.get(path, headers={"Accept": "text/plain"})
        for accept in (None, FEEDPARSER_ACCEPT, "*/*", "application/xml",
                       "text/html, application/atom+xml", "text/html;q=0, */*",
                       "text/html, application/rss+xml;q=0.1, application/feed+json;q=0.1"):
            reader = client.get(path, headers={"Accept": accept} if accept else {})
            assert reader.headers["Content-Type"] == plain.headers["Content-Type"], accept
            assert reader.data == plain.data and reader.headers["ETag"] == plain.headers["ETag"]
            assert reader.headers["Vary"] == "Accept, Accept-Encoding"
        parse(plain.data)
        browser = client.get(path, headers={"Accept": CHROME_ACCEPT})
        assert browser.headers["Content-Type"] == "text/html; charset=utf-8", path
        assert browser.headers["Vary"] == "Accept, Accept-Encoding"
        assert browser.headers["ETag"] != plain.headers["ETag"]
        assert browser.headers["Last-Modified"] == plain.headers["Last-Modified"]
        for name in SAFETY_HEADERS:
            assert browser.headers[name] == PAGE_SECURITY_HEADERS[name]
        page = html.fromstring(browser.data)
        assert page.get_element_by_id("feed-url").get("value") == BASE_URL + path
        assert not page.xpath("//script | //style | //@style")  # the CSP allows neither
        # 304 for the preview's own ETag; the feed's ETag does not validate it.
        again = client.get(path, headers={"Accept": CHROME_ACCEPT,
                                          "If-None-Match": browser.headers["ETag"]})
        assert again.status_code == 304 and again.data == b""
        assert again.headers["Vary"] == "Accept, Accept-Encoding"
        crossed = client.get(path, headers={"Accept": CHROME_ACCEPT,
                                            "If-None-Match": plain.headers["ETag"]})
        assert crossed.status_code == 200
        zipped = client.get(path, headers={"Accept": CHROME_ACCEPT, "Accept-Encoding": "gzip"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped.data) == browser.data
        assert zipped.headers["ETag"] not in (browser.headers["ETag"], plain.headers["ETag"])


def test_preview_shows_what_the_feed_holds(app, client) -> None:
    """Title, subscribe box, the HTML page, every entry with date, authors and summary."""
    path = "/topics/nato/feed.rss"
    feed = check_rss(client.get(path).data)
    page = html.fromstring(client.get(path, headers={"Accept": CHROME_ACCEPT}).data)
    assert page.get_element_by_id("feed-title").text_content() == feed.feed.title
    assert "This is a web feed" in page.get_element_by_id("subscribe").text_content()
    assert page.get_element_by_id("feed-home").get("href") == f"{BASE_URL}/topics/nato/"
    items = page.xpath("//li[@class='entry']")
    assert [li.xpath("string(.//h2/a)") for li in items] == [e.title for e in feed.entries]
    assert [li.xpath("string(.//h2/a/@href)") for li in items] == [e.link for e in feed.entries]
    entries = app.extensions["feedsvc"].collection.feed_entries(FeedRef("topic", "nato"))
    for li, entry in zip(items, entries, strict=True):
        assert li.xpath("string(.//time/@datetime)") == entry.published.isoformat()
        assert li.xpath(".//p[@class='meta']/a/text()") == [a.name for a in entry.authors]
        assert li.xpath("string(.//p[@class='summary'])") == entry.summary
    alternates = page.xpath("//link[@rel='alternate']/@href")
    assert f"{BASE_URL}/topics/nato/feed.atom" in alternates


def test_preview_of_archives_navigates_the_chain(make_app, articles_dir) -> None:
    """Archive previews say so and link current, older and newer in the same format."""
    client = make_app(articles_dir, feed_size=5).test_client()
    current = html.fromstring(client.get("/feed.atom", headers={"Accept": CHROME_ACCEPT}).data)
    newest = current.get_element_by_id("prev-archive").get("href")
    assert newest.startswith(f"{BASE_URL}/archive/") and newest.endswith("/feed.atom")
    number = int(newest.split("/")[-2])
    assert number >= 3
    middle = client.get(f"/archive/{number - 1}/feed.atom", headers={"Accept": CHROME_ACCEPT})
    assert middle.headers["Content-Type"] == "text/html; charset=utf-8"
    assert middle.headers["Cache-Control"] == "public, max-age=86400"
    page = html.fromstring(middle.data)
    assert "archive" in page.get_element_by_id("archive-note").text_content()
    assert page.get_element_by_id("current").get("href") == f"{BASE_URL}/feed.atom"
    assert page.get_element_by_id("next-archive").get("href") == newest
    assert page.get_element_by_id("prev-archive").get("href") == (
        f"{BASE_URL}/archive/{number - 2}/feed.atom")
    feed = check_atom(client.get(f"/archive/{number - 1}/feed.atom").data)
    assert page.xpath("//li[@class='entry']//h2/a/text()") == [e.title for e in feed.entries]


def test_preview_is_rendered_once_per_feed_version(app, client, articles_dir) -> None:
    publisher = app.extensions["feedsvc"]
    client.get("/feed.rss", headers={"Accept": CHROME_ACCEPT})
    renders = publisher.renders
    first = client.get("/feed.rss?limit=50", headers={"Accept": CHROME_ACCEPT})
    second = client.get("/feed.rss", headers={"Accept": CHROME_ACCEPT})
    assert publisher.renders == renders  # both from the cache (limit=50 is the feed size)
    assert first.data == second.data
    publisher.settle_seconds = 0
    write_article(articles_dir, "new.txt", "A Preview Sees This New Article")
    publisher.refresh()
    third = client.get("/feed.rss", headers={"Accept": CHROME_ACCEPT})
    assert publisher.renders == renders + 1
    assert b"A Preview Sees This New Article" in third.data
    assert third.headers["ETag"] != second.headers["ETag"]


def test_preview_items_are_rendered_once_per_entry_across_feeds_and_formats(
        app, client, articles_dir) -> None:
    """An entry's list item is the same in every preview that shows it: rendered once
    per entry version, then taken from the fragment cache by the next feed and format;
    an edit renders the edited entry's item again, and only it."""
    from feedsvc.preview import PREVIEW_ITEM

    publisher = app.extensions["feedsvc"]
    items = publisher.fragments._items

    def preview_items() -> set[bytes]:
        return {key[0] for key in items if key[1] == PREVIEW_ITEM}

    site = client.get("/feed.atom", headers={"Accept": CHROME_ACCEPT}).data
    shown = preview_items()
    assert len(shown) == len(publisher.collection.feed_entries(SITE_FEED)[:50])
    for path in ("/feed.rss", "/feed.json", "/topics/nato/feed.atom"):
        client.get(path, headers={"Accept": CHROME_ACCEPT})
    nato = publisher.collection.feed_entries(FeedRef("topic", "nato"))
    assert preview_items() == shown | {e.version for e in nato[:50]}
    # The bytes a preview rendered without the cache has.
    from feedsvc.documents import subscription_document
    from feedsvc.preview import render_preview

    doc = subscription_document(SITE_FEED, publisher.collection, publisher.site,
                                app.config["FEEDSVC"].feed_size)
    assert render_preview(doc, "atom", publisher.site, BASE_URL) == site
    publisher.settle_seconds = 0
    path = next(p for p in sorted(articles_dir.glob("*.txt")))
    path.write_text(path.read_text(encoding="utf-8") + "\nOne more line, edited.\n",
                    encoding="utf-8")
    publisher.refresh()
    client.get("/feed.atom", headers={"Accept": CHROME_ACCEPT})
    assert len(preview_items() - shown - {e.version for e in nato[:50]}) == 1


def test_preview_escapes_markup_in_every_field(make_app, articles_dir) -> None:
    write_article(articles_dir, "markup.txt", "Tags <script>alert(1)</script> & \"quotes\"",
                  author="Eve <b>Bold</b>", body="Summary with <img src=x onerror=alert(1)>.")
    client = make_app(articles_dir).test_client()
    body = client.get("/feed.atom", headers={"Accept": CHROME_ACCEPT}).data
    page = html.fromstring(body)
    assert not page.xpath("//script | //img | //b")
    assert "Tags <script>alert(1)</script> & \"quotes\"" in page.xpath("//h2/a/text()")
    assert b"&lt;script&gt;" in body and b"&lt;img src=x" in body


def test_fast_path_and_flask_answer_the_preview_alike(app) -> None:
    """The preview through the WSGI fast path (no query) equals Flask's (a query)."""
    entered: list[str] = []
    app.before_request(lambda: entered.append("flask"))
    client = app.test_client()
    for path in ("/topics/nato/feed.rss", "/authors/sara-wazowski/feed.atom", "/feed.json"):
        for headers in ({"Accept": CHROME_ACCEPT}, {"Accept": CHROME_ACCEPT,
                                                    "Accept-Encoding": "gzip"}):
            fast = client.get(path, headers=headers)
            assert entered == []
            slow = client.get(path + "?limit=50", headers=headers)
            assert entered == ["flask"]
            entered.clear()
            assert fast.data == slow.data
            assert fast.headers["Content-Type"] == "text/html; charset=utf-8"
            assert sorted(fast.headers.items()) == sorted(slow.headers.items())


@pytest.mark.parametrize("path, status, words", [
    ("/nope", 404, b"Not Found"),
    ("/topics/nope/", 404, b"no such topic"),
    ("/authors/nope/", 404, b"no such author"),
    ("/articles/nope", 404, b"no such article"),
    ("/topics/nope/feed.atom", 404, b"no such topic"),
    ("/archive/999/feed.atom", 404, b"no such archive"),
    ("/topics/nato/archive/1/feed.rss", 404, b"no such archive"),
    ("/feed.atom?limit=x", 400, b"limit must be a whole number"),
    ("/feed.xml", 404, b"Not Found"),
])
def test_every_error_carries_the_safety_headers(client, path: str, status: int,
                                                words: bytes) -> None:
    for accept in ("*/*", CHROME_ACCEPT):
        response = client.get(path, headers={"Accept": accept})
        assert response.status_code == status
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert words in response.data
        for name in SAFETY_HEADERS:
            assert response.headers[name] == PAGE_SECURITY_HEADERS[name], name


def test_an_internal_error_carries_the_safety_headers_too(app, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["feedsvc"], "feed", broken)
    response = app.test_client().get("/feed.atom?limit=2")
    assert response.status_code == 500
    assert b"boom" not in response.data and b"Traceback" not in response.data
    for name in SAFETY_HEADERS:
        assert response.headers[name] == PAGE_SECURITY_HEADERS[name], name


def test_a_preview_render_reads_no_template_file_once_loaded(app, client,
                                                             monkeypatch) -> None:
    """Templates are loaded once: rendering previews stats no template file (Jinja's
    auto_reload would, three files a preview), as Flask's own pages outside debug."""
    import os

    for path in ("/feed.rss", "/"):  # their templates loaded
        client.get(path, headers={"Accept": CHROME_ACCEPT})
    app.extensions["feedsvc"].cache.clear()  # and every document to be rendered again
    real = os.stat
    seen: list[str] = []

    def watched(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(path).endswith(".html"):
            seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", watched)
    for path in ("/feed.atom", "/topics/nato/feed.json", "/feed.rss?limit=10", "/"):
        assert client.get(path, headers={"Accept": CHROME_ACCEPT}).status_code == 200
    monkeypatch.setattr(os, "stat", real)
    assert seen == []

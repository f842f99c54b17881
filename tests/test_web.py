"""The app end to end through Flask's test client over the bundled articles."""

from __future__ import annotations

import gzip
import os
import shutil
import time

import pytest
from lxml import etree, html

from feedsvc.collection import FeedRef
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
    assert first.headers["Vary"] == "Accept-Encoding, Accept"
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


def test_browsers_get_generic_xml_so_the_stylesheet_applies(client) -> None:
    for path in ("/feed.atom", "/topics/nato/feed.rss"):
        reader = client.get(path, headers={"Accept": FEEDPARSER_ACCEPT})
        browser = client.get(path, headers={"Accept": CHROME_ACCEPT})
        assert reader.headers["Content-Type"].startswith("application/")
        assert "+xml" in reader.headers["Content-Type"]
        assert browser.headers["Content-Type"] == "application/xml; charset=utf-8"
        assert browser.data == reader.data
        assert browser.headers["ETag"] == reader.headers["ETag"][:-1] + '-xml"'
        again = client.get(path, headers={"Accept": CHROME_ACCEPT,
                                          "If-None-Match": browser.headers["ETag"]})
        assert again.status_code == 304
        assert browser.headers["Vary"] == "Accept-Encoding, Accept"
    json_feed = client.get("/feed.json", headers={"Accept": CHROME_ACCEPT})
    assert json_feed.headers["Content-Type"] == "application/feed+json; charset=utf-8"
    assert json_feed.headers["Vary"] == "Accept-Encoding"

"""Sitemaps, the Google News sitemap and robots.txt: what crawlers read, validated."""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask import Flask
from lxml import etree

from feedsvc import sitemaps
from feedsvc.collection import Collection, FeedRef
from feedsvc.model import Article, Author, Entry, Site, TopicRef
from tests.conftest import BASE_URL, write_article

SCHEMAS = Path(__file__).parent / "schemas"
SM = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
NEWS = "{http://www.google.com/schemas/sitemap-news/0.9}"


def _schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / name)))


URLSET, INDEX, WITH_NEWS = (_schema(n) for n in ("sitemap.xsd", "siteindex.xsd",
                                                 "sitemap-with-news.xsd"))


def _valid(schema: etree.XMLSchema, body: bytes) -> etree._Element:
    root = etree.fromstring(body)
    assert schema.validate(root), schema.error_log
    return root


def _local(url: str) -> str:
    assert url.startswith(BASE_URL), url
    return url.removeprefix(BASE_URL)


def _lastmod(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_robots_allows_all_but_operators_pages_and_names_both_sitemaps(client) -> None:
    response = client.get("/robots.txt")
    assert response.status_code == 200
    assert response.content_type == "text/plain; charset=utf-8"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[:4] == ["User-agent: *", "Allow: /", "Disallow: /stats", "Disallow: /metrics"]
    assert f"Sitemap: {BASE_URL}/sitemap.xml" in lines
    assert f"Sitemap: {BASE_URL}/news-sitemap.xml" in lines


def test_robots_takes_the_operators_extra_lines(make_app, articles_dir: Path,
                                                tmp_path: Path) -> None:
    extra = tmp_path / "robots-extra.txt"
    extra.write_text("User-agent: GPTBot\nDisallow: /\n\nUser-agent: CCBot\nDisallow: /\n",
                     encoding="utf-8")
    text = make_app(articles_dir, robots_extra=str(extra)).test_client().get(
        "/robots.txt").get_data(as_text=True)
    assert "User-agent: GPTBot\nDisallow: /\n\nUser-agent: CCBot\nDisallow: /\n" in text
    assert text.index("GPTBot") > text.index("Disallow: /metrics")
    assert text.rstrip().endswith(f"Sitemap: {BASE_URL}/news-sitemap.xml")


def test_robots_extra_must_exist(make_app, articles_dir: Path, tmp_path: Path) -> None:
    from feedsvc.errors import ConfigError

    with pytest.raises(ConfigError, match="FEEDSVC_ROBOTS_EXTRA.*no such file"):
        make_app(articles_dir, robots_extra=str(tmp_path / "missing.txt"))


def test_the_index_and_every_sitemap_validate_with_accurate_lastmod(app: Flask, client) -> None:
    collection = app.extensions["feedsvc"].collection
    index = _valid(INDEX, client.get("/sitemap.xml").data)
    locs = [_local(e.text) for e in index.iter(f"{SM}loc")]
    assert locs == ["/sitemaps/pages.xml", "/sitemaps/articles-1.xml"]
    articles = _valid(URLSET, client.get("/sitemaps/articles-1.xml").data)
    listed = {_local(u.findtext(f"{SM}loc")): u.findtext(f"{SM}lastmod")
              for u in articles.iter(f"{SM}url")}
    assert listed == {f"/articles/{e.slug}": _lastmod(e.updated) for e in collection.entries}
    pages = _valid(URLSET, client.get("/sitemaps/pages.xml").data)
    listed = {_local(u.findtext(f"{SM}loc")): u.findtext(f"{SM}lastmod")
              for u in pages.iter(f"{SM}url")}
    expected = {"/": _lastmod(max(e.updated for e in collection.entries))}
    for kind, slugs in (("topic", collection.topics), ("author", collection.authors)):
        for slug in slugs:
            ref = FeedRef(kind, slug)
            expected[ref.html_path] = _lastmod(max(e.updated
                                                   for e in collection.feed_entries(ref)))
    assert listed == expected
    # The index's lastmod of each sitemap is the newest lastmod in it.
    mods = [e.text for e in index.iter(f"{SM}lastmod")]
    assert mods[1] == max(_lastmod(e.updated) for e in collection.entries)
    assert client.get("/sitemaps/articles-2.xml").status_code == 404


def test_every_listed_page_exists(client) -> None:
    for sitemap in ("/sitemaps/pages.xml", "/sitemaps/articles-1.xml"):
        for loc in etree.fromstring(client.get(sitemap).data).iter(f"{SM}loc"):
            assert client.get(_local(loc.text)).status_code == 200, loc.text


@pytest.mark.parametrize("path", ["/robots.txt", "/sitemap.xml", "/sitemaps/pages.xml",
                                  "/sitemaps/articles-1.xml", "/news-sitemap.xml"])
def test_each_is_served_like_the_feeds(client, path: str) -> None:
    plain = client.get(path)
    assert plain.status_code == 200
    assert plain.headers["Cache-Control"] == "public, max-age=300"
    assert plain.headers["ETag"] and plain.headers["Last-Modified"]
    packed = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.data) == plain.data
    assert packed.headers["ETag"] != plain.headers["ETag"]
    again = client.get(path, headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    since = client.get(path, headers={"If-Modified-Since": plain.headers["Last-Modified"]})
    assert since.status_code == 304


def _dated(folder: Path, name: str, when: datetime, title: str) -> None:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    write_article(folder, name, title, front=f"---\ndate: {stamp}\n---\n")


def test_the_news_sitemap_lists_the_last_two_days(make_app, tmp_path: Path) -> None:
    folder = tmp_path / "news"
    now = datetime.now(UTC)
    _dated(folder, "a.txt", now - timedelta(hours=3), "Fresh & <New>")
    _dated(folder, "b.txt", now - timedelta(days=1, hours=20), "Yesterday's News")
    _dated(folder, "c.txt", now - timedelta(days=2, hours=1), "Too Old Now")
    app = make_app(folder, site_title="The Example Times", language="pt-BR")
    body = app.test_client().get("/news-sitemap.xml").data
    root = _valid(WITH_NEWS, body)
    items = [(u.findtext(f"{NEWS}news/{NEWS}title"),
              u.findtext(f"{NEWS}news/{NEWS}publication/{NEWS}name"),
              u.findtext(f"{NEWS}news/{NEWS}publication/{NEWS}language"))
             for u in root.iter(f"{SM}url")]
    assert items == [("Fresh & <New>", "The Example Times", "pt"),
                     ("Yesterday's News", "The Example Times", "pt")]
    entries = {e.title: e for e in app.extensions["feedsvc"].collection.entries}
    dates = [u.findtext(f"{NEWS}news/{NEWS}publication_date") for u in root.iter(f"{SM}url")]
    assert dates == [_lastmod(entries["Fresh & <New>"].published),
                     _lastmod(entries["Yesterday's News"].published)]


def test_an_empty_news_sitemap_is_served(make_app, tmp_path: Path) -> None:
    """No article in the last two days: an empty urlset with both namespaces.

    Google accepts it; note that sitemaps.org's sitemap.xsd asks for at
    least one ``<url>``, so this one document is checked for its shape only.
    """
    folder = tmp_path / "old"
    _dated(folder, "a.txt", datetime.now(UTC) - timedelta(days=30), "Old")
    response = make_app(folder).test_client().get("/news-sitemap.xml")
    assert response.status_code == 200
    root = etree.fromstring(response.data)
    assert root.tag == f"{SM}urlset" and len(root) == 0
    assert root.nsmap == {None: SM.strip("{}"), "news": NEWS.strip("{}")}


def test_sitemaps_split_at_the_url_limit_through_the_routes(
        make_app, articles_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sitemaps, "MAX_URLS", 7)
    app = make_app(articles_dir)
    client = app.test_client()
    index = _valid(INDEX, client.get("/sitemap.xml").data)
    locs = [_local(e.text) for e in index.iter(f"{SM}loc")][1:]
    total = len(app.extensions["feedsvc"].collection.entries)
    assert len(locs) == -(-total // 7)
    seen: list[str] = []
    for loc in locs:
        root = _valid(URLSET, client.get(loc).data)
        urls = [u.text for u in root.iter(f"{SM}loc")]
        assert len(urls) <= 7
        seen += urls
    assert len(seen) == len(set(seen)) == total


# -- the size limits, over a generated 120,000-article collection --------------------------


def _generated(count: int) -> Collection:
    """``count`` entries made directly (no files: the renderers are what is tested)."""
    start = datetime(2020, 1, 1, tzinfo=UTC)
    author = (Author("Gen Writer", "gen-writer"),)
    topics = (TopicRef("generated", "Generated", "story"),)
    entries = []
    for n in range(count):
        article = Article(path=f"{n}.txt", title=f"Generated article {n}", authors=author,
                          topic_line="generated", topics=topics, summary="s",
                          content_html="<p>s</p>", content_hash=f"{n:032x}")
        moment = start + timedelta(minutes=n)
        entries.append(Entry(article=article, id=f"tag:example.org,2020:{n}",
                             slug=f"generated-article-number-{n:06d}", published=moment,
                             updated=moment + timedelta(seconds=n % 60), topics=topics))
    return Collection(entries)


@pytest.mark.slow
def test_a_120000_article_store_splits_within_both_limits() -> None:
    started = time.monotonic()
    collection = _generated(120_000)
    entries = sitemaps.oldest_first(collection)
    plans = sitemaps.plan_article_sitemaps(entries, BASE_URL)
    assert [stop - start for start, stop in plans] == [50_000, 50_000, 20_000]
    seen = 0
    for number, (start, stop) in enumerate(plans, 1):
        body = sitemaps.render_articles(entries[start:stop], BASE_URL)
        assert len(body) < sitemaps.MAX_BYTES
        root = _valid(URLSET, body) if number == 1 else etree.fromstring(body)
        assert len(root) == stop - start
        first = root[0].findtext(f"{SM}loc")
        assert first == f"{BASE_URL}/articles/{entries[start].slug}"
        seen += len(root)
    assert seen == 120_000
    index = sitemaps.render_index(sitemaps.index_items(collection, BASE_URL, plans))
    assert len(_valid(INDEX, index)) == 4  # pages + three article sitemaps
    # The byte limit binds too: at 2 MB a sitemap, more and smaller sitemaps, each under it.
    small = sitemaps.plan_article_sitemaps(entries, BASE_URL, max_bytes=2_000_000)
    assert sum(stop - start for start, stop in small) == 120_000
    for start, stop in small[:2] + small[-1:]:
        assert len(sitemaps.render_articles(entries[start:stop], BASE_URL)) <= 2_000_000
    assert len(sitemaps.render_articles(entries[small[0][0]:small[0][1] + 1], BASE_URL)) \
        > 2_000_000  # and each is as full as the limit allows
    assert time.monotonic() - started < 60


def test_the_one_sitemap_shortcut_splits_as_counting_every_url_does() -> None:
    """Below the URL limit, one sitemap is planned without sizing each URL when even
    the longest URL, fully escaped, fits as often as there are articles; otherwise
    (and at every byte bound around the real size) the plan is the counted one."""
    entries = sitemaps.oldest_first(_generated(3000))
    assert sitemaps.plan_article_sitemaps(entries, BASE_URL) == [(0, 3000)]
    real = len(sitemaps.render_articles(entries, BASE_URL))
    framing = len(sitemaps._URLSET_OPEN) + len(sitemaps._URLSET_CLOSE)
    for max_bytes in (real, real - 1, real // 2, real * 6, real * 7):
        plans = sitemaps.plan_article_sitemaps(entries, BASE_URL, max_bytes=max_bytes)
        assert sum(stop - start for start, stop in plans) == 3000
        for start, stop in plans:  # each within the bound, and as full as it allows
            body = sitemaps.render_articles(entries[start:stop], BASE_URL)
            assert len(body) <= max_bytes
            if stop < 3000:
                bigger = sitemaps.render_articles(entries[start:stop + 1], BASE_URL)
                assert len(bigger) > max_bytes
        assert (len(plans) == 1) == (max_bytes >= real), (max_bytes, real, framing)


@pytest.mark.parametrize(("tag", "code"), [("en", "en"), ("pt-BR", "pt"), ("zh-CN", "zh-cn"),
                                           ("zh-Hant-TW", "zh-tw"), ("zh", "zh-cn"),
                                           ("fil", "fil")])
def test_the_news_language_is_what_google_takes(tag: str, code: str) -> None:
    assert sitemaps.news_language(tag) == code


def test_news_sitemap_keeps_to_googles_limit() -> None:
    collection = _generated(1500)
    newest = collection.entries[0].published
    found = sitemaps.news_entries(collection, newest + timedelta(minutes=1))
    assert len(found) == sitemaps.NEWS_MAX_URLS
    body = sitemaps.render_news(found, Site(title="Gen"), BASE_URL)
    assert len(_valid(WITH_NEWS, body)) == sitemaps.NEWS_MAX_URLS


@pytest.mark.parametrize("loc", ["https://news.example.org/articles/plain",
                                 "https://news.example.org/a?x=1&y=<2>",
                                 "https://nyhe\u0301der.example/artikler/\u00e6bler"])
@pytest.mark.parametrize("lastmod", [None, datetime(2026, 11, 3, 8, tzinfo=UTC),
                                     datetime(999, 12, 31, 23, 59, tzinfo=UTC),
                                     datetime(2026, 1, 1, 0, 30,
                                              tzinfo=timezone(timedelta(hours=2)))])
def test_the_planned_size_of_a_url_is_its_rendered_size(loc: str, lastmod) -> None:
    """Planning counts each URL's bytes without rendering it: the count is exact
    (escaped characters, UTF-8, a year before 1000, another offset)."""
    from feedsvc.sitemaps import _url, _url_size

    assert _url_size(loc, lastmod) == len(_url(loc, lastmod))

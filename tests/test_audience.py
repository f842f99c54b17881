"""The pure part of subscriber counting: User-Agent parsing, families, combining, hashing."""

from __future__ import annotations

import pytest

from feedsvc.audience import (
    AGGREGATORS,
    DAY,
    AggregatorHit,
    AggregatorReport,
    classify,
    combine,
    feed_key,
    feed_ref,
    parse_aggregator,
    period_of,
    reader_family,
    reader_hash,
    readers_in_window,
)
from feedsvc.collection import SITE_FEED, FeedRef

#: Each aggregator's User-Agent as its public documentation shows it, with what it says.
AGGREGATOR_AGENTS = [
    ("Feedly/1.0 (+http://www.feedly.com/fetcher.html; 462 subscribers; )",
     AggregatorHit("Feedly", 462, "")),
    ("Mozilla/5.0 (compatible; inoreader.com; 114 subscribers)",
     AggregatorHit("Inoreader", 114, "")),
    ("NewsBlur Feed Fetcher - 27 subscribers - https://www.newsblur.com/site/6032156/world-news "
     "(Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/14.1 Safari/605.1.15)", AggregatorHit("NewsBlur", 27, "6032156")),
    ("Feedbin feed-id:1697787 - 102 subscribers", AggregatorHit("Feedbin", 102, "1697787")),
    ("Mozilla/5.0 (compatible; theoldreader.com; 1 subscribers; feed-id=cead6c0ffee1)",
     AggregatorHit("The Old Reader", 1, "cead6c0ffee1")),
    ("Mozilla/5.0 (compatible; BazQux/2.4; +https://bazqux.com/fetcher; 1 subscribers)",
     AggregatorHit("BazQux", 1, "")),
    ("Dreamwidth.org (webmaster@dreamwidth.org; for https://news_feed.dreamwidth.org/; "
     "2 readers)", AggregatorHit("Dreamwidth", 2, "https://news_feed.dreamwidth.org/")),
    ("Overcast/1.0 Podcast Sync (1190 subscribers; feed-id=554901; +http://overcast.fm/)",
     AggregatorHit("Overcast", 1190, "554901")),
]

READER_AGENTS = [
    ("newsboat/2.36.0 (Linux x86_64)", "newsboat"),
    ("Mozilla/5.0 (compatible; Miniflux/2.1.3; +https://miniflux.app)", "Miniflux"),
    ("FreshRSS/1.24.0 (Linux; https://freshrss.org)", "FreshRSS"),
    ("NetNewsWire (RSS Reader; https://netnewswire.com/)", "NetNewsWire"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0",
     "Thunderbird"),
]


@pytest.mark.parametrize(("agent", "hit"), AGGREGATOR_AGENTS,
                         ids=[hit.aggregator for _, hit in AGGREGATOR_AGENTS])
def test_each_aggregators_user_agent_gives_its_count_and_feed_id(agent: str,
                                                                 hit: AggregatorHit) -> None:
    assert parse_aggregator(agent) == hit
    assert classify(agent) == hit


def test_every_pattern_of_the_table_is_exercised() -> None:
    assert {p.name for p in AGGREGATORS} == {hit.aggregator for _, hit in AGGREGATOR_AGENTS}


@pytest.mark.parametrize(("agent", "family"), READER_AGENTS)
def test_individual_readers_report_no_count_and_have_a_family(agent: str, family: str) -> None:
    assert parse_aggregator(agent) is None
    assert reader_family(agent) == family
    assert classify(agent) == family


def test_an_unknown_clients_family_ignores_its_version() -> None:
    assert reader_family("SomeReader/1.2.3 (x)") == reader_family("SomeReader/1.3 (x)")
    assert reader_family("SomeReader/1.2.3") != reader_family("OtherReader/1.2.3")
    assert reader_family("") == "-"


def test_counts_that_are_not_counts_are_ignored() -> None:
    assert parse_aggregator("Feedbin feed-id:1 - 12345678901234 subscribers") is None
    assert parse_aggregator("Feedly/1.0 (" + "x; " * 500 + "3 subscribers)") is None  # too long
    assert parse_aggregator("Mozilla/5.0 (compatible; inoreader.com)") is None


def test_feed_keys_name_site_topics_and_authors() -> None:
    for ref in (SITE_FEED, FeedRef("topic", "ukraine"), FeedRef("author", "jane-doe")):
        assert feed_ref(feed_key(ref)) == ref
    assert feed_key(FeedRef("topic", "ukraine")) == "topic/ukraine"


NOW = 1_800_000_000.0


def test_latest_count_per_feed_id_wins_and_feed_ids_are_summed() -> None:
    reports = [
        AggregatorReport("site", "Feedbin", "1", 100, NOW - 50),
        AggregatorReport("site", "Feedbin", "1", 102, NOW - 10),  # later: wins
        AggregatorReport("site", "Feedbin", "1", 90, NOW - 90),  # earlier, listed last
        AggregatorReport("site", "Feedbin", "2", 5, NOW - 20),  # another feed-id: summed
        AggregatorReport("site", "Feedly", "", 462, NOW - 30),
        AggregatorReport("topic/x", "Feedly", "", 7, NOW - 30),
    ]
    counts = combine(reports, {}, {}, NOW, 7)
    assert counts["site"].aggregators == {"Feedbin": 107, "Feedly": 462}
    assert counts["site"].aggregator == 569
    assert counts["topic/x"].total == 7


def test_an_aggregator_that_stopped_fetching_drops_out_after_the_window() -> None:
    reports = [AggregatorReport("site", "Feedly", "", 462, NOW - 7 * DAY - 1),
               AggregatorReport("site", "Inoreader", "", 9, NOW - 7 * DAY + 60)]
    assert combine(reports, {}, {}, NOW, 7)["site"].aggregators == {"Inoreader": 9}
    assert combine(reports, {}, {}, NOW, 8)["site"].aggregators == {"Feedly": 462,
                                                                    "Inoreader": 9}


def test_readers_and_hub_add_up_with_aggregators() -> None:
    counts = combine([AggregatorReport("site", "Feedly", "", 10, NOW)], {"site": 3},
                     {"site": 2, "author/a": 1}, NOW, 7)
    assert counts["site"].by_source() == {"aggregator": 10, "reader": 3, "hub": 2}
    assert counts["site"].total == 15
    assert counts["author/a"].by_source() == {"aggregator": 0, "reader": 0, "hub": 1}


def test_a_reader_counts_once_it_polled_twice() -> None:
    polls = [("site", 5, "a", 1), ("site", 5, "a", 1),  # two days, one poll each: counts
             ("site", 5, "b", 1),  # once: does not
             ("site", 5, "c", 7)]
    assert readers_in_window(polls) == {"site": 2}


def test_across_a_key_rotation_a_steady_reader_counts_once() -> None:
    # Reader "a" is "a-old" in the previous period and "a-new" in this one.
    polls = [("site", 4, "a-old", 3), ("site", 4, "b-old", 3), ("site", 5, "a-new", 2)]
    assert readers_in_window(polls) == {"site": 2}


def test_reader_hashes_depend_on_the_key_and_hide_the_address() -> None:
    one = reader_hash(b"k" * 32, "203.0.113.9", "newsboat")
    assert one == reader_hash(b"k" * 32, "203.0.113.9", "newsboat")
    assert one != reader_hash(b"j" * 32, "203.0.113.9", "newsboat")
    assert one != reader_hash(b"k" * 32, "203.0.113.9", "Miniflux")
    assert "203.0.113.9" not in one and len(one) == 32


def test_periods_are_one_window_long() -> None:
    assert period_of(0, 7) == period_of(7 * DAY - 1, 7) == 0
    assert period_of(7 * DAY, 7) == 1

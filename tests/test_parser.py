"""Tests for feedsvc.parser: the seed file, every format variation, front matter,
rejections, the content hash and a property test over arbitrary bytes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedsvc.errors import ArticleError
from feedsvc.model import Article, Author, FrontMatter, TopicRef
from feedsvc.parser import MAX_SUMMARY_CHARS, parse_article
from feedsvc.text import clean_xml_text

SEED_PATH = Path(__file__).parent / "data" / "seed.txt"
SEED = SEED_PATH.read_bytes()
SEED_TEXT = SEED.decode("utf-8")
SEED_BIO_START = "Sara pursued her passion for art"
SEED_TOPICS = (
    TopicRef(
        "ukraine-abandons-nato-membership-pursuit",
        "Ukraine abandons NATO membership pursuit",
        "story",
    ),
    TopicRef("ukraine", "Ukraine", "broad"),
    TopicRef("nato", "NATO", "broad"),
)

LEAD = "The council approved the plan on Monday. Work starts in spring."
SECOND = "Residents in Oslo welcomed the decision, the mayor said."


def make(
    headline: str = "Council Backs New Harbour Plan",
    header: tuple[str, ...] = ("Sara Wazowski", "harbour plan oslo"),
    body: tuple[str, ...] = (LEAD, SECOND),
    *,
    front: str = "",
) -> bytes:
    """Build an article file: headline, blank, header lines, blank, body paragraphs."""
    parts = [headline]
    if header:
        parts.append("\n".join(header))
    parts.extend(body)
    return (front + "\n\n".join(parts) + "\n").encode("utf-8")


def parse(data: bytes | str, path: str = "x.txt") -> Article:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return parse_article(data, path)


def reject(data: bytes | str, path: str = "x.txt") -> ArticleError:
    with pytest.raises(ArticleError) as info:
        parse(data, path)
    assert info.value.path == path
    return info.value


def html_tree(article: Article) -> lxml.html.HtmlElement:
    return lxml.html.fragment_fromstring(article.content_html, create_parent="div")


def all_strings(article: Article) -> list[str]:
    """Every string the article carries, for the XML-safety checks."""
    strings = [article.title, article.summary, article.content_html, article.content_hash]
    strings += [article.topic_line or ""] + list(article.warnings)
    for author in article.authors:
        strings += [author.name, author.slug, author.bio or ""]
    for topic in article.topics:
        strings += [topic.slug, topic.name, topic.kind]
    fm = article.front_matter
    strings += [fm.summary or "", fm.id or "", fm.slug or "", *fm.topics]
    return strings


# --- the seed file ------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> Article:
    return parse(SEED, "000_116cfd26fe85501a.txt")


def test_seed_title_authors_topic_line(seed: Article) -> None:
    assert seed.path == "000_116cfd26fe85501a.txt"
    assert seed.title == "Ukraine Drops NATO Bid For Security Guarantees"
    assert len(seed.authors) == 1
    author = seed.authors[0]
    assert (author.name, author.slug) == ("Sara Wazowski", "sara-wazowski")
    assert author.bio is not None and author.bio.startswith(SEED_BIO_START)
    assert author.bio.endswith("art and environmental consciousness.")
    assert seed.authors == (Author("Sara Wazowski", "sara-wazowski", author.bio),)
    assert seed.topic_line == "ukraine abandons nato membership pursuit"
    assert seed.warnings == ()
    assert seed.front_matter == FrontMatter()


def test_seed_topics_are_story_and_proper_nouns_only(seed: Article) -> None:
    assert seed.topics == SEED_TOPICS


def test_seed_summary_is_lead_paragraph(seed: Article) -> None:
    lead = SEED_TEXT.split("\n\n")[2].strip()
    assert lead.startswith("Ukraine has stepped back from its long-held goal")
    assert seed.summary.startswith("Ukraine has stepped back from its long-held goal")
    assert len(seed.summary) <= MAX_SUMMARY_CHARS
    assert seed.summary.endswith(".")
    assert lead.startswith(seed.summary)
    assert seed.summary == lead  # the seed's lead fits, so it is kept whole


def test_seed_content_structure(seed: Article) -> None:
    tree = html_tree(seed)
    children = list(tree)
    assert {child.tag for child in children} == {"p", "h2", "ul"}
    headings = [h.text for h in tree.findall("h2")]
    assert headings == [
        "Why This Matters Now",
        "What Security Guarantees Could Mean",
        "Reactions From Allies and Opponents",
        "Background: A Long Road to a Hard Choice",
        "What Comes Next",
    ]
    assert "<h2>Why This Matters Now</h2>" in seed.content_html
    (bullets,) = tree.findall("ul")
    items = [li.text for li in bullets.findall("li")]
    assert len(items) == 4
    assert items[0] == "Stable funding for weapons and training over several years."
    assert items[3] == "Intelligence sharing and cyber defense support."
    assert children[0].tag == "p"
    assert children[0].text_content() == seed.summary
    # the list follows the paragraph that introduces it
    intro = children[children.index(bullets) - 1]
    assert intro.text_content().endswith("binding commitments that could include:")
    assert children[-1].text_content().startswith("For now, Zelenskyy’s statement")
    assert len(tree.findall("p")) == 15


def test_seed_bio_kept_out_of_content_and_summary(seed: Article) -> None:
    assert SEED_BIO_START not in seed.content_html
    assert "School of Visual Arts" not in seed.content_html
    assert SEED_BIO_START not in seed.summary


def test_seed_typographic_quotes_preserved(seed: Article) -> None:
    assert "Kyiv’s diplomatic path" in seed.content_html
    assert "“Ukraine has relinquished its ambition" in seed.content_html
    assert "security guarantees,” President" in seed.content_html
    assert "the moment—and whether" in seed.content_html
    assert "&#x27;" not in seed.content_html and "&quot;" not in seed.content_html


def test_seed_hash_is_sha256_hex(seed: Article) -> None:
    assert len(seed.content_hash) == 64
    int(seed.content_hash, 16)


# --- variations that must not change anything ----------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(lambda b: b.replace(b"\n", b"\r"), id="old-mac-cr"),
        pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="utf8-bom"),
        pytest.param(lambda b: b.replace(b"\n", b"  \t\n") + b"   ", id="trailing-spaces"),
        pytest.param(lambda b: b.replace(b"\n\n", b"\n\n\n\n  \n"), id="several-blank-lines"),
        pytest.param(lambda b: b"\n\n" + b + b"\n\n\n", id="blank-lines-around"),
        pytest.param(lambda b: b + b"\n", id="final-newline"),
    ],
)
def test_layout_noise_changes_nothing(transform) -> None:
    noisy = transform(SEED)
    assert noisy != SEED
    assert parse(noisy, "a.txt") == parse(SEED, "a.txt")


# --- bylines and authors --------------------------------------------------------


@pytest.mark.parametrize(
    "byline", ["By Sara Wazowski", "by Sara Wazowski", "BY Sara Wazowski", "By: Sara Wazowski"]
)
def test_by_prefix_is_stripped(byline: str) -> None:
    article = parse(make(header=(byline, "harbour plan")))
    assert article.authors == (Author("Sara Wazowski", "sara-wazowski"),)
    assert article.topic_line == "harbour plan"


def test_by_prefix_does_not_eat_names_starting_with_by() -> None:
    article = parse(make(header=("Byron Kelly",)))
    assert article.authors == (Author("Byron Kelly", "byron-kelly"),)


@pytest.mark.parametrize(
    ("byline", "names"),
    [
        ("Sara Wazowski and John Doe", ["Sara Wazowski", "John Doe"]),
        ("By Sara Wazowski & John Doe", ["Sara Wazowski", "John Doe"]),
        ("Ann Lee, Bo Yang and Cy Twombly", ["Ann Lee", "Bo Yang", "Cy Twombly"]),
        ("Ann Lee, Bo Yang, and Cy Twombly", ["Ann Lee", "Bo Yang", "Cy Twombly"]),
        ("Ann Lee and Ann Lee", ["Ann Lee"]),
    ],
)
def test_several_authors(byline: str, names: list[str]) -> None:
    article = parse(make(header=(byline, "harbour plan")))
    assert [a.name for a in article.authors] == names
    assert all(a.bio is None for a in article.authors)


def test_two_authors_bio_goes_to_the_author_it_names() -> None:
    bio = "John has covered Nordic politics since 2010 and lives in Bergen."
    article = parse(make(header=("Sara Wazowski and John Doe",), body=(LEAD, SECOND, bio)))
    assert article.authors == (
        Author("Sara Wazowski", "sara-wazowski", None),
        Author("John Doe", "john-doe", bio),
    )
    assert "Nordic politics" not in article.content_html


def test_no_topic_line() -> None:
    article = parse(make(header=("Sara Wazowski",)), "world/europe/x.txt")
    assert article.topic_line is None
    assert article.authors == (Author("Sara Wazowski", "sara-wazowski"),)
    assert article.topics == (
        TopicRef("world", "World", "folder"),
        TopicRef("europe", "Europe", "folder"),
    )
    assert article.warnings == ()


def test_byline_directly_under_headline_without_blank_line() -> None:
    data = "Council Backs New Harbour Plan\nSara Wazowski\nharbour plan\n\n" + LEAD
    article = parse(data)
    assert article.authors == (Author("Sara Wazowski", "sara-wazowski"),)
    assert article.topic_line == "harbour plan"
    assert article.summary == LEAD


@pytest.mark.parametrize(
    ("data", "authors", "topic_line", "first_paragraph"),
    [
        (f"Harbour Plan\nSara Wazowski\nharbour plan\n{LEAD}\n\n{SECOND}", 1, "harbour plan", LEAD),
        (f"Harbour Plan\nSara Wazowski\n{LEAD}\n{SECOND}", 1, None, f"{LEAD} {SECOND}"),
        (f"Harbour Plan\n{LEAD}\n{SECOND}", 0, None, f"{LEAD} {SECOND}"),
    ],
)
def test_body_running_on_under_the_header_is_kept(
    data: str, authors: int, topic_line: str | None, first_paragraph: str
) -> None:
    article = parse(data)
    assert len(article.authors) == authors
    assert article.topic_line == topic_line
    assert html_tree(article)[0].text == first_paragraph
    assert not any("ignored" in w for w in article.warnings)


def test_second_header_line_with_capitals_is_ignored_with_warning() -> None:
    article = parse(make(header=("Sara Wazowski", "Senior Correspondent")))
    assert article.topic_line is None
    assert article.warnings == (
        "line 4: second header line is not a lower-case topic line; ignored",
    )
    assert "Senior Correspondent" not in article.content_html


def test_no_byline_when_second_paragraph_is_a_sentence() -> None:
    article = parse(make(header=(), body=(LEAD, SECOND)))
    assert article.authors == ()
    assert article.topic_line is None
    assert any("no byline found" in w for w in article.warnings)
    assert article.summary == LEAD
    assert len(html_tree(article).findall("p")) == 2


def test_topic_line_without_byline() -> None:
    article = parse(make(header=("harbour plan oslo",)))
    assert article.authors == ()
    assert article.topic_line == "harbour plan oslo"
    assert any("no byline found" in w for w in article.warnings)


# --- bio ---------------------------------------------------------------------


def test_no_bio() -> None:
    closing = "The work is expected to take three years."
    article = parse(make(body=(LEAD, SECOND, closing)))
    assert article.authors[0].bio is None
    assert html_tree(article).findall("p")[-1].text == closing


@pytest.mark.parametrize(
    "bio",
    [
        "Sara Wazowski is a reporter based in Oslo.",
        "Sara is a reporter based in Oslo.",
        "Sara’s reporting has won two awards.",
        "Sara's reporting has won two awards.",
    ],
)
def test_bio_starting_with_full_or_first_name(bio: str) -> None:
    article = parse(make(body=(LEAD, SECOND, bio)))
    assert article.authors == (Author("Sara Wazowski", "sara-wazowski", bio),)
    assert "reporter" not in article.content_html and "awards" not in article.content_html
    assert html_tree(article).findall("p")[-1].text == SECOND


def test_name_inside_a_longer_word_is_not_a_bio() -> None:
    closing = "Saratoga officials declined to comment."
    article = parse(make(body=(LEAD, closing)))
    assert article.authors[0].bio is None
    assert closing in article.content_html


def test_very_short_body_one_paragraph_is_never_a_bio() -> None:
    only = "Sara reports: the council approved the plan."
    article = parse(make(body=(only,)))
    assert article.authors[0].bio is None
    assert article.summary == only
    assert article.content_html == f"<p>{only}</p>"


# --- lists and headings --------------------------------------------------------


@pytest.mark.parametrize("bullet", ["•", "-", "*", "–", "·", "‣", "◦"])
def test_bullet_characters(bullet: str) -> None:
    items = ["Build a new pier.", "Dredge the channel.", "Plant trees."]
    listing = "\n".join(f"  {bullet} {item}" for item in items)
    article = parse(make(body=(LEAD, "The plan includes:\n" + listing, SECOND)))
    tree = html_tree(article)
    assert [li.text for li in tree.find("ul").findall("li")] == items
    assert [child.tag for child in tree] == ["p", "p", "ul", "p"]
    assert tree[1].text == "The plan includes:"


@pytest.mark.parametrize("marker", [".", ")"])
def test_numbered_lists(marker: str) -> None:
    listing = "\n".join(f"{n}{marker} Step {n} of the plan." for n in (1, 2, 3))
    article = parse(make(body=(LEAD, listing)))
    tree = html_tree(article)
    ordered = tree.find("ol")
    assert ordered is not None and ordered.get("start") is None
    assert [li.text for li in ordered] == [f"Step {n} of the plan." for n in (1, 2, 3)]


def test_numbered_list_starting_later_keeps_its_number() -> None:
    article = parse(make(body=(LEAD, "3. Third.\n4. Fourth.")))
    assert '<ol start="3">' in article.content_html


def test_indented_line_continues_list_item_and_text_line_ends_list() -> None:
    body = "  - First item that goes\n    on and on.\n  - Second item.\nAnd a closing remark."
    article = parse(make(body=(LEAD, body)))
    tree = html_tree(article)
    assert [li.text for li in tree.find("ul")] == [
        "First item that goes on and on.",
        "Second item.",
    ]
    assert tree[-1].tag == "p" and tree[-1].text == "And a closing remark."


def test_dash_without_space_is_not_a_bullet() -> None:
    article = parse(make(body=(LEAD, "-5 degrees were measured at night.")))
    assert "<ul>" not in article.content_html


@pytest.mark.parametrize(
    ("line", "is_heading"),
    [
        ("Why This Matters Now", True),
        ("Reactions From Allies and Opponents", True),
        ("Background: A Long Road to a Hard Choice", True),
        ("NATO and the EU", True),
        ("What comes next", False),  # "comes" and "next" are not capitalised
        ("Why This Matters Now.", False),
        ("Who Pays?", False),
        ("“Never Again”", False),
        ("Sara Said So,", False),
        ("A Very Long Heading With Far Too Many Words In It To Be A Heading", False),
    ],
)
def test_subheadings(line: str, is_heading: bool) -> None:
    article = parse(make(body=(LEAD, line, SECOND)))
    tag = html_tree(article)[1].tag
    assert (tag == "h2") is is_heading


def test_body_with_only_a_list_still_has_a_summary() -> None:
    article = parse(make(body=("- Pier approved.\n- Channel dredged.",)))
    assert article.summary == "Pier approved."


# --- headline ----------------------------------------------------------------


def test_all_caps_headline_is_title_cased_keeping_acronyms() -> None:
    body = ("Ukraine has stepped back from joining NATO, officials said.", SECOND)
    article = parse(
        make(
            headline="UKRAINE DROPS NATO BID FOR SECURITY GUARANTEES",
            header=("Sara Wazowski", "ukraine drops nato bid"),
            body=body,
        )
    )
    assert article.title == "Ukraine Drops NATO Bid for Security Guarantees"
    # an ALL CAPS headline proves nothing about proper nouns
    assert [t.slug for t in article.topics if t.kind == "broad"] == ["nato"]


def test_all_caps_headline_small_words_and_possessives() -> None:
    article = parse(make(headline="THE EU’S PLAN FOR A GREEN HARBOUR: A FIRST LOOK",
                         body=("The EU backs it. " + LEAD, SECOND)))  # fmt: skip
    assert article.title == "The EU’s Plan for a Green Harbour: A First Look"


def test_acronym_not_in_body_is_title_cased() -> None:
    article = parse(make(headline="OSLO VOTES ON HARBOUR"))
    assert article.title == "Oslo Votes on Harbour"


def test_mixed_case_headline_is_kept() -> None:
    article = parse(make(headline="Oslo votes on the harbour plan"))
    assert article.title == "Oslo votes on the harbour plan"


def test_markup_is_escaped_in_content_and_literal_in_title() -> None:
    nasty = "<script>alert(1)</script> & ]]>"
    article = parse(make(headline=f"Headline {nasty}", body=(f"Lead {nasty} here.", SECOND)))
    assert article.title == f"Headline {nasty}"
    assert article.summary == f"Lead {nasty} here."
    assert "<script" not in article.content_html
    assert "]]>" not in article.content_html
    assert "<p>Lead &lt;script&gt;alert(1)&lt;/script&gt; &amp; ]]&gt; here.</p>" in (
        article.content_html
    )
    assert html_tree(article)[0].text == f"Lead {nasty} here."


def test_quotes_in_text_are_escaped_for_attributes_too() -> None:
    article = parse(make(body=("He said \"no\" and 'yes'.", SECOND)))
    assert "<p>He said &quot;no&quot; and &#x27;yes&#x27;.</p>" in article.content_html


# --- size and languages --------------------------------------------------------


def test_very_long_body() -> None:
    paragraph = "Works in the Oslo harbour continue as planned. " * 22
    body = tuple(paragraph.strip() for _ in range(2_000))
    data = make(body=body)
    assert len(data) > 2_000_000
    article = parse(data)
    assert len(html_tree(article).findall("p")) == 2_000
    assert len(article.summary) <= MAX_SUMMARY_CHARS
    assert article.summary.endswith("planned.")
    assert article.topics[:2] == (
        TopicRef("harbour-plan-oslo", "Harbour plan Oslo", "story"),
        TopicRef("oslo", "Oslo", "broad"),
    )


def test_german_umlauts() -> None:
    data = make(
        headline="Zürich ändert die Regeln für Fußgänger",
        header=("Jürgen Müller", "zürich verkehr fußgänger"),
        body=(
            "Die Stadt Zürich führt neue Regeln ein. In Zürich gelten sie ab Mai.",
            "Mehr folgt.",
        ),
    )
    article = parse(data)
    assert article.title == "Zürich ändert die Regeln für Fußgänger"
    assert article.authors == (Author("Jürgen Müller", "jurgen-muller"),)
    assert article.topics == (
        TopicRef("zurich-verkehr-fussganger", "Zürich verkehr fußgänger", "story"),
        TopicRef("zurich", "Zürich", "broad"),
    )


def test_ukrainian_cyrillic_is_transliterated_in_slugs() -> None:
    data = make(
        headline="Україна відмовляється від вступу до НАТО",
        header=("Олена Петренко", "україна нато членство"),
        body=(
            "Україна відмовилася від мети вступу до НАТО. Тепер Україна чекає гарантій.",
            "Це все.",
        ),
    )
    article = parse(data)
    assert article.authors == (Author("Олена Петренко", "olena-petrenko"),)
    assert article.topics == (
        TopicRef("ukraina-nato-chlenstvo", "Україна НАТО членство", "story"),
        TopicRef("ukraina", "Україна", "broad"),
        TopicRef("nato", "НАТО", "broad"),
    )


def test_chinese_uncased_script() -> None:
    data = make(
        headline="北京宣布新的经济计划",
        header=("张伟", "北京 经济"),
        body=("北京市政府今天宣布了新的经济计划。该计划将持续五年。", "专家表示欢迎。"),
    )
    article = parse(data)
    assert article.title == "北京宣布新的经济计划"
    assert article.authors == (Author("张伟", "zhangwei"),)
    assert article.topic_line == "北京 经济"
    assert article.topics == (TopicRef("beijing-jingji", "北京 经济", "story"),)
    assert article.summary == "北京市政府今天宣布了新的经济计划。该计划将持续五年。"


# --- encodings and odd characters ----------------------------------------------


def test_invalid_utf8_is_decoded_as_cp1252_with_warning() -> None:
    data = make(body=("Caf\u00e9 owners \u201cwelcome\u201d it.", SECOND)).decode().encode("cp1252")
    article = parse(data)
    assert article.summary == "Café owners “welcome” it."
    assert len(article.warnings) == 1
    assert "not valid UTF-8" in article.warnings[0]
    assert article.warnings[0].endswith("decoded as Windows-1252")


def test_bytes_undefined_in_cp1252_fall_back_to_latin1() -> None:
    data = make(body=("Odd byte \x81 here.", SECOND)).replace(b"\xc2\x81", b"\x81")
    article = parse(data)
    assert article.warnings[0].endswith("decoded as Latin-1")
    assert article.summary == "Odd byte here."  # U+0081 is a C1 control: removed


def test_xml_illegal_control_characters_are_removed() -> None:
    text = (
        "Council\x01 Backs \x1bNew\x7f Harbour Plan\ufffe\n\nSara Wazowski\n\n"
        "The council\x08 approved\x9f the plan.\n\nOslo \ufdd0ok\x0e.\n"
    )
    article = parse(text)
    assert article.title == "Council Backs New Harbour Plan"
    assert article.summary == "The council approved the plan."
    assert "<p>Oslo ok.</p>" in article.content_html
    assert article.warnings == ("line 1: 8 unprintable characters removed (the first is U+0001)",)
    for string in all_strings(article):
        assert clean_xml_text(string) == string


def test_encoded_lone_surrogates_are_not_utf8() -> None:
    # what a broken writer produces: the bytes are decoded as Windows-1252
    data = "Council Backs Plan\n\nSara Wazowski\n\nOslo \udfff ok.\n".encode(
        "utf-8", "surrogatepass"
    )
    article = parse(data)
    assert article.title == "Council Backs Plan"
    offset = data.index(b"\xed")
    assert article.warnings == (
        f"not valid UTF-8 (first bad byte at offset {offset}); decoded as Windows-1252",
    )
    for string in all_strings(article):
        assert clean_xml_text(string) == string


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\x1c"])
def test_unicode_line_breaks_do_not_shift_the_header(char: str) -> None:
    data = (
        f"Council Backs{char}New Harbour Plan{char}\n{char}\n"
        f"Sara{char}Wazowski{char}\nharbour{char}plan\n\n{LEAD}{char}\n\n{SECOND}\n"
    )
    article = parse(data)
    assert article.title == "Council Backs New Harbour Plan"
    assert article.authors == (Author("Sara Wazowski", "sara-wazowski"),)
    assert article.topic_line == "harbour plan"
    assert article.summary == LEAD
    assert char not in article.content_html


# --- front matter --------------------------------------------------------------

FRONT = """---
date: 2026-11-27 14:30 +01:00
updated: 27 Nov 2026 18:00 CET
topics: world, security
summary: One sentence written by an editor.
id: tag:news.example.org,2026:ukraine-nato
slug: ukraine-nato
draft: no
---
"""


def test_front_matter_all_keys() -> None:
    article = parse(make(front=FRONT), "world/x.txt")
    assert article.front_matter == FrontMatter(
        date=datetime(2026, 11, 27, 13, 30, tzinfo=UTC),
        updated=datetime(2026, 11, 27, 17, 0, tzinfo=UTC),
        topics=("world", "security"),
        summary="One sentence written by an editor.",
        id="tag:news.example.org,2026:ukraine-nato",
        slug="ukraine-nato",
        draft=False,
    )
    assert article.front_matter.date.utcoffset().total_seconds() == 0
    assert article.title == "Council Backs New Harbour Plan"
    assert article.summary == "One sentence written by an editor."
    assert article.warnings == ()
    # folder "world" and front-matter "world" share a slug: the folder one wins
    assert article.topics[-2:] == (
        TopicRef("world", "World", "folder"),
        TopicRef("security", "security", "front-matter"),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-27 14:30 +01:00", datetime(2026, 11, 27, 13, 30, tzinfo=UTC)),
        ("27 Nov 2026 18:00 CET", datetime(2026, 11, 27, 17, 0, tzinfo=UTC)),
        ("2026-07-01 18:00 CEST", datetime(2026, 7, 1, 16, 0, tzinfo=UTC)),
        ("2026-11-27T14:30:00Z", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("Fri, 27 Nov 2026 09:30:00 EST", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27 06:30 PST", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27 23:30 JST", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27 14:30 UTC+01:00", datetime(2026, 11, 27, 13, 30, tzinfo=UTC)),
        ("2026-11-27 14:30 GMT", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
        ("2026-11-27 14:30", datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),  # naive = UTC
        ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
        ('"November 27, 2026 2:30 pm"', datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
    ],
)
def test_front_matter_dates(value: str, expected: datetime) -> None:
    article = parse(make(front=f"---\ndate: {value}\nupdated: {value}\n---\n"))
    assert article.front_matter.date == expected
    assert article.front_matter.updated == expected
    assert article.front_matter.date.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), ("yes", True), ("1", True),
     ("false", False), ("NO", False), ("0", False)],
)  # fmt: skip
def test_front_matter_draft_values(value: str, expected: bool) -> None:
    assert parse(make(front=f"---\ndraft: {value}\n---\n")).front_matter.draft is expected


def test_front_matter_keys_are_case_insensitive_and_quotes_dropped() -> None:
    article = parse(make(front='---\nDate: 2026-11-27\nSLUG: "harbour"\nTopics: [a b, c]\n---\n'))
    assert article.front_matter.date == datetime(2026, 11, 27, tzinfo=UTC)
    assert article.front_matter.slug == "harbour"
    assert article.front_matter.topics == ("a b", "c")


def test_front_matter_unknown_key_warns() -> None:
    article = parse(make(front="---\n# a comment\n\ntitle: Ignored\ndraft: yes\n---\n"))
    assert article.front_matter == FrontMatter(draft=True)
    assert article.warnings == ("front matter line 4: unknown key 'title' ignored",)
    assert article.title == "Council Backs New Harbour Plan"


def test_front_matter_long_summary_is_cut() -> None:
    long = "An editor wrote this. " * 30
    article = parse(make(front=f"---\nsummary: {long}\n---\n"))
    assert len(article.summary) <= MAX_SUMMARY_CHARS
    assert article.summary.endswith("this.")
    assert any("summary longer than" in w for w in article.warnings)


@pytest.mark.parametrize(
    ("front", "reason", "line"),
    [
        ("---\ndate: xyz\n---\n", "front matter line 2: date 'xyz' is not a date we can read", 2),
        (
            "---\nid: a\nupdated: 2026-13-45\n---\n",
            "front matter line 3: updated '2026-13-45' is not a date we can read",
            3,
        ),
        (
            "---\ndate: Nov 2026\n---\n",
            "front matter line 2: date 'Nov 2026' lacks a year, month or day",
            2,
        ),
        (
            "---\ndate: 14:30\n---\n",
            "front matter line 2: date '14:30' lacks a year, month or day",
            2,
        ),
        (
            "---\ndate: 2026-11-27 14:30 IST\n---\n",
            "front matter line 2: date '2026-11-27 14:30 IST' has a time zone 'IST' we cannot"
            " tell; write an offset such as +05:30",
            2,
        ),
        (
            "---\ndraft: maybe\n---\n",
            "front matter line 2: draft 'maybe' is not one of true, false, yes, no, 1, 0",
            2,
        ),
        (
            "---\nid: a\nthis line has no colon\n---\n",
            "front matter line 3: expected 'key: value', got 'this line has no colon'",
            3,
        ),
        ("---\n: value\n---\n", "front matter line 2: expected 'key: value', got ': value'", 2),
        ("---\ndate: 2026-11-27\n", "front matter opened on line 1 is never closed with '---'", 1),
    ],
)
def test_front_matter_errors_name_the_line(front: str, reason: str, line: int) -> None:
    error = reject(make(front=front))
    assert error.reason == reason
    assert error.line == line
    assert str(error) == f"x.txt:{line}: {reason}"


def test_front_matter_line_numbers_count_from_the_file_start() -> None:
    data = b"\xef\xbb\xbf\r\n---\r\nid: a\r\ndate: never\r\n---\r\n" + make()
    assert reject(data).line == 4


def test_front_matter_alone_is_rejected() -> None:
    assert reject("---\nid: a\n---\n\n").reason == "only front matter, no headline or body"


# --- rejections ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\xef\xbb\xbf", "empty file"),
        (b"  \n\t\r\n\n ", "file has only white space"),
        (b"\x01\x02\x1b\n", "file has no text, only control characters"),
        (b"Headline\x00\x01binary", "binary file (12% of its characters are NUL or other"
                                       " control characters)"),
        (
            "Headline\n".encode("utf-16"),
            "binary file (contains NUL bytes; it looks like UTF-16, save it as UTF-8)",
        ),
        (b"Council Backs New Harbour Plan\n", "only a headline, no body"),
        (b"Council Backs New Harbour Plan\n\n\n", "only a headline, no body"),
        (b"Council Backs New Harbour Plan\n\nSara Wazowski\n", "no body after the byline"),
        (
            b"Council Backs New Harbour Plan\n\nSara Wazowski\nharbour plan\n\n",
            "no body after the byline",
        ),
        (b"Council Backs New Harbour Plan\nSara Wazowski", "no body after the byline"),
        (b"Council Backs New Harbour Plan\n\nharbour plan", "no body after the topic line"),
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    assert reject(data).reason == reason


# --- content hash --------------------------------------------------------------


def test_content_hash_ignores_line_endings_and_trailing_space() -> None:
    base = parse(SEED).content_hash
    assert parse(SEED.replace(b"\n", b"\r\n")).content_hash == base
    assert parse(SEED.replace(b"\n", b" \n")).content_hash == base
    assert parse(SEED.replace(b"\n\n", b"\n\n\n")).content_hash == base


def test_content_hash_changes_on_a_one_word_edit() -> None:
    base = parse(SEED).content_hash
    edited = SEED.replace(b"major shift", b"minor shift", 1)
    assert edited != SEED
    assert parse(edited).content_hash != base


def test_content_hash_covers_front_matter_and_bio() -> None:
    def digest(data: bytes) -> str:
        return parse(data).content_hash

    assert digest(make(front="---\nid: a\n---\n")) != digest(make(front="---\nid: b\n---\n"))
    assert digest(make(body=(LEAD, "Sara is a painter."))) != digest(
        make(body=(LEAD, "Sara is a sculptor."))
    )


def test_parse_is_deterministic() -> None:
    assert parse(SEED) == parse(SEED)


# --- summary -------------------------------------------------------------------


def test_long_lead_is_cut_at_a_sentence_boundary() -> None:
    sentence = "The harbour plan adds a pier, a park and a ferry terminal for the city. "
    lead = (sentence * 8).strip()
    article = parse(make(body=(lead, SECOND)))
    assert len(article.summary) <= MAX_SUMMARY_CHARS
    assert article.summary == " ".join([sentence.strip()] * 4)
    assert lead.startswith(article.summary)


def test_sentence_ending_in_closing_quote_is_a_boundary() -> None:
    quote = "“We will build it,” the mayor said. " * 2 + "“It will be ready by May.” " + "x " * 200
    article = parse(make(body=(quote.strip(), SECOND)))
    assert article.summary.endswith("ready by May.”")


def test_one_long_sentence_is_cut_at_a_word_with_ellipsis() -> None:
    lead = " ".join(["harbour"] * 100) + "."
    article = parse(make(body=(lead, SECOND)))
    assert article.summary.endswith("harbour…")
    assert len(article.summary) <= MAX_SUMMARY_CHARS
    assert article.summary[:-1].split() == ["harbour"] * len(article.summary[:-1].split())


# --- properties ----------------------------------------------------------------

_ARTICLE_LINE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\r") | st.sampled_from("•-*1. "),
    max_size=60,
)
_ARTICLE_LIKE = st.lists(
    st.one_of(_ARTICLE_LINE, st.just(""), st.just("---"), st.sampled_from(["date: x", "draft: 1"])),
    max_size=25,
).map("\n".join)


def _check_article_or_error(data: bytes) -> None:
    try:
        article = parse_article(data, "topic/x.txt")
    except ArticleError as error:
        assert error.reason and error.path == "topic/x.txt"
        return
    for text in all_strings(article):
        assert clean_xml_text(text) == text
    assert article.title.strip()
    assert 0 < len(article.summary) <= MAX_SUMMARY_CHARS
    assert article.content_html
    assert all(dataclasses.is_dataclass(t) and t.slug for t in article.topics)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.text().map(lambda s: s.encode("utf-8", "surrogatepass")),
        _ARTICLE_LIKE.map(lambda s: s.encode("utf-8", "surrogatepass")),
    )
)
def test_any_bytes_give_an_article_or_an_article_error(data: bytes) -> None:
    _check_article_or_error(data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s))
def test_any_front_matter_date_gives_utc_or_article_error(value: str) -> None:
    data = f"---\ndate: {value}\n---\n".encode("utf-8", "surrogatepass") + make()
    try:
        article = parse_article(data, "x.txt")
    except ArticleError as error:
        assert error.line == 2 or error.line is None
        return
    date = article.front_matter.date
    assert date is None or date.tzinfo is UTC

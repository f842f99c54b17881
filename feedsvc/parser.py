"""Turn the bytes of one article file into an :class:`~feedsvc.model.Article`.

Pure (no file system, no clock) so that the same bytes always give the same
article and the same ``content_hash``: ids and dates downstream depend on it.
Text is decoded and cleaned here, once, so no later layer has to.

The layout (see ``ARTICLE_FORMAT.md``)::

    headline
    <blank>
    byline                 "Sara Wazowski", "By A and B"
    topic line             lower case words, optional
    <blank>
    body paragraphs, sub-headings, bullet and numbered lists
    <blank>
    bio                    last paragraph, starts with an author's name
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import NamedTuple

from dateutil import parser as date_parser

from .errors import ArticleError
from .model import Article, Author, FrontMatter, TopicRef
from .text import clean_xml_text, illegal_xml_count, slugify, strip_bidi_controls

#: A summary longer than this is cut, at a sentence boundary if there is one.
MAX_SUMMARY_CHARS = 300

_BOM = b"\xef\xbb\xbf"
# What str.splitlines() breaks on besides \n and \r. Inside a line these are at
# most a gap between words: treating them as line breaks would move the byline.
_LINE_BREAKISH = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# C0 and C1 controls but tab, line breaks and form feed: rare in any text file.
_CONTROL_CHAR = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
#: A file whose text is more than this share of control characters is binary:
#: random or compressed bytes read as Latin-1 are about a quarter controls,
#: UTF-16 text is half NUL, a damaged text file has a handful in thousands.
#: Valid UTF-8 is itself evidence of text (random bytes almost never are), so
#: it may hold more: a short file with a few stray controls is still text.
_MAX_CONTROL_SHARE = {"utf-8": 0.10, "legacy": 0.05}

#: How common binary formats start. All begin with bytes no article begins
#: with (a control byte, or a word no headline is), so a match is proof
#: enough, whatever the rest of the file holds.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "PDF document"),
    (b"PK\x03\x04", "ZIP archive (or .docx, .odt, .epub, .jar)"),
    (b"PK\x05\x06", "ZIP archive"),
    (b"PK\x07\x08", "ZIP archive"),
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"\x1f\x8b", "gzip archive"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"\x7fELF", "ELF executable"),
    (b"BZh", "bzip2 archive"),  # confirmed below: BZh + block size digit
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\x28\xb5\x2f\xfd", "Zstandard archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE2 document (.doc, .xls, .msg)"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"\xca\xfe\xba\xbe", "Mach-O or Java class file"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\x00asm", "WebAssembly module"),
    (b"OggS\x00", "Ogg media"),
    (b"fLaC", "FLAC audio"),
    (b"ID3\x03\x00", "MP3 audio"),
    (b"ID3\x04\x00", "MP3 audio"),
    (b"\x1aE\xdf\xa3", "Matroska/WebM video"),
    (b"wOFF", "WOFF font"),
    (b"wOF2", "WOFF2 font"),
)

_BULLET_ITEM = re.compile(r"^\s*[•\-*–·‣◦]\s+(?P<text>\S.*)$")
_NUMBERED_ITEM = re.compile(r"^\s*(?P<num>\d{1,3})[.)]\s+(?P<text>\S.*)$")
_BYLINE_PREFIX = re.compile(r"^by(?::\s*|\s+)", re.IGNORECASE)
_AUTHOR_SEPARATOR = re.compile(r"\s*,\s*(?:and\s+|&\s*)?|\s+(?:and|&)\s+")
_WORD = re.compile(r"\w+")
# Punctuation between two words that makes the second one start a sentence.
_SENTENCE_GAP = re.compile(r"[.!?:…。！？]")
_SENTENCE_END = re.compile(r"[.!?][\"”’»)]*(?=\s)|[。！？][」』”’]*")
_GMT_PREFIX = re.compile(r"\b(?:UTC|GMT)(?=\s*[+-]\d)", re.IGNORECASE)

_HEADER_END_PUNCT = tuple(".!?:;,")
_HEADING_END_PUNCT = tuple('.!?:;,"”’…。！？')
_OPENING_QUOTES = tuple("\"“‘'«„")
_QUOTES = "\"'“”‘’«»„"

# Words an ALL CAPS headline keeps in lower case unless they come first.
_SMALL_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "but", "by", "for", "in", "nor", "of", "on", "or", "the"}
    | {"to", "with"}
)
# Topic-line words that never make a broad topic.
_STOP_WORDS = frozenset(
    {"a", "an", "and", "the", "of", "to", "in", "on", "for", "with", "at", "by", "from", "as"}
    | {"is", "are", "was", "be", "new", "over", "after", "into", "about", "against"}
    | {"between", "says", "say"}
)

_FRONT_MATTER_KEYS = frozenset({"date", "updated", "topics", "summary", "id", "slug", "draft"})
_DRAFT_VALUES = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

# Fixed offsets (hours) for the abbreviations people write. IST is left out on
# purpose: India, Ireland and Israel all use it, so guessing would be wrong.
_ZONE_HOURS = {
    "UTC": 0, "UT": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 1, "BST": 1,
    "CET": 1, "CEST": 2, "EET": 2, "EEST": 3, "MSK": 3,
    "HKT": 8, "SGT": 8, "JST": 9, "KST": 9, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    "AKST": -9, "AKDT": -8, "HST": -10,
}  # fmt: skip
# Two different defaults: a date that parses differently under each is missing
# its year, month or day (dateutil would silently fill them from the clock).
_DEFAULTS = (datetime(2000, 1, 1), datetime(2001, 2, 2))


class _Line(NamedTuple):
    """One line of the file, with its 1-based number for error messages.

    Named tuples, not frozen dataclasses, for lines and blocks: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    and an article makes some 70 of each.
    """

    no: int
    text: str


class _Block(NamedTuple):
    """One body block: ``kind`` is "p", "h2", "ul" or "ol"."""

    kind: str
    items: tuple[str, ...]
    start: int = 1

    @property
    def text(self) -> str:
        return " ".join(self.items)


@dataclass(slots=True)
class _Header:
    """What comes before the body."""

    headline: _Line
    byline: _Line | None
    topic_line: str | None
    body: list[list[_Line]]
    warnings: list[str] = field(default_factory=list)


class _UnknownZone(Exception):
    """A time-zone name dateutil found but we cannot map to an offset."""


def parse_article(data: bytes, path: str) -> Article:
    """Parse one article file; raise :class:`ArticleError` if it is no article.

    ``path`` is the POSIX path relative to the articles folder; its directories
    become "folder" topics and it names the file in errors.
    """
    text, warnings = _decode(data, path)
    lines = _lines(text, path, warnings)
    content_hash = hashlib.sha256(_normalised(lines).encode("utf-8")).hexdigest()
    front_matter, lines, fm_warnings = _front_matter(lines, path)
    warnings += fm_warnings
    paragraphs = _paragraphs(lines)
    if not paragraphs:
        raise ArticleError(path, "only front matter, no headline or body")
    header = _header(paragraphs, path)
    warnings += header.warnings
    authors = _authors(header.byline, warnings)
    body, authors = _split_bio(header.body, authors)
    blocks = [block for paragraph in body for block in _paragraph_blocks(paragraph)]
    title = _title(header.headline.text, blocks)
    if len(title) > 200:
        warnings.append(
            f"line {header.headline.no}: headline is {len(title)} characters long;"
            " is the first line really a headline?"
        )
    summary = _summary(blocks, front_matter.summary, warnings)
    return Article(
        path=path,
        title=title,
        authors=authors,
        topic_line=header.topic_line,
        topics=_topics(header.topic_line, title, blocks, path, front_matter),
        summary=summary,
        content_html=_render(blocks),
        content_hash=content_hash,
        front_matter=front_matter,
        warnings=tuple(warnings),
    )


# --- decoding and normalising -------------------------------------------------


def _decode(data: bytes, path: str) -> tuple[str, list[str]]:
    """Bytes to text, never rejecting a text file for its encoding alone.

    Real corpora hold the odd Windows-1252 file; dropping an article over a
    curly quote would be worse than decoding it and saying so. What is binary
    is judged from the whole file (:func:`_binary_reason`), not from one byte:
    a stray NUL in a long text is damage to remove (see :func:`_lines`), not
    proof of an image.
    """
    signature = _binary_signature(data)
    if signature:
        raise ArticleError(path, f"binary file ({signature} signature)")
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data:
        raise ArticleError(path, "empty file")
    warnings: list[str] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        try:
            text, encoding = data.decode("cp1252"), "Windows-1252"
        except UnicodeDecodeError:
            text, encoding = data.decode("latin-1"), "Latin-1"
        warnings.append(
            f"not valid UTF-8 (first bad byte at offset {exc.start}); decoded as {encoding}"
        )
    reason = _binary_reason(data, text, utf8=not warnings)
    if reason:
        raise ArticleError(path, f"binary file ({reason})")
    return text, warnings


def _binary_signature(data: bytes) -> str | None:
    """The name of the binary format ``data`` starts like, if any."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            if magic == b"BZh" and not (data[3:4].isdigit() and data[4:10] == b"1AY&SY"):
                continue  # "BZh" alone could start a headline
            return name
    if data[257:262] == b"ustar":
        return "tar archive"
    return None


def _looks_like_utf16(data: bytes) -> bool:
    """A UTF-16 byte order mark, or NULs in every other byte (UTF-16 of Latin text)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    even, odd = data[::2].count(0), data[1::2].count(0)
    return max(even, odd) > len(data) * 0.2 and min(even, odd) * 10 < max(even, odd)


def _binary_reason(data: bytes, text: str, *, utf8: bool) -> str | None:
    """Why decoded ``text`` is binary data rather than a damaged text, or None.

    Binary data without a known signature (random, compressed, encrypted, a
    UTF-16 file) decodes as Latin-1 too, into gibberish that would be
    published under a permanent id: it is recognised by its share of control
    characters, which a text file, UTF-8 or legacy, has next to none of.
    """
    controls = len(_CONTROL_CHAR.findall(text))
    if controls <= len(text) * _MAX_CONTROL_SHARE["utf-8" if utf8 else "legacy"]:
        return None
    if not _CONTROL_CHAR.sub("", text).strip():
        return None  # no text at all: _lines says so, more plainly
    percent = controls * 100 // len(text)
    if _looks_like_utf16(data):
        return "contains NUL bytes; it looks like UTF-16, save it as UTF-8"
    if utf8:
        return f"{percent}% of its characters are NUL or other control characters"
    return f"not UTF-8, and {percent}% of its bytes are control characters"


def _lines(text: str, path: str, warnings: list[str]) -> list[_Line]:
    """Split into numbered lines: LF only, XML-safe, no trailing white space.

    Splits on "\\n" alone: str.splitlines() also breaks on \\x0b, \\x0c, \\x85
    and \\u2028, which would shift the byline and topic line. Stray control
    characters (a NUL from a damaged copy, an escape from a terminal) are
    removed, with a warning naming the first line that had one.
    """
    text = _LINE_BREAKISH.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    removed, first = illegal_xml_count(text)
    if removed:
        no = text.count("\n", 0, first) + 1
        plural = "s" if removed > 1 else ""
        warnings.append(
            f"line {no}: {removed} unprintable character{plural} removed"
            f" (the first is U+{ord(text[first]):04X})"
        )
    cleaned = clean_xml_text(text) if removed else text
    lines = [_Line(no, raw.rstrip()) for no, raw in enumerate(cleaned.split("\n"), start=1)]
    if not any(line.text for line in lines):
        if text.strip():
            raise ArticleError(path, "file has no text, only control characters")
        raise ArticleError(path, "file has only white space")
    return lines


def _normalised(lines: list[_Line]) -> str:
    """The text the content hash is over: blank runs collapsed, ends trimmed.

    So that CRLF/LF conversion, trailing spaces or an extra blank line are not
    content changes, while any edit of the words is.
    """
    out: list[str] = []
    for line in lines:
        if line.text or (out and out[-1]):
            out.append(line.text)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def _paragraphs(lines: list[_Line]) -> list[list[_Line]]:
    """Group non-blank lines into blank-line separated paragraphs."""
    paragraphs: list[list[_Line]] = []
    current: list[_Line] = []
    for line in lines:
        if line.text:
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def _collapse(text: str) -> str:
    return " ".join(text.split())


# --- front matter -------------------------------------------------------------


def _front_matter(lines: list[_Line], path: str) -> tuple[FrontMatter, list[_Line], list[str]]:
    """Read the optional ``---`` fenced ``key: value`` block at the top.

    Returns the front matter, the lines after it and warnings. Mistakes that
    would publish wrong metadata (bad dates, bad draft flags, a broken block)
    are errors with a line number, so the operator can fix them.
    """
    start = next((i for i, line in enumerate(lines) if line.text), None)
    if start is None or lines[start].text != "---":
        return FrontMatter(), lines, []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].text == "---"), None)
    if end is None:
        no = lines[start].no
        raise ArticleError(path, f"front matter opened on line {no} is never closed with '---'", no)
    warnings: list[str] = []
    values: dict[str, tuple[int, str]] = {}
    for line in lines[start + 1 : end]:
        text = line.text.strip()
        if not text or text.startswith("#"):
            continue
        key, colon, value = text.partition(":")
        key = key.strip().lower()
        if not colon or not key:
            raise ArticleError(
                path,
                f"front matter line {line.no}: expected 'key: value', got '{_short(text)}'",
                line.no,
            )
        if key not in _FRONT_MATTER_KEYS:
            warnings.append(f"front matter line {line.no}: unknown key '{_short(key)}' ignored")
            continue
        if key in values:
            warnings.append(f"front matter line {line.no}: '{key}' given again; the last one wins")
        values[key] = (line.no, _unquote(value.strip()))
    fields: dict[str, object] = {}
    for key, (no, value) in values.items():
        if not value:
            warnings.append(f"front matter line {no}: '{key}' has no value; ignored")
        elif key in ("date", "updated"):
            fields[key] = _parse_date(value, key, no, path)
        elif key == "draft":
            fields[key] = _parse_draft(value, no, path)
        elif key == "topics":
            parts = (_unquote(t.strip()) for t in value.strip("[]").split(","))
            fields[key] = tuple(_collapse(t) for t in parts if t.strip())
        else:
            fields[key] = _collapse(value)
    return FrontMatter(**fields), lines[end + 1 :], warnings  # type: ignore[arg-type]


def _unquote(value: str) -> str:
    """Drop one pair of surrounding quotes, as YAML users write them."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _zone(name: str | None, offset: int | None) -> tzinfo | None:
    """dateutil ``tzinfos`` callback: fixed offsets, never the machine's zone.

    Without it dateutil maps a name in time.tzname to the local zone, which
    would make the result depend on the host.
    """
    if name:
        hours = _ZONE_HOURS.get(name.upper())
        if hours is not None:
            return timezone(timedelta(hours=hours))
        if offset is None:
            raise _UnknownZone(name)
    if offset is None:
        return None
    return timezone(timedelta(seconds=offset))


def _parse_date(value: str, key: str, no: int, path: str) -> datetime:
    """Lenient date parsing to an aware UTC datetime; naive means UTC.

    "UTC+01:00" is rewritten to "+01:00" first: dateutil reads "GMT+1" with
    the POSIX (inverted) sign, the opposite of what people mean.
    """
    text = _GMT_PREFIX.sub("", value)
    unreadable = f"front matter line {no}: {key} '{_short(value)}' is not a date we can read"
    try:
        first, second = (
            date_parser.parse(text, default=default, tzinfos=_zone) for default in _DEFAULTS
        )
        if first.replace(tzinfo=None) != second.replace(tzinfo=None):
            raise ArticleError(
                path,
                f"front matter line {no}: {key} '{_short(value)}' lacks a year, month or day",
                no,
            )
        aware = first if first.tzinfo is not None else first.replace(tzinfo=UTC)
        return aware.astimezone(UTC)
    except _UnknownZone as exc:
        raise ArticleError(
            path,
            f"front matter line {no}: {key} '{_short(value)}' has a time zone '{exc}'"
            " we cannot tell; write an offset such as +05:30",
            no,
        ) from None
    except (ValueError, OverflowError):
        raise ArticleError(path, unreadable, no) from None


def _parse_draft(value: str, no: int, path: str) -> bool:
    try:
        return _DRAFT_VALUES[value.lower()]
    except KeyError:
        raise ArticleError(
            path,
            f"front matter line {no}: draft '{_short(value)}' is not one of"
            " true, false, yes, no, 1, 0",
            no,
        ) from None


# --- header: headline, byline, topic line -------------------------------------


def _header(paragraphs: list[list[_Line]], path: str) -> _Header:
    """Find headline, byline and topic line; the rest is the body.

    The header block is either the lines right under the headline or, after a
    blank line, a short paragraph that looks like a byline. Anything else is
    body, and the article is published without authors.
    """
    warnings: list[str] = []
    headline = _Line(paragraphs[0][0].no, _one_line(paragraphs[0][0], "headline", warnings))
    if not headline.text:
        raise ArticleError(path, "the headline is only bidirectional control characters",
                           headline.no)
    if len(paragraphs[0]) > 1:
        block, body = paragraphs[0][1:], paragraphs[1:]
    elif len(paragraphs) > 1 and len(paragraphs[1]) <= 2:
        block, body = paragraphs[1], paragraphs[2:]
    else:
        block, body = [], paragraphs[1:]
    header = _Header(headline, None, None, body, warnings)
    leftover = _read_header_block(header, block)
    if leftover:
        header.body.insert(0, leftover)
    if header.byline is None:
        header.warnings.append(f"line {headline.no}: no byline found under the headline")
    if not header.body:
        after = "the byline" if header.byline else "the topic line" if header.topic_line else ""
        reason = f"no body after {after}" if after else "only a headline, no body"
        raise ArticleError(path, reason, headline.no)
    return header


def _read_header_block(header: _Header, block: list[_Line]) -> list[_Line]:
    """Take byline and topic line from ``block``; return the lines that are body.

    A lone lower-case line is a topic line without a byline. A second line
    that is no topic line is dropped (with a warning) when the block is just
    two lines, such as "Jane Doe / Senior Correspondent"; when more lines
    follow without a blank line, it starts the body instead.
    """
    first = _one_line(block[0], "", []) if block else ""
    if len(block) == 1 and _looks_like_topic_line(first) and _has_cased(first):
        header.topic_line = _one_line(block[0], "topic line", header.warnings)
        return []
    if not block or not _looks_like_byline(first):
        return block
    header.byline = _Line(block[0].no, _one_line(block[0], "byline", header.warnings))
    if len(block) == 1:
        return []
    second = _one_line(block[1], "", [])
    if _looks_like_topic_line(second):
        header.topic_line = _one_line(block[1], "topic line", header.warnings)
        return block[2:]
    if len(block) == 2:
        header.warnings.append(
            f"line {block[1].no}: second header line is not a lower-case topic line; ignored"
        )
        return []
    return block[1:]


def _one_line(line: _Line, field: str, warnings: list[str]) -> str:
    """A header line as a one-line field: spaces collapsed, bidi controls removed.

    Bidi controls are removed (with a warning naming ``field``) because a
    title or byline shown alone can be spoofed with them; see
    :func:`~feedsvc.text.strip_bidi_controls`.
    """
    text = _collapse(line.text)
    stripped = strip_bidi_controls(text)
    if stripped != text:
        warnings.append(
            f"line {line.no}: bidirectional control characters removed from the {field}"
        )
        stripped = _collapse(stripped)
    return stripped


def _has_cased(text: str) -> bool:
    return any(c.isupper() or c.islower() for c in text)


def _looks_like_byline(text: str) -> bool:
    """Short, not a sentence, not a list item, not a quotation."""
    return (
        0 < len(text) <= 100
        and len(text.split()) <= 10
        and not text.endswith(_HEADER_END_PUNCT)
        and not text.startswith(_OPENING_QUOTES)
        and not _BULLET_ITEM.match(text)
        and not _NUMBERED_ITEM.match(text)
    )


def _looks_like_topic_line(text: str) -> bool:
    """Lower-case words (scripts without case count as lower), not a sentence."""
    return (
        any(c.isalnum() for c in text)
        and not any(c.isupper() for c in text)
        and len(text.split()) <= 15
        and not text.endswith(_HEADER_END_PUNCT)
    )


def _authors(byline: _Line | None, warnings: list[str]) -> tuple[Author, ...]:
    """ "By A, B and C" -> three authors, deduplicated by slug."""
    if byline is None:
        return ()
    names = _AUTHOR_SEPARATOR.split(_BYLINE_PREFIX.sub("", byline.text))
    authors: dict[str, Author] = {}
    for name in (n.strip() for n in names):
        slug = slugify(name)
        if slug and slug not in authors:
            authors[slug] = Author(name=name, slug=slug)
        elif name and not slug:
            warnings.append(f"line {byline.no}: author '{name}' has no letters or digits; ignored")
    if not authors:
        warnings.append(f"line {byline.no}: byline names no author")
    return tuple(authors.values())


def _split_bio(
    body: list[list[_Line]], authors: tuple[Author, ...]
) -> tuple[list[list[_Line]], tuple[Author, ...]]:
    """Move a closing bio paragraph out of the story and onto its author.

    The bio is about the writer, not the story: it must stay out of the
    content and the summary. It is the last paragraph of at least two, and
    starts with an author's full or first name.
    """
    if len(body) < 2 or not authors:
        return body, authors
    text = _collapse(" ".join(line.text for line in body[-1]))
    for index, author in enumerate(authors):
        for name in (author.name, author.name.split()[0]):
            if text.startswith(name) and text[len(name) :].startswith((" ", "’s", "'s", ",")):
                updated = Author(author.name, author.slug, bio=text)
                return body[:-1], authors[:index] + (updated,) + authors[index + 1 :]
    return body, authors


def _title(headline: str, blocks: list[_Block]) -> str:
    """The headline; an ALL CAPS one in Title Case, keeping the body's acronyms."""
    words = headline.split()
    if len(words) < 2 or not any(c.isupper() for c in headline):
        return headline
    if any(c.islower() for c in headline):
        return headline
    acronyms = {
        token
        for block in blocks
        if block.kind != "h2"
        for item in block.items
        for token in _WORD.findall(item)
        if len(token) >= 2 and token.isupper()
    }
    out: list[str] = []
    first = True
    for word in words:
        out.append(_title_word(word, acronyms, first))
        first = word.endswith((":", "—", "–"))
    return " ".join(out)


def _title_word(word: str, acronyms: set[str], first: bool) -> str:
    """Title-case one ALL CAPS word: "NATO’S" -> "NATO’s", "OF" -> "of"."""
    first_token = _WORD.search(word)
    first_token_start = first_token.start() if first_token else -1

    def fix(match: re.Match[str]) -> str:
        token = match.group()
        if token in acronyms:
            return token
        after_apostrophe = match.start() > 0 and word[match.start() - 1] in "’'"
        is_small = not first and token.lower() in _SMALL_WORDS
        if after_apostrophe or (is_small and match.start() == first_token_start):
            return token.lower()
        return token[:1].upper() + token[1:].lower()

    return _WORD.sub(fix, word)


# --- body blocks and HTML -----------------------------------------------------


def _paragraph_blocks(paragraph: list[_Line]) -> list[_Block]:
    """One paragraph to blocks: a sub-heading, or text and list runs in order.

    A paragraph can mix prose and list lines ("It could include:" followed by
    bullets); an indented line without a bullet continues the item above it.
    """
    if len(paragraph) == 1:  # most are: one line of prose, or a sub-heading
        text = paragraph[0].text
        stripped = text.strip()
        if _is_subheading(stripped):
            return [_Block("h2", (_collapse(text),))]
        if not _BULLET_ITEM.match(text) and not _NUMBERED_ITEM.match(text):
            return [_Block("p", (stripped,))]
    runs: list[tuple[str, list[str], int]] = []
    for line in paragraph:
        bullet = _BULLET_ITEM.match(line.text)
        numbered = None if bullet else _NUMBERED_ITEM.match(line.text)
        item = bullet or numbered
        in_list = bool(runs) and runs[-1][0] != "p"
        if item:
            kind = "ul" if bullet else "ol"
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(item["text"].strip())
            else:
                start = int(numbered["num"]) if numbered else 1
                runs.append((kind, [item["text"].strip()], start))
        elif in_list and line.text[:1].isspace():
            runs[-1][1][-1] += " " + line.text.strip()
        elif runs and runs[-1][0] == "p":
            runs[-1][1].append(line.text.strip())
        else:
            runs.append(("p", [line.text.strip()], 1))
    return [
        _Block(kind, (" ".join(items),) if kind == "p" else tuple(items), start)
        for kind, items, start in runs
    ]


def _is_subheading(text: str) -> bool:
    """One short Title Case line without closing punctuation."""
    if len(text) > 80:  # before the split: most paragraphs are long prose
        return False
    words = text.split()
    if not words or len(words) > 12 or text.endswith(_HEADING_END_PUNCT):
        return False
    lettered = [[c for c in word if c.isalpha()] for word in words]
    lettered = [letters for letters in lettered if letters]
    if not lettered or not lettered[0][0].isupper():
        return False
    return all(letters[0].isupper() for letters in lettered if len(letters) >= 4)


def _render(blocks: list[_Block]) -> str:
    """Blocks to HTML; all text escaped (articles may contain ``<script>``)."""
    parts: list[str] = []
    for block in blocks:
        if block.kind in ("p", "h2"):
            parts.append(f"<{block.kind}>{_escape(block.items[0])}</{block.kind}>")
            continue
        start = f' start="{block.start}"' if block.kind == "ol" and block.start != 1 else ""
        items = "\n".join(f"<li>{_escape(item)}</li>" for item in block.items)
        parts.append(f"<{block.kind}{start}>\n{items}\n</{block.kind}>")
    return "\n".join(parts)


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


# --- summary ------------------------------------------------------------------


def _summary(blocks: list[_Block], given: str | None, warnings: list[str]) -> str:
    """The editor's summary, else the lead paragraph, cut to whole sentences.

    Falls back to the first list item or sub-heading so it is never empty.
    """
    if given:
        summary = _cut(given)
        if summary != given:
            warnings.append(f"front matter summary longer than {MAX_SUMMARY_CHARS} characters; cut")
        return summary
    lead = next((block for block in blocks if block.kind == "p"), blocks[0])
    return _cut(lead.items[0])


def _cut(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    """Keep whole sentences up to ``limit``; else whole words and "…"."""
    text = _collapse(text)
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, limit)]
    if ends:
        return text[: ends[-1]].rstrip()
    cut = text[: limit - 1]
    if not text[limit - 1].isspace() and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:–—-") + "…"


# --- topics -------------------------------------------------------------------


def _topics(
    topic_line: str | None,
    title: str,
    blocks: list[_Block],
    path: str,
    front_matter: FrontMatter,
) -> tuple[TopicRef, ...]:
    """Story, broad, folder and front-matter topics, first of each slug wins."""
    found: list[TopicRef] = []
    if topic_line:
        broad = _broad_topics(topic_line, title, blocks)
        found.append(TopicRef(slugify(topic_line), _story_name(topic_line, broad), "story"))
        for word, name in broad:
            found.append(TopicRef(slugify(word), name, "broad"))
    for part in path.split("/")[:-1]:
        part = strip_bidi_controls(part)
        if part not in ("", ".", ".."):
            found.append(TopicRef(slugify(part), part[:1].upper() + part[1:], "folder"))
    for topic in front_matter.topics:
        name = strip_bidi_controls(topic).strip()
        found.append(TopicRef(slugify(name), name, "front-matter"))
    unique: dict[str, TopicRef] = {}
    for ref in found:
        if ref.slug and ref.slug not in unique:
            unique[ref.slug] = ref
    return tuple(unique.values())


def _story_name(topic_line: str, broad: list[tuple[str, str]]) -> str:
    """The topic line as a reader should see it: "Ukraine abandons NATO membership pursuit".

    Proper nouns take the spelling the article gives them and the first
    letter is capitalised; the slug is still made from the line as written.
    """
    spelled = {word.casefold(): name for word, name in broad}
    words = [spelled.get(w.casefold(), w) for w in topic_line.split()]
    name = " ".join(words)
    return name[:1].upper() + name[1:]


def _broad_topics(topic_line: str, title: str, blocks: list[_Block]) -> list[tuple[str, str]]:
    """Words of the topic line that the article names as proper nouns.

    "nato" is a proper noun when the text writes "NATO"; "ukraine" when it
    writes "Ukraine" mid-sentence. A capital at a sentence start proves
    nothing, and a word written in lower case more often is a common noun.
    Returns (word, display name) pairs in topic-line order.
    """
    wanted: dict[str, str] = {}
    for raw in topic_line.split():
        word = raw.strip(_QUOTES + ".,;:!?()[]")
        key = word.casefold()
        if (
            _WORD.fullmatch(word)
            and sum(c.isalpha() for c in word) >= 2
            and key not in _STOP_WORDS
            and key not in wanted
        ):
            wanted[key] = word
    proper: Counter[str] = Counter()
    common: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = {key: Counter() for key in wanted}
    if not wanted:
        return []
    # A paragraph or item boundary reads as a sentence end.
    text = "\n.\n".join(item for block in blocks if block.kind != "h2" for item in block.items)
    low = text.lower()
    if len(low) != len(text):  # a few characters lower-case to two (İ): keep offsets
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    size = len(text)
    for key, word in wanted.items():
        # Each whole-word occurrence in any case, by str.find on the lower-cased text
        # (tokenising every word took 70% of parse time, and a regex per article was
        # slower still: most topic lines are unique, and a look-behind defeats the
        # regex engine's literal search). Inline, not a generator of calls: this
        # loop runs some 80 times an article.
        needle = word.lower()
        length = len(needle)
        spelled = spellings[key]
        start = low.find(needle)
        while start != -1:
            end = start + length
            if start:
                before = text[start - 1]
                if before.isalnum() or before == "_":
                    start = low.find(needle, end)
                    continue
            if end != size:
                after = text[end]
                if after.isalnum() or after == "_":
                    start = low.find(needle, end)
                    continue
            token = text[start:end]
            if not token[:1].isupper():
                common[key] += 1
            else:
                spelled[token] += 1
                if (len(token) >= 2 and token.isupper()) or not _starts_sentence(text, start):
                    proper[key] += 1
            start = low.find(needle, end)
    for token in _WORD.findall(title):
        key = token.casefold()
        if key in wanted and len(token) >= 2 and token.isupper():
            proper[key] += 1
            spellings[key][token] += 1
    return [
        (word, spellings[key].most_common(1)[0][0])
        for key, word in wanted.items()
        if proper[key] > common[key]
    ]


def _starts_sentence(text: str, start: int) -> bool:
    """No word before ``start``, or the punctuation since the previous one ends a sentence."""
    index = start
    while index > 0:
        char = text[index - 1]
        if char.isalnum() or char == "_":
            break
        index -= 1
    return index == 0 or _SENTENCE_GAP.search(text, index, start) is not None

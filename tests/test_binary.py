"""What is binary and what is a damaged text (issue #12 part 2), and bidi controls
in one-line fields (#15 part 8): through the parser, and through the real app.

The binaries are real files, made here by the standard library (zipfile, gzip,
sqlite3, tarfile, bz2, lzma) or as the smallest valid bytes of the format
(PNG, JPEG, GIF, PDF), plus the Python interpreter itself for ELF.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import sqlite3
import struct
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from feedsvc.errors import ArticleError
from feedsvc.parser import parse_article

ARTICLE = (
    "Council Backs New Harbour Plan\n\nSara Wazowski\nharbour plan oslo\n\n"
    "The council approved the plan on Monday. Work starts in spring.\n\n"
)
#: A long article: 40 paragraphs of ordinary prose after the header.
PARAGRAPH = ("Residents in Oslo welcomed the decision, the mayor said, and the harbour"
             " authority promised to publish a timetable for the works before summer. ")
LONG = ARTICLE + "".join(f"{PARAGRAPH * 3}\n\n" for _ in range(40))


def parse(data: bytes, path: str = "x.txt"):
    return parse_article(data, path)


def reason(data: bytes) -> str:
    with pytest.raises(ArticleError) as info:
        parse(data)
    return info.value.reason


# --- real binaries ------------------------------------------------------------------


def _png() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(
        b"IEND", b"")


def _jpeg() -> bytes:
    # SOI, a JFIF APP0 segment, EOI: what every JPEG starts with.
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def _gif() -> bytes:
    return (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
            b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def _pdf() -> bytes:
    # A real PDF is mostly ASCII: the signature, not the bytes, tells it apart.
    body = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n")
    return body + b"trailer << /Root 1 0 R >>\n%%EOF\n"


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("article.txt", LONG)
    return out.getvalue()


def _sqlite(tmp: Path) -> bytes:
    path = tmp / "db.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.execute("INSERT INTO t VALUES (?)", (LONG,))
    db.close()
    return path.read_bytes()


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        data = LONG.encode()
        info = tarfile.TarInfo("article.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def binaries(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the reason they must be rejected with)."""
    return {
        "pdf": (_pdf(), "binary file (PDF document signature)"),
        "zip": (_zip(), "binary file (ZIP archive (or .docx, .odt, .epub, .jar) signature)"),
        "png": (_png(), "binary file (PNG image signature)"),
        "jpeg": (_jpeg(), "binary file (JPEG image signature)"),
        "gif": (_gif(), "binary file (GIF image signature)"),
        "gzip": (gzip.compress(LONG.encode(), mtime=0), "binary file (gzip archive signature)"),
        "sqlite": (_sqlite(tmp), "binary file (SQLite database signature)"),
        "elf": (Path(sys.executable).resolve().read_bytes()[:65536],
                "binary file (ELF executable signature)"),
        "tar": (_tar(), "binary file (tar archive signature)"),
        "bzip2": (bz2.compress(LONG.encode()), "binary file (bzip2 archive signature)"),
        "xz": (lzma.compress(LONG.encode()), "binary file (xz archive signature)"),
    }


@pytest.mark.parametrize("name", ["pdf", "zip", "png", "jpeg", "gif", "gzip", "sqlite", "elf",
                                  "tar", "bzip2", "xz"])
def test_real_binaries_are_rejected_by_their_signature(tmp_path: Path, name: str) -> None:
    data, expected = binaries(tmp_path)[name]
    if name == "elf" and not data.startswith(b"\x7fELF"):
        pytest.skip("the interpreter is not an ELF file on this system")
    assert reason(data) == expected


def test_binary_without_a_signature_is_rejected_by_its_control_share() -> None:
    noise = random.Random(7).randbytes(4000)
    assert reason(noise.replace(b"\x00", b"\x01")).startswith(
        "binary file (not UTF-8, and ")
    assert reason(noise).startswith("binary file (not UTF-8, and ")
    # ASCII padded with NULs, valid UTF-8: a record file, not an article
    records = b"".join(b"Council%03d" % i + b"\x00" * 6 for i in range(200))
    assert reason(records) == (
        "binary file (37% of its characters are NUL or other control characters)")


def test_utf16_is_named() -> None:
    assert reason(LONG.encode("utf-16")) == (
        "binary file (contains NUL bytes; it looks like UTF-16, save it as UTF-8)")
    assert reason(LONG.encode("utf-16-le")) == (
        "binary file (contains NUL bytes; it looks like UTF-16, save it as UTF-8)")


@pytest.mark.parametrize("headline", ["BZh Stadium Reopens After Repairs",
                                      "ID3 Tags Explained For New Podcasters",
                                      "OggS And Other Containers Compared"])
def test_a_text_that_starts_like_a_signature_word_is_still_text(headline: str) -> None:
    article = parse(f"{headline}\n\nSara Wazowski\n\nThe stadium reopened on Monday.\n"
                    .encode())
    assert article.title == headline


# --- damaged text -------------------------------------------------------------------


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_one_nul_in_a_long_text_is_removed_with_a_warning() -> None:
    at = LONG.index("timetable", len(LONG) // 2)
    text = LONG[:at] + "\x00" + LONG[at:]
    article = parse(text.encode())
    line = _line_of(text, "\x00")
    assert article.warnings == (
        f"line {line}: 1 unprintable character removed (the first is U+0000)",)
    assert "\x00" not in article.content_html
    assert article.content_html.count("timetable") == LONG.count("timetable")


def test_a_few_stray_c0_controls_are_removed_with_a_warning() -> None:
    text = LONG.replace("mayor said", "mayor\x07 said", 2).replace("Monday", "Mon\x1bday")
    text = text.replace("summer.", "summer.\x01", 1) + "\x00"
    article = parse(text.encode())
    first = min(text.index(c) for c in "\x07\x1b\x01\x00")
    assert article.warnings == (
        f"line {_line_of(text, text[first])}: 5 unprintable characters removed"
        " (the first is U+001B)",)
    assert article.summary == "The council approved the plan on Monday. Work starts in spring."
    assert "mayor said" in article.content_html


def test_the_hash_ignores_the_removed_bytes() -> None:
    """Removing damage must not make a new version (it would re-announce the article)."""
    clean = parse(LONG.encode())
    damaged = parse(LONG.replace("spring.", "spring.\x00").encode())
    assert damaged.content_hash == clean.content_hash


def test_windows_1252_with_a_stray_control_is_published() -> None:
    text = LONG.replace("Residents", "\u201cResidents\u201d", 1).replace("said", "said\x02", 1)
    article = parse(text.encode("cp1252"))
    assert article.warnings[0].endswith("decoded as Windows-1252")
    assert article.warnings[1].startswith(f"line {_line_of(text, chr(2))}: 1 unprintable")
    assert "\u201cResidents\u201d" in article.content_html


def test_a_short_text_with_a_handful_of_controls_is_text() -> None:
    data = b"Harbour\x01 Plan Approved\n\nSara Wazowski\n\nThe council\x1b approved it.\x00\n"
    article = parse(data)
    assert article.title == "Harbour Plan Approved"
    assert article.warnings[0] == "line 1: 3 unprintable characters removed (the first is U+0001)"


# --- bidirectional controls -------------------------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_bidi_controls_are_stripped_from_one_line_fields_and_kept_in_bodies() -> None:
    data = (
        "Invoice \u202egpj.exe\u202c Approved\n\nSara \u2066Wazowski\u2069\n"
        "harbour \u202bplan\u202c oslo\n\n"
        f"The body keeps them: \u202eabc\u202c and {BIDI}.\n\nSecond paragraph.\n"
    ).encode()
    article = parse(data)
    assert article.title == "Invoice gpj.exe Approved"
    assert [a.name for a in article.authors] == ["Sara Wazowski"]
    assert article.topic_line == "harbour plan oslo"
    assert article.topics[0].name == "Harbour plan oslo"
    assert "\u202eabc\u202c" in article.content_html and BIDI in article.content_html
    assert "\u202eabc\u202c" in article.summary
    assert article.warnings == (
        "line 1: bidirectional control characters removed from the headline",
        "line 3: bidirectional control characters removed from the byline",
        "line 4: bidirectional control characters removed from the topic line",
    )


def test_bidi_controls_are_stripped_from_front_matter_and_folder_topics() -> None:
    data = ("---\ntopics: \u202eworld\u202c, plain\n---\n" + ARTICLE).encode()
    article = parse(data, "\u2067science\u2069/x.txt")
    names = [t.name for t in article.topics if t.kind in ("folder", "front-matter")]
    assert names == ["Science", "world", "plain"]


def test_a_headline_of_bidi_controls_alone_is_rejected() -> None:
    assert reason(("\u202e\u202c\n\nSara Wazowski\n\nBody.\n").encode()) == (
        "the headline is only bidirectional control characters")

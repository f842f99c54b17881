"""Text helpers shared by the parser, the ledger and the renderers."""

from __future__ import annotations

import re

from anyascii import anyascii

# XML 1.0 Char production: everything outside it is removed once, at read time.
_XML_ILLEGAL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]"
)
_NON_SLUG = re.compile(r"[^a-z0-9]+")
# Bidirectional embedding, override and isolate controls (Trojan Source, CVE-2021-42574).
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def clean_xml_text(text: str) -> str:
    """Remove every code point that XML 1.0 cannot carry (and C1 controls but NEL).

    feedgen raises from ``atom_str()`` on such text without naming the entry,
    so one bad file would break every feed holding it: clean it here, once.
    """
    return _XML_ILLEGAL.sub("", text)


def illegal_xml_count(text: str) -> tuple[int, int]:
    """How many code points :func:`clean_xml_text` would remove, and where the first is.

    ``(0, -1)`` for clean text. Lets the parser warn about what it removes.
    """
    first = _XML_ILLEGAL.search(text)
    if first is None:
        return 0, -1
    return len(_XML_ILLEGAL.findall(text, first.start())), first.start()


def strip_bidi_controls(text: str) -> str:
    """Remove bidirectional embedding, override and isolate controls.

    In a one-line field shown out of context (a title in a reader's list, a
    byline, a topic name) U+202E and friends reorder what the reader sees
    around it, so "txt.exe" can show as "exe.txt": a spoofed title. Bodies
    keep them; right-to-left text there may need them.
    """
    return _BIDI_CONTROLS.sub("", text)


def slugify(text: str, max_length: int = 80) -> str:
    """Lower-case ASCII words joined by hyphens, transliterating (anyascii).

    ``"Sara Wazowski"`` -> ``"sara-wazowski"``; ``"Zürich"`` -> ``"zurich"``;
    ``"北京"`` -> ``"beijing"``. Returns ``""`` when nothing is left.
    """
    ascii_text = anyascii(text).lower().replace("'", "")
    slug = _NON_SLUG.sub("-", ascii_text).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rsplit("-", 1)[0] or slug[:max_length]
    return slug

"""Text helpers shared by the parser, the ledger and the renderers."""

from __future__ import annotations

import re

from anyascii import anyascii

# XML 1.0 Char production: everything outside it is removed once, at read time.
_XML_ILLEGAL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]"
)
_NON_SLUG = re.compile(r"[^a-z0-9]+")


def clean_xml_text(text: str) -> str:
    """Remove every code point that XML 1.0 cannot carry (and C1 controls but NEL).

    feedgen raises from ``atom_str()`` on such text without naming the entry,
    so one bad file would break every feed holding it: clean it here, once.
    """
    return _XML_ILLEGAL.sub("", text)


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

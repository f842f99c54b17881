"""Which file is which: renames (perhaps with edits) and exact duplicates.

Pure policy, no I/O: the publisher asks it once per scan, and the ledger
carries out what it decides (:attr:`feedsvc.ledger.Sighting.renamed_from`).

The rename rule. When, in one scan, a file disappears and a new one appears,
the new one *is* the gone one (same id, slug and published date; ``updated``
moves only if the text changed) if, tried in this order and each file paired
at most once:

1. both have the same front-matter ``id``; or
2. both have the same title and the same byline (authors, in order); or
3. their texts are nearly the same: the Jaccard similarity of their sets of
   word 5-shingles (runs of five consecutive words, lower-cased, markup
   removed) is at least :data:`SIMILARITY` (0.8), the most similar pairs first
   (when at most :data:`MAX_PAIRS` pairs are to compare).

A file whose bytes equal a gone file's is matched by the ledger itself (by
content hash), in one scan or across restarts.

Duplicates. A file whose content hash equals a published file's is a
duplicate of it and is not published; of several, the *first* is the one
stamped earliest in the ledger (then the lowest path), so the choice does not
change from scan to scan. If the first goes, the next becomes the published
one and, having its content, inherits its id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from .model import Article, Stamp


def id_authority(base_url: str | None) -> str:
    """The tag-URI authority of new ids: the site's host, else ``localhost``."""
    host = urlsplit(base_url).hostname if base_url else None
    if not host or ":" in host:  # an IPv6 literal is no valid tag authority
        return "localhost"
    return host


#: Shingle similarity at or above which a gone and a new file are one article.
SIMILARITY = 0.8
#: Words per shingle.
SHINGLE = 5
#: Most gone x new pairs whose texts are compared in one scan.
MAX_PAIRS = 40_000

_TAG = re.compile(r"<[^>]*>")
_WORD = re.compile(r"\w+")


def shingles(article: Article) -> frozenset[tuple[str, ...]]:
    """The article's word 5-shingles (its title and text, without markup)."""
    words = _WORD.findall(_TAG.sub(" ", f"{article.title} {article.content_html}").lower())
    if len(words) < SHINGLE:
        return frozenset({tuple(words)}) if words else frozenset()
    return frozenset(tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1))


def similarity(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    """Jaccard similarity of two shingle sets (0 for two empty ones)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _byline(article: Article) -> tuple[str, tuple[str, ...]]:
    return article.title.strip().casefold(), tuple(a.name.casefold() for a in article.authors)


def match_renames(gone: Mapping[str, Article], new: Mapping[str, Article]) -> dict[str, str]:
    """Pairs ``{new path: gone path}`` by the rename rule in the module's docstring."""
    gone_left, new_left = dict(gone), dict(new)
    pairs: dict[str, str] = {}

    def pair(new_path: str, gone_path: str) -> None:
        pairs[new_path] = gone_path
        del new_left[new_path], gone_left[gone_path]

    for key in (lambda a: a.front_matter.id or None, _byline):
        index: dict[object, list[str]] = {}
        for path in sorted(gone_left):
            k = key(gone_left[path])
            if k:
                index.setdefault(k, []).append(path)
        for path in sorted(new_left):
            candidates = index.get(key(new_left[path]) or None, [])
            candidates[:] = [c for c in candidates if c in gone_left]
            if candidates:
                pair(path, candidates.pop(0))
    # Text similarity compares every pair: skipped for mass moves (a checkout of
    # another branch), where ids and content hashes still match.
    if gone_left and new_left and len(gone_left) * len(new_left) <= MAX_PAIRS:
        gone_sh = {p: shingles(a) for p, a in gone_left.items()}
        new_sh = {p: shingles(a) for p, a in new_left.items()}
        scored = sorted(
            ((similarity(new_sh[n], gone_sh[g]), n, g) for n in new_sh for g in gone_sh),
            key=lambda t: (-t[0], t[1], t[2]),
        )
        for score, n, g in scored:
            if score < SIMILARITY:
                break
            if n in new_left and g in gone_left:
                pair(n, g)
    return pairs


def find_duplicates(
    articles: Mapping[str, Article],
    stamps: Mapping[str, Stamp],
    candidates: Iterable[str],
    lookup: Callable[[list[str]], Mapping[str, Stamp]] | None = None,
) -> dict[str, str]:
    """``{path: first path}`` for every candidate whose content a first file also has.

    ``candidates`` are the paths that could be published (drafts left out).
    ``lookup`` fetches stored stamps of colliding paths not in ``stamps``
    (after a restart the publisher knows none yet), so "first" is the same
    in every process.
    """
    groups: dict[str, list[str]] = {}
    for path in candidates:
        groups.setdefault(articles[path].content_hash, []).append(path)
    collide = [paths for paths in groups.values() if len(paths) > 1]
    missing = [p for paths in collide for p in paths if p not in stamps]
    if missing and lookup is not None:
        stamps = {**lookup(missing), **stamps}
    duplicates: dict[str, str] = {}
    for paths in collide:

        def order(path: str) -> tuple[int, float, str]:
            stamp = stamps.get(path)
            return (0, stamp.first_seen.timestamp(), path) if stamp else (1, 0.0, path)

        first, *rest = sorted(paths, key=order)
        duplicates.update((path, first) for path in rest)
    return duplicates

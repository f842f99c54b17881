"""The render cache: each rendered document once per version, bounded by what it holds.

Keys are :class:`RenderKey`: typed and immutable, so that what a cached
document *is* (a feed in one format, an archive, a ``?limit`` document, a
preview, the OPML list, a page, for one base URL) is spelled in one place. A
NamedTuple rather than a frozen dataclass: it hashes as a plain tuple (a
lookup per request, at thousands of requests a second, where the generated
``__hash__`` of a dataclass costs several times more) and reads as a tuple in
tests and logs.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from .collection import FeedRef

if TYPE_CHECKING:
    from .publisher import Rendered

#: What one cached document holds besides its bytes: its key (with the base
#: URL), the two index entries (LRU order, per-feed keys), the Rendered object,
#: its entry in :data:`_HOLDERS`, and what the web side keeps of it (feedsvc.http:
#: validator strings, their memo entry). tracemalloc measured about 1.4 KiB a
#: document (test_overhead_figures_cover_what_is_measured in
#: tests/test_hostile_requests.py checks the figure stays above it).
DOCUMENT_OVERHEAD = 1536


class RenderKey(NamedTuple):
    """What one cached document is."""

    kind: str  # "feed", "opml" or "page"
    ref: FeedRef | None = None  # the feed (kind "feed"); None for the OPML list and pages
    fmt: str = ""
    archive: int | None = None
    limit: int | None = None
    base_url: str = ""
    preview: bool = False
    page: tuple[str, ...] = ()  # a page: ("home",), ("topic", slug), ("article", slug) ...

    @classmethod
    def feed(cls, ref: FeedRef, fmt: str, base_url: str, *, archive: int | None = None,
             limit: int | None = None, preview: bool = False) -> RenderKey:
        return cls("feed", ref, fmt, archive, limit, base_url, preview)

    @classmethod
    def opml(cls, base_url: str) -> RenderKey:
        return cls("opml", base_url=base_url)

    @classmethod
    def of_page(cls, page: tuple[str, ...], base_url: str) -> RenderKey:
        return cls("page", base_url=base_url, page=page)


def cost(rendered: Rendered) -> int:
    """Bytes a cached document holds when it is put: its body and the overhead (what is
    derived from it later comes through :func:`attached`)."""
    return len(rendered.body) + DOCUMENT_OVERHEAD


#: The cache and key holding each cached document, for :func:`attached`. Weak: an
#: evicted document that nothing else uses goes, and its entry with it.
_HOLDERS: weakref.WeakKeyDictionary[Rendered, tuple[RenderCache, RenderKey]] = (
    weakref.WeakKeyDictionary())


def attached(rendered: Rendered, size: int) -> None:
    """Something made from ``rendered`` and kept as long as it lives (the web side's
    gzip form) now holds ``size`` bytes more: the cache holding it counts them, and
    evicts if that takes it over its bound. Nothing for a document no cache holds."""
    holder = _HOLDERS.get(rendered)
    if holder is not None:
        holder[0]._grew(holder[1], rendered, size)


class RenderCache:
    """Least recently used first, bounded by ``max_bytes`` of what it really holds.

    Each document is kept with the version it was rendered at: a lookup at
    another version is a miss. Documents of a feed are indexed by its
    :class:`FeedRef`, so that a change drops exactly the changed feeds'.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[RenderKey, tuple[str, Rendered]] = OrderedDict()
        self.bytes = 0
        self._costs: dict[RenderKey, int] = {}  # what each document was counted at
        self.keys_by_ref: dict[FeedRef, set[RenderKey]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def get(self, key: RenderKey, version: str) -> Rendered | None:
        with self._lock:
            hit = self.items.get(key)
            if hit is None or hit[0] != version:
                return None
            self.items.move_to_end(key)
            return hit[1]

    def put(self, key: RenderKey, version: str, rendered: Rendered) -> None:
        with self._lock:
            self._forget(key)
            self.items[key] = (version, rendered)
            self._costs[key] = size = cost(rendered)
            self.bytes += size
            if key.ref is not None:
                self.keys_by_ref.setdefault(key.ref, set()).add(key)
            _HOLDERS[rendered] = (self, key)
            self._evict()

    def _grew(self, key: RenderKey, rendered: Rendered, size: int) -> None:
        """A cached document grew (see :func:`attached`): count it, evict if over the bound."""
        with self._lock:
            hit = self.items.get(key)
            if hit is None or hit[1] is not rendered:
                return  # evicted or replaced meanwhile: nothing of it is counted any more
            self._costs[key] += size
            self.bytes += size
            self._evict()

    def _evict(self) -> None:
        """Least recently used out until under the bound (the lock is held)."""
        while self.bytes > self.max_bytes and len(self.items) > 1:
            self._forget(next(iter(self.items)))

    def _forget(self, key: RenderKey) -> None:
        """Drop one document and its index entries (the lock is held).

        The per-feed key set is cleaned too: left there, evicted keys (one per
        distinct base URL or query seen) piled up until the feed changed.
        """
        old = self.items.pop(key, None)
        if old is not None:
            self.bytes -= self._costs.pop(key)
            if _HOLDERS.get(old[1], (None,))[0] is self:
                del _HOLDERS[old[1]]
            if key.ref is not None:
                keys = self.keys_by_ref.get(key.ref)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self.keys_by_ref[key.ref]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()
            self._costs.clear()
            self.keys_by_ref.clear()
            self.bytes = 0

    def prune(self, refs: Iterable[FeedRef]) -> None:
        """Drop the documents of feeds that changed or went away."""
        with self._lock:
            for ref in refs:
                for key in list(self.keys_by_ref.get(ref, ())):
                    self._forget(key)
                self.keys_by_ref.pop(ref, None)

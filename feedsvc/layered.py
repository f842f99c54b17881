"""An immutable mapping made from the previous one plus a few changes, without a copy.

A worker's view (feedsvc.view) and the collection (feedsvc.collection) are
replaced whole on every change, never edited in place, so that a request
holding one sees one version. Copying their per-path dicts for that was most
of what an edit still cost at 100,000 articles (seven dicts of 100,000 keys,
each copy a few milliseconds). A :class:`Layered` mapping shares its
predecessor's base dict and keeps the changes since in a small dict on top;
when that layer outgrows a small share of the base, the two are merged into a
new base (one copy per many changes, not one per change).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_GONE: Any = object()  # in a layer: the key was removed from the base
_MISSING: Any = object()


class Layered(Mapping[K, V], Generic[K, V]):
    """A read-only mapping: a base dict no one mutates, and a layer of changes over it."""

    __slots__ = ("_base", "_top", "_len")

    def __init__(self, base: Mapping[K, V] | None = None) -> None:
        self._base: dict[K, V] = base._flat() if isinstance(base, Layered) else dict(base or {})
        self._top: dict[K, V] = {}
        self._len = len(self._base)

    @classmethod
    def over(cls, base: dict[K, V]) -> Layered[K, V]:
        """A Layered mapping sharing ``base``, which the caller must never mutate."""
        new = cls.__new__(cls)
        new._base, new._top, new._len = base, {}, len(base)
        return new

    def __getitem__(self, key: K) -> V:
        value = self._top.get(key, _MISSING)
        if value is _MISSING:
            return self._base[key]
        if value is _GONE:
            raise KeyError(key)
        return value

    def get(self, key: K, default: Any = None) -> Any:
        value = self._top.get(key, _MISSING)
        if value is _MISSING:
            return self._base.get(key, default)
        return default if value is _GONE else value

    def __contains__(self, key: object) -> bool:
        value = self._top.get(key, _MISSING)  # type: ignore[call-overload]
        if value is _MISSING:
            return key in self._base
        return value is not _GONE

    def __iter__(self) -> Iterator[K]:
        top = self._top
        if not top:
            yield from self._base
            return
        for key in self._base:
            if key not in top:
                yield key
        for key, value in top.items():
            if value is not _GONE:
                yield key

    def __len__(self) -> int:
        return self._len

    def _flat(self) -> dict[K, V]:
        """A plain dict of the same items (a copy, unless there is no layer)."""
        if not self._top:
            return self._base
        flat = dict(self._base)
        for key, value in self._top.items():
            if value is _GONE:
                flat.pop(key, None)
            else:
                flat[key] = value
        return flat

    def edit(self) -> Draft[K, V]:
        """A mutable draft of this mapping; :meth:`Draft.done` makes the next version."""
        return Draft(self)

    def __repr__(self) -> str:
        return f"Layered({dict(self)!r})"


class Draft(Generic[K, V]):
    """The changes being made to a :class:`Layered` mapping; the mapping is untouched."""

    __slots__ = ("_base", "_top", "_len")

    def __init__(self, source: Layered[K, V]) -> None:
        self._base = source._base
        self._top = dict(source._top)  # small: a share of the base at most
        self._len = source._len

    def __contains__(self, key: object) -> bool:
        value = self._top.get(key, _MISSING)  # type: ignore[call-overload]
        if value is _MISSING:
            return key in self._base
        return value is not _GONE

    def get(self, key: K, default: Any = None) -> Any:
        value = self._top.get(key, _MISSING)
        if value is _MISSING:
            return self._base.get(key, default)
        return default if value is _GONE else value

    def __getitem__(self, key: K) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        if key not in self:
            self._len += 1
        self._top[key] = value

    def pop(self, key: K, default: Any = None) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return default
        self._len -= 1
        if key in self._base:
            self._top[key] = _GONE
        else:
            del self._top[key]
        return value

    def update(self, items: Mapping[K, V]) -> None:
        for key, value in items.items():
            self[key] = value

    def __len__(self) -> int:
        return self._len

    def done(self) -> Layered[K, V]:
        """The new version; merged into a new base once the layer is a 32nd of it."""
        new = Layered.__new__(Layered)
        new._base, new._top, new._len = self._base, self._top, self._len
        if len(self._top) > max(64, len(self._base) // 32):
            new = Layered.over(new._flat())
        return new

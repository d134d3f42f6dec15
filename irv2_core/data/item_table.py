"""The candidate images of a conversion, held as columns rather than one object per image.

Issue 24: at 100k+ images, an object per image (its record, its path string, a dict entry to
check it against the stage manifest) cost ~290 B each, scattered over the heap, on top of
MindSpore's 426 MB import, and it was still held when MindRecord's commit made the peak. Here a
split's relative paths share one byte buffer and its labels and sizes live in arrays (~55 B per
image in a few large blocks); :class:`Item` records are made on demand, one at a time.
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Item", "ItemChain", "ItemTable", "RelIndex"]


@dataclass(frozen=True, slots=True)
class Item:
    """One candidate image: the data folder, its path relative to it, class and size."""

    base: str
    rel: str
    class_name: str
    label: int
    size: int

    @property
    def path(self) -> str:
        """The image file's absolute path."""
        return f"{self.base}/{self.rel}"


def _position(i: int, n: int) -> int:
    """Index *i* (negative counts from the end) of a sequence of *n* as 0..n-1, or IndexError."""
    if not -n <= i < n:
        raise IndexError(f"item {i} of {n}")
    return i + n if i < 0 else i


class ItemTable(Sequence[Item]):
    """One split's images under *base*: relative paths, labels (indexes of *class_names*), sizes."""

    def __init__(self, base: str, class_names: list[str]) -> None:
        self.base, self.class_names = base, class_names
        self._rels = bytearray()
        self._ends = array("Q")  # end offset of each path in _rels
        self._labels = array("l")
        self._sizes = array("q")

    def append(self, rel: str, label: int, size: int) -> None:
        self._rels += rel.encode()
        self._ends.append(len(self._rels))
        self._labels.append(label)
        self._sizes.append(size)

    def __len__(self) -> int:
        return len(self._ends)

    def _span(self, i: int) -> slice:
        """Where path *i* lies in ``_rels``."""
        return slice(self._ends[i - 1] if i else 0, self._ends[i])

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = _position(i, len(self))
        rel = self._rels[self._span(i)].decode()
        label = self._labels[i]
        return Item(self.base, rel, self.class_names[label], label, self._sizes[i])

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))

    def shuffle(self, rng: random.Random) -> None:
        """Reorder as ``rng.shuffle`` would reorder a list of the same items."""
        order = list(range(len(self)))
        rng.shuffle(order)  # the same swaps on the positions give the same permutation
        rels, ends, view = bytearray(), array("Q"), memoryview(self._rels)
        for i in order:
            rels += view[self._span(i)]
            ends.append(len(rels))
        view.release()
        self._rels, self._ends = rels, ends
        self._labels = array("l", (self._labels[i] for i in order))
        self._sizes = array("q", (self._sizes[i] for i in order))


class ItemChain(Sequence[Item]):
    """Several sequences of items read as one (every split of a layout), without copying."""

    def __init__(self, parts: Sequence[Sequence[Item]]) -> None:
        self._parts = list(parts)
        self._starts = list(itertools.accumulate((len(p) for p in self._parts), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = _position(i, len(self))
        part = bisect.bisect_right(self._starts, i) - 1
        return self._parts[part][i - self._starts[part]]

    def __iter__(self) -> Iterator[Item]:
        return itertools.chain.from_iterable(self._parts)


class RelIndex:
    """Find items by relative path through a sorted array of the paths' hashes (16 B per item;
    a ``{rel: item}`` dict would hold a string and an entry per item). Each item is claimed at
    most once; a hash match is confirmed against the item's own path."""

    def __init__(self, items: Sequence[Item]) -> None:
        self._items = items
        hashes = np.fromiter((hash(i.rel) for i in items), dtype=np.int64, count=len(items))
        self._order = np.argsort(hashes, kind="stable")
        self._keys = hashes[self._order]
        self._claimed = np.zeros(len(items), dtype=bool)

    def claim(self, rel: str) -> Item | None:
        """The unclaimed item at *rel* (now claimed), or None."""
        h = hash(rel)
        pos = int(np.searchsorted(self._keys, h))
        while pos < len(self._keys) and self._keys[pos] == h:
            index = int(self._order[pos])
            item = self._items[index]
            if item.rel == rel and not self._claimed[index]:
                self._claimed[index] = True
                return item
            pos += 1
        return None

    def all_claimed(self) -> bool:
        return bool(self._claimed.all())

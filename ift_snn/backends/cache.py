"""A bounded least-recently-used map for compiled kernels (one per target of backends/compiled.py).

``on_evict(key, value)`` is called for every entry the map drops (evicted, replaced by another value or
cleared), after it is gone, so that what only the entry held (a kernel's module, its linecache entry) is
released with it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

__all__ = ["LRU", "MAX_KERNELS"]

#: Compiled kernels kept per target. Parameter values and the built-in surrogates' constants are
#: kernel arguments, so this bounds distinct *structures* (models, spike functions, dtypes), not values.
MAX_KERNELS = 64


class LRU:
    """dict-like with at most ``maxsize`` entries; the least recently used is dropped first."""

    def __init__(self, maxsize: int = MAX_KERNELS, on_evict: Callable | None = None):
        if maxsize < 1:
            raise ValueError(f"maxsize={maxsize} is out of range: expected >= 1")
        self.maxsize = maxsize
        self.on_evict = on_evict
        self._data: OrderedDict = OrderedDict()

    def _dropped(self, items: list) -> None:
        if self.on_evict is not None:
            for key, value in items:
                self.on_evict(key, value)

    def get(self, key, default=None):
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        return default

    def __contains__(self, key) -> bool:
        return key in self._data

    def __getitem__(self, key):
        value = self._data[key]
        self._data.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        dropped = []
        old = self._data.get(key, value)
        if old is not value:
            dropped.append((key, old))
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            dropped.append(self._data.popitem(last=False))
        self._dropped(dropped)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        dropped = list(self._data.items())
        self._data.clear()
        self._dropped(dropped)

"""A bounded least-recently-used map for compiled kernels (one per target of backends/compiled.py)."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["LRU", "MAX_KERNELS"]

#: Compiled kernels kept per target. Parameter values and the built-in surrogates' constants are
#: kernel arguments, so this bounds distinct *structures* (models, spike functions, dtypes), not values.
MAX_KERNELS = 64


class LRU:
    """dict-like with at most ``maxsize`` entries; the least recently used is dropped first."""

    def __init__(self, maxsize: int = MAX_KERNELS):
        if maxsize < 1:
            raise ValueError(f"maxsize={maxsize} is out of range: expected >= 1")
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()

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
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()

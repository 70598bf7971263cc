"""Exact floating-point sums, independent of order, chunking and numpy's summation algorithm.

A float64 ``x`` is ``m * 2**(e - 1075)`` with an integer mantissa ``m < 2**53`` and the biased exponent ``e`` (its
bit pattern). :class:`ExactSum` keeps, per sign and exponent, the sum of the mantissas as a Python integer: adding
floats is integer addition, hence exact, associative and commutative, so any chunking or order of the same values
gives the same state, and :meth:`ExactSum.value` rounds the exact total once (correctly rounded, as
``math.fsum``). Vectorised: per chunk of at most ``2**26`` values, the mantissa's high 27 and low 26 bits are
summed per exponent with ``np.bincount`` (float64 sums of integers below ``2**53``: exact).
"""
from __future__ import annotations

import numpy as np

_CHUNK = 1 << 26  # values per bincount: 2**26 * 2**27 <= 2**53, so the float64 bin sums are exact integers
_LOW = 26
_FRAC = (1 << 52) - 1


def _exponent_sums(x: np.ndarray, group: np.ndarray | None, n_groups: int):
    """(groups, keys, high sums, low sums) of one chunk; key = sign bit * 2048 + biased exponent."""
    bits = x.view(np.int64)
    key = (bits >> 52) & 0xFFF
    mant = bits & _FRAC
    mant |= (key & 0x7FF != 0).astype(np.int64) << 52  # the implicit leading bit of normal numbers
    if group is not None:
        key = key + group.astype(np.int64) * 4096
    hi = np.bincount(key, weights=(mant >> _LOW).astype(np.float64), minlength=4096 * n_groups)
    lo = np.bincount(key, weights=(mant & ((1 << _LOW) - 1)).astype(np.float64), minlength=4096 * n_groups)
    used = np.flatnonzero(hi + lo)
    g, k = np.divmod(used, 4096)
    return g.tolist(), k.tolist(), hi[used].tolist(), lo[used].tolist()


class ExactSum:
    """Mergeable exact sum of float64 values (create / add / merge / extract).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1e16, 1.0, -1e16, 0.1])
    >>> s = ExactSum().add(x[:2]).merge(ExactSum().add(x[2:]))
    >>> s.value(), float(np.sum(x))
    (1.1, 0.1)
    """

    __slots__ = ("_parts",)

    def __init__(self):
        self._parts: dict[int, int] = {}  # sign * 2048 + biased exponent -> sum of integer mantissas

    def add(self, x) -> "ExactSum":
        """Add every value of ``x`` (finite float64 values; other dtypes are converted)."""
        add_grouped([self], x, None)
        return self

    def merge(self, other: "ExactSum") -> "ExactSum":
        """Add the values of ``other`` (exact: the result does not depend on how values were split)."""
        for k, v in other._parts.items():
            self._parts[k] = self._parts.get(k, 0) + v
        return self

    @classmethod
    def total(cls, sums) -> "ExactSum":
        """A new sum holding the values of all ``sums``."""
        out = cls()
        for x in sums:
            out.merge(x)
        return out

    def value(self) -> float:
        """The exact sum rounded once to the nearest float64."""
        if not self._parts:
            return 0.0
        low = min(max(k & 0x7FF, 1) for k in self._parts)  # subnormals share the exponent of the smallest normal
        total = 0
        for k, m in self._parts.items():
            term = m << (max(k & 0x7FF, 1) - low)
            total += -term if k >> 11 else term
        shift = low - 1075
        return float(total << shift) if shift >= 0 else total / (1 << -shift)  # int / int is correctly rounded


def add_grouped(sums: list, x, group) -> None:
    """``sums[g].add(x[group == g])`` for every g, in one pass over ``x`` (``group=None``: all to ``sums[0]``)."""
    x = np.ascontiguousarray(x, dtype=np.float64).ravel()
    for a in range(0, x.size, _CHUNK):
        gs, ks, his, los = _exponent_sums(x[a:a + _CHUNK], None if group is None else group[a:a + _CHUNK],
                                          len(sums))
        for g, k, h, l in zip(gs, ks, his, los):
            parts = sums[g]._parts
            parts[k] = parts.get(k, 0) + (int(h) << _LOW) + int(l)


def exact_sum(x) -> float:
    """Correctly rounded sum of ``x`` (``ExactSum().add(x).value()``)."""
    return ExactSum().add(x).value()

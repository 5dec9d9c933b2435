"""The one way pairot compiles its numba kernels."""

from __future__ import annotations

import numba


def njit_parallel(func):
    """``numba.njit(parallel=True)``, cached on disk where numba finds a writable cache."""
    try:
        return numba.njit(parallel=True, cache=True)(func)
    except RuntimeError:  # pragma: no cover - no writable cache location
        return numba.njit(parallel=True)(func)


def njit_serial(func):
    """``numba.njit``, cached on disk where numba finds a writable cache."""
    try:
        return numba.njit(cache=True)(func)
    except RuntimeError:  # pragma: no cover - no writable cache location
        return numba.njit(func)
